"""A lane: one balancer polled under faults with writes alongside.

:class:`Lane` holds everything the kinds of lane share (the fault schedule,
calibration, recoveries, the write bookkeeping and the checks against what
the device received); :mod:`.client_lanes` and :mod:`.coordinator_lane`
say how a lane polls and writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
import random
import time

from custom_components.active_balancer.protocol import Bus, Setting, Settings, Variant
from custom_components.active_balancer.protocol.codec import Request
from custom_components.active_balancer.protocol.frames import Frame
from custom_components.active_balancer.protocol.registers import MODBUS_TABLES
from custom_components.active_balancer.protocol.rules import RULES

from .config import LOGGER, SAMPLES, LaneStats, SoakConfig
from .faults import CountingFaults, FaultShaker, SoakBalancer
from .writes import device_rule_violations, random_value


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
        if len(self.stats.unhandled_samples) < SAMPLES:
            self.stats.unhandled_samples.append(f"{type(err).__name__}: {err}")
        LOGGER.error("unhandled in %s", self.stats.lane, exc_info=err)

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
            LOGGER.error(
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
            LOGGER.error(
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
                LOGGER.warning(
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
                LOGGER.error(
                    "%s: write outside the allow-list: %s", self.stats.lane, write
                )
            elif (write.register, write.value) not in self.requested:
                self.stats.device_writes_unrequested += 1
                LOGGER.error("%s: write nobody asked for: %s", self.stats.lane, write)
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
                LOGGER.warning("%s: a poll without faults failed", stats.lane)
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


def tap_bus(bus: Bus, lane: Lane) -> Callable[[], None]:
    """Check every answer the bus hands out against what the device sent.

    Returns the function that stops the checking. The device's write count
    is read as the answer is handed out, under the bus's lock: the device
    takes requests in order and nothing else goes out before the check, so a
    reply produced for this very exchange carries at least that count.
    """

    def check(request: Request, frames: tuple[Frame, ...]) -> None:
        epoch = lane.balancer.write_epoch
        for frame in frames:
            problem = lane.balancer.check_reply(request, frame, epoch)
            if problem == "stale":
                lane.stats.stale_replies_accepted += 1
                LOGGER.error(
                    "%s: %s taken as the answer to %s",
                    lane.stats.lane,
                    frame.raw.hex(),
                    request.frame.hex(),
                )
            elif problem == "unknown":
                lane.stats.unknown_replies_accepted += 1

    return bus.add_frame_observer(check)


def link_stats(bus: Bus) -> dict[str, int]:
    """The bus's counters, by name."""
    stats = bus.stats
    return {name: getattr(stats, name) for name in stats.__slots__}
