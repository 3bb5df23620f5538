"""Soak run: poll virtual balancers for a long time while everything goes wrong.

    python -m reliability.soak --polls 2000 --fault-rate 0.05 --json

The polls are shared out over *lanes*, which run at the same time:

* ``tcp``: the real :class:`BalancerClient` over :class:`SerialLink` to a
  virtual D2 balancer behind a loopback ``socket://`` gateway;
* ``pty``: the same over a pseudo-terminal (a serial device file), p81 board 3;
* ``ble``: the same over :class:`BleLink` and the fake Bluetooth bridge;
* ``coordinator``: the Home Assistant coordinator and entities, run through
  the pytest harness (``reliability/coordinator_lane.py``) in a subprocess,
  over a ``socket://`` gateway.

In every lane each fault knob of the virtual balancer fires at random at the
given rate (drop, corrupt, truncate, garbage, delay, disconnect per reply;
silent spells, changing chunk sizes, disconnects in the middle of a frame),
while writes of random allowed settings, sometimes two at once, run
concurrently with the polls. Every ``recovery_every`` polls, and at the end,
the faults stop and the run measures how quickly polls succeed again.

The report counts polls, failed polls, the longest unavailable streak,
recovery after faults stop, unhandled exceptions, leaked tasks and file
descriptors, memory growth, writes requested / confirmed / reported failed /
silently lost, and every write the device recorded outside the allow-list or
with a value nobody requested. It also counts replies taken as the answer to
another request (a late reply must never be). The exit status is 0 only when
every target is met.

The package's modules: :mod:`.config` (settings, constants, counters),
:mod:`.faults` (the fault schedule and the balancer that remembers its
replies), :mod:`.writes` (random allowed values, the manuals' rules),
:mod:`.lanes` (what every lane shares), :mod:`.client_lanes`,
:mod:`.coordinator_lane`, :mod:`.process` (leaks, memory, unhandled
errors), :mod:`.run`, :mod:`.report` and :mod:`.__main__` (the command line).
"""

from __future__ import annotations

from balancer_tools.simulator import FAULT_KINDS
from reliability.harness import clean_environment

from .client_lanes import ClientLane, build_client_lanes, client_lane
from .config import (
    CLIENT_LANES,
    COORDINATOR_TEST,
    ENV_POLLS,
    ENV_RATE,
    ENV_REPORT,
    ENV_SEED,
    LANES,
    MEMORY_LIMIT,
    RECOVERY_LIMIT,
    LaneStats,
    ProcessStats,
    SoakConfig,
)
from .coordinator_lane import (
    CoordinatorLane,
    config_from_env,
    run_coordinator_soak,
    serve_coordinator_balancer,
    writable_entities,
)
from .faults import CountingFaults, FaultShaker, SoakBalancer, soak_balancer
from .lanes import Lane, tap_bus
from .process import ProcessWatch
from .report import failed_targets, format_summary, lanes_report, summarise
from .run import CoordinatorRun, run_client_soak, run_lanes, run_soak
from .writes import device_rule_violations, random_value

__all__ = [
    "CLIENT_LANES",
    "COORDINATOR_TEST",
    "ENV_POLLS",
    "ENV_RATE",
    "ENV_REPORT",
    "ENV_SEED",
    "FAULT_KINDS",
    "LANES",
    "MEMORY_LIMIT",
    "RECOVERY_LIMIT",
    "ClientLane",
    "CoordinatorLane",
    "CoordinatorRun",
    "CountingFaults",
    "FaultShaker",
    "Lane",
    "LaneStats",
    "ProcessStats",
    "ProcessWatch",
    "SoakBalancer",
    "SoakConfig",
    "build_client_lanes",
    "clean_environment",
    "client_lane",
    "config_from_env",
    "device_rule_violations",
    "failed_targets",
    "format_summary",
    "lanes_report",
    "random_value",
    "run_client_soak",
    "run_coordinator_soak",
    "run_lanes",
    "run_soak",
    "serve_coordinator_balancer",
    "soak_balancer",
    "summarise",
    "tap_bus",
    "writable_entities",
]
