"""The product's rules for setting values, from the vendors' manuals.

Every value is checked here before anything reaches the wire. The rules do not
depend on the protocol variant; which register holds a setting does (see
:mod:`.registers`).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any

from .errors import NotSupported, OutOfRange, RefusalReason
from .model import (
    MIN_BALANCE_DELTA,
    NEVER_SLEEP,
    Chemistry,
    Setting,
    Settings,
)

ALL_CHEMISTRIES_RANGE = (
    min(c.voltage_range[0] for c in Chemistry),
    max(c.voltage_range[1] for c in Chemistry),
)


@dataclass(frozen=True, slots=True)
class Rule:
    """Range and step of one writable setting, in SI units."""

    minimum: float
    maximum: float
    step: float
    unit: str

    def check(self, setting: Setting, value: float) -> float:
        """Return *value* snapped to the step, or raise :class:`OutOfRange`."""
        figures: dict[str, Any] = {
            "setting": setting,
            "value": value,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "step": self.step,
            "unit": self.unit,
        }
        if not math.isfinite(value) or not (
            self.minimum - 1e-9 <= value <= self.maximum + 1e-9
        ):
            msg = (
                f"{setting.value} must be between {self.minimum:g} and "
                f"{self.maximum:g} {self.unit}; {value:g} {self.unit} was refused"
            )
            raise OutOfRange(msg, reason=RefusalReason.RANGE, **figures)
        steps = (value - self.minimum) / self.step
        if abs(steps - round(steps)) > 1e-6:  # noqa: PLR2004
            msg = (
                f"{setting.value} must be a multiple of {self.step:g} {self.unit}; "
                f"{value:g} {self.unit} was refused"
            )
            raise OutOfRange(msg, reason=RefusalReason.STEP, **figures)
        return round(self.minimum + round(steps) * self.step, 6)


RULES: dict[Setting, Rule] = {
    Setting.BALANCE_START_VOLTAGE: Rule(*ALL_CHEMISTRIES_RANGE, 0.001, "V"),
    Setting.BALANCE_DELTA_VOLTAGE: Rule(MIN_BALANCE_DELTA, 1.0, 0.001, "V"),
    Setting.SLEEP_TIME: Rule(0, NEVER_SLEEP, 1, "s"),
    Setting.BALANCER_ENABLED: Rule(0, 1, 1, ""),
    Setting.CELL_OVERVOLTAGE_ALARM: Rule(1.8, 4.5, 0.001, "V"),
    Setting.CELL_UNDERVOLTAGE_ALARM: Rule(1.5, 4.2, 0.001, "V"),
    Setting.DISCHARGE_OVERTEMPERATURE_ALARM: Rule(0, 100, 1, "°C"),
    Setting.DISCHARGE_UNDERTEMPERATURE_ALARM: Rule(-40, 30, 1, "°C"),
    Setting.BALANCE_CURRENT_LIMIT: Rule(0, 1.0, 0.1, "A"),
}
"""Allowed range and step of every setting that can be written."""

WRITABLE_SETTINGS = frozenset(RULES)


def check_value(
    setting: Setting, value: float | bool, chemistry: Chemistry | None = None
) -> float:
    """Check *value* against the rule of *setting* (range, step, chemistry).

    Returns the value to write, snapped to the setting's step. With the cell
    *chemistry* the device is set to, a balance start voltage must lie in its
    voltage range (the devices set the chemistry; this package never writes
    it). Raises :class:`OutOfRange`, or :class:`NotSupported` for a setting
    that is never written. :func:`check_against` applies the rules against
    the other settings again, with what the device holds right before a write.
    """
    rule = RULES.get(setting)
    if rule is None:
        msg = f"{setting.value} cannot be written"
        raise NotSupported(msg)
    number = float(value)
    if math.isfinite(number):
        _check_chemistry(setting, number, chemistry)
    return rule.check(setting, number)


def _check_chemistry(
    setting: Setting, number: float, chemistry: Chemistry | None
) -> None:
    """A balance start voltage must lie in the range of the cells' chemistry."""
    if setting is not Setting.BALANCE_START_VOLTAGE or chemistry is None:
        return
    low, high = chemistry.voltage_range
    if low - 1e-9 <= number <= high + 1e-9:
        return
    msg = (
        f"balance_start_voltage must be between {low:g} and {high:g} V for "
        f"{chemistry.name} cells; {number:g} V was refused"
    )
    raise OutOfRange(
        msg,
        reason=RefusalReason.CHEMISTRY,
        setting=setting,
        value=number,
        minimum=low,
        maximum=high,
        unit=RULES[setting].unit,
        chemistry=chemistry,
    )


DEPENDS_ON: dict[Setting, Setting] = {
    Setting.BALANCE_START_VOLTAGE: Setting.CHEMISTRY,
    Setting.CELL_OVERVOLTAGE_ALARM: Setting.CELL_UNDERVOLTAGE_ALARM,
    Setting.CELL_UNDERVOLTAGE_ALARM: Setting.CELL_OVERVOLTAGE_ALARM,
}
"""The other setting each of these is checked against (:func:`check_against`)."""


def check_against(setting: Setting, number: float, current: Settings) -> None:
    """Check a value that passed :func:`check_value` against the other settings.

    *current* holds the settings the device holds now, as far as known: the
    balance start voltage lies in the chemistry's range, and the over-voltage
    alarm stays above the under-voltage alarm (see :data:`DEPENDS_ON`).
    Raises :class:`OutOfRange`.
    """
    _check_chemistry(setting, number, current.chemistry)
    over, under = current.cell_overvoltage_alarm, current.cell_undervoltage_alarm
    if setting is Setting.CELL_OVERVOLTAGE_ALARM and under is not None:
        minimum, maximum, over = under, None, number
    elif setting is Setting.CELL_UNDERVOLTAGE_ALARM and over is not None:
        minimum, maximum, under = None, over, number
    else:
        return
    if over is not None and under is not None and over <= under:
        msg = (
            f"the over-voltage alarm ({over:g} V) must be above the under-voltage "
            f"alarm ({under:g} V); nothing was written"
        )
        raise OutOfRange(
            msg,
            reason=RefusalReason.ALARM_ORDER,
            setting=setting,
            value=number,
            minimum=minimum,
            maximum=maximum,
            unit="V",
        )
