"""Process-level checks: leaked tasks and descriptors, memory, unhandled errors."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path
import tracemalloc
from typing import Any

from .config import LOGGER, ROOT, SAMPLES, ProcessStats


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return 0


def _rss() -> int:
    try:
        with Path("/proc/self/statm").open(encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


_EXCLUDED_FROM_MEMORY = (
    tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__),
    tracemalloc.Filter(
        inclusive=False, filename_pattern="*/balancer_tools/simulator/*"
    ),
    tracemalloc.Filter(inclusive=False, filename_pattern=f"{ROOT}/reliability/*"),
    tracemalloc.Filter(inclusive=False, filename_pattern=f"{ROOT}/tests/*"),
    tracemalloc.Filter(inclusive=False, filename_pattern="<frozen importlib*"),
    tracemalloc.Filter(inclusive=False, filename_pattern="*/linecache.py"),
    tracemalloc.Filter(inclusive=False, filename_pattern="*/logging/__init__.py"),
)
"""Test doubles and the soak's own bookkeeping are not the integration's memory."""


class _ErrorCounter(logging.Handler):
    """Counts log records that carry a traceback."""

    def __init__(self, stats: ProcessStats) -> None:
        super().__init__(logging.ERROR)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.name != LOGGER.name:
            self.stats.logged_exceptions += 1
            if len(self.stats.samples) < SAMPLES:
                self.stats.samples.append(f"{record.name}: {record.getMessage()}")


class ProcessWatch:
    """Measures tasks, descriptors, memory and unhandled errors of this process."""

    def __init__(self, name: str) -> None:
        """Prepare; :meth:`start` takes the first measurements."""
        self.stats = ProcessStats(name=name)
        self._handler = _ErrorCounter(self.stats)
        self._snapshot: tracemalloc.Snapshot | None = None
        self._rss = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._old_handler: Any = None
        self._started_tracing = False

    def start(self) -> None:
        """Count tasks and descriptors now; catch loop errors from now on."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.stats.tasks_before = len(asyncio.all_tasks(loop))
        self.stats.fds_before = _open_fds()
        self._old_handler = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            self.stats.loop_errors += 1
            if len(self.stats.samples) < SAMPLES:
                self.stats.samples.append(str(context.get("message")))
            if self._old_handler is not None:
                self._old_handler(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        logging.getLogger().addHandler(self._handler)
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
            self._started_tracing = True

    def warm(self) -> None:
        """The memory baseline: taken once every lane has run for a while."""
        gc.collect()
        self._snapshot = tracemalloc.take_snapshot().filter_traces(
            _EXCLUDED_FROM_MEMORY
        )
        self._rss = _rss()

    def memory(self) -> None:
        """Measure memory growth since :meth:`warm` (before closing anything)."""
        gc.collect()
        if self._snapshot is None:
            return
        now = tracemalloc.take_snapshot().filter_traces(_EXCLUDED_FROM_MEMORY)
        diff = now.compare_to(self._snapshot, "lineno")
        self.stats.traced_memory_growth = sum(stat.size_diff for stat in diff)
        self.stats.top_growth = [str(stat) for stat in diff[:5]]
        self.stats.rss_growth = _rss() - self._rss

    async def finish(self) -> ProcessStats:
        """Count what is left once everything is closed."""
        for _ in range(5):
            await asyncio.sleep(0.02)
        gc.collect()
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        self.stats.tasks_after = len(
            [task for task in asyncio.all_tasks(loop) if task is not current]
        ) + (1 if current is not None else 0)
        self.stats.fds_after = _open_fds()
        logging.getLogger().removeHandler(self._handler)
        loop.set_exception_handler(self._old_handler)
        if self._started_tracing:
            tracemalloc.stop()
        return self.stats
