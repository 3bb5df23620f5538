"""The benchmark's smoke run: every part still works, and the counts are exact.

``scripts/bench --smoke --json`` runs in seconds on a fast (115200 baud) line;
its timings mean nothing and are never asserted here. What is asserted are
counts: requests and notifications per poll, state writes, round trips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
from typing import Any

import pytest

from bench.render import render

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One smoke run of the benchmark, as its JSON report."""
    # Not measured by the suite's coverage run: the bench is a separate program.
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("COV_")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_report_shape(report: dict[str, Any]) -> None:
    """The JSON has the run's command, machine, configuration and every part."""
    assert report["command"] == "scripts/bench --smoke --json"
    assert {"nproc", "cpu", "python", "homeassistant"} <= set(report["machine"])
    assert report["config"]["smoke"] is True
    results = report["results"]
    assert {"serial", "peers", "ble", "bus", "ha"} <= set(results)
    assert set(results["ha"]) == {"event_loop", "write", "ble_scale"}
    assert "skipped" in results["peers"]  # no peer libraries in a smoke run
    assert "### Targets" in render(report)


def test_serial_requests_per_poll(report: dict[str, Any]) -> None:
    """The planned reads per steady-state poll on D2 and p81; settings not re-read."""
    rows = report["results"]["serial"]
    cells = report["config"]["cell_counts"]
    assert sorted({(row["variant"], row["cells"]) for row in rows}) == sorted(
        (variant, count) for variant in ("d2", "p81", "a5") for count in cells
    )
    for row in rows:
        if row["variant"] == "a5":
            assert row["requests_per_poll"] == 5, row
            assert row["bytes_out_per_poll"] == 5 * 13, row
        else:
            plan = row["plan"]
            assert row["requests_per_poll"] == len(plan), row
            assert row["requests_per_poll"] <= row["best_plan_reads"], row
            assert row["bytes_out_per_poll"] == 8 * len(plan), row
            assert row["bytes_in_per_poll"] == sum(5 + 2 * n for _, n in plan), row
        assert row["steady_polls"] == row["polls"], row  # no settings re-read
    d2 = {row["cells"]: row for row in rows if row["variant"] == "d2"}
    assert d2[max(d2)]["requests_per_poll"] == 1  # 24S: one read stays cheapest
    a5 = {row["cells"]: row for row in rows if row["variant"] == "a5"}
    for count, row in a5.items():
        # pack, cells (3 a frame), temperatures, balancing, alarms
        frames = 1 + -(-count // 3) + 1 + 1 + 1
        assert row["bytes_in_per_poll"] == 13 * frames


def test_ble_round_trips(report: dict[str, Any]) -> None:
    """One request and seven 20-byte notifications per D2 poll over BLE."""
    rows = {row["variant"]: row for row in report["results"]["ble"]["round_trips"]}
    assert rows["d2"]["requests_per_poll"] == 1
    assert rows["d2"]["notifications_per_poll"] == -(-(5 + 2 * 0x41) // 20)
    assert rows["a5"]["requests_per_poll"] == 5
    assert rows["d2"]["connects"] == rows["a5"]["connects"] == 1
    decode = report["results"]["ble"]["decode"]
    assert decode["notifications"] == 7
    assert decode["ours_us_one_notification"] > 0


def test_bus_requests_per_cycle(report: dict[str, Any]) -> None:
    """A bus cycle sends each balancer's planned reads (a few, never one per cell).

    Each board plans with the turnaround measured when it connected, so in a
    smoke run (115200 baud, loaded machine) boards may plan differently.
    """
    rows = report["results"]["bus"]
    assert [row["balancers"] for row in rows] == report["config"]["bus_sizes"]
    for row in rows:
        assert row["balancers"] <= row["requests_per_cycle"] <= 6 * row["balancers"]


def test_home_assistant_counts(report: dict[str, Any]) -> None:
    """No state writes for unchanged values; a write: two round trips and a live read."""
    ha = report["results"]["ha"]
    loop = ha["event_loop"]
    assert loop["unchanged"]["state_writes_per_poll"] == 0
    assert loop["unchanged"]["state_changes_per_poll"] == 0
    changed = loop["changed"]
    assert changed["state_writes_per_poll"] >= loop["cells"]
    assert changed["state_writes_per_poll"] == changed["state_changes_per_poll"]
    # The write, its read-back, then the device's planned live reads.
    write = ha["write"]
    assert write["round_trips"] == 2 + write["live_reads_after_write"]
    scale = ha["ble_scale"]
    # Each device sends the reads of its plan (one or two for 16 cells), no more.
    assert scale["requests_per_round"] == scale["planned_reads_per_round"]
    assert scale["devices"] <= scale["requests_per_round"] <= 2 * scale["devices"]


def test_targets(report: dict[str, Any]) -> None:
    """Count targets are met; timing targets are not judged in a smoke run."""
    targets = report["targets"]
    assert targets
    for target in targets:
        if target["kind"] == "count":
            assert target["met"] is True, target
        else:
            assert target["met"] is None, target


def test_wrapper_script() -> None:
    """scripts/bench is an executable bash script without syntax errors."""
    script = ROOT / "scripts" / "bench"
    assert os.access(script, os.X_OK)
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", str(script)], check=True, timeout=10)  # noqa: S603
