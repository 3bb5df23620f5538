"""Balancing statistics: time balanced, charge moved, spread at top of charge.

The balancer reports, on every poll, whether it balances and (on variants that
have it) the balance current. The totals integrate those polled values over
time; Home Assistant's long-term statistics then give them per hour, day and
week. A balancer that works more every week at the same loads is the early
sign of a drifting cell.

How a total is integrated: every successful poll is a sample, and between
two samples the value is interpolated linearly (trapezoid rule), so a start or
stop of balancing between two polls is counted as half the interval. A failed
poll ends the integration: the time until the next successful poll is
skipped, not guessed, and so is the time Home Assistant was not running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math
import time
from typing import Any, Self

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorEntityDescription,
    SensorExtraStoredData,
    SensorStateClass,
)
from homeassistant.const import UnitOfElectricPotential, UnitOfTime
from homeassistant.core import callback
from homeassistant.util import dt as dt_util

from .coordinator import BalancerCoordinator, BalancerData
from .entity import BalancerEntity
from .protocol import Reading, Variant

AMPERE_HOUR = "Ah"
SPREAD_WINDOW_HOURS = 24
"""The spread is taken at the highest average cell voltage of this window."""


def monotonic() -> float:
    """Seconds on a clock that never jumps (patched by frozen-time tests)."""
    return time.monotonic()


class Integral:
    """The time integral of a polled, non-negative value; gaps are skipped."""

    def __init__(self, total: float = 0.0) -> None:
        """Start at *total*."""
        self.total = total
        self._last: tuple[float, float] | None = None

    def add(self, when: float, value: float) -> None:
        """Take the *value* polled at *when* (seconds)."""
        value = max(0.0, value)
        last, self._last = self._last, (when, value)
        if last is None:
            return
        start, previous = last
        if when > start:
            self.total += (previous + value) / 2 * (when - start)

    def gap(self) -> None:
        """The balancer was not reached: do not integrate over this time."""
        self._last = None


@dataclass(frozen=True, kw_only=True)
class TotalDescription(SensorEntityDescription):
    """A total and the polled value it integrates (per second)."""

    rate_fn: Callable[[Reading], float | None]
    """What the total grows by per second now; None: unknown (a gap)."""
    exists_fn: Callable[[BalancerData], bool]


def _time_rate(reading: Reading) -> float | None:
    """One second per second while balancing runs."""
    if reading.balancing is None:
        return None
    return 1.0 if reading.balancing else 0.0


def _charge_rate(reading: Reading) -> float | None:
    """Ampere-hours per second the balance current moves now."""
    if reading.balancing is False:
        return 0.0
    if reading.balance_current is None:  # the device left the current out
        return None
    return abs(reading.balance_current) / 3600


TOTALS: tuple[TotalDescription, ...] = (
    TotalDescription(
        key="balancing_time",
        translation_key="balancing_time",
        device_class=SensorDeviceClass.DURATION,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        suggested_unit_of_measurement=UnitOfTime.HOURS,
        suggested_display_precision=2,
        rate_fn=_time_rate,
        exists_fn=lambda _: True,
    ),
    TotalDescription(
        key="charge_moved",
        translation_key="charge_moved",
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=AMPERE_HOUR,
        suggested_display_precision=3,
        rate_fn=_charge_rate,
        # Like the balance current sensor: A5 has no current at all.
        exists_fn=lambda d: d.info.variant is not Variant.A5,
    ),
)

SPREAD = SensorEntityDescription(
    key="top_of_charge_spread",
    translation_key="top_of_charge_spread",
    device_class=SensorDeviceClass.VOLTAGE,
    state_class=SensorStateClass.MEASUREMENT,
    native_unit_of_measurement=UnitOfElectricPotential.VOLT,
    # Shown in mV like the cell voltage difference.
    suggested_unit_of_measurement=UnitOfElectricPotential.MILLIVOLT,
    suggested_display_precision=0,
)


def statistics_sensors(coordinator: BalancerCoordinator) -> list[BalancerEntity]:
    """The statistics sensors this balancer's readings support."""
    sensors: list[BalancerEntity] = [
        BalancingTotalSensor(coordinator, description)
        for description in TOTALS
        if description.exists_fn(coordinator.data)
    ]
    sensors.append(TopOfChargeSpreadSensor(coordinator, SPREAD))
    return sensors


def _number(value: Any) -> float | None:
    """A finite, non-negative number, else None (a bad restored value)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class BalancingTotalSensor(BalancerEntity, RestoreSensor):
    """A total that only grows: restored at start, integrated on every poll."""

    entity_description: TotalDescription

    def __init__(
        self, coordinator: BalancerCoordinator, description: TotalDescription
    ) -> None:
        """Create the total, starting at zero until restored."""
        super().__init__(coordinator, description)
        self._integral = Integral()
        self._reading: Reading | None = None

    async def async_added_to_hass(self) -> None:
        """Continue from the total before the restart; start integrating."""
        last = await self.async_get_last_sensor_data()
        if (
            last is not None
            and last.native_unit_of_measurement
            == self.entity_description.native_unit_of_measurement
            and (total := _number(last.native_value)) is not None
        ):
            self._integral.total = total
        self._sample()
        await super().async_added_to_hass()

    def _sample(self) -> None:
        if not self.coordinator.last_update_success:
            self._integral.gap()
            return
        reading = self.coordinator.data.reading
        if reading is self._reading:  # e.g. settings changed after a write
            return
        self._reading = reading
        rate = self.entity_description.rate_fn(reading)
        if rate is None:
            self._integral.gap()
        else:
            self._integral.add(monotonic(), rate)

    @callback
    def _handle_coordinator_update(self) -> None:
        self._sample()
        super()._handle_coordinator_update()

    @property
    def native_value(self) -> float:
        """The total so far."""
        digits = 1 if self.entity_description.key == "balancing_time" else 5
        return round(self._integral.total, digits)

    def _shown(self) -> float:
        return self.native_value


@dataclass(frozen=True, slots=True)
class _Peak:
    """The highest average cell voltage of one hour and the spread then."""

    average: float
    spread: float


class TopOfChargeSpread:
    """The cell spread at the highest average cell voltage of the last 24 h.

    The balancer measures no pack current and no state of charge, so the top
    of charge is where the average cell voltage peaks. There a weak cell shows
    most: it reaches the knee of its curve first and runs ahead of the others.
    Kept per hour, so that old peaks leave the window and survive a restart.
    """

    def __init__(self, peaks: dict[int, _Peak] | None = None) -> None:
        """Start with *peaks* (by hour since the epoch), else none."""
        self.peaks: dict[int, _Peak] = dict(peaks or {})

    def add(self, when: float, average: float, spread: float) -> None:
        """Take a reading at *when* (seconds since the epoch)."""
        hour = int(when // 3600)
        self._expire(hour)
        peak = self.peaks.get(hour)
        if peak is None or average > peak.average:
            self.peaks[hour] = _Peak(average, spread)

    def _expire(self, hour: int) -> None:
        for old in [h for h in self.peaks if h <= hour - SPREAD_WINDOW_HOURS]:
            del self.peaks[old]

    def value(self, when: float) -> float | None:
        """The spread at the window's highest average, None without readings."""
        self._expire(int(when // 3600))
        if not self.peaks:
            return None
        return max(self.peaks.values(), key=lambda p: p.average).spread

    def as_dict(self) -> dict[str, list[float]]:
        """JSON-ready peaks, for the restore state."""
        return {str(h): [p.average, p.spread] for h, p in self.peaks.items()}

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Peaks from :meth:`as_dict`; anything malformed is dropped."""
        peaks: dict[int, _Peak] = {}
        if isinstance(data, dict):
            for hour, pair in data.items():
                try:
                    average, spread = (float(v) for v in pair)
                    peaks[int(hour)] = _Peak(average, spread)
                except (TypeError, ValueError):
                    continue
        return cls(peaks)


@dataclass
class _SpreadStoredData(SensorExtraStoredData):
    """The sensor's value and the hourly peaks behind it."""

    peaks: dict[str, list[float]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**super().as_dict(), "peaks": self.peaks}


class TopOfChargeSpreadSensor(BalancerEntity, RestoreSensor):
    """Cell voltage difference at the top of charge of the last 24 hours."""

    def __init__(
        self, coordinator: BalancerCoordinator, description: SensorEntityDescription
    ) -> None:
        """Create the sensor with no peaks yet."""
        super().__init__(coordinator, description)
        self._spread = TopOfChargeSpread()

    async def async_added_to_hass(self) -> None:
        """Restore the hourly peaks; take the current reading."""
        if (extra := await self.async_get_last_extra_data()) is not None:
            self._spread = TopOfChargeSpread.from_dict(extra.as_dict().get("peaks"))
        self._sample()
        await super().async_added_to_hass()

    def _sample(self) -> None:
        if not self.coordinator.last_update_success:
            return
        reading = self.coordinator.data.reading
        average, spread = reading.average_cell_voltage, reading.delta_cell_voltage
        if average is not None and spread is not None:
            self._spread.add(dt_util.utcnow().timestamp(), average, spread)

    @callback
    def _handle_coordinator_update(self) -> None:
        self._sample()
        super()._handle_coordinator_update()

    @property
    def native_value(self) -> float | None:
        """The spread at the last day's top of charge."""
        return self._spread.value(dt_util.utcnow().timestamp())

    @property
    def extra_restore_state_data(self) -> _SpreadStoredData:
        """Keep the hourly peaks across a restart."""
        return _SpreadStoredData(
            self.native_value,
            self.native_unit_of_measurement,
            self._spread.as_dict(),
        )

    def _shown(self) -> float | None:
        return self.native_value
