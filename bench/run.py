"""Running the benchmark's parts and putting the report together.

Parts 1, 2, 3 and 5a run in this process (one event loop, virtual lines);
parts 4, 5b and 6 run in ``bench/ha_part.py`` under the Home Assistant test
harness, in a pytest subprocess (:class:`reliability.harness.HarnessRun`, the
runner the soak's coordinator lane uses too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
import datetime as dt
import json
import os
from pathlib import Path
import shlex
import subprocess
import tempfile
import time
from typing import Any

from reliability.harness import HarnessRun

from .ble_bench import ble_part
from .common import ROOT, BenchConfig, machine_info
from .serial_bench import bus_cycles, peer_comparison, serial_polls
from .targets import evaluate_targets

PARTS = ("serial", "peers", "ble", "ha", "bus")
PEER_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
HA_TIMEOUT = 900
HA_PART = Path(__file__).with_name("ha_part.py")


def run_ha(config: BenchConfig) -> dict[str, Any]:
    """Parts 4, 5b and 6 in a pytest process of their own (the HA harness)."""
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as out:
        folder = Path(out)
        run = HarnessRun(
            HA_PART,
            log=folder / "pytest.log",
            env={
                "BENCH_HA_CONFIG": json.dumps(config.as_dict()),
                "BENCH_HA_OUT": out,
            },
            args=[
                "-x",
                # pytest's log capture keeps every record: memory that is not ours.
                "-p",
                "no:logging",
                f"--timeout={HA_TIMEOUT}",
            ],
        )
        try:
            returncode = run.wait(timeout=HA_TIMEOUT + 60)
        except subprocess.TimeoutExpired:
            msg = f"the Home Assistant part timed out:\n{run.output(6000)}"
            raise RuntimeError(msg) from None
        if returncode != 0:
            msg = f"the Home Assistant part failed:\n{run.output(6000)}"
            raise RuntimeError(msg)
        return {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in folder.glob("*.json")
        }


async def _run_part(
    part: str, config: BenchConfig, peer_python: Path | None
) -> dict[str, Any] | list[dict[str, Any]]:
    if part == "serial":
        return await serial_polls(config)
    if part == "peers":
        if peer_python is None:
            return {"skipped": peer_skip_reason(config)}
        return await peer_comparison(config, peer_python)
    if part == "ble":
        return await ble_part(config, peer_python)
    return await bus_cycles(config)


async def run_async(
    config: BenchConfig, parts: Sequence[str], peer_python: Path | None
) -> dict[str, Any]:
    """Parts 1, 2, 3 and 5a (one event loop, virtual lines in-process)."""
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    for part in ("serial", "peers", "ble", "bus"):
        if part not in parts:
            continue
        start = time.perf_counter()
        results[part] = await _run_part(part, config, peer_python)
        durations[part] = round(time.perf_counter() - start, 1)
    results["durations_s"] = durations
    return results


def peer_skip_reason(config: BenchConfig) -> str:
    """Why the peer libraries were not measured."""
    if not config.peers:
        return "peers not requested (--no-peers or --smoke)"
    return f"{PEER_PYTHON} missing: scripts/bench installs it (bench/requirements.txt)"


def peer_python(config: BenchConfig, path: Path) -> Path | None:
    """The peers' interpreter, when they are asked for and installed."""
    if not config.peers or not path.exists():
        return None
    return path


def run_benchmark(
    config: BenchConfig,
    parts: Sequence[str],
    peers: Path | None,
    argv: Sequence[str],
) -> dict[str, Any]:
    """Run *parts*; return the report (command, machine, results, targets)."""
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    results = asyncio.run(run_async(config, parts, peers))
    if "ha" in parts:
        ha_start = time.perf_counter()
        results["ha"] = run_ha(config)
        results["durations_s"]["ha"] = round(time.perf_counter() - ha_start, 1)
    return {
        "command": shlex.join(["scripts/bench", *argv]),
        "started": started.isoformat(),
        "duration_s": round(time.perf_counter() - start, 1),
        "machine": machine_info()
        | {
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
        "config": config.as_dict(),
        "results": results,
        "targets": evaluate_targets(results, timings=not config.smoke),
    }
