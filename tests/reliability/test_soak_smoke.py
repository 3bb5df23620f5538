"""The soak at CI size: 2,000 polls at 5 % faults, targets checked as counts.

``scripts/soak`` runs in a fresh interpreter, as it would by hand: the
protocol client over a socket:// gateway, a pseudo-terminal and the fake
Bluetooth bridge, and the coordinator with its entities through the pytest
harness, 500 polls each, side by side. (Not in this process: the test run's
coverage tracing and the harness's event loop debug mode make every step
several times slower, which the soak would see as a slow line.)
"""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

from reliability import soak

ROOT = Path(__file__).resolve().parents[2]

# Not the timings: those depend on the machine. Everything else must hold.
COUNT_TARGETS = {
    "unhandled_exceptions",
    "writes_silently_lost",
    "device_writes_outside_allow_list",
    "device_writes_unrequested",
    "recovery_failures",
    "memory_growth_bytes",
    "leaked_tasks",
    "leaked_fds",
    "stale_replies_accepted",
    "clean_failures",
    "device_rule_violations",
}


def check(report: dict[str, object], lanes: set[str]) -> None:
    """Every count target is met, and the run really was a soak."""
    failed = soak.failed_targets(report)
    assert not {name: failed[name] for name in failed if name in COUNT_TARGETS}
    totals = report["totals"]
    assert isinstance(totals, dict)
    # Faults of every kind fired, writes ran beside the polls, the faults hurt
    # (some polls and writes failed) and stopped (recoveries were measured).
    for kind in (*soak.FAULT_KINDS, "silent_spell", "chunk_size_change"):
        assert totals["faults_injected"].get(kind, 0) > 0, kind
    assert totals["polls"] >= 2000
    assert totals["failed_polls"] > 0
    assert totals["writes_confirmed"] > 0
    assert totals["writes_reported_failed"] > 0
    assert totals["concurrent_write_pairs"] > 0
    assert totals["recoveries"] >= 2 * len(lanes)
    assert totals["clean_writes"] >= 2 * len(lanes)
    assert totals["recovery_polls_max"] == 1
    # Every write ends one way or another, none in between.
    assert totals["writes_requested"] == (
        totals["writes_confirmed"]
        + totals["writes_reported_failed"]
        + totals["writes_refused"]
        + totals["writes_skipped_unavailable"]
    )
    assert {lane["lane"] for lane in report["lanes"]} == lanes  # type: ignore[attr-defined]
    assert len(report["processes"]) == 2  # type: ignore[arg-type]


def test_soak_ci_size() -> None:
    """``scripts/soak --polls 2000 --fault-rate 0.05``: every count target met."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "reliability.soak",
            "--polls",
            "2000",
            "--fault-rate",
            "0.05",
            "--json",
        ],
        cwd=ROOT,
        env=soak.clean_environment(),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.stdout, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["errors"] == []
    check(report, set(soak.LANES))
    # The exit status says whether every target (timings too) was met.
    assert result.returncode == (0 if report["passed"] else 1)


def test_lanes_share_the_polls() -> None:
    """2,000 polls over four lanes: 500 each; the remainder to the first."""
    assert soak.SoakConfig(polls=2000).lane_polls() == dict.fromkeys(soak.LANES, 500)
    assert soak.SoakConfig(polls=10, lanes=("tcp", "ble")).lane_polls() == {
        "tcp": 5,
        "ble": 5,
    }
    assert list(soak.SoakConfig(polls=7).lane_polls().values()) == [2, 2, 2, 1]
