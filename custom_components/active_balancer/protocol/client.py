"""High-level client: detect the variant, poll, read settings, write safely."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
import dataclasses
import logging
from typing import Any

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
from .frames import A5_HOST_ADDRESSES, A5Frame, Frame
from .link import Bus, LinkKind
from .model import DeviceInfo, Reading, Setting, Settings, Variant
from .registers import A5_TABLE, MODBUS_TABLES, Block, ModbusTable, SettingRegister
from .rules import RULES, validate

_LOGGER = logging.getLogger(__name__)

DEFAULT_SETTINGS_EVERY = 10
"""Polls between two settings reads in steady state."""

A5_SERIAL_HOST = 0x40
A5_BLE_HOST = 0x80

# Some firmware may not accept the long D2 live read; these two reads cover
# the same registers and are used when the one-request read gets no answer.
D2_COMPAT_BLOCKS = (Block(0x0000, 0x3E), Block(0x3E, 0x03))


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
        self._live_blocks: tuple[Block, ...] = ()
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

    @property
    def connected(self) -> bool:
        """Whether :meth:`connect` has succeeded."""
        return self.info is not None

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
        try:
            self._live_blocks = (table.live.block,)
            self.reading = await self._read_modbus_live(table)
        except (BalancerTimeout, NotSupported):
            if variant is not Variant.D2:
                raise
            self._live_blocks = D2_COMPAT_BLOCKS
            self.reading = await self._read_modbus_live(table)

    async def _read_info(self, variant: Variant) -> DeviceInfo:
        if variant is Variant.A5:
            versions: list[str | None] = []
            for command in (A5_TABLE.software_version, A5_TABLE.hardware_version):
                try:
                    frames = await self.bus.exchange(
                        codec.a5_request(
                            command, self._a5_host, A5_TABLE.version_frames
                        )
                    )
                    versions.append(codec.decode_a5_version(_a5(frames)))
                except (BalancerTimeout, UnexpectedReply):
                    versions.append(None)
            return DeviceInfo(
                variant=variant,
                software_version=versions[0],
                hardware_version=versions[1],
            )
        table = MODBUS_TABLES[variant]
        board = self.address if variant is Variant.P81 else None
        try:
            regs = await self._read_block(table, table.info_block)
        except (BalancerTimeout, NotSupported, UnexpectedReply):
            return DeviceInfo(variant=variant, address=board)
        return codec.decode_modbus_info(table, board, regs)

    async def close(self) -> None:
        """Close the link (a shared bus is closed by its registry instead)."""
        await self.bus.close()

    # --- reading ------------------------------------------------------------

    async def poll(self) -> Reading:
        """Read the live values (one request on D2/p81).

        Settings are read again every ``settings_every`` polls and after a
        write. Connects first when needed.
        """
        if self.info is None:
            await self.connect()
            self._polls_since_settings = 0
            if self.reading is None:  # the A5 probe reads no live values
                self.reading = await self._read_live()
        else:
            if self._polls_since_settings >= self.settings_every:
                await self.read_settings()
            self.reading = await self._read_live()
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
        regs: dict[int, int] = {}
        for block in self._live_blocks:
            regs.update(await self._read_block(table, block))
        return codec.decode_modbus_live(table, regs)

    async def _read_a5_live(self) -> Reading:
        cells, sensors = self._a5_counts
        commands = [
            (A5_TABLE.pack, 1),
            (A5_TABLE.cells, codec.a5_frames_needed(cells, A5_TABLE.cells_per_frame)),
            (A5_TABLE.balancing, 1),
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

    async def _read_block(self, table: ModbusTable, block: Block) -> dict[int, int]:
        board = self.address
        frames = await self.bus.exchange(
            codec.read_request(table.variant, board, block)
        )
        return codec.registers_of(block, frames[0])

    async def read_settings(self) -> Settings:
        """Read every setting the variant has."""
        variant = self.variant or self.requested_variant
        if variant is None:
            await self.connect()
            return self.settings
        if variant is Variant.A5:
            replies = await self._a5_reads(
                [
                    (A5_TABLE.counts, 1),
                    (A5_TABLE.balance_settings, 1),
                    (A5_TABLE.cell_thresholds, 1),
                    (A5_TABLE.temperature_thresholds, 1),
                ]
            )
            self._a5_counts = codec.decode_a5_counts(replies[A5_TABLE.counts])
            self.settings = codec.decode_a5_settings(replies, self._a5_counts[0])
        else:
            table = MODBUS_TABLES[variant]
            regs: dict[int, int] = {}
            for block in table.settings_blocks:
                regs.update(await self._read_block(table, block))
            self.settings = codec.decode_modbus_settings(table, regs)
        self._polls_since_settings = 0
        return self.settings

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

    async def set_balance_delta_voltage(self, volts: float) -> float:
        """Set the cell spread at which balancing starts (>= 20 mV)."""
        return await self.write(Setting.BALANCE_DELTA_VOLTAGE, volts)

    async def set_sleep_time(self, seconds: int) -> float:
        """Set the sleep time; 65535 means never sleep."""
        return await self.write(Setting.SLEEP_TIME, seconds)

    async def set_balancer_enabled(self, enabled: bool) -> bool:
        """Switch balancing on or off."""
        return bool(await self.write(Setting.BALANCER_ENABLED, enabled))

    async def set_balance_current_limit(self, amperes: float) -> float:
        """EXPERIMENTAL: set the balance current limit (0..1 A, 0.1 A steps)."""
        return await self.write(Setting.BALANCE_CURRENT_LIMIT, amperes)


def _a5(frames: Sequence[Frame]) -> list[A5Frame]:
    result = [frame for frame in frames if isinstance(frame, A5Frame)]
    if len(result) != len(frames):  # pragma: no cover - guarded by Request.matches
        msg = "mixed frames in an A5 reply"
        raise UnexpectedReply(msg)
    return result
