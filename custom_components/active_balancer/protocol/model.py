"""Typed model of what a balancer reports and what can be set on it.

All values are in SI units: volts, amperes, seconds, degrees Celsius.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from statistics import fmean
from types import MappingProxyType
from typing import Any


class Variant(StrEnum):
    """Wire protocol variant a balancer speaks."""

    D2 = "d2"
    """Modbus-like frames with slave address 0xD2 (BLE dongle, UART)."""
    P81 = "p81"
    """Modbus-like frames with request address 0x80+N and reply 0x50+N (RS485)."""
    A5 = "a5"
    """Legacy 13-byte DALY frames (read only)."""


class Chemistry(StrEnum):
    """Cell chemistry, with the plausible cell voltage range from the manuals."""

    LFP = "lfp"
    NMC = "nmc"
    LTO = "lto"

    @property
    def voltage_range(self) -> tuple[float, float]:
        """Return the (low, high) cell voltage the manuals call plausible."""
        return _CHEMISTRY_RANGES[self]


_CHEMISTRY_RANGES: dict[Chemistry, tuple[float, float]] = {
    Chemistry.NMC: (3.0, 4.15),
    Chemistry.LFP: (2.5, 3.6),
    Chemistry.LTO: (1.8, 2.8),
}

NEVER_SLEEP = 65535
"""Sleep time value that disables sleeping (both manuals)."""

MIN_BALANCE_DELTA = 0.020
"""Smallest balance delta voltage the manuals allow (20 mV)."""

MIN_PACK_VOLTAGE = 10.0
"""Below this pack voltage the DALY manual forbids running the balancer."""


class Alarm(IntEnum):
    """Alarm and fault flags, numbered by bit in the 64-bit alarm mask.

    Bit ``n`` is bit ``n % 8`` of byte ``n // 8`` in the vendor's A5 0x98 layout;
    the D2 and p81 fault words carry the same bytes.
    """

    CELL_OVERVOLTAGE_L1 = 0
    CELL_OVERVOLTAGE_L2 = 1
    CELL_UNDERVOLTAGE_L1 = 2
    CELL_UNDERVOLTAGE_L2 = 3
    PACK_OVERVOLTAGE_L1 = 4
    PACK_OVERVOLTAGE_L2 = 5
    PACK_UNDERVOLTAGE_L1 = 6
    PACK_UNDERVOLTAGE_L2 = 7
    CHARGE_OVERTEMP_L1 = 8
    CHARGE_OVERTEMP_L2 = 9
    CHARGE_UNDERTEMP_L1 = 10
    CHARGE_UNDERTEMP_L2 = 11
    DISCHARGE_OVERTEMP_L1 = 12
    DISCHARGE_OVERTEMP_L2 = 13
    DISCHARGE_UNDERTEMP_L1 = 14
    DISCHARGE_UNDERTEMP_L2 = 15
    CHARGE_OVERCURRENT_L1 = 16
    CHARGE_OVERCURRENT_L2 = 17
    DISCHARGE_OVERCURRENT_L1 = 18
    DISCHARGE_OVERCURRENT_L2 = 19
    SOC_HIGH_L1 = 20
    SOC_HIGH_L2 = 21
    SOC_LOW_L1 = 22
    SOC_LOW_L2 = 23
    CELL_VOLTAGE_DIFFERENCE_L1 = 24
    CELL_VOLTAGE_DIFFERENCE_L2 = 25
    TEMPERATURE_DIFFERENCE_L1 = 26
    TEMPERATURE_DIFFERENCE_L2 = 27
    CHARGE_MOS_OVERTEMP = 32
    DISCHARGE_MOS_OVERTEMP = 33
    CHARGE_MOS_SENSOR_FAULT = 34
    DISCHARGE_MOS_SENSOR_FAULT = 35
    CHARGE_MOS_ADHESION = 36
    DISCHARGE_MOS_ADHESION = 37
    CHARGE_MOS_OPEN_CIRCUIT = 38
    DISCHARGE_MOS_OPEN_CIRCUIT = 39
    AFE_FAULT = 40
    CELL_ACQUISITION_DROPPED = 41
    TEMPERATURE_SENSOR_FAULT = 42
    EEPROM_FAULT = 43
    RTC_FAULT = 44
    PRECHARGE_FAULT = 45
    COMMUNICATION_FAULT = 46
    INTERNAL_COMMUNICATION_FAULT = 47
    CURRENT_MODULE_FAULT = 48
    PACK_VOLTAGE_DETECTION_FAULT = 49
    SHORT_CIRCUIT = 50
    LOW_VOLTAGE_NO_CHARGE = 51
    SOFT_SWITCH_MOS_OFF = 52
    CHARGING_CABINET_OFFLINE = 53


ALARM_GROUPS: dict[str, tuple[Alarm, Alarm]] = {
    "cell_overvoltage": (Alarm.CELL_OVERVOLTAGE_L1, Alarm.CELL_OVERVOLTAGE_L2),
    "cell_undervoltage": (Alarm.CELL_UNDERVOLTAGE_L1, Alarm.CELL_UNDERVOLTAGE_L2),
    "discharge_overtemperature": (
        Alarm.DISCHARGE_OVERTEMP_L1,
        Alarm.DISCHARGE_OVERTEMP_L2,
    ),
    "discharge_undertemperature": (
        Alarm.DISCHARGE_UNDERTEMP_L1,
        Alarm.DISCHARGE_UNDERTEMP_L2,
    ),
}
"""The four alarms the manuals list, each raised at level 1 or level 2."""


@dataclass(frozen=True, slots=True)
class Alarms:
    """Alarm state: the raw 64-bit mask and the named flags it sets."""

    raw: int = 0

    @property
    def flags(self) -> frozenset[Alarm]:
        """Return every known flag whose bit is set."""
        return frozenset(alarm for alarm in Alarm if self.raw >> alarm & 1)

    @property
    def names(self) -> list[str]:
        """Return the set flags' names in lower case, in bit order."""
        return [alarm.name.lower() for alarm in sorted(self.flags)]

    def group(self, name: str) -> bool:
        """Whether either level of the alarm group *name* is raised."""
        return any(self.raw >> alarm & 1 for alarm in ALARM_GROUPS[name])

    @classmethod
    def from_bytes(cls, data: bytes) -> Alarms:
        """Build from the vendor's fault bytes, byte 0 first."""
        return cls(int.from_bytes(data[:8], "little"))

    @classmethod
    def from_flags(cls, flags: set[Alarm] | frozenset[Alarm]) -> Alarms:
        """Build from a set of flags."""
        raw = 0
        for alarm in flags:
            raw |= 1 << alarm
        return cls(raw)


PLAUSIBLE_CELL_VOLTAGE = (0.5, 5.0)
"""Cell voltages a 1 A balancer of these families can report, in volts."""
PLAUSIBLE_TEMPERATURE = (-40.0, 120.0)
"""Temperatures its sensors can report, in degrees Celsius."""
PLAUSIBLE_BALANCE_CURRENT = 1.5
"""Largest balance current (either sign) a 1 A balancer can report, in A."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One live reading of a balancer.

    ``cell_voltages`` holds exactly ``cell count`` cells and ``temperatures``
    exactly ``sensor count`` temperatures. Statistics are computed from the
    cell list, never taken from the device's own (lagging) registers. A value
    the device family cannot physically report is ``None`` ("not available"),
    and its raw value is kept in ``implausible``.
    """

    cell_voltages: tuple[float | None, ...]
    temperatures: tuple[float | None, ...] = ()
    """One per sensor the device reports; None where a sensor is not fitted."""
    pack_voltage: float | None = None
    balancing: bool | None = None
    balancing_cells: frozenset[int] | None = None
    """1-based numbers of the cells being balanced, where the variant says."""
    balance_current: float | None = None
    alarms: Alarms = field(default_factory=Alarms)
    implausible: tuple[tuple[str, int], ...] = ()
    """(value name, raw value) of every value dropped as impossible."""

    @property
    def cell_count(self) -> int:
        """Number of cells measured."""
        return len(self.cell_voltages)

    @property
    def _known_cells(self) -> list[float]:
        return [volts for volts in self.cell_voltages if volts is not None]

    @property
    def max_cell_voltage(self) -> float | None:
        """Highest cell voltage."""
        return max(self._known_cells, default=None)

    @property
    def min_cell_voltage(self) -> float | None:
        """Lowest cell voltage."""
        return min(self._known_cells, default=None)

    @property
    def max_cell(self) -> int | None:
        """1-based number of the highest cell (the first one on a tie)."""
        highest = self.max_cell_voltage
        return None if highest is None else self.cell_voltages.index(highest) + 1

    @property
    def min_cell(self) -> int | None:
        """1-based number of the lowest cell (the first one on a tie)."""
        lowest = self.min_cell_voltage
        return None if lowest is None else self.cell_voltages.index(lowest) + 1

    @property
    def average_cell_voltage(self) -> float | None:
        """Mean cell voltage, rounded to the millivolt."""
        known = self._known_cells
        return round(fmean(known), 3) if known else None

    @property
    def delta_cell_voltage(self) -> float | None:
        """Spread between the highest and the lowest cell."""
        known = self._known_cells
        if not known:
            return None
        return round(max(known) - min(known), 3)

    @property
    def cell_voltage_sum(self) -> float:
        """Sum of the cell voltages that are available."""
        return round(sum(self._known_cells), 3)


def plausible_cell(raw_mv: int) -> float | None:
    """Volts of a raw millivolt cell reading, or None if impossible."""
    volts = raw_mv / 1000
    low, high = PLAUSIBLE_CELL_VOLTAGE
    return volts if low <= volts <= high else None


def plausible_temperature(celsius: float) -> float | None:
    """*celsius* if a sensor can report it, else None."""
    low, high = PLAUSIBLE_TEMPERATURE
    return celsius if low <= celsius <= high else None


def plausible_current(amperes: float) -> float | None:
    """*amperes* if a 1 A balancer can report it, else None."""
    return amperes if abs(amperes) <= PLAUSIBLE_BALANCE_CURRENT else None


@dataclass(frozen=True, slots=True)
class Settings:
    """The balancer's settings; ``None`` where the variant does not have one."""

    balance_start_voltage: float | None = None
    balance_delta_voltage: float | None = None
    sleep_time: int | None = None
    """Seconds without traffic before sleeping; 65535 means never."""
    balancer_enabled: bool | None = None
    cell_overvoltage_alarm: float | None = None
    cell_undervoltage_alarm: float | None = None
    discharge_overtemperature_alarm: float | None = None
    discharge_undertemperature_alarm: float | None = None
    cell_count: int | None = None
    chemistry: Chemistry | None = None
    balance_current_limit: float | None = None
    """EXPERIMENTAL: D2 0xD0 read as 0.1 A steps; unverified on hardware."""

    def get(self, setting: Setting) -> SettingValue:
        """The value of *setting*, or None where the device has not reported it."""
        value: SettingValue = getattr(self, setting.value)
        return value

    def with_value(self, setting: Setting, value: SettingValue) -> Settings:
        """A copy with *setting* set to *value* (after a confirmed write)."""
        changes: dict[str, Any] = {setting.value: value}
        return dataclasses.replace(self, **changes)


type SettingValue = float | int | bool | Chemistry | None
"""What one setting holds: a number, on/off, a chemistry, or not reported."""


@dataclass(frozen=True, slots=True)
class BalancerInfo:
    """Identity of a balancer (what the device registry shows of it)."""

    variant: Variant
    address: int | None = None
    """RS485 board number (p81) or ``None`` where the variant has no address."""
    software_version: str | None = None
    hardware_version: str | None = None
    serial_number: str | None = None
    """The device's machine code, where it has a non-empty one."""


class Setting(StrEnum):
    """Settings that can be read; :data:`WRITABLE_SETTINGS` lists those written."""

    BALANCE_START_VOLTAGE = "balance_start_voltage"
    BALANCE_DELTA_VOLTAGE = "balance_delta_voltage"
    SLEEP_TIME = "sleep_time"
    BALANCER_ENABLED = "balancer_enabled"
    CELL_OVERVOLTAGE_ALARM = "cell_overvoltage_alarm"
    CELL_UNDERVOLTAGE_ALARM = "cell_undervoltage_alarm"
    DISCHARGE_OVERTEMPERATURE_ALARM = "discharge_overtemperature_alarm"
    DISCHARGE_UNDERTEMPERATURE_ALARM = "discharge_undertemperature_alarm"
    CELL_COUNT = "cell_count"
    CHEMISTRY = "chemistry"
    BALANCE_CURRENT_LIMIT = "balance_current_limit"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one exchange with a balancer left known, at once.

    :meth:`~.client.BalancerClient.connect`, ``poll``, ``read_live`` and
    ``read_settings`` return one; it never changes afterwards.
    """

    info: BalancerInfo
    reading: Reading
    settings: Settings
    unanswered: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Optional parts the device did not answer, with why (``no answer``,
    ``refused``, ``fill`` or ``unexpected reply``); their values are None."""

    @property
    def variant(self) -> Variant:
        """The protocol variant the device answered."""
        return self.info.variant
