"""High-level client: detect the variant, poll, read settings, write safely."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
import dataclasses
import logging
from typing import Any, TypeVar

from . import codec
from .errors import (
    BalancerError,
    BalancerTimeout,
    ChecksumError,
    NotSupported,
    OutOfRange,
    UnexpectedReply,
    WriteNotConfirmed,
)
from .frames import (
    A5_BLE_HOST,
    A5_HOST_ADDRESSES,
    A5_SERIAL_HOST,
    MAX_READ_REGISTERS,
    A5Frame,
    Frame,
)
from .link import Bus, LinkKind
from .model import DeviceInfo, Reading, Setting, Settings, Variant
from .plan import (
    OPTIONAL_LIVE_PARTS,
    PART_BALANCE_CURRENT,
    PART_BALANCING_CELLS,
    PART_LIVE,
    best_plan,
    fallback_limit,
    line_cost,
    live_registers,
    parts_of,
    split,
)
from .registers import (
    A5_PARTS,
    A5_SETTING_PARTS,
    A5_TABLE,
    D2_TABLE,
    MODBUS_TABLES,
    UNAVAILABLE,
    Block,
    ModbusTable,
    SettingRegister,
)
from .rules import RULES, validate

_T = TypeVar("_T")

_LOGGER = logging.getLogger(__name__)

DEFAULT_SETTINGS_EVERY = 10
"""Polls between two settings reads in steady state."""

# Some firmware may not accept the long D2 live read; these two reads cover
# the same registers and are used when the one-request read gets no answer
# (the read-length rule of plan.fallback_limit, shared with p81).
D2_COMPAT_BLOCKS = split(D2_TABLE.live.block, D2_TABLE.fallback_max_read)

VERSION_PARTS = frozenset({"versions", "software_version", "hardware_version"})

MAX_REPLANS = 4
"""A live read is planned again at most this often (fallback, optional parts)."""

MISS_TIMEOUT = "no answer"
MISS_REFUSED = "refused"
MISS_FILL = "fill"
MISS_UNEXPECTED = "unexpected reply"


class BalancerClient:
    """Talks to one balancer on a :class:`~.link.Bus`.

    ``variant=None`` detects the variant on :meth:`connect` (D2, then p81, then
    A5). ``address`` is the RS485 board number used by p81 (1..15).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        variant: Variant | None = None,
        address: int = 1,
        settings_every: int = DEFAULT_SETTINGS_EVERY,
    ) -> None:
        """Create a client; nothing is sent until :meth:`connect`."""
        if not 1 <= address <= 15:  # noqa: PLR2004
            msg = f"RS485 address must be 1..15, not {address}"
            raise OutOfRange(msg)
        self.bus = bus
        self.requested_variant = variant
        self.address = address
        self.settings_every = max(1, settings_every)
        self.info: DeviceInfo | None = None
        self.settings = Settings()
        self.reading: Reading | None = None
        self._polls_since_settings = 0
        self.unanswered: dict[str, str] = {}
        """Optional parts the device did not answer, with why (per device).

        They are not asked for again on every poll; the settings re-read
        tries them once more, in case the first miss was noise."""
        self.max_read = MAX_READ_REGISTERS
        """Longest read this device answers (lowered by the fallback rule)."""
        self.live_plan: tuple[Block, ...] = ()
        """The reads of one live poll (Modbus variants)."""
        self._needed: dict[int, str] = {}
        self._verified: set[str] = set()
        """Optional live parts the device answered since they were planned in."""
        self._planned_counts: tuple[int, int] | None = None
        self._a5_host = A5_SERIAL_HOST
        self._a5_counts = (0, 0)
        self._write_lock = asyncio.Lock()
        self._settings_doubtful = False
        """A write failed after it was sent: the device may have taken it."""

    # --- connection ---------------------------------------------------------

    @property
    def variant(self) -> Variant | None:
        """The variant in use, once connected."""
        return self.info.variant if self.info else None

    async def connect(self) -> DeviceInfo:
        """Detect the variant (if needed), read identity and settings."""
        variants = (
            [self.requested_variant]
            if self.requested_variant
            else [Variant.D2, Variant.P81, Variant.A5]
        )
        errors: list[str] = []
        garbled = False
        for variant in variants:
            try:
                await self._probe(variant)
            except (
                BalancerTimeout,
                ChecksumError,
                UnexpectedReply,
                NotSupported,
            ) as err:
                errors.append(f"{variant.value}: {err}")
                garbled = garbled or not isinstance(err, BalancerTimeout)
                continue
            info = await self._read_info(variant)
            self.info = info
            await self.read_settings()
            _LOGGER.debug("Connected: %s", info)
            return info
        if len(variants) == 1:
            msg = f"The balancer did not answer the {variants[0].value} protocol"
        else:
            msg = "No balancer answered (tried D2, p81 and A5)"
        if garbled:
            msg = "Something answered, but not like a balancer"
            raise UnexpectedReply(f"{msg}: {'; '.join(errors)}")
        raise BalancerTimeout(f"{msg}: {'; '.join(errors)}")

    async def _probe(self, variant: Variant) -> None:
        if variant is Variant.A5:
            hosts = (
                (A5_BLE_HOST, A5_SERIAL_HOST)
                if self.bus.link.kind is LinkKind.BLE
                else A5_HOST_ADDRESSES
            )
            last: BalancerError | None = None
            for host in hosts:
                try:
                    frames = await self.bus.exchange(
                        codec.a5_request(A5_TABLE.counts, host)
                    )
                except BalancerTimeout as err:
                    last = err
                    continue
                self._a5_host = host
                self._a5_counts = codec.decode_a5_counts(_a5(frames))
                return
            assert last is not None
            raise last
        table = MODBUS_TABLES[variant]
        self.max_read = MAX_READ_REGISTERS
        self.unanswered.clear()  # nothing learnt while probing another variant
        self._verified.clear()
        self._planned_counts = None
        self._plan_whole_block(table)
        self.reading = await self._read_modbus_live(table)

    async def _read_info(self, variant: Variant) -> DeviceInfo:
        if variant is Variant.A5:
            versions: list[str | None] = []
            for command in (A5_TABLE.software_version, A5_TABLE.hardware_version):
                frames = await self._a5_optional(command, A5_TABLE.version_frames)
                version = None
                if frames is not None:
                    try:
                        version = codec.decode_a5_version(frames)
                    except UnexpectedReply:
                        self._miss(A5_PARTS[command], MISS_UNEXPECTED)
                versions.append(version)
            return DeviceInfo(
                variant=variant,
                software_version=versions[0],
                hardware_version=versions[1],
            )
        table = MODBUS_TABLES[variant]
        board = self.address if variant is Variant.P81 else None
        regs = await self._optional_block(table, table.info_block, "versions")
        if regs is None:
            return DeviceInfo(variant=variant, address=board)
        info = codec.decode_modbus_info(table, board, regs)
        if info.software_version is None and info.hardware_version is None:
            self._miss("versions", MISS_FILL)
        return info

    async def close(self) -> None:
        """Close the link (a shared bus is closed by its registry instead)."""
        await self.bus.close()

    # --- reading ------------------------------------------------------------

    async def poll(self) -> Reading:
        """Read the live values (the planned reads on D2/p81, see ``live_plan``).

        Settings are read again every ``settings_every`` polls and after a
        write. Connects first when needed.
        """
        if self.info is None:
            await self.connect()
            self._polls_since_settings = 0
            if self.reading is None:  # the A5 probe reads no live values
                self.reading = await self._read_live()
        else:
            due = self._polls_since_settings >= self.settings_every
            if due:
                self._retry_optional_live()
            self.reading = await self._read_live()
            if due:
                # After the live read: a device that answers it is awake, so
                # a settings read it leaves unanswered is its own doing.
                await self.read_settings()
                if VERSION_PARTS & set(self.unanswered):
                    self.info = await self._read_info(self.info.variant)
        self._polls_since_settings += 1
        assert self.reading is not None
        await self.bus.idle()
        return self.reading

    async def read_live(self) -> Reading:
        """Read the live values once (after a write), without the settings.

        One request on D2 and p81. Does not count as a poll: the settings are
        read again on the next poll as usual after a write.
        """
        if self.info is None:
            msg = "not connected"
            raise NotSupported(msg)
        self.reading = await self._read_live()
        await self.bus.idle()
        return self.reading

    async def _read_live(self) -> Reading:
        assert self.info is not None
        if self.info.variant is Variant.A5:
            return await self._read_a5_live()
        return await self._read_modbus_live(MODBUS_TABLES[self.info.variant])

    async def _read_modbus_live(self, table: ModbusTable) -> Reading:
        regs = await self._read_plan(table)
        live = table.live
        counts = (
            regs[live.cell_count],
            min(regs[live.temperature_count], live.max_temperatures),
        )
        if counts != self._planned_counts and 1 <= counts[0] <= live.max_cells:
            # First reading, or the device's cell / sensor count changed:
            # plan for what it has now, and read what the old plan missed.
            self._replan(table, *counts)
            if any(register not in regs for register in self._needed):
                regs.update(await self._read_plan(table))
        reading = codec.decode_modbus_live(table, regs)
        self._note_fill(table, regs)
        return reading

    def _retry_optional_live(self) -> None:
        """Plan the optional live parts the device did not answer in again."""
        for part in OPTIONAL_LIVE_PARTS:
            self.unanswered.pop(part, None)
        variant = self.variant
        if variant is not None and variant is not Variant.A5:
            self._plan_again(MODBUS_TABLES[variant])

    def _plan_whole_block(self, table: ModbusTable) -> None:
        """Before the counts are known: the whole live block."""
        live = table.live
        block = table.live.block
        optional = live_registers(live, live.max_cells, 0, OPTIONAL_LIVE_PARTS)
        needed = {
            register: optional.get(register, PART_LIVE)
            for register in range(block.start, block.start + block.count)
        }
        avoid = self._unanswered_registers(table)
        if not avoid:
            self._needed = needed
            self.live_plan = split(block, self.max_read)
            return
        self._needed = {reg: part for reg, part in needed.items() if reg not in avoid}
        cost = line_cost(self.bus.link.byte_time, self.bus.turnaround)
        self.live_plan = best_plan(self._needed, cost, self.max_read, avoid)

    def _unanswered_registers(self, table: ModbusTable) -> frozenset[int]:
        """Registers of the optional live parts the device did not answer."""
        live = table.live
        every = live_registers(live, live.max_cells, 0, OPTIONAL_LIVE_PARTS)
        return frozenset(reg for reg, part in every.items() if part in self.unanswered)

    def _replan(self, table: ModbusTable, cells: int, sensors: int) -> None:
        """Plan the live reads for *cells* cells and *sensors* sensors."""
        parts = [part for part in OPTIONAL_LIVE_PARTS if part not in self.unanswered]
        self._needed = live_registers(table.live, cells, sensors, parts)
        cost = line_cost(self.bus.link.byte_time, self.bus.turnaround)
        self.live_plan = best_plan(
            self._needed, cost, self.max_read, self._unanswered_registers(table)
        )
        self._planned_counts = (cells, sensors)

    def _plan_again(self, table: ModbusTable) -> None:
        if self._planned_counts is None:
            self._plan_whole_block(table)
        else:
            self._replan(table, *self._planned_counts)

    async def _read_plan(self, table: ModbusTable) -> dict[int, int]:
        """Read the planned blocks; apply the fallback and optional-part rules.

        A failed read longer than the app's longest is planned again in
        shorter reads (:func:`.plan.fallback_limit`). A failed read that holds
        optional registers the device has not answered yet is planned again
        without them (they are marked unanswered). Otherwise the failure is
        the poll's (a dead link); optional parts of that read must then prove
        themselves again, so a read that keeps failing drops them next time.
        """
        regs: dict[int, int] = {}
        index = 0
        restarts = 0
        while index < len(self.live_plan):
            block = self.live_plan[index]
            parts = parts_of(block, self._needed)
            optional = parts - {PART_LIVE}
            try:
                regs.update(await self._read_block(table, block))
            except (BalancerTimeout, NotSupported, UnexpectedReply) as err:
                shorter = fallback_limit(table, self.max_read)
                unproven = optional - self._verified
                if shorter is not None and block.count > shorter:
                    _LOGGER.debug("Reads of %d registers failed", block.count)
                    self.max_read = shorter
                elif unproven:
                    for part in unproven:
                        self._miss(part, _reason(err))
                    if PART_LIVE not in parts and unproven == optional:
                        index += 1
                        self._forget_block(block)
                        continue
                else:
                    self._verified -= optional
                    raise
                restarts += 1
                if restarts > MAX_REPLANS:  # pragma: no cover - a safety net
                    raise
                self._plan_again(table)
                regs = {}
                index = 0
                continue
            self._verified |= optional
            index += 1
        return regs

    def _forget_block(self, block: Block) -> None:
        """Drop the registers of a failed optional read from the plan."""
        self._needed = {
            reg: part for reg, part in self._needed.items() if reg not in block
        }
        self.live_plan = tuple(b for b in self.live_plan if b != block)

    def _note_fill(self, table: ModbusTable, regs: dict[int, int]) -> None:
        """Mark optional live parts that came back as 0xFFFF fill."""
        live = table.live
        filled: list[str] = []
        if regs.get(live.balance_current) == UNAVAILABLE:
            filled.append(PART_BALANCE_CURRENT)
        bits = [
            regs.get(reg)
            for reg, part in self._needed.items()
            if part == PART_BALANCING_CELLS
        ]
        if bits and all(value == UNAVAILABLE for value in bits):
            filled.append(PART_BALANCING_CELLS)
        for part in filled:
            if part not in self.unanswered:
                self._miss(part, MISS_FILL)
                self._plan_again(table)

    def _miss(self, part: str, reason: str) -> None:
        self._verified.discard(part)
        if part not in self.unanswered:
            _LOGGER.debug("The device did not answer %s (%s)", part, reason)
        self.unanswered[part] = reason

    async def _optional(
        self, part: str, read: Callable[[], Awaitable[_T]]
    ) -> _T | None:
        """Run *read* for an optional *part*; None (and remembered) if missed."""
        try:
            result = await read()
        except (BalancerTimeout, NotSupported, UnexpectedReply, ChecksumError) as err:
            self._miss(part, _reason(err))
            return None
        self.unanswered.pop(part, None)
        return result

    async def _read_a5_live(self) -> Reading:
        cells, sensors = self._a5_counts
        commands = [
            (A5_TABLE.pack, 1),
            (A5_TABLE.cells, codec.a5_frames_needed(cells, A5_TABLE.cells_per_frame)),
            (A5_TABLE.alarms, 1),
        ]
        if sensors:
            commands.insert(
                2,
                (
                    A5_TABLE.temperatures,
                    codec.a5_frames_needed(sensors, A5_TABLE.temperatures_per_frame),
                ),
            )
        replies = await self._a5_reads(commands)
        balancing = None
        if PART_BALANCING_CELLS not in self.unanswered:
            balancing = await self._a5_optional(A5_TABLE.balancing, 1)
        if balancing is not None:
            replies[A5_TABLE.balancing] = balancing
        return codec.decode_a5_live(replies, cells, sensors)

    async def _a5_reads(
        self, commands: Sequence[tuple[int, int]]
    ) -> dict[int, list[A5Frame]]:
        replies: dict[int, list[A5Frame]] = {}
        for command, frames in commands:
            answer = await self.bus.exchange(
                codec.a5_request(command, self._a5_host, frames)
            )
            replies[command] = _a5(answer)
        return replies

    async def _a5_optional(self, command: int, frames: int) -> list[A5Frame] | None:
        """An optional A5 command: its frames, or None when not answered."""
        part = A5_PARTS[command]
        request = codec.a5_request(command, self._a5_host, frames)
        if part in self.unanswered:
            # Missed before: one try, not the bus's retries.
            answer = await self._optional(
                part, lambda: self.bus.exchange(request, retries=0)
            )
        else:
            answer = await self._optional(part, lambda: self.bus.exchange(request))
        if answer is None:
            return None
        result = _a5(answer)
        if codec.a5_is_fill(result):
            self._miss(part, MISS_FILL)
            return None
        return result

    async def _read_block(self, table: ModbusTable, block: Block) -> dict[int, int]:
        board = self.address
        frames = await self.bus.exchange(
            codec.read_request(table.variant, board, block)
        )
        return codec.registers_of(block, frames[0])

    def setting_part(self, setting: Setting) -> str | None:
        """The optional part that holds *setting* on this device's variant."""
        variant = self.variant or self.requested_variant
        if variant is None:
            return None
        if variant is Variant.A5:
            return A5_SETTING_PARTS.get(setting)
        table = MODBUS_TABLES[variant]
        register = table.settings.get(setting)
        if register is None:
            return None
        for block, part in zip(
            table.settings_blocks, table.settings_parts, strict=True
        ):
            if register.register in block:
                return part
        return None  # pragma: no cover - every setting lies in a block

    async def read_settings(self) -> Settings:
        """Read every setting the variant has; each block or command is optional.

        What the device did not answer before is asked again (once); on the
        periodic re-read (:meth:`poll`) the optional live parts are planned in
        again for that poll's live read too.
        """
        variant = self.variant or self.requested_variant
        if variant is None:
            await self.connect()
            return self.settings
        if variant is Variant.A5:
            replies = await self._a5_reads([(A5_TABLE.counts, 1)])
            for command in (
                A5_TABLE.balance_settings,
                A5_TABLE.cell_thresholds,
                A5_TABLE.temperature_thresholds,
            ):
                frames = await self._a5_optional(command, 1)
                if frames is not None:
                    replies[command] = frames
            self._a5_counts = codec.decode_a5_counts(replies[A5_TABLE.counts])
            self.settings = codec.decode_a5_settings(replies, self._a5_counts[0])
        else:
            table = MODBUS_TABLES[variant]
            regs: dict[int, int] = {}
            for block, part in zip(
                table.settings_blocks, table.settings_parts, strict=True
            ):
                values = await self._optional_block(table, block, part)
                if values is not None:
                    regs.update(values)
            self.settings = codec.decode_modbus_settings(table, regs)
        self._polls_since_settings = 0
        return self.settings

    async def _optional_block(
        self, table: ModbusTable, block: Block, part: str
    ) -> dict[int, int] | None:
        """Read one optional block; None (and remembered) when not answered."""
        request = codec.read_request(table.variant, self.address, block)
        # Missed before: one try, not the bus's retries.
        retries = {"retries": 0} if part in self.unanswered else {}

        async def read() -> dict[int, int]:
            frames = await self.bus.exchange(request, **retries)
            return codec.registers_of(block, frames[0])

        values = await self._optional(part, read)
        if values is not None and all(v == UNAVAILABLE for v in values.values()):
            self._miss(part, MISS_FILL)
            return None
        return values

    # --- writing ------------------------------------------------------------

    def writable_settings(self) -> frozenset[Setting]:
        """Settings this balancer's variant can write."""
        if self.variant is None or self.variant is Variant.A5:
            return frozenset()
        return frozenset(MODBUS_TABLES[self.variant].writable())

    def check(
        self, setting: Setting, value: float | bool
    ) -> tuple[float, SettingRegister, int]:
        """Check a write without sending anything; return (value, register, raw).

        Applies the manuals' rules, the variant's allow-list and what its
        register can hold. Raises :class:`OutOfRange` or :class:`NotSupported`.
        Needs a connected client (the rules depend on the device's settings).
        """
        number = validate(setting, value, self.settings)
        if self.info is None:
            msg = "not connected: the device's settings are not known yet"
            raise NotSupported(msg)
        variant = self.info.variant
        if variant is Variant.A5:
            msg = (
                "The A5 protocol is read-only: settings cannot be changed over it. "
                "Use the D2 protocol (Bluetooth dongle or UART) to change settings"
            )
            raise NotSupported(msg)
        register = MODBUS_TABLES[variant].writable().get(setting)
        if register is None:
            msg = f"{setting.value} cannot be written over the {variant.value} protocol"
            raise NotSupported(msg)
        rule = RULES[setting]
        if register.inferred:
            current = getattr(self.settings, setting.value)
            if current is None or not rule.minimum <= current <= rule.maximum:
                msg = (
                    f"{setting.value} over {variant.value} uses a register that is "
                    f"not confirmed on a balancer, and it holds {current!r}, which "
                    "is not a plausible value; nothing was written"
                )
                raise NotSupported(msg)
        raw = register.encode(number)
        if abs(register.decode(raw) - number) > 1e-6:  # noqa: PLR2004
            msg = (
                f"{setting.value} over {variant.value} is stored in steps of "
                f"{register.scale:g} {rule.unit}; {number:g} was refused"
            )
            raise OutOfRange(
                msg,
                reason="step",
                placeholders={
                    "setting": setting.value,
                    "value": f"{number:g}",
                    "step": f"{register.scale:g}",
                    "unit": rule.unit,
                },
            )
        return number, register, raw

    async def write(self, setting: Setting, value: float | bool) -> float:
        """Write one setting and return the value read back from the device.

        The value is checked first (:meth:`check`); nothing is sent when it is
        refused (:class:`OutOfRange`) or when the variant cannot write this
        setting (:class:`NotSupported`). Raises :class:`WriteNotConfirmed`
        when the read-back differs.
        """
        validate(setting, value, self.settings)  # before any I/O
        if self.info is None:
            await self.connect()
        number, register, raw = self.check(setting, value)
        assert self.info is not None
        variant = self.info.variant
        table = MODBUS_TABLES[variant]
        # Read the settings again on the next poll, also when this write fails:
        # the device may have taken the value even though its answer was lost.
        self._polls_since_settings = self.settings_every
        async with self._write_lock:
            if self._settings_doubtful:
                # An earlier write failed after it was sent and may have been
                # taken: the rules must compare with what the device holds.
                await self.read_settings()
                self._settings_doubtful = False
            # A write that held the lock may have changed the settings the
            # rules compare with (two alarms written at once): check again.
            validate(setting, value, self.settings)
            self._settings_doubtful = True
            await self.bus.exchange(
                codec.write_request(variant, self.address, register, raw)
            )
            regs = await self._read_block(table, Block(register.register, 1))
        confirmed = codec.setting_register_value(table, setting, regs)
        if setting is Setting.BALANCER_ENABLED:
            ok = confirmed == bool(number)
        else:
            ok = (
                isinstance(confirmed, int | float)
                and abs(float(confirmed) - number) <= RULES[setting].step / 2
            )
        if not ok:
            msg = (
                f"{setting.value}: wrote {number:g} but the balancer reports "
                f"{confirmed!r}"
            )
            raise WriteNotConfirmed(msg)
        changes: dict[str, Any] = {setting.value: confirmed}
        self.settings = dataclasses.replace(self.settings, **changes)
        self._settings_doubtful = False
        await self.bus.idle()
        return float(number) if setting is not Setting.BALANCER_ENABLED else number

    async def set_balance_start_voltage(self, volts: float) -> float:
        """Set the cell voltage at which balancing may start."""
        return await self.write(Setting.BALANCE_START_VOLTAGE, volts)

    async def set_balancer_enabled(self, enabled: bool) -> bool:
        """Switch balancing on or off."""
        return bool(await self.write(Setting.BALANCER_ENABLED, enabled))

    async def set_balance_current_limit(self, amperes: float) -> float:
        """EXPERIMENTAL: set the balance current limit (0..1 A, 0.1 A steps)."""
        return await self.write(Setting.BALANCE_CURRENT_LIMIT, amperes)


def _reason(err: BalancerError) -> str:
    if isinstance(err, BalancerTimeout):
        return MISS_TIMEOUT
    if isinstance(err, NotSupported):
        return MISS_REFUSED
    return MISS_UNEXPECTED


def _a5(frames: Sequence[Frame]) -> list[A5Frame]:
    result = [frame for frame in frames if isinstance(frame, A5Frame)]
    if len(result) != len(frames):  # pragma: no cover - guarded by Request.matches
        msg = "mixed frames in an A5 reply"
        raise UnexpectedReply(msg)
    return result
