"""High-level client: detect the variant, poll, read settings, write safely."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
import dataclasses
import logging
from types import MappingProxyType
from typing import Any, TypeVar

from . import codec
from .errors import (
    BalancerError,
    BalancerTimeout,
    ChecksumError,
    NotSupported,
    OutOfRange,
    RefusalReason,
    UnexpectedReply,
)
from .frames import (
    A5_BLE_HOST,
    A5_HOST_ADDRESSES,
    A5_SERIAL_HOST,
    A5Frame,
    Frame,
)
from .link import Bus, LinkKind
from .model import BalancerInfo, Reading, Setting, Settings, Snapshot, Variant
from .plan import (
    OPTIONAL_LIVE_PARTS,
    PART_BALANCE_CURRENT,
    PART_BALANCING_CELLS,
    PART_LIVE,
    Cost,
    LivePlan,
    fallback_limit,
    line_cost,
    split,
)
from .registers import (
    A5_PARTS,
    A5_TABLE,
    D2_TABLE,
    MODBUS_TABLES,
    UNAVAILABLE,
    Block,
    ModbusTable,
    setting_part,
)
from .writes import (
    PreparedWrite,
    check_under_lock,
    confirmed_value,
    prepare_write,
    unknown_dependency,
    writable_settings,
)

_T = TypeVar("_T")

_LOGGER = logging.getLogger(__name__)

MAX_RS485_ADDRESS = 15
"""Highest p81 board number (the address switch has four bits, 0 unused)."""

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
        if not 1 <= address <= MAX_RS485_ADDRESS:
            msg = f"RS485 address must be 1..{MAX_RS485_ADDRESS}, not {address}"
            raise OutOfRange(
                msg,
                reason=RefusalReason.RANGE,
                value=address,
                minimum=1,
                maximum=MAX_RS485_ADDRESS,
                step=1,
            )
        self.bus = bus
        """The bus this client talks on (shared on an RS485 line)."""
        self._requested_variant = variant
        self._address = address
        self._settings_every = max(1, settings_every)
        self._info: BalancerInfo | None = None
        self._settings = Settings()
        self._reading: Reading | None = None
        self._polls_since_settings = 0
        self._unanswered: dict[str, str] = {}
        # Optional parts the device did not answer, with why (per device).
        # They are not asked for again on every poll; the settings re-read
        # tries them once more, in case the first miss was noise.
        self._plan = LivePlan()
        self._a5_host = A5_SERIAL_HOST
        self._a5_counts = (0, 0)
        self._write_lock = asyncio.Lock()
        self._settings_doubtful = False
        """A write failed after it was sent: the device may have taken it."""

    # --- state ----------------------------------------------------------------

    @property
    def variant(self) -> Variant | None:
        """The variant in use once connected; before, the one asked for."""
        return self._info.variant if self._info else self._requested_variant

    @property
    def snapshot(self) -> Snapshot | None:
        """What is known now (as last returned), or None before :meth:`connect`."""
        if self._info is None or self._reading is None:
            return None
        return Snapshot(
            info=self._info,
            reading=self._reading,
            settings=self._settings,
            unanswered=MappingProxyType(dict(self._unanswered)),
        )

    @property
    def live_plan(self) -> tuple[Block, ...]:
        """The reads of one live poll (Modbus variants), planned from the counts."""
        return self._plan.blocks

    @property
    def max_read(self) -> int:
        """Longest read this device answers (lowered by the fallback rule)."""
        return self._plan.max_read

    def diagnostics(self) -> dict[str, Any]:
        """What a maintainer needs to see of this client, as plain data.

        The frames are hex text; they carry the serial number, so a user
        interface must redact it before showing them.
        """
        bus = self.bus
        turnaround = bus.turnaround
        return {
            "protocol": None if self.variant is None else self.variant.value,
            "writable_settings": sorted(self.writable_settings()),
            "unanswered": dict(self._unanswered),
            "read_plan": {
                "live_reads": [
                    {"start": block.start, "count": block.count}
                    for block in self._plan.blocks
                ],
                "max_read": self._plan.max_read,
                "settings_every": self._settings_every,
                "turnaround_ms": None
                if turnaround is None
                else round(turnaround * 1000, 1),
            },
            "link": {
                "kind": bus.link.kind.value,
                "keep_open": bus.keep_open,
                "statistics": dataclasses.asdict(bus.stats),
                "last_frames": [
                    {"direction": direction, "hex": frame}
                    for direction, frame in bus.history
                ],
            },
        }

    def _snapshot(self) -> Snapshot:
        snapshot = self.snapshot
        assert snapshot is not None
        return snapshot

    # --- connection ---------------------------------------------------------

    async def connect(self) -> Snapshot:
        """Detect the variant (if needed); read identity, settings and values.

        Detection always ends with a live reading, whatever the variant.
        """
        variants = (
            [self._requested_variant]
            if self._requested_variant
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
            self._info = info
            await self._read_settings(variant)
            if variant is Variant.A5:  # its probe reads no live values
                self._reading = await self._read_live()
            self._polls_since_settings = 0
            _LOGGER.debug("Connected: %s", info)
            # The link stays open for the first poll, which usually follows.
            return self._snapshot()
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
        self._plan.reset()
        self._unanswered.clear()  # nothing learnt while probing another variant
        self._plan_again(table)
        self._reading = await self._read_modbus_live(table)

    async def _read_info(self, variant: Variant) -> BalancerInfo:
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
            return BalancerInfo(
                variant=variant,
                software_version=versions[0],
                hardware_version=versions[1],
            )
        table = MODBUS_TABLES[variant]
        board = self._address if variant is Variant.P81 else None
        regs = await self._optional_block(table, table.info_block, "versions")
        if regs is None:
            return BalancerInfo(variant=variant, address=board)
        info = codec.decode_modbus_info(table, board, regs)
        if info.software_version is None and info.hardware_version is None:
            self._miss("versions", MISS_FILL)
        return info

    async def close(self) -> None:
        """Close the link (a shared bus is closed by its registry instead)."""
        await self.bus.close()

    # --- reading ------------------------------------------------------------

    async def poll(self) -> Snapshot:
        """Read the live values (the planned reads on D2/p81, see ``live_plan``).

        Settings are read again every ``settings_every`` polls and after a
        write. Connects first when needed.
        """
        if self._info is None:
            await self.connect()
        else:
            due = self._polls_since_settings >= self._settings_every
            if due:
                self._retry_optional_live()
            self._reading = await self._read_live()
            if due:
                # After the live read: a device that answers it is awake, so
                # a settings read it leaves unanswered is its own doing.
                await self._read_settings(self._info.variant)
                if VERSION_PARTS & set(self._unanswered):
                    self._info = await self._read_info(self._info.variant)
        self._polls_since_settings += 1
        await self.bus.idle()
        return self._snapshot()

    async def read_live(self) -> Snapshot:
        """Read the live values once (after a write), without the settings.

        One request on D2 and p81. Does not count as a poll: the settings are
        read again on the next poll as usual after a write.
        """
        if self._info is None:
            msg = "not connected"
            raise NotSupported(msg)
        self._reading = await self._read_live()
        await self.bus.idle()
        return self._snapshot()

    async def _read_live(self) -> Reading:
        assert self._info is not None
        if self._info.variant is Variant.A5:
            return await self._read_a5_live()
        return await self._read_modbus_live(MODBUS_TABLES[self._info.variant])

    async def _read_modbus_live(self, table: ModbusTable) -> Reading:
        regs = await self._read_plan(table)
        live = table.live
        counts = (
            regs[live.cell_count],
            min(regs[live.temperature_count], live.max_temperatures),
        )
        if counts != self._plan.counts and 1 <= counts[0] <= live.max_cells:
            # First reading, or the device's cell / sensor count changed:
            # plan for what it has now, and read what the old plan missed.
            self._plan.plan(table, self._cost(), self._unanswered, counts)
            if any(register not in regs for register in self._plan.needed):
                regs.update(await self._read_plan(table))
        reading = codec.decode_modbus_live(table, regs)
        self._note_fill(table, regs)
        return reading

    def _retry_optional_live(self) -> None:
        """Plan the optional live parts the device did not answer in again."""
        for part in OPTIONAL_LIVE_PARTS:
            self._unanswered.pop(part, None)
        variant = self.variant
        if variant is not None and variant is not Variant.A5:
            self._plan_again(MODBUS_TABLES[variant])

    def _cost(self) -> Cost:
        return line_cost(self.bus.link.byte_time, self.bus.turnaround)

    def _plan_again(self, table: ModbusTable) -> None:
        self._plan.plan(table, self._cost(), self._unanswered)

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
        plan = self._plan
        while index < len(plan.blocks):
            block = plan.blocks[index]
            parts = plan.parts(block)
            optional = parts - {PART_LIVE}
            try:
                regs.update(await self._read_block(table, block))
            except (BalancerTimeout, NotSupported, UnexpectedReply) as err:
                shorter = fallback_limit(table, plan.max_read)
                unproven = optional - plan.verified
                if shorter is not None and block.count > shorter:
                    _LOGGER.debug("Reads of %d registers failed", block.count)
                    plan.max_read = shorter
                elif unproven:
                    for part in unproven:
                        self._miss(part, _reason(err))
                    if PART_LIVE not in parts and unproven == optional:
                        index += 1
                        plan.forget(block)
                        continue
                else:
                    plan.verified -= optional
                    raise
                restarts += 1
                if restarts > MAX_REPLANS:  # pragma: no cover - a safety net
                    raise
                self._plan_again(table)
                regs = {}
                index = 0
                continue
            plan.verified |= optional
            index += 1
        return regs

    def _note_fill(self, table: ModbusTable, regs: dict[int, int]) -> None:
        """Mark optional live parts that came back as 0xFFFF fill."""
        live = table.live
        filled: list[str] = []
        if regs.get(live.balance_current) == UNAVAILABLE:
            filled.append(PART_BALANCE_CURRENT)
        bits = [
            regs.get(reg)
            for reg, part in self._plan.needed.items()
            if part == PART_BALANCING_CELLS
        ]
        if bits and all(value == UNAVAILABLE for value in bits):
            filled.append(PART_BALANCING_CELLS)
        for part in filled:
            if part not in self._unanswered:
                self._miss(part, MISS_FILL)
                self._plan_again(table)

    def _miss(self, part: str, reason: str) -> None:
        self._plan.verified.discard(part)
        if part not in self._unanswered:
            _LOGGER.debug("The device did not answer %s (%s)", part, reason)
        self._unanswered[part] = reason

    async def _optional(
        self, part: str, read: Callable[[], Awaitable[_T]]
    ) -> _T | None:
        """Run *read* for an optional *part*; None (and remembered) if missed."""
        try:
            result = await read()
        except (BalancerTimeout, NotSupported, UnexpectedReply, ChecksumError) as err:
            self._miss(part, _reason(err))
            return None
        self._unanswered.pop(part, None)
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
        if PART_BALANCING_CELLS not in self._unanswered:
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
        if part in self._unanswered:
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
        board = self._address
        frames = await self.bus.exchange(
            codec.read_request(table.variant, board, block)
        )
        return codec.registers_of(block, frames[0])

    def setting_part(self, setting: Setting) -> str | None:
        """The optional part that holds *setting* on this device's variant."""
        return None if self.variant is None else setting_part(self.variant, setting)

    async def read_settings(self) -> Snapshot:
        """Read every setting the variant has; each block or command is optional.

        What the device did not answer before is asked again (once); on the
        periodic re-read (:meth:`poll`) the optional live parts are planned in
        again for that poll's live read too. Connects first when needed.
        """
        if self._info is None:
            return await self.connect()
        await self._read_settings(self._info.variant)
        await self.bus.idle()
        return self._snapshot()

    async def _read_settings(self, variant: Variant) -> None:
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
            self._settings = codec.decode_a5_settings(replies, self._a5_counts[0])
        else:
            table = MODBUS_TABLES[variant]
            regs: dict[int, int] = {}
            for block, part in zip(
                table.settings_blocks, table.settings_parts, strict=True
            ):
                values = await self._optional_block(table, block, part)
                if values is not None:
                    regs.update(values)
            self._settings = codec.decode_modbus_settings(table, regs)
        self._polls_since_settings = 0

    async def _optional_block(
        self, table: ModbusTable, block: Block, part: str
    ) -> dict[int, int] | None:
        """Read one optional block; None (and remembered) when not answered."""
        request = codec.read_request(table.variant, self._address, block)
        # Missed before: one try, not the bus's retries.
        retries = {"retries": 0} if part in self._unanswered else {}

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
        return writable_settings(self.variant)

    def prepare(self, setting: Setting, value: float | bool) -> PreparedWrite:
        """Check and encode a write without sending anything.

        Needs a connected client: the rules use the settings last read (the
        cells' chemistry). Raises :class:`OutOfRange` or :class:`NotSupported`
        (see :func:`~.writes.prepare_write`). The rule that compares two
        settings the device holds (the alarms) is applied by :meth:`send`,
        under the write lock.
        """
        if self._info is None:
            msg = "not connected: the balancer's settings are not known yet"
            raise NotSupported(msg)
        return prepare_write(self._info.variant, self._settings, setting, value)

    async def write(self, setting: Setting, value: float | bool) -> float:
        """Write one setting and return the value read back from the device.

        :meth:`prepare`, then :meth:`send`; connects first when needed.
        """
        if self._info is None:
            await self.connect()
        return await self.send(self.prepare(setting, value))

    async def send(self, write: PreparedWrite) -> float:
        """Send a prepared write and return the value read back from the device.

        Under the write lock, the value is checked against the device's other
        settings as last read (:func:`~.writes.check_under_lock`); nothing is
        sent when it is refused (:class:`OutOfRange`). Raises
        :class:`WriteNotConfirmed` when the read-back differs.
        """
        if self._info is None or write.variant is not self._info.variant:
            msg = f"a write prepared for {write.variant.value} by another client"
            raise NotSupported(msg)
        table = MODBUS_TABLES[write.variant]
        # Read the settings again on the next poll, also when this write fails:
        # the device may have taken the value even though its answer was lost.
        self._polls_since_settings = self._settings_every
        async with self._write_lock:
            if self._settings_doubtful or unknown_dependency(write, self._settings):
                # An earlier write failed after it was sent and may have been
                # taken, or the setting this one is checked against went
                # unanswered: the rules must compare with what the device holds.
                await self._read_settings(write.variant)
                self._settings_doubtful = False
            other = unknown_dependency(write, self._settings)
            if other is not None:
                msg = (
                    f"{other.value} could not be read to check {write.setting.value} "
                    "against it; nothing was written"
                )
                raise BalancerTimeout(msg)
            check_under_lock(write, self._settings)
            self._settings_doubtful = True
            await self.bus.exchange(
                codec.write_request(
                    write.variant, self._address, write.register, write.raw
                )
            )
            regs = await self._read_block(table, Block(write.register.register, 1))
        confirmed = confirmed_value(write, regs)
        self._settings = self._settings.with_value(write.setting, confirmed)
        self._settings_doubtful = False
        await self.bus.idle()
        if write.setting is Setting.BALANCER_ENABLED:
            return write.value
        return float(write.value)


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
