"""The virtual balancer: one model of the device, three wire views.

The state is held in SI units. Each protocol variant builds its registers (or
A5 replies) from that state when asked, using the positions and scaling of the
tables in :mod:`..registers`, so one table per variant stays the single source
of truth. Defaults are the values captured from a real DALY balancer
(shared/protocol.md sections 5.3 and 8.1), adapted to the chemistry.

Physics are advanced lazily: on each request, and by :meth:`advance` and
:meth:`step`. While balancing runs, charge moves from the highest to the
lowest cell at the balance current, so the spread really shrinks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
import math
import time

from custom_components.active_balancer.protocol.crc import a5_checksum, append_crc
from custom_components.active_balancer.protocol.frames import (
    A5_DATA_LENGTH,
    A5_REPLY_ADDRESS,
    A5_START,
    D2_ADDRESS,
    FC_ERROR_FLAG,
    FC_READ,
    FC_WRITE_MULTIPLE,
    FC_WRITE_SINGLE,
    MAX_READ_REGISTERS,
    P81_ADDRESSES,
    P81_REPLY_BASE,
    P81_REQUEST_BASE,
    FrameReassembler,
    frame_variant,
)
from custom_components.active_balancer.protocol.model import (
    NEVER_SLEEP,
    Alarm,
    Alarms,
    Chemistry,
    Setting,
    Variant,
)
from custom_components.active_balancer.protocol.registers import (
    A5_TABLE,
    D2_TABLE,
    MODBUS_TABLES,
    P81_TABLE,
    UNAVAILABLE,
    ModbusTable,
    SettingRegister,
)

from .faults import Faults
from .quirks import IGNORE, Quirks

LINKS = ("uart", "rs485")

DEFAULT_SOFTWARE_VERSION = "B002_111132_03"
DEFAULT_HARDWARE_VERSION = "E303-032DG-SMB"
DEFAULT_PASSWORD = "123456"  # noqa: S105 - the vendor default, shown not checked

MAX_BALANCE_CURRENT = 1.0
"""Both products balance with at most 1 A."""

CURRENT_OFFSET = 30000
"""Raw value of a zero current (D2 0x29/0x40, p81 0x39/0x4E, A5 0x90)."""

TEMPERATURE_OFFSET = 40

BLE_CELL_FRAMES = 16
BLE_TEMPERATURE_FRAMES = 3
"""Over the BLE dongle, A5 0x95 / 0x96 always return 16 / 3 frames (S12, S20)."""

A5_WRITE_COMMANDS = frozenset((0x00, 0x1F, 0x21, 0xD9, 0xDA))
"""A5 IDs that write something (reset, RTC+SOC, MOSFETs); never answered."""

P81_ODD_WRITE_START = 0x0F00
"""p81 FC10 writes from here are answered with count 0xAAAA (S1, section 8.2)."""

_MAX_TICK = 1.0
"""Longest physics step, in seconds."""
_MAX_STEP_VOLTS = 0.00025
"""Most a cell moves in one physics step."""
_EPSILON = 1e-9
_MAX_BUFFER = 4096

# The offsets of the captured cells above the lowest one (S1, section 8.1), in
# mV: a plausible, slightly unbalanced pack.
_UNBALANCE_MV = (2, 1, 2, 0, 3, 4, 3, 4, 4, 3, 5, 3, 1, 5, 3, 3)


@dataclass(frozen=True, slots=True)
class ChemistryDefaults:
    """Factory values that depend on the cell chemistry."""

    nominal: float
    """Voltage of the lowest cell of the default pack."""
    reference: float
    """D2 0x81, cell reference voltage."""
    balance_start: float
    overvoltage: tuple[float, float]
    """Cell over-voltage alarm, level 1 and 2."""
    undervoltage: tuple[float, float]
    """Cell under-voltage alarm, level 1 and 2."""


CHEMISTRY_DEFAULTS: dict[Chemistry, ChemistryDefaults] = {
    # Captured on a DALY balancer set to LiFePO4 (section 5.3).
    Chemistry.LFP: ChemistryDefaults(3.333, 3.2, 3.2, (3.55, 3.65), (2.3, 2.2)),
    # Not captured: the manuals' 3.3 V default start and common NMC limits.
    Chemistry.NMC: ChemistryDefaults(3.7, 3.7, 3.3, (4.2, 4.25), (2.8, 2.7)),
    # Not captured: LTO needs its start voltage set (both manuals).
    Chemistry.LTO: ChemistryDefaults(2.4, 2.4, 2.4, (2.7, 2.8), (1.8, 1.7)),
}


@dataclass(frozen=True, slots=True)
class RecordedWrite:
    """One register write the virtual balancer received."""

    variant: Variant
    register: int
    """Register number (Modbus) or command (A5)."""
    value: int
    """Raw value written."""
    time: float
    """The balancer's clock when it arrived."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the virtual balancer puts on the line for one request."""

    request: bytes
    frames: tuple[bytes, ...]
    """The correct reply frames, before faults."""
    data: bytes
    """Bytes to send, after faults (empty: nothing is sent)."""
    faults: frozenset[str] = field(default_factory=frozenset)
    delay: float = 0.0
    """Seconds to hold the data back."""
    disconnect: bool = False
    """Drop the link after sending ``data``."""


class RequestParser:
    """Split a byte stream from the host into checksum-valid request frames.

    Understands every variant at once (the host may probe D2, p81 and A5 on
    the same line) and resynchronises after junk or a corrupt frame; the
    framing rules are the package's own :class:`~..frames.FrameReassembler`.
    """

    def __init__(self) -> None:
        """Create an empty parser."""
        self._reassembler = FrameReassembler(tuple(Variant), replies=False)

    @property
    def rejected(self) -> int:
        """Frames dropped for a bad checksum."""
        return self._reassembler.rejected

    @property
    def discarded(self) -> int:
        """Bytes skipped while resynchronising."""
        return self._reassembler.discarded

    def clear(self) -> None:
        """Forget a partial frame."""
        self._reassembler.clear()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Add *chunk*; return the complete request frames it finished."""
        return [frame.raw for frame in self._reassembler.feed(chunk)]


def _variant_of(frame: bytes) -> Variant | None:
    """Variant of a complete, checksum-valid request frame, else ``None``."""
    frames = FrameReassembler(tuple(Variant), replies=False).feed(frame)
    if len(frames) != 1 or frames[0].raw != frame:
        return None
    return frame_variant(frames[0])


def _u16(value: int) -> bytes:
    return _clip(value).to_bytes(2, "big")


def _clip(value: int) -> int:
    return min(max(value, 0), UNAVAILABLE)


def _ascii(text: str, size: int) -> bytes:
    return text.encode("ascii", "replace")[:size].ljust(size, b"\x00")


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _a5_frame(command: int, data: bytes) -> bytes:
    body = bytes((A5_START, A5_REPLY_ADDRESS, command, A5_DATA_LENGTH)) + data[
        :A5_DATA_LENGTH
    ].ljust(A5_DATA_LENGTH, b"\x00")
    return body + bytes((a5_checksum(body),))


class VirtualBalancer:
    """A DALY / 100balance 1 A active balancer that lives in memory.

    It answers D2, p81 and A5 requests like the device (``handle``), applies
    :class:`Faults` to its replies (``answer``, ``respond``, ``feed``), moves
    charge between cells while balancing, raises alarms from its thresholds
    and falls asleep after ``sleep_time`` seconds without a request.
    Every attribute is public and may be changed by tests.
    """

    def __init__(
        self,
        cells: int = 16,
        chemistry: Chemistry = Chemistry.LFP,
        *,
        variants: Iterable[Variant] = (Variant.D2, Variant.P81, Variant.A5),
        address: int = 1,
        cell_voltages: Sequence[float] | None = None,
        temperatures: Sequence[float] = (25.0,),
        link: str = "uart",
        ble: bool = False,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
        quirks: Quirks | None = None,
        volts_per_amp_second: float = 0.0005,
        software_version: str = DEFAULT_SOFTWARE_VERSION,
        hardware_version: str = DEFAULT_HARDWARE_VERSION,
    ) -> None:
        """Create a balancer; ``cell_voltages`` (if given) sets the cell count."""
        defaults = CHEMISTRY_DEFAULTS[Chemistry(chemistry)]
        if cell_voltages is None:
            cell_voltages = [
                round(defaults.nominal + _UNBALANCE_MV[i % 16] / 1000, 3)
                for i in range(cells)
            ]
        if not 1 <= len(cell_voltages) <= P81_TABLE.live.max_cells:
            msg = f"a balancer has 1..48 cells, not {len(cell_voltages)}"
            raise ValueError(msg)
        if address not in P81_ADDRESSES:
            msg = f"the board number must be 1..15, not {address}"
            raise ValueError(msg)
        if link not in LINKS:
            msg = f"link must be one of {LINKS}, not {link!r}"
            raise ValueError(msg)
        self.variants = frozenset(Variant(v) for v in variants)
        if not self.variants:
            msg = "a balancer answers at least one variant"
            raise ValueError(msg)
        self.address = address
        self.link = link
        self.ble = ble
        self.clock = clock
        self.faults = faults if faults is not None else Faults()
        self.quirks = quirks if quirks is not None else Quirks()
        self.volts_per_amp_second = volts_per_amp_second
        self.software_version = software_version
        self.hardware_version = hardware_version
        self.password = DEFAULT_PASSWORD

        self.chemistry = Chemistry(chemistry)
        self.cell_voltages: list[float] = [float(v) for v in cell_voltages]
        self.temperatures: list[float] = [float(t) for t in temperatures]
        self.balance_start_voltage = defaults.balance_start
        self.balance_delta_voltage = 0.020
        self.sleep_time = NEVER_SLEEP
        self.balancer_enabled = True
        self.cell_overvoltage_alarm, self.cell_overvoltage_alarm_l2 = (
            defaults.overvoltage
        )
        self.cell_undervoltage_alarm, self.cell_undervoltage_alarm_l2 = (
            defaults.undervoltage
        )
        self.discharge_overtemperature_alarm = 85.0
        """Level 2 threshold (D2 0x9C): the captured balancer leaves L1 at 0."""
        self.discharge_undertemperature_alarm = -40.0
        """Level 2 threshold (D2 0x9E)."""
        self.balance_current_limit = MAX_BALANCE_CURRENT
        self.cell_reference_voltage = defaults.reference

        self.writes: list[RecordedWrite] = []
        """Every register write received, meaningful or not."""
        self.requests = 0
        """Request frames received that this balancer is addressed by."""
        self.replies = 0
        """Requests answered (before faults)."""

        self.balanced_seconds = 0.0
        """Time balancing ran (the integral the statistics sensors measure)."""
        self.balanced_charge = 0.0
        """Charge the balance current moved while balancing ran, in Ah."""

        self._offset = 0.0
        self._last_time = self.now()
        self._last_activity = self._last_time
        self._parser = RequestParser()

    def __repr__(self) -> str:
        """Short description for test output."""
        variants = ",".join(sorted(v.value for v in self.variants))
        return (
            f"<VirtualBalancer {self.cell_count}S {self.chemistry.value} "
            f"[{variants}] board {self.address} {self.link}>"
        )

    # --- time and physics ---------------------------------------------------

    def now(self) -> float:
        """The balancer's clock: ``clock()`` plus the time :meth:`advance` added."""
        return self.clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Let *seconds* of simulated time pass (physics and the sleep timer)."""
        if seconds < 0:
            msg = "time only moves forward"
            raise ValueError(msg)
        self._offset += seconds
        self.step()

    def step(self) -> None:
        """Bring the physics up to the clock's current time."""
        now = self.now()
        start = self._last_time
        end = now
        if self.sleep_time != NEVER_SLEEP:
            end = min(end, self._last_activity + self.sleep_time)
        if end > start:
            self._integrate(end - start)
        self._last_time = max(now, self._last_time)

    def wake(self) -> None:
        """Wake the balancer, like activity on the UART RX / button pin."""
        self.step()
        self._last_activity = self.now()

    @property
    def asleep(self) -> bool:
        """Whether the balancer sleeps (no request for ``sleep_time`` seconds)."""
        return (
            self.sleep_time != NEVER_SLEEP
            and self.now() - self._last_activity >= self.sleep_time
        )

    @property
    def cell_count(self) -> int:
        """Number of cells; setting it adds cells at the mean voltage or drops some."""
        return len(self.cell_voltages)

    @cell_count.setter
    def cell_count(self, count: int) -> None:
        if not 1 <= count <= P81_TABLE.live.max_cells:
            msg = f"a balancer has 1..48 cells, not {count}"
            raise ValueError(msg)
        cells = self.cell_voltages
        mean = round(sum(cells) / len(cells), 3)
        del cells[count:]
        cells.extend([mean] * (count - len(cells)))

    def set_cell_voltage(self, cell: int, volts: float) -> None:
        """Set the voltage of cell *cell* (1-based)."""
        if not 1 <= cell <= len(self.cell_voltages):
            msg = f"cell {cell} does not exist (1..{len(self.cell_voltages)})"
            raise IndexError(msg)
        self.step()
        self.cell_voltages[cell - 1] = float(volts)

    def _pair(self) -> tuple[int, int] | None:
        """(highest, lowest) cell index when the balancing rule holds."""
        cells = self.cell_voltages
        if not self.balancer_enabled or len(cells) < 2:  # noqa: PLR2004
            return None
        high = max(range(len(cells)), key=cells.__getitem__)
        low = min(range(len(cells)), key=cells.__getitem__)
        if cells[high] < self.balance_start_voltage - _EPSILON:
            return None
        if cells[high] - cells[low] < self.balance_delta_voltage - _EPSILON:
            return None
        return high, low

    def _current(self) -> float:
        return max(0.0, min(MAX_BALANCE_CURRENT, self.balance_current_limit))

    def _integrate(self, seconds: float) -> None:
        cells = self.cell_voltages
        while seconds > 0:
            pair = self._pair()
            current = self._current()
            rate = current * self.volts_per_amp_second
            if pair is None or current <= 0:
                return
            if rate <= 0:  # balancing that moves no voltage: the pair stays
                self.balanced_seconds += seconds
                self.balanced_charge += current * seconds / 3600
                return
            high, low = pair
            tick = min(seconds, _MAX_TICK, _MAX_STEP_VOLTS / rate)
            moved = min(rate * tick, (cells[high] - cells[low]) / 2)
            cells[high] -= moved
            cells[low] += moved
            self.balanced_seconds += tick
            self.balanced_charge += current * tick / 3600
            seconds -= tick

    @property
    def balancing(self) -> bool:
        """Whether balancing runs now."""
        return not self.asleep and self._pair() is not None

    @property
    def balancing_cells(self) -> frozenset[int]:
        """1-based numbers of the two cells charge moves between."""
        pair = None if self.asleep else self._pair()
        return frozenset() if pair is None else frozenset(i + 1 for i in pair)

    @property
    def balance_current(self) -> float:
        """Amperes moved between cells now."""
        return self._current() if self.balancing else 0.0

    @property
    def alarms(self) -> Alarms:
        """Alarms raised by the thresholds (cells and discharge temperatures)."""
        flags: set[Alarm] = set()
        high, low = max(self.cell_voltages), min(self.cell_voltages)
        # A threshold of 0 is not set (the captured pack thresholds are 0).
        for threshold, alarm in (
            (self.cell_overvoltage_alarm, Alarm.CELL_OVERVOLTAGE_L1),
            (self.cell_overvoltage_alarm_l2, Alarm.CELL_OVERVOLTAGE_L2),
        ):
            if threshold > 0 and high >= threshold - _EPSILON:
                flags.add(alarm)
        for threshold, alarm in (
            (self.cell_undervoltage_alarm, Alarm.CELL_UNDERVOLTAGE_L1),
            (self.cell_undervoltage_alarm_l2, Alarm.CELL_UNDERVOLTAGE_L2),
        ):
            if threshold > 0 and low <= threshold + _EPSILON:
                flags.add(alarm)
        if self.temperatures:
            if max(self.temperatures) >= self.discharge_overtemperature_alarm:
                flags.add(Alarm.DISCHARGE_OVERTEMP_L2)
            if min(self.temperatures) <= self.discharge_undertemperature_alarm:
                flags.add(Alarm.DISCHARGE_UNDERTEMP_L2)
        return Alarms.from_flags(flags)

    # --- requests -----------------------------------------------------------

    def handle(self, request: bytes | bytearray) -> bytes | list[bytes] | None:
        """Answer one complete request frame, without faults.

        Returns the reply frame, the frames of a multi-frame A5 reply, or
        ``None`` when the device does not answer (other variant or board,
        corrupt frame, unknown command, asleep, 0x93).
        """
        frame = bytes(request)
        variant = _variant_of(frame)
        if variant is None or variant not in self.variants:
            return None
        if variant is Variant.P81 and frame[0] != P81_REQUEST_BASE + self.address:
            return None
        self.requests += 1
        self.step()
        if self.asleep:
            if self.link == "uart":
                # Activity on the UART RX pin wakes it; this request is lost.
                self.wake()
            return None
        self._last_activity = self.now()
        quirk = self.quirks.decide(variant, frame)
        if quirk == IGNORE:
            return None
        if quirk is not None:  # refused: Modbus exception 2 / 3
            code = 0x02 if frame[1] == FC_READ and self._fits(frame) else 0x03
            return append_crc(
                bytes((self._reply_address(variant), FC_READ | FC_ERROR_FLAG, code))
            )
        if variant is Variant.A5:
            reply: bytes | list[bytes] | None = self._handle_a5(frame)
        else:
            reply = self._handle_modbus(variant, frame)
        if reply is not None:
            self.replies += 1
        return reply

    def _fits(self, frame: bytes) -> bool:
        limit = self.quirks.max_read
        return limit is None or int.from_bytes(frame[4:6], "big") <= limit

    def _reply_address(self, variant: Variant) -> int:
        return D2_ADDRESS if variant is Variant.D2 else P81_REPLY_BASE + self.address

    def answer(self, request: bytes | bytearray) -> Reply | None:
        """Answer one complete request frame, with faults decided.

        ``None`` when the device does not answer at all (see :meth:`handle`)
        or is ``silent``.
        """
        result = self.handle(request)
        if result is None or self.faults.silent:
            return None
        frames = (result,) if isinstance(result, bytes) else tuple(result)
        return _apply_faults(self.faults, bytes(request), frames)

    def respond(self, data: bytes | bytearray) -> list[Reply]:
        """Take raw bytes in any chunking; return the replies they complete."""
        replies = []
        for frame in self._parser.feed(data):
            reply = self.answer(frame)
            if reply is not None:
                replies.append(reply)
        return replies

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Take raw bytes in any chunking; return the bytes to send back.

        Faults are applied: dropped replies are missing, corrupt, truncated
        and garbage-prefixed ones are altered. Delays and disconnects cannot
        be expressed as bytes: use :meth:`respond` to see them.
        """
        return [reply.data for reply in self.respond(data) if reply.data]

    # --- register views -----------------------------------------------------

    def registers(self, variant: Variant, start: int, count: int) -> list[int]:
        """Return what a read of *count* registers from *start* would show."""
        if variant is Variant.A5:
            msg = "A5 has commands, not registers"
            raise ValueError(msg)
        regs = self._register_map(variant)
        default = self._default_register(variant)
        return [regs.get(reg, default(reg)) for reg in range(start, start + count)]

    def _register_map(self, variant: Variant) -> dict[int, int]:
        return self._d2_registers() if variant is Variant.D2 else self._p81_registers()

    @staticmethod
    def _default_register(variant: Variant) -> Callable[[int], int]:
        if variant is Variant.D2:
            return lambda reg: 0 if reg <= 0xFF else UNAVAILABLE  # noqa: PLR2004
        return lambda _reg: 0

    def _stats(self) -> dict[str, int]:
        """Values several variants show, in raw units."""
        mv = [round(v * 1000) for v in self.cell_voltages]
        temps = [_clip(round(t) + TEMPERATURE_OFFSET) for t in self.temperatures]
        total_mv = sum(mv)
        pair = None if self.asleep else self._pair()
        bits = 0 if pair is None else sum(1 << i for i in pair)
        return {
            "cells": len(mv),
            "sensors": len(temps),
            "total_mv": total_mv,
            "average_mv": total_mv // len(mv),
            "max_mv": max(mv),
            "max_cell": mv.index(max(mv)) + 1,
            "min_mv": min(mv),
            "min_cell": mv.index(min(mv)) + 1,
            "max_temp": max(temps, default=0),
            "max_sensor": temps.index(max(temps)) + 1 if temps else 0,
            "min_temp": min(temps, default=0),
            "min_sensor": temps.index(min(temps)) + 1 if temps else 0,
            "balancing": int(pair is not None),
            "bits": bits,
            "current_ma": round(self._current() * 1000) if pair else 0,
            "alarms": self.alarms.raw,
        }

    def _live_registers(
        self, table: ModbusTable, stats: dict[str, int]
    ) -> dict[int, int]:
        """The live values every Modbus variant's table places."""
        live = table.live
        regs: dict[int, int] = {}
        for i in range(live.max_cells):
            cell = self.cell_voltages[i] if i < len(self.cell_voltages) else 0.0
            regs[live.cells + i] = round(cell * 1000)
        for i in range(live.max_temperatures):
            if i < len(self.temperatures):
                regs[live.temperatures + i] = _clip(
                    round(self.temperatures[i]) + live.temperature_offset
                )
        regs[live.pack_voltage] = math.floor(
            stats["total_mv"] / 1000 / live.pack_voltage_scale + _EPSILON
        )
        regs[live.cell_count] = stats["cells"]
        regs[live.temperature_count] = stats["sensors"]
        alarm_bytes = stats["alarms"].to_bytes(8, "little")
        for i, word in enumerate(_words(alarm_bytes)):
            regs[live.alarms + i] = word
        regs[live.balance_current] = live.balance_current_offset + round(
            stats["current_ma"] / 1000 / live.balance_current_scale
        )
        if live.balance_bits is not None:
            for word in range(live.balance_bits_words):
                regs[live.balance_bits + word] = stats["bits"] >> (16 * word) & 0xFFFF
        return regs

    def _settings_registers(self, table: ModbusTable) -> dict[int, int]:
        regs: dict[int, int] = {}
        codes = {chem: code for code, chem in table.chemistry_codes.items()}
        for setting, register in table.settings.items():
            if setting is Setting.CHEMISTRY:
                regs[register.register] = codes.get(self.chemistry, 0)
                continue
            value = float(getattr(self, setting.value))
            regs[register.register] = _clip(register.encode(value))
        return regs

    def _info_registers(self, table: ModbusTable) -> dict[int, int]:
        block = table.info_block
        data = bytearray(2 * block.count)
        layout = (table.software_version, table.hardware_version)
        if self.quirks.wide_versions and table.wide_versions is not None:
            layout = table.wide_versions
        for (offset, size), text in (
            (layout[0], self.software_version),
            (layout[1], self.hardware_version),
        ):
            data[offset : offset + size] = _ascii(text, size)
        return {block.start + i: word for i, word in enumerate(_words(bytes(data)))}

    def _d2_registers(self) -> dict[int, int]:
        stats = self._stats()
        regs: dict[int, int] = {}
        # Unsupported ranges of the captured balancer read 0xFFFF.
        regs.update(dict.fromkeys(range(0x63, 0x7F), UNAVAILABLE))
        regs.update(dict.fromkeys(range(0xDF, 0xF0), UNAVAILABLE))
        # Live block (section 5.2), then the table's positions on top.
        regs.update(
            {
                0x29: CURRENT_OFFSET,
                0x2B: stats["max_mv"],
                0x2C: stats["min_mv"],
                0x2D: stats["max_temp"],
                0x2E: stats["min_temp"],
                0x34: stats["balancing"],
                0x37: stats["average_mv"],
                0x38: stats["max_mv"] - stats["min_mv"],
                0x42: UNAVAILABLE,  # MOS temperature: not fitted
            }
        )
        live = self._live_registers(D2_TABLE, stats)
        # With fewer than 7 sensors the balancer shows the pack voltage and the
        # average cell voltage where temperatures 7 and 8 would be (S1).
        if stats["sensors"] <= 6:  # noqa: PLR2004
            regs[0x26] = live[D2_TABLE.live.pack_voltage]
            regs[0x27] = stats["average_mv"]
        regs.update(live)
        # Settings 0x80..0xA8 as captured (section 5.3), chemistry adapted.
        regs.update(
            {
                0x80: 500,
                0x81: round(self.cell_reference_voltage * 1000),
                0x82: 1,
                0x84: 6,
                0x85: 6,
                0x86: stats["sensors"],
                0x87: 1,
                0x88: 1,
                0x8C: round(self.cell_overvoltage_alarm_l2 * 1000),
                0x8E: round(self.cell_undervoltage_alarm_l2 * 1000),
                0x91: 5000,
                0x92: 5000,
                0x93: CURRENT_OFFSET,
                0x94: CURRENT_OFFSET,
                0x95: CURRENT_OFFSET,
                0x96: CURRENT_OFFSET,
                0x97: TEMPERATURE_OFFSET,
                0x98: 85 + TEMPERATURE_OFFSET,
                0x99: TEMPERATURE_OFFSET,
                0x9A: 0,
                0x9B: TEMPERATURE_OFFSET,
                0x9D: TEMPERATURE_OFFSET,
                0xA8: 47 + TEMPERATURE_OFFSET,
            }
        )
        regs.update(self._settings_registers(D2_TABLE))
        regs.update(self._info_registers(D2_TABLE))
        for i, word in enumerate(_words(_ascii(self.password, 6))):
            regs[0xC9 + i] = word
        regs.update({0xCC: 0x0001, 0xCD: 0x0100, 0xCE: stats["cells"]})
        return {reg: _clip(value) for reg, value in regs.items()}

    def _p81_registers(self) -> dict[int, int]:
        stats = self._stats()
        live = P81_TABLE.live
        regs: dict[int, int] = {}
        # Temperature slots without a sensor read 0xFF (S14).
        regs.update(
            dict.fromkeys(
                range(live.temperatures, live.temperatures + live.max_temperatures),
                0xFF,
            )
        )
        regs.update(
            {
                0x39: CURRENT_OFFSET,
                0x3E: stats["max_mv"],
                0x3F: stats["max_cell"],
                0x40: stats["min_mv"],
                0x41: stats["min_cell"],
                0x42: stats["max_mv"] - stats["min_mv"],
                0x43: stats["max_temp"],
                0x44: stats["max_sensor"],
                0x45: stats["min_temp"],
                0x46: stats["min_sensor"],
                0x47: stats["max_temp"] - stats["min_temp"],
                0x57: stats["average_mv"],
                0x5A: UNAVAILABLE,  # MOS temperature: not fitted
                0xCF: UNAVAILABLE,  # the D2 switch does not exist on p81 (S5)
                0x100: self.address,
                0x103: stats["cells"],
            }
        )
        regs.update(self._live_registers(P81_TABLE, stats))
        # 0x4D: 0 off, 1 passive, 2 active balancing.
        regs[live.balancing] = 2 * stats["balancing"]
        regs.update(self._settings_registers(P81_TABLE))
        regs.update(self._info_registers(P81_TABLE))
        return {reg: _clip(value) for reg, value in regs.items()}

    # --- Modbus (D2 / p81) --------------------------------------------------

    def _handle_modbus(self, variant: Variant, frame: bytes) -> bytes | None:
        reply_address = (
            D2_ADDRESS if variant is Variant.D2 else P81_REPLY_BASE + self.address
        )
        function = frame[1]
        start = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        if function == FC_READ:
            if not 1 <= count <= MAX_READ_REGISTERS or start + count > 0x10000:  # noqa: PLR2004
                # Modbus exception 3: illegal data value.
                return append_crc(bytes((reply_address, FC_READ | FC_ERROR_FLAG, 0x03)))
            values = self.registers(variant, start, count)
            data = b"".join(_u16(value) for value in values)
            return append_crc(bytes((reply_address, FC_READ, 2 * count)) + data)
        if function == FC_WRITE_SINGLE:
            self._write(variant, start, count)
            return append_crc(bytes((reply_address,)) + frame[1:6])
        # FC10 without a byte count (the vendor's variant of Modbus).
        for i in range(count):
            value = int.from_bytes(frame[6 + 2 * i : 8 + 2 * i], "big")
            self._write(variant, start + i, value)
        answered = count
        if variant is Variant.P81 and start >= P81_ODD_WRITE_START:
            answered = 0xAAAA
        return append_crc(
            bytes((reply_address, FC_WRITE_MULTIPLE)) + _u16(start) + _u16(answered)
        )

    def _write(self, variant: Variant, register: int, raw: int) -> None:
        self.writes.append(RecordedWrite(variant, register, raw, self.now()))
        table = MODBUS_TABLES[variant]
        for setting, setting_register in table.settings.items():
            if setting_register.register == register:
                self._apply(table, setting, setting_register, raw)
                return

    def _apply(
        self,
        table: ModbusTable,
        setting: Setting,
        register: SettingRegister,
        raw: int,
    ) -> None:
        if setting is Setting.BALANCER_ENABLED:
            self.balancer_enabled = raw != 0
        elif setting is Setting.CHEMISTRY:
            chemistry = table.chemistry_codes.get(raw)
            if chemistry is not None:
                self.chemistry = chemistry
        elif setting is Setting.CELL_COUNT:
            if 1 <= raw <= table.live.max_cells:
                self.cell_count = raw
        elif setting is Setting.SLEEP_TIME:
            self.sleep_time = round(register.decode(raw))
        else:
            setattr(self, setting.value, register.decode(raw))

    # --- A5 -----------------------------------------------------------------

    def _handle_a5(self, frame: bytes) -> bytes | list[bytes] | None:
        command = frame[2]
        if command in A5_WRITE_COMMANDS:
            value = int.from_bytes(frame[4:12], "big")
            self.writes.append(RecordedWrite(Variant.A5, command, value, self.now()))
            return None
        table = A5_TABLE
        stats = self._stats()
        single: dict[int, bytes] = {
            table.pack: _u16(stats["total_mv"] // 100)
            + _u16(0)
            + _u16(CURRENT_OFFSET)
            + _u16(0),
            0x91: _u16(stats["max_mv"])
            + bytes((stats["max_cell"],))
            + _u16(stats["min_mv"])
            + bytes((stats["min_cell"],)),
            0x92: bytes(
                (
                    min(stats["max_temp"], 0xFF),
                    stats["max_sensor"],
                    min(stats["min_temp"], 0xFF),
                    stats["min_sensor"],
                )
            ),
            table.counts: bytes((stats["cells"], stats["sensors"])),
            table.balancing: stats["bits"].to_bytes(6, "little"),
            table.alarms: stats["alarms"].to_bytes(8, "little"),
            table.balance_settings: _u16(round(self.balance_start_voltage * 1000))
            + _u16(round(self.balance_delta_voltage * 1000)),
            table.cell_thresholds: b"".join(
                _u16(round(v * 1000))
                for v in (
                    self.cell_overvoltage_alarm,
                    self.cell_overvoltage_alarm_l2,
                    self.cell_undervoltage_alarm,
                    self.cell_undervoltage_alarm_l2,
                )
            ),
            table.temperature_thresholds: bytes(
                min(_clip(round(t) + TEMPERATURE_OFFSET), 0xFF)
                for t in (
                    0,
                    85,
                    0,
                    -40,
                    0,
                    self.discharge_overtemperature_alarm,
                    0,
                    self.discharge_undertemperature_alarm,
                )
            ),
        }
        if command in single:
            return _a5_frame(command, single[command])
        if command == table.cells:
            return self._a5_cells()
        if command == table.temperatures:
            return self._a5_temperatures()
        if command in (table.software_version, table.hardware_version):
            text = (
                self.software_version
                if command == table.software_version
                else self.hardware_version
            )
            data = _ascii(text, 7 * table.version_frames)
            return [
                _a5_frame(command, bytes((n + 1,)) + data[7 * n : 7 * n + 7])
                for n in range(table.version_frames)
            ]
        # 0x93 (MOSFETs, BMS only) and unknown commands get no answer.
        return None

    def _a5_cells(self) -> list[bytes]:
        per = A5_TABLE.cells_per_frame
        mv = [round(v * 1000) for v in self.cell_voltages]
        frames = BLE_CELL_FRAMES if self.ble else max(1, math.ceil(len(mv) / per))
        mv += [0] * (frames * per - len(mv))
        return [
            _a5_frame(
                A5_TABLE.cells,
                bytes((n + 1,))
                + b"".join(_u16(v) for v in mv[n * per : n * per + per]),
            )
            for n in range(frames)
        ]

    def _a5_temperatures(self) -> list[bytes]:
        per = A5_TABLE.temperatures_per_frame
        raw = [
            min(_clip(round(t) + TEMPERATURE_OFFSET), 0xFF) for t in self.temperatures
        ]
        frames = (
            BLE_TEMPERATURE_FRAMES if self.ble else max(1, math.ceil(len(raw) / per))
        )
        raw += [0] * (frames * per - len(raw))
        return [
            _a5_frame(
                A5_TABLE.temperatures, bytes((n + 1, *raw[n * per : n * per + per]))
            )
            for n in range(frames)
        ]


def _apply_faults(faults: Faults, request: bytes, frames: tuple[bytes, ...]) -> Reply:
    kinds = faults.decide()
    if "disconnect" in kinds:
        data = b""
        if faults.disconnect_mid_frame:
            data = frames[0][: max(1, len(frames[0]) // 2)]
        return Reply(request, frames, data, kinds, disconnect=True)
    if "drop" in kinds:
        return Reply(request, frames, b"", kinds)
    parts = [bytearray(frame) for frame in frames]
    if "corrupt" in kinds:
        for part in parts:
            part[-1] ^= 0xFF
    data = b"".join(parts)
    if "truncate" in kinds:
        data = data[: max(1, len(frames[0]) // 2)]
    if "garbage" in kinds:
        data = faults.junk() + data
    delay = faults.delay_seconds if "delay" in kinds else 0.0
    return Reply(request, frames, data, kinds, delay=delay)
