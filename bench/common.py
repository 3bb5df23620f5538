"""Shared pieces of the benchmark: configuration, statistics, machine facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
import os
from pathlib import Path
import platform
import statistics
import sys
from typing import Any

from custom_components.active_balancer.protocol.link import LinkStats

ROOT = Path(__file__).resolve().parent.parent
"""The repository root."""

BITS_PER_BYTE = 10
"""8N1: a start bit, eight data bits, a stop bit."""


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What one run of the benchmark measures, and how often."""

    baudrate: int = 9600
    turnaround: float = 0.010
    """Seconds the simulated device waits before each reply."""
    rounds: int = 15
    """Steady-state polls measured per configuration (the median is reported)."""
    cell_counts: tuple[int, ...] = (4, 16, 24)
    bus_sizes: tuple[int, ...] = (1, 8, 15)
    bus_cells: int = 16
    bus_rounds: int = 5
    ble_devices: int = 50
    ble_rounds: int = 5
    decode_iterations: int = 10000
    ha_rounds: int = 30
    write_rounds: int = 8
    peer_rounds: int = 5
    peer_all_rounds: int = 2
    peers: bool = True
    smoke: bool = False

    @property
    def byte_time(self) -> float:
        """Seconds one byte takes on the line."""
        return BITS_PER_BYTE / self.baudrate

    def as_dict(self) -> dict[str, Any]:
        """The configuration as JSON-friendly data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        """The configuration :meth:`as_dict` returned (lists back to tuples)."""
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in data.items()
        }
        return cls(**values)


SMOKE = BenchConfig(
    baudrate=115200,
    turnaround=0.001,
    rounds=3,
    cell_counts=(4, 24),
    bus_sizes=(1, 3),
    bus_rounds=2,
    ble_devices=3,
    ble_rounds=2,
    decode_iterations=50,
    ha_rounds=4,
    write_rounds=2,
    peers=False,
    smoke=True,
)
"""A run of seconds that keeps every part working (CI); timings mean nothing."""


@dataclass(frozen=True, slots=True)
class Traffic:
    """What went over a line between two snapshots of its counters."""

    requests: int
    bytes_out: int
    bytes_in: int

    @classmethod
    def between(cls, before: LinkStats, after: LinkStats) -> Traffic:
        """Traffic from *before* to *after* (snapshots of one bus's stats)."""
        return cls(
            after.requests - before.requests,
            after.bytes_out - before.bytes_out,
            after.bytes_in - before.bytes_in,
        )

    def wire_limit(self, config: BenchConfig) -> float:
        """The physical minimum: every byte's wire time plus each turnaround."""
        return (
            self.bytes_out + self.bytes_in
        ) * config.byte_time + self.requests * config.turnaround


def snapshot(stats: LinkStats) -> LinkStats:
    """A copy of *stats* (the bus keeps counting into the original)."""
    return LinkStats(**asdict(stats))


def median(values: Sequence[float]) -> float:
    """The median of *values* (0 when empty)."""
    return statistics.median(values) if values else 0.0


def mode(values: Sequence[int]) -> int:
    """The most frequent of *values* (the steady-state count)."""
    return statistics.mode(values) if values else 0


def ms(seconds: float) -> float:
    """*seconds* in milliseconds, rounded for the report."""
    return round(seconds * 1000, 3)


def machine_info() -> dict[str, Any]:
    """What machine the benchmark ran on."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ha_version = version("homeassistant")
    except PackageNotFoundError:  # pragma: no cover - the harness is installed
        ha_version = "not installed"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "homeassistant": ha_version,
    }
