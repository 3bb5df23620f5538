"""Running the soak: lanes side by side, and the coordinator lane's subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
import contextlib
import json
from pathlib import Path
import tempfile
import time
from typing import Any

from reliability.harness import HarnessRun

from .client_lanes import build_client_lanes
from .config import (
    COORDINATOR_TEST,
    ENV_POLLS,
    ENV_RATE,
    ENV_REPORT,
    ENV_SEED,
    LaneStats,
    ProcessStats,
    SoakConfig,
)
from .lanes import Lane
from .process import ProcessWatch
from .report import summarise


async def run_lanes(lanes: Sequence[Lane], watch: ProcessWatch) -> list[LaneStats]:
    """Run *lanes* side by side, then close them.

    The memory baseline is taken once every lane has warmed up, and memory is
    measured again when every lane has finished, before anything is closed.
    """
    polls = min(lane.target_polls for lane in lanes)
    warm_at = max(1, min(lanes[0].config.recovery_every, polls // 5))

    async def warm_when_ready() -> None:
        while any(lane.stats.polls < warm_at for lane in lanes):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        watch.warm()

    warm = asyncio.create_task(warm_when_ready())
    try:
        stats = list(await asyncio.gather(*(lane.run() for lane in lanes)))
        watch.memory()
    finally:
        warm.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warm
        for lane in lanes:
            await lane.close()
    return stats


async def run_client_soak(config: SoakConfig) -> tuple[list[LaneStats], ProcessStats]:
    """Run the client lanes of *config* in this process."""
    watch = ProcessWatch("client")
    watch.start()
    lanes = await build_client_lanes(config)
    stats = await run_lanes(lanes, watch) if lanes else []
    return stats, await watch.finish()


class CoordinatorRun:
    """The coordinator lane, run through pytest in a subprocess.

    Its output goes to files, so that this process holds no descriptor for it
    while its own leaks are counted.
    """

    def __init__(self, config: SoakConfig, polls: int) -> None:
        """Start the subprocess."""
        self._tmp = tempfile.TemporaryDirectory(prefix="soak-")
        tmp = Path(self._tmp.name)
        self.report_path = tmp / "coordinator.json"
        self.run = HarnessRun(
            COORDINATOR_TEST,
            log=tmp / "pytest.log",
            env={
                ENV_POLLS: str(polls),
                ENV_RATE: str(config.fault_rate),
                ENV_SEED: str(config.seed),
                ENV_REPORT: str(self.report_path),
            },
            args=["--timeout=0", "-o", "addopts="],
        )

    def kill(self) -> None:
        """Stop the subprocess now."""
        self.run.kill()

    def wait(self) -> dict[str, Any]:
        """Wait for pytest; return the lane's report (or an ``error``)."""
        try:
            returncode = self.run.wait()
            if not self.report_path.exists():
                return {
                    "error": "the coordinator lane did not report "
                    f"(pytest exit {returncode})",
                    "output": self.run.output(),
                }
            report: dict[str, Any] = json.loads(
                self.report_path.read_text(encoding="utf-8")
            )
            report["pytest_exit"] = returncode
            if returncode:
                report["output"] = self.run.output()
            return report
        finally:
            self._tmp.cleanup()


def _coordinator_errors(report: dict[str, Any]) -> list[str]:
    """What went wrong in the coordinator's subprocess (nothing: empty)."""
    if "error" in report:
        return [report["error"], report.get("output", "")]
    if report.get("pytest_exit"):
        return [
            f"the coordinator test failed (exit {report['pytest_exit']}): "
            + report.get("output", "")
        ]
    return []


async def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Run every lane of *config*; return the summarised report."""
    started = time.monotonic()
    polls = config.lane_polls()
    coordinator: CoordinatorRun | None = None
    if "coordinator" in config.lanes:
        coordinator = CoordinatorRun(config, polls["coordinator"])
    try:
        lanes, process = await run_client_soak(config)
    except BaseException:
        if coordinator is not None:
            coordinator.kill()
            await asyncio.to_thread(coordinator.wait)
        raise
    lane_dicts = [lane.as_dict() for lane in lanes]
    processes = [process.as_dict()] if lanes else []
    errors: list[str] = []
    if coordinator is not None:
        report = await asyncio.to_thread(coordinator.wait)
        errors = _coordinator_errors(report)
        if "error" not in report:
            lane_dicts.extend(report["lanes"])
            processes.extend(report["processes"])
    return summarise(
        config,
        lane_dicts,
        processes,
        seconds=time.monotonic() - started,
        errors=errors,
    )
