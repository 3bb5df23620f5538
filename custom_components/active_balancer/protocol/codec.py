"""Build request frames and decode replies, driven by the register tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import math

from .crc import a5_checksum, append_crc
from .errors import UnexpectedReply
from .frames import (
    A5_DATA_LENGTH,
    A5_REPLY_ADDRESS,
    A5_START,
    D2_ADDRESS,
    FC_READ,
    FC_WRITE_SINGLE,
    P81_REPLY_BASE,
    P81_REQUEST_BASE,
    A5Frame,
    Frame,
    ModbusFrame,
)
from .model import (
    Alarms,
    BalancerInfo,
    Chemistry,
    Reading,
    Setting,
    Settings,
    SettingValue,
    Variant,
    plausible_cell,
    plausible_current,
    plausible_temperature,
)
from .registers import (
    A5_TABLE,
    MODBUS_TABLES,
    UNAVAILABLE,
    Block,
    LiveLayout,
    ModbusTable,
    SettingRegister,
)


@dataclass(frozen=True, slots=True)
class Request:
    """A frame to send and what its answer must look like."""

    variant: Variant
    frame: bytes
    reply_address: int
    code: int
    """Function code (Modbus) or command (A5) the reply must carry."""
    reply_bytes: int | None = None
    """Data bytes a Modbus read reply must carry."""
    echo: bytes | None = None
    """Exact reply expected (Modbus write echo)."""
    frames: int = 1
    """Frames that make up the answer (A5 multi-frame commands)."""

    def matches(self, frame: Frame) -> bool:
        """Whether *frame* answers this request."""
        if isinstance(frame, A5Frame):
            return (
                self.variant is Variant.A5
                and frame.address == self.reply_address
                and frame.command == self.code
            )
        if self.variant is Variant.A5 or frame.address != self.reply_address:
            return False
        if frame.is_exception:
            return frame.function == self.code | 0x80
        if frame.function != self.code:
            return False
        if self.echo is not None:
            return frame.raw[2:-2] == self.echo
        return self.reply_bytes is None or len(frame.data) == self.reply_bytes


def modbus_addresses(variant: Variant, board: int) -> tuple[int, int]:
    """Return (request address, reply address) for *variant* and board number."""
    if variant is Variant.D2:
        return D2_ADDRESS, D2_ADDRESS
    return P81_REQUEST_BASE + board, P81_REPLY_BASE + board


def read_request(variant: Variant, board: int, block: Block) -> Request:
    """FC03 read of *block*."""
    request_address, reply_address = modbus_addresses(variant, board)
    body = bytes((request_address, FC_READ)) + _u16(block.start) + _u16(block.count)
    return Request(
        variant=variant,
        frame=append_crc(body),
        reply_address=reply_address,
        code=FC_READ,
        reply_bytes=2 * block.count,
    )


def write_request(
    variant: Variant, board: int, register: SettingRegister, raw: int
) -> Request:
    """FC06 write of one allow-listed setting register."""
    table = MODBUS_TABLES.get(variant)
    # Only a register of the variant's own allow-list becomes a write frame,
    # never one made up elsewhere (SettingRegister is writable by default).
    if (
        not register.writable
        or table is None
        or register not in table.writable().values()
    ):
        msg = f"register 0x{register.register:04X} is not writable"
        raise UnexpectedReply(msg)
    if not 0 <= raw <= UNAVAILABLE:
        msg = f"raw value {raw} does not fit a register"
        raise UnexpectedReply(msg)
    request_address, reply_address = modbus_addresses(variant, board)
    payload = _u16(register.register) + _u16(raw)
    return Request(
        variant=variant,
        frame=append_crc(bytes((request_address, FC_WRITE_SINGLE)) + payload),
        reply_address=reply_address,
        code=FC_WRITE_SINGLE,
        echo=payload,
    )


def a5_request(command: int, host: int, frames: int = 1) -> Request:
    """A5 read request for *command* from *host* (0x40 serial, 0x80 BLE)."""
    body = bytes((A5_START, host, command, A5_DATA_LENGTH)) + bytes(A5_DATA_LENGTH)
    return Request(
        variant=Variant.A5,
        frame=body + bytes((a5_checksum(body),)),
        reply_address=A5_REPLY_ADDRESS,
        code=command,
        frames=frames,
    )


def registers_of(block: Block, frame: Frame) -> dict[int, int]:
    """Map register number to value for a read reply of *block*."""
    if not isinstance(frame, ModbusFrame) or frame.is_exception:
        msg = "the balancer refused the read request"
        raise UnexpectedReply(msg)
    values = frame.registers()
    if len(values) != block.count:
        msg = f"expected {block.count} registers, got {len(values)}"
        raise UnexpectedReply(msg)
    return {block.start + i: value for i, value in enumerate(values)}


def decode_modbus_live(table: ModbusTable, regs: Mapping[int, int]) -> Reading:
    """Decode the live registers of a Modbus variant.

    *regs* holds the whole live block or only the registers a read plan
    fetched: the balance current and the per-cell balancing bits are optional
    (``None`` when missing or filled with 0xFFFF).
    """
    live = table.live
    cell_count = regs[live.cell_count]
    if not 1 <= cell_count <= live.max_cells:
        msg = f"the device reports {cell_count} cells, which is not a balancer"
        raise UnexpectedReply(msg)
    sensor_count = min(regs[live.temperature_count], live.max_temperatures)
    implausible: list[tuple[str, int]] = []
    cells: list[float | None] = []
    for i in range(cell_count):
        raw = regs[live.cells + i]
        cells.append(plausible_cell(raw))
        if cells[-1] is None:
            implausible.append((f"cell_{i + 1}_voltage", raw))
    temperatures: list[float | None] = []
    for i in range(sensor_count):
        raw = regs[live.temperatures + i]
        if raw in live.temperature_unavailable:
            temperatures.append(None)
            continue
        temperatures.append(plausible_temperature(float(raw - live.temperature_offset)))
        if temperatures[-1] is None:
            implausible.append((f"temperature_{i + 1}", raw))
    pack_raw = regs[live.pack_voltage]
    current: float | None = None
    current_raw = regs.get(live.balance_current, UNAVAILABLE)
    if current_raw != UNAVAILABLE:
        current = plausible_current(
            round(
                (current_raw - live.balance_current_offset)
                * live.balance_current_scale,
                3,
            )
        )
        if current is None:
            implausible.append(("balance_current", current_raw))
    alarm_bytes = b"".join(_u16(regs[live.alarms + i]) for i in range(4))
    return Reading(
        cell_voltages=tuple(cells),
        temperatures=tuple(temperatures),
        pack_voltage=None
        if pack_raw == UNAVAILABLE
        else round(pack_raw * live.pack_voltage_scale, 3),
        balancing=regs[live.balancing] != 0,
        balancing_cells=_balance_bits(live, regs, cell_count),
        balance_current=current,
        alarms=Alarms.from_bytes(alarm_bytes),
        implausible=tuple(implausible),
    )


def _balance_bits(
    live: LiveLayout, regs: Mapping[int, int], cell_count: int
) -> frozenset[int] | None:
    """Cells being balanced; None when the bits were not read or are fill."""
    if live.balance_bits is None:
        return None
    words = min(live.balance_bits_words, max(1, math.ceil(cell_count / 16)))
    values = [regs.get(live.balance_bits + word) for word in range(words)]
    if any(value is None for value in values) or all(
        value == UNAVAILABLE for value in values
    ):
        return None
    bits = 0
    for word, value in enumerate(values):
        bits |= (value or 0) << (16 * word)
    return frozenset(i + 1 for i in range(cell_count) if bits >> i & 1)


def decode_modbus_settings(table: ModbusTable, regs: Mapping[int, int]) -> Settings:
    """Decode every setting of *table* found in *regs*."""
    values: dict[str, object] = {}
    for setting, register in table.settings.items():
        raw = regs.get(register.register)
        if raw is None or (raw == UNAVAILABLE and register.never_raw != raw):
            continue
        values[setting.value] = _setting_value(table, setting, register, raw)
    return Settings(**values)  # type: ignore[arg-type]


def _setting_value(
    table: ModbusTable, setting: Setting, register: SettingRegister, raw: int
) -> SettingValue:
    if setting is Setting.BALANCER_ENABLED:
        return bool(raw) if raw in (0, 1) else None
    if setting is Setting.CHEMISTRY:
        return table.chemistry_codes.get(raw)
    if setting in (Setting.CELL_COUNT, Setting.SLEEP_TIME):
        return round(register.decode(raw))
    return register.decode(raw)


def decode_modbus_info(
    table: ModbusTable, board: int | None, regs: Mapping[int, int]
) -> BalancerInfo:
    """Decode version strings from the info block."""
    block = table.info_block
    data = b"".join(_u16(regs[block.start + i]) for i in range(block.count))
    serial = None
    if table.serial_number is not None:
        serial = _ascii(data, *table.serial_number)
    software = _ascii(data, *table.software_version)
    hardware = _ascii(data, *table.hardware_version)
    if hardware is None and table.wide_versions is not None:
        # The other layout (32 + 32 bytes): the documented hardware field is
        # empty and the second string starts where the serial number would.
        wide_software, wide_hardware = table.wide_versions
        wide = _ascii(data, *wide_hardware)
        if wide is not None:
            software = _ascii(data, *wide_software)
            hardware = wide
            serial = None
    return BalancerInfo(
        variant=table.variant,
        address=board,
        software_version=software,
        hardware_version=hardware,
        serial_number=serial,
    )


def setting_register_value(
    table: ModbusTable, setting: Setting, regs: Mapping[int, int]
) -> SettingValue:
    """Decode one setting from a register map (used for write read-backs)."""
    register = table.settings[setting]
    return _setting_value(table, setting, register, regs[register.register])


# --- A5 -----------------------------------------------------------------------


def a5_frames_needed(items: int, per_frame: int) -> int:
    """Frames a multi-frame A5 command returns for *items* values."""
    return max(1, math.ceil(items / per_frame))


def a5_single(frames: Sequence[A5Frame]) -> bytes:
    """The data of a single-frame A5 reply."""
    return frames[0].data


def a5_multi(frames: Sequence[A5Frame], count: int, per_frame: int) -> list[bytes]:
    """Return *count* values' worth of frame data, ordered by 1-based frame no."""
    by_number = {frame.data[0]: frame.data[1:] for frame in frames}
    needed = a5_frames_needed(count, per_frame)
    missing = [n for n in range(1, needed + 1) if n not in by_number]
    if missing:
        msg = f"A5 frames {missing} are missing from the reply"
        raise UnexpectedReply(msg)
    return [by_number[n] for n in range(1, needed + 1)]


def decode_a5_counts(frames: Sequence[A5Frame]) -> tuple[int, int]:
    """Return (cells, temperature sensors) from a 0x94 reply."""
    data = a5_single(frames)
    if not 1 <= data[0] <= 48:  # noqa: PLR2004
        msg = f"the device reports {data[0]} cells, which is not a balancer"
        raise UnexpectedReply(msg)
    return data[0], min(data[1], 16)


def decode_a5_live(
    replies: Mapping[int, Sequence[A5Frame]], cell_count: int, sensor_count: int
) -> Reading:
    """Decode an A5 poll (0x90, 0x95, 0x96, 0x97, 0x98)."""
    table = A5_TABLE
    pack = a5_single(replies[table.pack])
    implausible: list[tuple[str, int]] = []
    raw_cells: list[int] = []
    for data in a5_multi(replies[table.cells], cell_count, table.cells_per_frame):
        raw_cells.extend(int.from_bytes(data[i : i + 2], "big") for i in range(0, 6, 2))
    cells: list[float | None] = []
    for number, raw in enumerate(raw_cells[:cell_count], start=1):
        cells.append(plausible_cell(raw))
        if cells[-1] is None:
            implausible.append((f"cell_{number}_voltage", raw))
    raw_temps: list[int] = []
    if sensor_count:
        for data in a5_multi(
            replies[table.temperatures], sensor_count, table.temperatures_per_frame
        ):
            raw_temps.extend(data[:7])
    temps: list[float | None] = []
    for number, raw in enumerate(raw_temps[:sensor_count], start=1):
        temps.append(plausible_temperature(float(raw - 40)))
        if temps[-1] is None:
            implausible.append((f"temperature_{number}", raw))
    balancing_cells: frozenset[int] | None = None
    if replies.get(table.balancing):  # 0x97 is optional
        bitmap = int.from_bytes(a5_single(replies[table.balancing])[:6], "little")
        balancing_cells = frozenset(i + 1 for i in range(cell_count) if bitmap >> i & 1)
    return Reading(
        cell_voltages=tuple(cells),
        temperatures=tuple(temps),
        pack_voltage=round(int.from_bytes(pack[0:2], "big") * 0.1, 3),
        balancing=None if balancing_cells is None else bool(balancing_cells),
        balancing_cells=balancing_cells,
        balance_current=None,
        alarms=Alarms.from_bytes(a5_single(replies[table.alarms])),
        implausible=tuple(implausible),
    )


def a5_is_fill(frames: Sequence[A5Frame]) -> bool:
    """Whether an A5 reply carries only fill (all 0xFF data bytes)."""
    return all(frame.data == b"\xff" * len(frame.data) for frame in frames)


def decode_a5_settings(
    replies: Mapping[int, Sequence[A5Frame]], cell_count: int
) -> Settings:
    """Decode the A5 settings reads (0x5F, 0x59, 0x5C) that were answered.

    Each command is optional: a missing reply leaves its settings ``None``.
    """
    table = A5_TABLE
    values: dict[str, object] = {"cell_count": cell_count}
    if table.balance_settings in replies:
        balance = a5_single(replies[table.balance_settings])
        values["balance_start_voltage"] = int.from_bytes(balance[0:2], "big") / 1000
        values["balance_delta_voltage"] = int.from_bytes(balance[2:4], "big") / 1000
    if table.cell_thresholds in replies:
        cells = a5_single(replies[table.cell_thresholds])
        values["cell_overvoltage_alarm"] = int.from_bytes(cells[0:2], "big") / 1000
        values["cell_undervoltage_alarm"] = int.from_bytes(cells[4:6], "big") / 1000
    if table.temperature_thresholds in replies:
        temps = a5_single(replies[table.temperature_thresholds])
        values["discharge_overtemperature_alarm"] = float(temps[5] - 40)
        values["discharge_undertemperature_alarm"] = float(temps[7] - 40)
    return Settings(**values)  # type: ignore[arg-type]


def decode_a5_version(frames: Sequence[A5Frame]) -> str | None:
    """Decode a two-frame A5 version string (0x62 / 0x63)."""
    parts = a5_multi(frames, A5_TABLE.version_frames * 7, 7)
    return _ascii(b"".join(part[:7] for part in parts), 0, 14)


# --- helpers ------------------------------------------------------------------


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _ascii(data: bytes, offset: int, length: int) -> str | None:
    text = (
        data[offset : offset + length]
        .replace(b"\xff", b"")
        .decode("ascii", "replace")
        .strip("\x00 ")
    )
    text = text.split("\x00", 1)[0].strip()
    return text or None


__all__ = [
    "Chemistry",
    "Request",
    "a5_frames_needed",
    "a5_request",
    "decode_a5_counts",
    "decode_a5_live",
    "decode_a5_settings",
    "decode_a5_version",
    "decode_modbus_info",
    "decode_modbus_live",
    "decode_modbus_settings",
    "read_request",
    "registers_of",
    "setting_register_value",
    "write_request",
]
