"""What the command line tool prints: JSON documents and plain tables."""

from __future__ import annotations

from enum import Enum
import json
from typing import Any

from custom_components.active_balancer.protocol.model import (
    NEVER_SLEEP,
    BalancerInfo,
    Reading,
    Setting,
    Settings,
)

_SETTING_FORMAT: dict[Setting, tuple[str, int]] = {
    Setting.BALANCE_START_VOLTAGE: ("V", 3),
    Setting.BALANCE_DELTA_VOLTAGE: ("V", 3),
    Setting.CELL_OVERVOLTAGE_ALARM: ("V", 3),
    Setting.CELL_UNDERVOLTAGE_ALARM: ("V", 3),
    Setting.DISCHARGE_OVERTEMPERATURE_ALARM: ("°C", 0),
    Setting.DISCHARGE_UNDERTEMPERATURE_ALARM: ("°C", 0),
    Setting.SLEEP_TIME: ("s", 0),
    Setting.BALANCE_CURRENT_LIMIT: ("A", 1),
    Setting.CELL_COUNT: ("", 0),
}


def full_json(
    info: BalancerInfo, reading: Reading, settings: Settings, where: str | None = None
) -> dict[str, Any]:
    """The ``read --json`` object (``cmd_read`` adds what was not answered)."""
    result: dict[str, Any] = {"protocol": info.variant.value}
    if where is not None:
        result["port"] = where
    result.update(reading_json(reading))
    result["settings"] = settings_json(settings)
    result["device"] = device_json(info)
    return result


def reading_json(reading: Reading) -> dict[str, Any]:
    """A reading as JSON-ready values (volts, °C, amperes)."""
    cells = reading.balancing_cells
    return {
        "cell_count": reading.cell_count,
        "cell_voltages": list(reading.cell_voltages),
        "temperatures": list(reading.temperatures),
        "pack_voltage": reading.pack_voltage,
        "cell_voltage_sum": reading.cell_voltage_sum,
        "min_cell_voltage": reading.min_cell_voltage,
        "min_cell": reading.min_cell,
        "max_cell_voltage": reading.max_cell_voltage,
        "max_cell": reading.max_cell,
        "average_cell_voltage": reading.average_cell_voltage,
        "delta_cell_voltage": reading.delta_cell_voltage,
        "balancing": reading.balancing,
        "balancing_cells": None if cells is None else sorted(cells),
        "balance_current": reading.balance_current,
        "alarms": reading.alarms.names,
        "alarm_mask": reading.alarms.raw,
        "implausible": dict(reading.implausible),
    }


def settings_json(settings: Settings) -> dict[str, Any]:
    """Every field of :class:`Settings`; enums as their string value."""
    result: dict[str, Any] = {}
    for setting in Setting:
        value = settings.get(setting)
        result[setting.value] = value.value if isinstance(value, Enum) else value
    return result


def device_json(info: BalancerInfo) -> dict[str, Any]:
    """Identity as JSON-ready values."""
    return {
        "protocol": info.variant.value,
        "address": info.address,
        "software_version": info.software_version,
        "hardware_version": info.hardware_version,
        "serial_number": info.serial_number,
    }


def print_json(value: object, *, indent: int | None = 2) -> None:
    print(json.dumps(value, indent=indent, ensure_ascii=False), flush=True)


# --- tables -------------------------------------------------------------------


def volts_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} V"


def format_setting(setting: Setting, value: object) -> str:
    """One setting value with its unit, for people."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Enum):
        return str(value.value).upper()
    if setting is Setting.SLEEP_TIME and value == NEVER_SLEEP:
        return f"never ({NEVER_SLEEP})"
    unit, digits = _SETTING_FORMAT.get(setting, ("", 3))
    if isinstance(value, int | float):
        text = f"{value:.{digits}f}"
        return f"{text} {unit}".rstrip()
    return str(value)


def format_reading(reading: Reading) -> str:
    """The live part of a reading as a table."""
    lines = [f"Cells ({reading.cell_count})"]
    per_row = 4
    cells = reading.cell_voltages
    marks = reading.balancing_cells or frozenset()
    for start in range(0, len(cells), per_row):
        row = []
        for number in range(start + 1, min(start + per_row, len(cells)) + 1):
            flag = "*" if number in marks else " "
            row.append(f"{number:>3}{flag} {volts_text(cells[number - 1])}")
        lines.append("  ".join(row))
    temps = ", ".join(
        "not fitted" if t is None else f"{t:.1f} °C" for t in reading.temperatures
    )
    if reading.balancing is None:
        balancing = "-"
    elif reading.balancing:
        balancing = "yes"
        if reading.balancing_cells:
            numbers = ", ".join(str(n) for n in sorted(reading.balancing_cells))
            balancing += f" (cells {numbers})"
    else:
        balancing = "no"
    current = (
        "-" if reading.balance_current is None else f"{reading.balance_current:.3f} A"
    )
    rows = [
        ("Pack voltage", volts_text(reading.pack_voltage)),
        (
            "Min cell",
            f"{volts_text(reading.min_cell_voltage)} (cell {reading.min_cell})",
        ),
        (
            "Max cell",
            f"{volts_text(reading.max_cell_voltage)} (cell {reading.max_cell})",
        ),
        ("Average cell", volts_text(reading.average_cell_voltage)),
        ("Delta", volts_text(reading.delta_cell_voltage)),
        ("Temperatures", temps or "-"),
        ("Balancing", balancing),
        ("Balance current", current),
        ("Alarms", ", ".join(reading.alarms.names) or "none"),
    ]
    lines.extend(f"{label:<16} {value}" for label, value in rows)
    return "\n".join(lines)


def format_settings(settings: Settings) -> str:
    """Settings as a table."""
    lines = ["Settings"]
    for setting in Setting:
        value = settings.get(setting)
        lines.append(f"  {setting.value:<34} {format_setting(setting, value)}")
    return "\n".join(lines)


def format_device(info: BalancerInfo, where: str | None = None) -> str:
    """Identity as one or two lines."""
    parts = [f"Protocol {info.variant.value}"]
    if info.address is not None:
        parts.append(f"board {info.address}")
    parts.append(f"software {info.software_version or '-'}")
    parts.append(f"hardware {info.hardware_version or '-'}")
    if info.serial_number:
        parts.append(f"serial {info.serial_number}")
    text = "  ".join(parts)
    return f"{where}\n{text}" if where else text


def format_full(
    info: BalancerInfo, reading: Reading, settings: Settings, where: str | None = None
) -> str:
    """The ``read`` table."""
    return "\n\n".join(
        (format_device(info, where), format_reading(reading), format_settings(settings))
    )
