"""The product's rules for setting values, from the vendors' manuals.

Every value is checked here before anything reaches the wire. The rules do not
depend on the protocol variant; which register holds a setting does (see
:mod:`.registers`).
"""

from __future__ import annotations

from dataclasses import dataclass
import math

from .errors import NotSupported, OutOfRange
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
        figures = {
            "setting": setting.value,
            "value": f"{value:g}",
            "minimum": f"{self.minimum:g}",
            "maximum": f"{self.maximum:g}",
            "step": f"{self.step:g}",
            "unit": self.unit,
        }
        if not math.isfinite(value) or not (
            self.minimum - 1e-9 <= value <= self.maximum + 1e-9
        ):
            msg = (
                f"{setting.value} must be between {self.minimum:g} and "
                f"{self.maximum:g} {self.unit}; {value:g} {self.unit} was refused"
            )
            raise OutOfRange(msg, reason="range", placeholders=figures)
        steps = (value - self.minimum) / self.step
        if abs(steps - round(steps)) > 1e-6:  # noqa: PLR2004
            msg = (
                f"{setting.value} must be a multiple of {self.step:g} {self.unit}; "
                f"{value:g} {self.unit} was refused"
            )
            raise OutOfRange(msg, reason="step", placeholders=figures)
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


def validate(setting: Setting, value: float | bool, current: Settings) -> float:
    """Check *value* for *setting* against the manuals' rules.

    *current* holds the settings last read from the device; it is used for the
    rules that depend on another setting (the chemistry's voltage range, an
    over-voltage alarm above the under-voltage alarm). Returns the value to
    write, snapped to the setting's step. Raises :class:`OutOfRange`, or
    :class:`NotSupported` for a setting that is never written.
    """
    rule = RULES.get(setting)
    if rule is None:
        msg = f"{setting.value} cannot be written"
        raise NotSupported(msg)
    number = rule.check(setting, float(value))
    if setting is Setting.BALANCE_START_VOLTAGE and current.chemistry is not None:
        low, high = current.chemistry.voltage_range
        if not low <= number <= high:
            msg = (
                f"balance_start_voltage must be between {low:g} and {high:g} V for "
                f"{current.chemistry.name} cells; {number:g} V was refused"
            )
            raise OutOfRange(
                msg,
                reason="chemistry",
                placeholders={
                    "value": f"{number:g}",
                    "minimum": f"{low:g}",
                    "maximum": f"{high:g}",
                    "chemistry": current.chemistry.name,
                },
            )
    over, under = current.cell_overvoltage_alarm, current.cell_undervoltage_alarm
    if setting is Setting.CELL_OVERVOLTAGE_ALARM and under is not None:
        over = number
    elif setting is Setting.CELL_UNDERVOLTAGE_ALARM and over is not None:
        under = number
    else:
        return number
    if over is not None and under is not None and over <= under:
        msg = (
            f"the over-voltage alarm ({over:g} V) must be above the under-voltage "
            f"alarm ({under:g} V); nothing was written"
        )
        raise OutOfRange(
            msg,
            reason="alarm_order",
            placeholders={"over": f"{over:g}", "under": f"{under:g}"},
        )
    return number
