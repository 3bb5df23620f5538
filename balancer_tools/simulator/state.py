"""The virtual balancer's state and physics, in SI units.

Cells, temperatures, settings and the clock live here; the wire views
(:mod:`.modbus`, :mod:`.a5`) turn them into registers and replies. Defaults
are the values captured from a real DALY balancer (shared/protocol.md
sections 5.3 and 8.1), adapted to the chemistry.

Physics are advanced lazily: on each request, and by :meth:`advance` and
:meth:`step`. While balancing runs, charge moves from the highest to the
lowest cell at the balance current, so the spread really shrinks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
import time

from custom_components.active_balancer.protocol.frames import P81_ADDRESSES
from custom_components.active_balancer.protocol.model import (
    NEVER_SLEEP,
    Alarm,
    Alarms,
    Chemistry,
    Variant,
)
from custom_components.active_balancer.protocol.registers import P81_TABLE

from .faults import Faults
from .parser import RequestParser
from .quirks import Quirks
from .raw import TEMPERATURE_OFFSET, clip

LINKS = ("uart", "rs485")

DEFAULT_SOFTWARE_VERSION = "B002_111132_03"
DEFAULT_HARDWARE_VERSION = "E303-032DG-SMB"
DEFAULT_PASSWORD = "123456"  # noqa: S105 - the vendor default, shown not checked

MAX_BALANCE_CURRENT = 1.0
"""Both products balance with at most 1 A."""

EPSILON = 1e-9
"""Tolerance of voltage comparisons and roundings."""

_MAX_TICK = 1.0
"""Longest physics step, in seconds."""
_MAX_STEP_VOLTS = 0.00025
"""Most a cell moves in one physics step."""

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


def _check_cell_count(count: int) -> None:
    if not 1 <= count <= P81_TABLE.live.max_cells:
        msg = f"a balancer has 1..48 cells, not {count}"
        raise ValueError(msg)


def _check_line(address: int, link: str) -> None:
    if address not in P81_ADDRESSES:
        msg = f"the board number must be 1..15, not {address}"
        raise ValueError(msg)
    if link not in LINKS:
        msg = f"link must be one of {LINKS}, not {link!r}"
        raise ValueError(msg)


def _default_cells(defaults: ChemistryDefaults, cells: int) -> list[float]:
    """The captured pack's unbalance on top of the chemistry's nominal voltage."""
    return [
        round(defaults.nominal + _UNBALANCE_MV[i % 16] / 1000, 3) for i in range(cells)
    ]


class BalancerState:
    """What a balancer is and measures: cells, settings, clock and balancing.

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
            cell_voltages = _default_cells(defaults, cells)
        _check_cell_count(len(cell_voltages))
        _check_line(address, link)
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
        self._factory_settings(defaults)
        self._start_counting()

        self._offset = 0.0
        self._last_time = self.now()
        self._last_activity = self._last_time
        self._parser = RequestParser()
        """The UART's receive buffer (a request may arrive in pieces)."""

    def _factory_settings(self, defaults: ChemistryDefaults) -> None:
        """The settings a new balancer of this chemistry comes with."""
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

    def _start_counting(self) -> None:
        """Zero what the balancer counts: writes, requests, balancing done."""
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
        _check_cell_count(count)
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
        if cells[high] < self.balance_start_voltage - EPSILON:
            return None
        if cells[high] - cells[low] < self.balance_delta_voltage - EPSILON:
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
            if threshold > 0 and high >= threshold - EPSILON:
                flags.add(alarm)
        for threshold, alarm in (
            (self.cell_undervoltage_alarm, Alarm.CELL_UNDERVOLTAGE_L1),
            (self.cell_undervoltage_alarm_l2, Alarm.CELL_UNDERVOLTAGE_L2),
        ):
            if threshold > 0 and low <= threshold + EPSILON:
                flags.add(alarm)
        if self.temperatures:
            if max(self.temperatures) >= self.discharge_overtemperature_alarm:
                flags.add(Alarm.DISCHARGE_OVERTEMP_L2)
            if min(self.temperatures) <= self.discharge_undertemperature_alarm:
                flags.add(Alarm.DISCHARGE_UNDERTEMP_L2)
        return Alarms.from_flags(flags)

    def _stats(self) -> dict[str, int]:
        """Values several variants show, in raw units."""
        mv = [round(v * 1000) for v in self.cell_voltages]
        temps = [clip(round(t) + TEMPERATURE_OFFSET) for t in self.temperatures]
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
