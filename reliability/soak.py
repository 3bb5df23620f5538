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
"""

# The faults and writes are drawn with `random` on purpose: repeatable, not secret.
# ruff: noqa: S311

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
import contextlib
import contextvars
from dataclasses import dataclass, field
import gc
import json
import logging
import os
from pathlib import Path
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

from custom_components.active_balancer.const import MIN_POLL_INTERVAL
from custom_components.active_balancer.protocol import (
    BalancerClient,
    BalancerError,
    Bus,
    OutOfRange,
    Setting,
    Settings,
    Variant,
)
from custom_components.active_balancer.protocol.ble import BleLink
from custom_components.active_balancer.protocol.codec import Request
from custom_components.active_balancer.protocol.frames import Frame
from custom_components.active_balancer.protocol.model import NEVER_SLEEP, Chemistry
from custom_components.active_balancer.protocol.registers import MODBUS_TABLES
from custom_components.active_balancer.protocol.rules import RULES
from custom_components.active_balancer.protocol.serial import SerialLink
from custom_components.active_balancer.protocol.virtual import (
    FAULT_KINDS,
    FakeConnector,
    Faults,
    PtyServer,
    Reply,
    TcpServer,
    VirtualBalancer,
    VirtualServer,
    fake_connector,
    fake_device,
)
from custom_components.active_balancer.protocol.virtual.servers import (
    HangUp,
    Line,
    Sender,
)

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

    from custom_components.active_balancer.coordinator import BalancerCoordinator

ROOT = Path(__file__).resolve().parent.parent
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
_SAMPLES = 5
"""Unhandled exceptions kept as text in the report."""
_ORIGIN_HORIZON = 2.0
"""Seconds a reply is remembered to recognise it when it arrives late."""

_LOGGER = logging.getLogger(__name__)


# --- configuration and report -------------------------------------------------


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


# --- fault injection ----------------------------------------------------------


class CountingFaults(Faults):
    """:class:`Faults` that counts the faults it decides."""

    counts: Counter[str]

    def __post_init__(self) -> None:
        """Seed and start counting."""
        super().__post_init__()
        self.counts = Counter()

    def decide(self) -> frozenset[str]:
        """Decide and count."""
        kinds = super().decide()
        self.counts.update(kinds)
        return kinds


class FaultShaker:
    """Turns every fault knob on and off at random, poll by poll."""

    def __init__(
        self,
        faults: CountingFaults,
        rate: float,
        rng: random.Random,
        *,
        min_delay: float,
        max_delay: float,
        chunking: bool,
    ) -> None:
        """Shake *faults* at *rate*."""
        self.faults = faults
        self.rate = rate
        self.rng = rng
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.chunking = chunking
        self.active = False
        self._silent_left = 0

    def start(self) -> None:
        """Every per-reply fault fires at the rate from now on."""
        for kind in FAULT_KINDS:
            setattr(self.faults, kind, self.rate)
        self.active = True

    def stop(self) -> None:
        """No fault from now on (a chunked line stays chunked: that is normal)."""
        self.faults.clear()
        self._silent_left = 0
        self.active = False

    def before_poll(self) -> None:
        """Draw the spells and knobs of the next poll."""
        if not self.active:
            return
        faults, rng = self.faults, self.rng
        if self._silent_left:
            self._silent_left -= 1
            faults.silent = self._silent_left > 0
        elif rng.random() < self.rate:
            faults.silent = True
            self._silent_left = rng.randint(1, 2)
            faults.counts["silent_spell"] += 1
        if self.chunking and rng.random() < self.rate:
            faults.chunk_size = rng.choice((None, *range(2, 20)))
            faults.counts["chunk_size_change"] += 1
        faults.delay_seconds = rng.uniform(self.min_delay, self.max_delay)
        faults.disconnect_mid_frame = rng.random() < 0.5  # noqa: PLR2004


def _chunked(send: Sender, faults: Faults) -> Sender:
    """Send in pieces of ``faults.chunk_size`` bytes, each its own write."""

    async def send_chunks(data: bytes) -> None:
        size = faults.chunk_size
        if not size:
            await send(data)
            return
        for start in range(0, len(data), size):
            await send(data[start : start + size])
            await asyncio.sleep(0)

    return send_chunks


class ChunkingTcpServer(TcpServer):
    """A loopback gateway that honours the balancer's ``chunk_size`` knob."""

    def _line(self, send: Sender, hangup: HangUp) -> Line:
        return super()._line(_chunked(send, self.balancers[0].faults), hangup)


class ChunkingPtyServer(PtyServer):
    """A pseudo-terminal that honours the balancer's ``chunk_size`` knob."""

    def _line(self, send: Sender, hangup: HangUp) -> Line:
        return super()._line(_chunked(send, self.balancers[0].faults), hangup)


class SoakBalancer(VirtualBalancer):
    """A virtual balancer that remembers which request produced each reply.

    A reply taken by the client is then checked: it must have been produced
    by the very request it was taken for, and not before a write that came
    between (a late reply must never answer another request).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the balancer."""
        super().__init__(*args, **kwargs)
        self.origins: dict[bytes, tuple[float, dict[bytes, int]]] = {}
        """Reply frame -> (last sent, {request frame: write count then})."""
        self._answers = 0

    @property
    def write_epoch(self) -> int:
        """Writes received so far."""
        return len(self.writes)

    def answer(self, request: bytes | bytearray) -> Reply | None:
        """Answer, and remember where the reply frames came from."""
        reply = super().answer(request)
        if reply is None:
            return None
        now = time.monotonic()
        epoch = self.write_epoch
        key = bytes(request)
        for frame in reply.frames:
            _, sources = self.origins.get(frame, (now, {}))
            sources[key] = max(sources.get(key, epoch), epoch)
            self.origins[frame] = (now, sources)
        self._answers += 1
        if self._answers % 200 == 0:
            horizon = now - _ORIGIN_HORIZON
            for frame in [f for f, (t, _) in self.origins.items() if t < horizon]:
                del self.origins[frame]
        return reply

    def check_reply(self, request: Request, frame: Frame, epoch: int) -> str | None:
        """``None`` when *frame* answers *request*; else what is wrong with it."""
        origin = self.origins.get(frame.raw)
        if origin is None:
            return "unknown"
        produced = origin[1].get(request.frame)
        if produced is None or produced < epoch:
            return "stale"
        return None


# --- writes -------------------------------------------------------------------


def random_value(
    setting: Setting, settings: Settings, rng: random.Random
) -> float | bool:
    """A random value the rules allow for *setting*, given the *settings*."""
    if setting is Setting.BALANCER_ENABLED:
        return rng.random() < 0.5  # noqa: PLR2004
    if setting is Setting.SLEEP_TIME:
        # Long enough that the balancer never falls asleep between two polls.
        return NEVER_SLEEP if rng.random() < 0.3 else 10 * rng.randint(6, 720)  # noqa: PLR2004
    if setting is Setting.BALANCE_START_VOLTAGE:
        chemistry = settings.chemistry or Chemistry.LFP
        low, high = chemistry.voltage_range
        return rng.randint(round(low * 1000), round(high * 1000)) / 1000
    if setting is Setting.BALANCE_DELTA_VOLTAGE:
        return rng.randint(20, 100) / 1000
    if setting is Setting.CELL_OVERVOLTAGE_ALARM:
        under = settings.cell_undervoltage_alarm or 1.5
        return rng.randint(max(1800, round(under * 1000) + 10), 4500) / 1000
    if setting is Setting.CELL_UNDERVOLTAGE_ALARM:
        over = settings.cell_overvoltage_alarm or 4.2
        return rng.randint(1500, min(4200, round(over * 1000) - 10)) / 1000
    rule = RULES[setting]
    steps = round((rule.maximum - rule.minimum) / rule.step)
    return round(rule.minimum + rng.randint(0, steps) * rule.step, 6)


def device_rule_violations(balancer: VirtualBalancer) -> list[str]:
    """Rules of the manuals the device's settings break right now."""
    problems = []
    if balancer.cell_overvoltage_alarm <= balancer.cell_undervoltage_alarm:
        problems.append(
            f"over-voltage alarm {balancer.cell_overvoltage_alarm} V is not above "
            f"the under-voltage alarm {balancer.cell_undervoltage_alarm} V"
        )
    low, high = balancer.chemistry.voltage_range
    if not low - 1e-9 <= balancer.balance_start_voltage <= high + 1e-9:
        problems.append(f"start voltage {balancer.balance_start_voltage} V")
    if balancer.balance_delta_voltage < RULES[Setting.BALANCE_DELTA_VOLTAGE].minimum:
        problems.append(f"delta voltage {balancer.balance_delta_voltage} V")
    return problems


# --- lanes --------------------------------------------------------------------


class Lane:
    """Polls one balancer under faults with writes alongside; subclass per kind."""

    def __init__(
        self,
        *,
        name: str,
        transport: str,
        balancer: SoakBalancer,
        variant: Variant,
        polls: int,
        config: SoakConfig,
        rng: random.Random,
    ) -> None:
        """Prepare the lane."""
        self.config = config
        self.balancer = balancer
        self.variant = variant
        self.table = MODBUS_TABLES[variant]
        self.target_polls = polls
        self.rng = rng
        assert isinstance(balancer.faults, CountingFaults)
        self.faults: CountingFaults = balancer.faults
        self.shaker = FaultShaker(
            self.faults,
            config.fault_rate,
            rng,
            min_delay=config.min_delay,
            max_delay=config.max_delay,
            chunking=True,
        )
        self.stats = LaneStats(lane=name, transport=transport, variant=variant.value)
        self.requested: set[tuple[int, int]] = set()
        self.allowed = {reg.register for reg in self.table.writable().values()}
        self._processed_writes = 0
        self._streak_start: float | None = None
        self._streak = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._last_confirmed: dict[int, tuple[int, int]] = {}
        """register -> (raw, request number) of the last confirmed write."""
        self._last_requested: dict[int, int] = {}
        """register -> number of the last write the device was asked for."""
        self._sent = 0

    # Subclasses provide these.

    async def poll_once(self) -> str | None:
        """Poll; ``None`` on success, else the failure kind."""
        raise NotImplementedError

    def writable(self) -> Sequence[Setting]:
        """Settings this lane writes."""
        raise NotImplementedError

    def settings(self) -> Settings:
        """The settings the integration last read."""
        raise NotImplementedError

    async def write_once(self, setting: Setting, value: float | bool) -> None:
        """Write through the lane's path; raises like that path does."""
        raise NotImplementedError

    def classify(self, err: Exception) -> str | None:
        """``"refused"``, ``"failed"`` or ``None`` (not handled: a bug)."""
        raise NotImplementedError

    @property
    def bus(self) -> Bus:
        """The bus the lane's client talks through."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close everything the lane opened."""
        raise NotImplementedError

    # Shared.

    def unhandled(self, err: BaseException) -> None:
        """Count an exception the integration should not have let out."""
        self.stats.unhandled_exceptions += 1
        if len(self.stats.unhandled_samples) < _SAMPLES:
            self.stats.unhandled_samples.append(f"{type(err).__name__}: {err}")
        _LOGGER.error("unhandled in %s", self.stats.lane, exc_info=err)

    def expected_raw(self, setting: Setting, value: float | bool) -> tuple[int, int]:
        """(register, raw value) a write of *value* must put on the device."""
        register = self.table.settings[setting]
        number = RULES[setting].check(setting, float(value))
        # Computed here, not with register.encode: an independent oracle (and
        # the soak's own bookkeeping stays out of the memory measurement).
        if register.never_raw is not None and round(number) == register.never_raw:
            return register.register, register.never_raw
        return register.register, round(number / register.scale) + register.offset

    def register_request(self, setting: Setting, value: float | bool) -> int:
        """Note a value the device is about to be asked for; return its number."""
        register, raw = self.expected_raw(setting, value)
        self.requested.add((register, raw))
        self._sent += 1
        self._last_requested[register] = self._sent
        return self._sent

    def verify_confirmed(
        self, setting: Setting, value: float | bool, number: int, since: int
    ) -> None:
        """Check the device right after a write was confirmed (no await before)."""
        stats = self.stats
        stats.writes_confirmed += 1
        register, raw = self.expected_raw(setting, value)
        actual = self.balancer.registers(self.variant, register, 1)[0]
        if actual != raw:
            stats.writes_silently_lost += 1
            _LOGGER.error(
                "%s: %s=%r confirmed but the device holds raw %d, not %d",
                stats.lane,
                setting.value,
                value,
                actual,
                raw,
            )
        if not any(
            write.register == register and write.value == raw
            for write in self.balancer.writes[since:]
        ):
            stats.writes_confirmed_without_device_record += 1
        if device_rule_violations(self.balancer):
            stats.device_rule_violations += 1
            _LOGGER.error(
                "%s: after %s=%r: %s",
                stats.lane,
                setting.value,
                value,
                device_rule_violations(self.balancer),
            )
        self._last_confirmed[register] = (raw, number)

    async def _write(self, setting: Setting, value: float | bool, clean: bool) -> None:
        stats = self.stats
        stats.writes_requested += 1
        try:
            await self.write_once(setting, value)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            kind = self.classify(err)
            if kind == "refused":
                stats.writes_refused += 1
            elif kind == "failed":
                stats.writes_reported_failed += 1
                stats.write_failures[type(err).__name__] += 1
            else:
                self.unhandled(err)
            if clean:
                stats.clean_write_failures += 1
                _LOGGER.warning(
                    "%s: clean write %s=%r: %s", stats.lane, setting, value, err
                )

    def _start_write(self) -> None:
        if len(self._pending) >= self.config.max_pending_writes:
            return
        count = 2 if self.rng.random() < self.config.pair_rate else 1
        if count == 2:  # noqa: PLR2004
            self.stats.concurrent_write_pairs += 1
        for _ in range(count):
            setting = self.rng.choice(self.writable())
            value = random_value(setting, self.settings(), self.rng)
            task = asyncio.create_task(self._write(setting, value, clean=False))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _account(self, failure: str | None, started: float) -> None:
        stats = self.stats
        stats.polls += 1
        if failure is None:
            if self._streak:
                stats.longest_unavailable_seconds = max(
                    stats.longest_unavailable_seconds,
                    time.monotonic() - (self._streak_start or started),
                )
            self._streak = 0
            self._streak_start = None
            return
        stats.failed_polls += 1
        stats.poll_failures[failure] += 1
        if not self._streak:
            self._streak_start = started
        self._streak += 1
        stats.longest_unavailable_streak = max(
            stats.longest_unavailable_streak, self._streak
        )

    async def _poll(self) -> bool:
        started = time.monotonic()
        try:
            failure = await self.poll_once()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.unhandled(err)
            failure = "unhandled"
        self._account(failure, started)
        self._check_device_writes()
        return failure is None

    def _check_device_writes(self) -> None:
        writes = self.balancer.writes
        for write in writes[self._processed_writes :]:
            self.stats.device_writes += 1
            if write.register not in self.allowed:
                self.stats.device_writes_outside_allow_list += 1
                _LOGGER.error(
                    "%s: write outside the allow-list: %s", self.stats.lane, write
                )
            elif (write.register, write.value) not in self.requested:
                self.stats.device_writes_unrequested += 1
                _LOGGER.error("%s: write nobody asked for: %s", self.stats.lane, write)
        self._processed_writes = len(writes)

    async def _recover(self) -> None:
        """Stop the faults; measure until a poll succeeds; then stay clean."""
        stats = self.stats
        self.shaker.stop()
        stopped = time.monotonic()
        stats.recoveries += 1
        attempt = 1
        while not await self._poll() and attempt <= 10:  # noqa: PLR2004
            attempt += 1
        stats.recovery_polls_max = max(stats.recovery_polls_max, attempt)
        stats.recovery_seconds_max = max(
            stats.recovery_seconds_max, time.monotonic() - stopped
        )
        if attempt > 1:
            stats.recovery_failures += 1
        for _ in range(self.config.clean_polls):
            if not await self._poll():
                stats.clean_poll_failures += 1
                _LOGGER.warning("%s: a poll without faults failed", stats.lane)
        setting = self.rng.choice(self.writable())
        value = random_value(setting, self.settings(), self.rng)
        stats.clean_writes += 1
        await self._write(setting, value, clean=True)

    async def _calibrate(self) -> None:
        """Scale the timings to this machine's speed, with the faults off."""
        config, stats, bus = self.config, self.stats, self.bus
        durations = []
        for _ in range(config.calibration_polls):
            started = time.monotonic()
            if await self.poll_once() is None:
                durations.append(time.monotonic() - started)
        durations.sort()
        typical = durations[int(0.9 * len(durations))] if durations else 0.0
        timeout = max(config.base_timeout, config.timeout_factor * typical)
        max_delay = max(config.max_delay, 3 * timeout)
        bus.link.base_timeout = timeout
        bus.late_window = max(config.late_window, 1.5 * max_delay)
        self.shaker.max_delay = max_delay
        stats.typical_poll = typical
        stats.answer_timeout = timeout
        stats.late_window = bus.late_window

    async def run(self) -> LaneStats:
        """Poll ``polls`` times under faults, with recoveries (does not close)."""
        started = time.monotonic()
        try:
            await self._calibrate()
            self.shaker.start()
            every = max(1, self.config.recovery_every)
            done = 0
            while done < self.target_polls:
                if done and done % every == 0:
                    await self._recover()
                    self.shaker.start()
                self.shaker.before_poll()
                if self.rng.random() < self.config.write_rate:
                    self._start_write()
                await self._poll()
                done += 1
            if self._pending:
                await asyncio.gather(*self._pending)
            await self._recover()
            self._final_checks()
        finally:
            self.shaker.stop()
            for task in self._pending:
                task.cancel()
            if self._pending:
                await asyncio.gather(*self._pending, return_exceptions=True)
            self.stats.faults_injected = self.faults.counts.copy()
            self.stats.seconds = time.monotonic() - started
        return self.stats

    def _final_checks(self) -> None:
        self._check_device_writes()
        for register, (raw, number) in self._last_confirmed.items():
            if self._last_requested.get(register) != number:
                continue  # asked for again later (maybe reported failed)
            actual = self.balancer.registers(self.variant, register, 1)[0]
            if actual != raw:
                self.stats.writes_overwritten_later += 1
        if device_rule_violations(self.balancer):
            self.stats.device_rule_violations += 1


class ClientLane(Lane):
    """The protocol client on its own, over a real transport."""

    def __init__(
        self,
        *,
        name: str,
        transport: str,
        balancer: SoakBalancer,
        client: BalancerClient,
        polls: int,
        config: SoakConfig,
        rng: random.Random,
        closers: Sequence[Callable[[], Awaitable[Any]]],
        server: VirtualServer | None = None,
    ) -> None:
        """Drive *client*."""
        assert client.requested_variant is not None
        super().__init__(
            name=name,
            transport=transport,
            balancer=balancer,
            variant=client.requested_variant,
            polls=polls,
            config=config,
            rng=rng,
        )
        self.client = client
        self._closers = closers
        self.server = server
        tap_bus(client.bus, self)

    async def poll_once(self) -> str | None:
        """Poll with the client."""
        if self.server is not None:
            await forget_closed_connections(self.server)
        try:
            await self.client.poll()
        except BalancerError as err:
            return type(err).__name__
        return None

    def writable(self) -> Sequence[Setting]:
        """Every setting the client can write on this variant."""
        return sorted(self.client.writable_settings())

    def settings(self) -> Settings:
        """The client's settings."""
        return self.client.settings

    async def write_once(self, setting: Setting, value: float | bool) -> None:
        """Write with the client and check the device at once."""
        number = self.register_request(setting, value)
        since = len(self.balancer.writes)
        await self.client.write(setting, value)
        self.verify_confirmed(setting, value, number, since)

    @property
    def bus(self) -> Bus:
        """The client's bus."""
        return self.client.bus

    def classify(self, err: Exception) -> str | None:
        """Rules refusals and protocol errors are reported; the rest is a bug."""
        if isinstance(err, OutOfRange):
            return "refused"
        if isinstance(err, BalancerError):
            return "failed"
        return None

    async def close(self) -> None:
        """Close the client and the line."""
        self.stats.link = _link_stats(self.client.bus)
        await self.client.close()
        for closer in self._closers:
            await closer()


def tap_bus(bus: Bus, lane: Lane) -> None:
    """Check every answer the bus hands out against what the device sent."""
    exchange = bus.exchange

    async def tapped(request: Request, **kwargs: Any) -> list[Frame]:
        epoch = lane.balancer.write_epoch
        frames = await exchange(request, **kwargs)
        for frame in frames:
            problem = lane.balancer.check_reply(request, frame, epoch)
            if problem == "stale":
                lane.stats.stale_replies_accepted += 1
                _LOGGER.error(
                    "%s: %s taken as the answer to %s",
                    lane.stats.lane,
                    frame.raw.hex(),
                    request.frame.hex(),
                )
            elif problem == "unknown":
                lane.stats.unknown_replies_accepted += 1
        return frames

    setattr(bus, "exchange", tapped)  # noqa: B010 - an instance-level tap


async def forget_closed_connections(server: VirtualServer) -> None:
    """Let the virtual gateway forget connections that were closed.

    It keeps them until it is closed itself (to wait for their pending
    replies then); over thousands of reconnects that is the test double's
    memory, not the integration's.
    """
    gone = getattr(server, "_gone", None)
    if not gone:
        return
    for connection in list(gone):
        await connection.wait_closed()
        gone.discard(connection)


def _link_stats(bus: Bus) -> dict[str, int]:
    stats = bus.stats
    return {name: getattr(stats, name) for name in stats.__slots__}


def soak_balancer(variant: Variant, seed: int) -> SoakBalancer:
    """A 16-cell LFP virtual balancer with counted faults (all off)."""
    return SoakBalancer(
        16,
        Chemistry.LFP,
        variants=(variant,),
        address=3 if variant is Variant.P81 else 1,
        faults=CountingFaults(seed=seed),
    )


async def client_lane(
    name: str, polls: int, config: SoakConfig, seed: int
) -> ClientLane:
    """Build a connected client lane (faults are still off)."""
    rng = random.Random(seed)
    closers: list[Callable[[], Awaitable[Any]]] = []
    if name == "ble":
        balancer = soak_balancer(Variant.D2, seed)
        connector = fake_connector(balancer)
        ble = BleLink(
            fake_device(), base_timeout=config.base_timeout, connector=connector
        )
        ble.byte_time = config.byte_time
        closers.append(connector.close)
        bus = Bus(ble, settle=config.settle, late_window=config.late_window)
        client = BalancerClient(bus, variant=Variant.D2)
        ble_lane = _BleClientLane(
            name=name,
            transport="ble",
            balancer=balancer,
            client=client,
            polls=polls,
            config=config,
            rng=rng,
            closers=closers,
        )
        ble_lane.connector = connector
        lane: ClientLane = ble_lane
    else:
        variant = Variant.P81 if name == "pty" else Variant.D2
        balancer = soak_balancer(variant, seed)
        server: VirtualServer = (
            ChunkingPtyServer(balancer)
            if name == "pty"
            else ChunkingTcpServer(balancer)
        )
        await server.start()
        closers.append(server.close)
        link = SerialLink(server.url, config.baudrate, base_timeout=config.base_timeout)
        link.byte_time = config.byte_time
        bus = Bus(link, settle=config.settle, late_window=config.late_window)
        client = BalancerClient(bus, variant=variant, address=balancer.address)
        lane = ClientLane(
            name=name,
            transport="pty" if name == "pty" else "socket",
            balancer=balancer,
            client=client,
            polls=polls,
            config=config,
            rng=rng,
            closers=closers,
            server=server,
        )
    try:
        await client.connect()
    except BaseException:
        await lane.close()
        raise
    return lane


class _BleClientLane(ClientLane):
    """Keeps the fake Bluetooth connector's bookkeeping bounded."""

    connector: FakeConnector

    async def poll_once(self) -> str | None:
        """Poll, then forget old fake connections and their logs."""
        result = await super().poll_once()
        clients = self.connector.clients
        if len(clients) > 1:
            del clients[:-1]
        for client in clients:
            client.written.clear()
            client.notifications.clear()
        return result


# --- the coordinator lane (inside the Home Assistant test harness) ------------

_WRITE_CONTEXT: contextvars.ContextVar[dict[str, bool]] = contextvars.ContextVar(
    "soak_write"
)


class CoordinatorLane(Lane):
    """The coordinator and the entities, polled and written like in a home."""

    def __init__(
        self,
        *,
        hass: HomeAssistant,
        coordinator: BalancerCoordinator,
        balancer: SoakBalancer,
        polls: int,
        config: SoakConfig,
        rng: random.Random,
        entities: Mapping[str, str],
        server: VirtualServer | None = None,
    ) -> None:
        """Drive *coordinator*; *entities* maps entity keys to entity ids."""
        client = coordinator.client
        assert client.variant is not None
        super().__init__(
            name="coordinator",
            transport="socket",
            balancer=balancer,
            variant=client.variant,
            polls=polls,
            config=config,
            rng=rng,
        )
        self.hass = hass
        self.coordinator = coordinator
        self.entities = dict(entities)
        self.server = server
        bus = client.bus
        bus.settle = config.settle
        bus.late_window = config.late_window
        bus.link.base_timeout = config.base_timeout
        bus.link.byte_time = config.byte_time
        tap_bus(bus, self)
        self._wrap_client_write()

    def _wrap_client_write(self) -> None:
        client = self.coordinator.client
        write = client.write

        async def checked(setting: Setting, value: float | bool) -> float:
            number = self.register_request(setting, value)
            since = len(self.balancer.writes)
            result = await write(setting, value)
            self.verify_confirmed(setting, value, number, since)
            context = _WRITE_CONTEXT.get(None)
            if context is not None:
                context["confirmed"] = True
            return result

        setattr(client, "write", checked)  # noqa: B010 - an instance-level tap

    async def poll_once(self) -> str | None:
        """One refresh of the coordinator."""
        from homeassistant.helpers.update_coordinator import (  # noqa: PLC0415
            UpdateFailed,
        )

        coordinator = self.coordinator
        if self.server is not None:
            await forget_closed_connections(self.server)
        await coordinator.async_refresh()
        if coordinator.last_update_success:
            return None
        err = coordinator.last_exception
        if not isinstance(err, UpdateFailed):
            self.unhandled(err or RuntimeError("refresh failed without an error"))
            return "unhandled"
        cause = err.__cause__
        return type(cause).__name__ if cause is not None else "UpdateFailed"

    def writable(self) -> Sequence[Setting]:
        """Every setting the client can write on this variant."""
        return sorted(self.coordinator.client.writable_settings())

    def settings(self) -> Settings:
        """The settings the coordinator shows."""
        return self.coordinator.client.settings

    async def write_once(self, setting: Setting, value: float | bool) -> None:
        """Write through the entity's action when it can, else the helper.

        Home Assistant skips an action on an unavailable entity without an
        error (the UI disables its controls), so while the balancer is
        unavailable the write goes to the coordinator's helper, the one an
        entity calls: it must refuse with a clear error.
        """
        hass = self.hass
        key = "balancer" if setting is Setting.BALANCER_ENABLED else setting.value
        entity_id = self.entities.get(key)
        context = {"confirmed": False}
        token = _WRITE_CONTEXT.set(context)
        try:
            if entity_id is None or not self._available(entity_id):
                await self.coordinator.async_write(setting, value)
            elif setting is Setting.BALANCER_ENABLED:
                await hass.services.async_call(
                    "switch",
                    "turn_on" if value else "turn_off",
                    {"entity_id": entity_id},
                    blocking=True,
                )
            else:
                await hass.services.async_call(
                    "number",
                    "set_value",
                    {"entity_id": entity_id, "value": value},
                    blocking=True,
                )
        finally:
            _WRITE_CONTEXT.reset(token)
        if context["confirmed"]:
            return
        if entity_id is not None and not self._available(entity_id):
            # It became unavailable on the way: Home Assistant skipped it.
            self.stats.writes_skipped_unavailable += 1
            return
        # The action succeeded although the balancer did not confirm.
        self.stats.writes_silently_lost += 1
        _LOGGER.error(
            "%s: %s=%r succeeded without a confirmed write",
            self.stats.lane,
            setting.value,
            value,
        )

    def _available(self, entity_id: str) -> bool:
        state = self.hass.states.get(entity_id)
        return state is not None and state.state != "unavailable"

    @property
    def bus(self) -> Bus:
        """The coordinator's client's bus."""
        return self.coordinator.client.bus

    def classify(self, err: Exception) -> str | None:
        """Validation errors are refusals, other HA errors are reports."""
        from homeassistant.exceptions import (  # noqa: PLC0415
            HomeAssistantError,
            ServiceValidationError,
        )

        if isinstance(err, ServiceValidationError):
            return "refused"
        if isinstance(err, HomeAssistantError):
            return "failed"
        return None

    async def close(self) -> None:
        """Nothing to close: the test unloads the entry."""
        self.stats.link = _link_stats(self.coordinator.client.bus)


async def serve_coordinator_balancer(seed: int) -> tuple[SoakBalancer, VirtualServer]:
    """The virtual balancer of the coordinator lane, on a loopback gateway."""
    balancer = soak_balancer(Variant.D2, seed)
    server = ChunkingTcpServer(balancer)
    await server.start()
    return balancer, server


# --- process-level checks -----------------------------------------------------


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
    tracemalloc.Filter(inclusive=False, filename_pattern="*/protocol/virtual/*"),
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
        if record.exc_info and record.name != __name__:
            self.stats.logged_exceptions += 1
            if len(self.stats.samples) < _SAMPLES:
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
            if len(self.stats.samples) < _SAMPLES:
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


# --- running ------------------------------------------------------------------


async def _run_lanes(lanes: Sequence[Lane], watch: ProcessWatch) -> list[LaneStats]:
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


async def build_client_lanes(config: SoakConfig) -> list[Lane]:
    """Connect the client lanes of *config* (faults still off)."""
    polls = config.lane_polls()
    names = [name for name in config.lanes if name in CLIENT_LANES]
    lanes: list[Lane] = []
    try:
        for index, name in enumerate(names):
            lanes.append(
                await client_lane(name, polls[name], config, config.seed + index)
            )
    except BaseException:
        for lane in lanes:
            await lane.close()
        raise
    return lanes


async def run_client_soak(config: SoakConfig) -> tuple[list[LaneStats], ProcessStats]:
    """Run the client lanes of *config* in this process."""
    watch = ProcessWatch("client")
    watch.start()
    lanes = await build_client_lanes(config)
    stats = await _run_lanes(lanes, watch) if lanes else []
    return stats, await watch.finish()


async def run_coordinator_soak(
    *,
    hass: HomeAssistant,
    coordinator: BalancerCoordinator,
    balancer: SoakBalancer,
    config: SoakConfig,
    polls: int,
    entities: Mapping[str, str],
    server: VirtualServer | None = None,
    with_client_lanes: bool = False,
) -> tuple[list[LaneStats], ProcessStats]:
    """Run the coordinator lane (inside the test harness, entry set up).

    With *with_client_lanes*, the client lanes of *config* run beside it in
    the same event loop (the CI run: one process, all four lanes at once).
    """
    watch = ProcessWatch("coordinator" if not with_client_lanes else "all lanes")
    watch.start()
    lanes: list[Lane] = [
        CoordinatorLane(
            hass=hass,
            coordinator=coordinator,
            balancer=balancer,
            polls=polls,
            config=config,
            rng=random.Random(config.seed + 100),
            entities=entities,
            server=server,
        )
    ]
    if with_client_lanes:
        lanes.extend(await build_client_lanes(config))
    # Every failed refresh is logged with the exception as an argument, and
    # the test harness keeps every log record (with the exception and its
    # frames) until the test ends: the harness's memory, not the
    # integration's. An exception that is not UpdateFailed is still counted
    # (see CoordinatorLane.poll_once).
    coordinator_logger = logging.getLogger(coordinator.logger.name)
    level = coordinator_logger.level
    coordinator_logger.setLevel(logging.CRITICAL)
    try:
        stats = await _run_lanes(lanes, watch)
    finally:
        coordinator_logger.setLevel(level)
    await hass.async_block_till_done()
    return stats, await watch.finish()


def lanes_report(stats: Sequence[LaneStats], process: ProcessStats) -> dict[str, Any]:
    """Lanes and their process as written to ``SOAK_REPORT``."""
    return {
        "lanes": [lane.as_dict() for lane in stats],
        "processes": [process.as_dict()],
    }


def writable_entities(hass: HomeAssistant, entry_id: str) -> dict[str, str]:
    """Entity keys -> entity ids of the enabled number and switch entities."""
    from homeassistant.helpers import entity_registry as er  # noqa: PLC0415

    registry = er.async_get(hass)
    entities: dict[str, str] = {}
    for entity in er.async_entries_for_config_entry(registry, entry_id):
        if entity.disabled_by is None and entity.domain in ("number", "switch"):
            key = (entity.unique_id or "").rsplit("-", 1)[-1]
            entities[key] = entity.entity_id
    return entities


def config_from_env(environ: Mapping[str, str]) -> tuple[SoakConfig, int]:
    """The coordinator lane's configuration and polls, from ``SOAK_*``.

    Without them: the coordinator's share of the CI run.
    """
    config = SoakConfig()
    config.fault_rate = float(environ.get(ENV_RATE, config.fault_rate))
    config.seed = int(environ.get(ENV_SEED, config.seed))
    polls = int(environ.get(ENV_POLLS, config.lane_polls()["coordinator"]))
    return config, polls


def failed_targets(report: Mapping[str, Any]) -> dict[str, Any]:
    """The targets a report misses (empty when it passed)."""
    return {name: t for name, t in report["targets"].items() if not t["ok"]}


def clean_environment() -> dict[str, str]:
    """This process's environment, without coverage's subprocess hooks.

    Tracing makes the event loop slower, which the soak would see as a slow
    line (and the lanes' code is covered by the tests).
    """
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COV_CORE_", "COVERAGE_"))
    }


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
        self.output_path = tmp / "pytest.log"
        env = clean_environment()
        env.update(
            {
                ENV_POLLS: str(polls),
                ENV_RATE: str(config.fault_rate),
                ENV_SEED: str(config.seed),
                ENV_REPORT: str(self.report_path),
            }
        )
        command = [
            sys.executable,
            "-m",
            "pytest",
            COORDINATOR_TEST,
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout=0",
            "-o",
            "addopts=",
        ]
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our test
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> dict[str, Any]:
        """Wait for pytest; return the lane's report (or an ``error``)."""
        try:
            returncode = self.process.wait()
            output = self.output_path.read_text(encoding="utf-8", errors="replace")
            if not self.report_path.exists():
                return {
                    "error": "the coordinator lane did not report "
                    f"(pytest exit {returncode})",
                    "output": output[-4000:],
                }
            report: dict[str, Any] = json.loads(
                self.report_path.read_text(encoding="utf-8")
            )
            report["pytest_exit"] = returncode
            if returncode:
                report["output"] = output[-4000:]
            return report
        finally:
            self._tmp.cleanup()


SUMMED = (
    "polls",
    "failed_polls",
    "unhandled_exceptions",
    "writes_requested",
    "writes_confirmed",
    "writes_reported_failed",
    "writes_refused",
    "writes_silently_lost",
    "writes_confirmed_without_device_record",
    "writes_overwritten_later",
    "writes_skipped_unavailable",
    "clean_writes",
    "clean_write_failures",
    "concurrent_write_pairs",
    "device_writes",
    "device_writes_outside_allow_list",
    "device_writes_unrequested",
    "device_rule_violations",
    "stale_replies_accepted",
    "unknown_replies_accepted",
    "recoveries",
    "recovery_failures",
    "clean_poll_failures",
)
MAXED = (
    "longest_unavailable_streak",
    "longest_unavailable_seconds",
    "recovery_polls_max",
    "recovery_seconds_max",
)


def summarise(
    config: SoakConfig,
    lanes: Sequence[Mapping[str, Any]],
    processes: Sequence[Mapping[str, Any]],
    *,
    seconds: float,
    errors: Sequence[str] = (),
) -> dict[str, Any]:
    """Totals, targets and the verdict of a soak run."""
    totals: dict[str, Any] = {
        name: sum(lane[name] for lane in lanes) for name in SUMMED
    }
    for name in MAXED:
        totals[name] = max((lane[name] for lane in lanes), default=0)
    totals["unhandled_exceptions"] += sum(
        p["loop_errors"] + p["logged_exceptions"] for p in processes
    )
    totals["leaked_tasks"] = sum(p["leaked_tasks"] for p in processes)
    totals["leaked_fds"] = sum(p["leaked_fds"] for p in processes)
    totals["memory_growth_max"] = max(
        (p["traced_memory_growth"] for p in processes), default=0
    )
    faults: Counter[str] = Counter()
    for lane in lanes:
        faults.update(lane["faults_injected"])
    totals["faults_injected"] = dict(sorted(faults.items()))

    def target(value: float, limit: float, *, below: bool = False) -> dict[str, Any]:
        ok = value < limit if below else value <= limit
        return {"value": value, "limit": limit, "ok": ok}

    targets = {
        "unhandled_exceptions": target(totals["unhandled_exceptions"], 0),
        "writes_silently_lost": target(
            totals["writes_silently_lost"] + totals["writes_overwritten_later"], 0
        ),
        "device_writes_outside_allow_list": target(
            totals["device_writes_outside_allow_list"], 0
        ),
        "device_writes_unrequested": target(totals["device_writes_unrequested"], 0),
        "recovery_failures": target(totals["recovery_failures"], 0),
        "recovery_seconds_max": target(
            totals["recovery_seconds_max"], RECOVERY_LIMIT, below=True
        ),
        "memory_growth_bytes": target(
            totals["memory_growth_max"], MEMORY_LIMIT, below=True
        ),
        "leaked_tasks": target(totals["leaked_tasks"], 0),
        "leaked_fds": target(totals["leaked_fds"], 0),
        "stale_replies_accepted": target(
            totals["stale_replies_accepted"] + totals["unknown_replies_accepted"], 0
        ),
        "clean_failures": target(
            totals["clean_write_failures"] + totals["clean_poll_failures"], 0
        ),
        "device_rule_violations": target(totals["device_rule_violations"], 0),
    }
    return {
        "config": {
            "polls": config.polls,
            "fault_rate": config.fault_rate,
            "seed": config.seed,
            "lanes": list(config.lanes),
            "base_timeout": config.base_timeout,
            "settle": config.settle,
            "late_window": config.late_window,
            "delay_range": [config.min_delay, config.max_delay],
            "timeout_factor": config.timeout_factor,
            "write_rate": config.write_rate,
            "pair_rate": config.pair_rate,
            "recovery_every": config.recovery_every,
        },
        "seconds": round(seconds, 2),
        "totals": totals,
        "targets": targets,
        "errors": list(errors),
        "passed": not errors and all(t["ok"] for t in targets.values()),
        "lanes": list(lanes),
        "processes": list(processes),
    }


async def _main_async(config: SoakConfig) -> dict[str, Any]:
    started = time.monotonic()
    polls = config.lane_polls()
    errors: list[str] = []
    coordinator: CoordinatorRun | None = None
    if "coordinator" in config.lanes:
        coordinator = CoordinatorRun(config, polls["coordinator"])
    try:
        lanes, process = await run_client_soak(config)
    except BaseException:
        if coordinator is not None:
            coordinator.process.kill()
            await asyncio.to_thread(coordinator.wait)
        raise
    lane_dicts = [lane.as_dict() for lane in lanes]
    processes = [process.as_dict()] if lanes else []
    if coordinator is not None:
        report = await asyncio.to_thread(coordinator.wait)
        if "error" in report:
            errors.append(report["error"])
            errors.append(report.get("output", ""))
        else:
            lane_dicts.extend(report["lanes"])
            processes.extend(report["processes"])
            if report.get("pytest_exit"):
                errors.append(
                    f"the coordinator test failed (exit {report['pytest_exit']}): "
                    + report.get("output", "")
                )
    return summarise(
        config,
        lane_dicts,
        processes,
        seconds=time.monotonic() - started,
        errors=errors,
    )


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        msg = f"a rate is between 0 and 1, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _lanes(text: str) -> tuple[str, ...]:
    lanes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [lane for lane in lanes if lane not in LANES]
    if unknown or not lanes:
        msg = f"lanes are a comma-separated subset of {','.join(LANES)}"
        raise argparse.ArgumentTypeError(msg)
    return lanes


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/soak``."""
    parser = argparse.ArgumentParser(
        prog="soak",
        description=(
            "Poll virtual balancers under random faults with concurrent writes "
            "and check the reliability targets (see RELIABILITY.md)."
        ),
    )
    parser.add_argument("--polls", type=int, default=2000, help="polls over all lanes")
    parser.add_argument(
        "--fault-rate", type=_rate, default=0.05, help="rate of every fault knob"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--lanes", type=_lanes, default=LANES, help=f"subset of {','.join(LANES)}"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument(
        "--verbose", action="store_true", help="log what goes wrong to stderr"
    )
    return parser


def format_summary(report: Mapping[str, Any]) -> str:
    """The report as a few readable lines."""
    totals = report["totals"]
    lines = [
        f"soak: {totals['polls']} polls in {report['seconds']} s, "
        f"{totals['failed_polls']} failed; longest unavailable streak "
        f"{totals['longest_unavailable_streak']} polls",
        f"writes: {totals['writes_requested']} requested, "
        f"{totals['writes_confirmed']} confirmed, "
        f"{totals['writes_reported_failed']} reported failed, "
        f"{totals['writes_silently_lost']} silently lost",
    ]
    for name, target in report["targets"].items():
        mark = "ok  " if target["ok"] else "FAIL"
        lines.append(f"  {mark} {name}: {target['value']} (limit {target['limit']})")
    lines.extend(f"  error: {error}" for error in report["errors"] if error)
    lines.append("soak: PASSED" if report["passed"] else "soak: FAILED")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; exit 0 when every target is met."""
    args = build_parser().parse_args(argv)
    if args.polls < len(args.lanes):
        build_parser().error("--polls must be at least the number of lanes")
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    config = SoakConfig(
        polls=args.polls, fault_rate=args.fault_rate, seed=args.seed, lanes=args.lanes
    )
    report = asyncio.run(_main_async(config))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_summary(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
