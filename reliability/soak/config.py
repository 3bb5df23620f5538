"""The soak's configuration, its constants and what a lane and a process saw."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import logging
from pathlib import Path
from typing import Any

from custom_components.active_balancer.const import MIN_POLL_INTERVAL
from custom_components.active_balancer.protocol import Timings

ROOT = Path(__file__).resolve().parents[2]
LANES = ("tcp", "pty", "ble", "coordinator")
CLIENT_LANES = ("tcp", "pty", "ble")
MEMORY_LIMIT = 1_000_000
"""Bytes the traced memory may grow during a run."""
RECOVERY_LIMIT = float(MIN_POLL_INTERVAL)
"""Seconds: the shortest poll interval the integration's options allow."""
COORDINATOR_TEST = "reliability/coordinator_lane.py"
ENV_POLLS = "SOAK_COORDINATOR_POLLS"
ENV_RATE = "SOAK_FAULT_RATE"
ENV_SEED = "SOAK_SEED"
ENV_REPORT = "SOAK_REPORT"
SAMPLES = 5
"""Unhandled exceptions kept as text in the report."""
ORIGIN_HORIZON = 2.0
"""Seconds a reply is remembered to recognise it when it arrives late."""

LOGGER = logging.getLogger("reliability.soak")
"""The soak's own logger (its records are not counted as the integration's)."""


@dataclass(slots=True)
class SoakConfig:
    """How long and how hard to soak."""

    polls: int = 2000
    """Polls over all lanes together."""
    fault_rate: float = 0.05
    """Probability each fault knob fires (per reply, or per poll for spells)."""
    seed: int = 1
    lanes: tuple[str, ...] = LANES
    base_timeout: float = 0.015
    """Answer timeout beyond the wire time (real links use 0.5 s and more)."""
    settle: float = 0.005
    """Bus settle time after a timeout."""
    late_window: float = 0.12
    """How late an answer may arrive and still be recognised (above max_delay)."""
    baudrate: int = 115200
    """Line speed of the pseudo-terminal."""
    byte_time: float = 5e-5
    """Seconds per byte in the answer timeout (a loopback line is fast, but a
    reply cut into 2-byte pieces takes a loop turn per piece)."""
    min_delay: float = 0.005
    max_delay: float = 0.08
    """Range of a delayed reply's delay: below and well above the timeout."""
    write_rate: float = 0.1
    """Probability a poll starts a write next to it."""
    pair_rate: float = 0.25
    """Share of write starts that are two writes at once."""
    max_pending_writes: int = 4
    recovery_every: int = 250
    """Polls of a lane between two recovery measurements."""
    clean_polls: int = 3
    """Polls after a recovery that must all succeed."""
    calibration_polls: int = 20
    timeout_factor: float = 3.0
    """The answer timeout is at least this many times a typical poll (the
    90th percentile of the calibration polls): on a slow machine, or under
    coverage tracing, a slow event loop is not a fault of the line."""

    @property
    def timings(self) -> Timings:
        """The waiting times every lane's bus and link start with.

        The answer timeout is then calibrated on the lane's own line.
        """
        return Timings(
            serial_timeout=self.base_timeout,
            ble_timeout=self.base_timeout,
            settle=self.settle,
            late_window=self.late_window,
            byte_time=self.byte_time,
        )

    def lane_polls(self) -> dict[str, int]:
        """Polls of each lane: the total shared out evenly."""
        lanes = self.lanes
        share, rest = divmod(self.polls, len(lanes))
        return {lane: share + (1 if i < rest else 0) for i, lane in enumerate(lanes)}


@dataclass(slots=True)
class LaneStats:
    """What one lane saw."""

    lane: str
    transport: str
    variant: str
    polls: int = 0
    failed_polls: int = 0
    longest_unavailable_streak: int = 0
    """Most polls in a row that failed."""
    longest_unavailable_seconds: float = 0.0
    recoveries: int = 0
    """Times the faults stopped and recovery was measured."""
    recovery_failures: int = 0
    """Recoveries whose first poll after the faults stopped failed."""
    recovery_polls_max: int = 0
    recovery_seconds_max: float = 0.0
    clean_poll_failures: int = 0
    """Polls without faults (after a recovery) that failed."""
    unhandled_exceptions: int = 0
    unhandled_samples: list[str] = field(default_factory=list)
    poll_failures: Counter[str] = field(default_factory=Counter)
    writes_requested: int = 0
    writes_confirmed: int = 0
    writes_reported_failed: int = 0
    writes_refused: int = 0
    """Refused by the rules before anything was sent (not expected here)."""
    writes_silently_lost: int = 0
    """Confirmed, but the device does not hold the value."""
    writes_confirmed_without_device_record: int = 0
    """Confirmed while the device received no such write (it held the value)."""
    writes_overwritten_later: int = 0
    """Confirmed values the device no longer held at the end, unasked."""
    writes_skipped_unavailable: int = 0
    """Actions Home Assistant skipped: the entity became unavailable meanwhile."""
    write_failures: Counter[str] = field(default_factory=Counter)
    clean_writes: int = 0
    clean_write_failures: int = 0
    """Writes without faults that were not confirmed."""
    concurrent_write_pairs: int = 0
    device_writes: int = 0
    device_writes_outside_allow_list: int = 0
    device_writes_unrequested: int = 0
    device_rule_violations: int = 0
    """Confirmed writes after which the device's settings broke a rule."""
    stale_replies_accepted: int = 0
    """Replies taken as the answer to a request they do not answer."""
    unknown_replies_accepted: int = 0
    """Replies taken that the device never sent."""
    faults_injected: Counter[str] = field(default_factory=Counter)
    link: dict[str, int] = field(default_factory=dict)
    typical_poll: float = 0.0
    """Seconds: 90th percentile of the calibration polls (no faults)."""
    answer_timeout: float = 0.0
    """Seconds: the base answer timeout used (after calibration)."""
    late_window: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        result: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, Counter):
                value = dict(sorted(value.items()))
            elif isinstance(value, float):
                value = round(value, 4)
            result[name] = value
        return result


@dataclass(slots=True)
class ProcessStats:
    """Leaks and memory of one process over a run."""

    name: str
    tasks_before: int = 0
    tasks_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    traced_memory_growth: int = 0
    """Bytes: growth of traced memory (test doubles excluded) after warm-up."""
    rss_growth: int = 0
    """Bytes: growth of the resident set after warm-up (informative, noisy)."""
    loop_errors: int = 0
    """Calls of the event loop's exception handler."""
    logged_exceptions: int = 0
    """Log records with a traceback (``_LOGGER.exception`` and the like)."""
    samples: list[str] = field(default_factory=list)
    top_growth: list[str] = field(default_factory=list)

    @property
    def leaked_tasks(self) -> int:
        """Tasks alive after the run that were not before."""
        return max(0, self.tasks_after - self.tasks_before)

    @property
    def leaked_fds(self) -> int:
        """File descriptors open after the run that were not before."""
        return max(0, self.fds_after - self.fds_before)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        result: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        result["leaked_tasks"] = self.leaked_tasks
        result["leaked_fds"] = self.leaked_fds
        return result
