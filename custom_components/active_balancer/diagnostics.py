"""Diagnostics: what a maintainer needs to help, with addresses redacted."""

from __future__ import annotations

import dataclasses
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_ADDRESS
from homeassistant.core import HomeAssistant

from . import BalancerConfigEntry
from .const import CONF_PORT

TO_REDACT = {CONF_ADDRESS, CONF_PORT, "serial_number", "unique_id", "title"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: BalancerConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for one balancer."""
    coordinator = entry.runtime_data
    client = coordinator.client
    data = coordinator.data
    stats = dataclasses.asdict(client.bus.stats)
    return {
        "entry": async_redact_data(
            {
                "title": entry.title,
                "unique_id": entry.unique_id,
                "data": dict(entry.data),
                "options": dict(entry.options),
            },
            TO_REDACT,
        ),
        "device": async_redact_data(_plain(data.info), TO_REDACT),
        "protocol": data.info.variant.value,
        "reading": _plain(data.reading)
        | {
            "alarm_names": data.reading.alarms.names,
            "min_cell": data.reading.min_cell,
            "max_cell": data.reading.max_cell,
            "delta_cell_voltage": data.reading.delta_cell_voltage,
        },
        "settings": _plain(data.settings),
        "writable_settings": sorted(client.writable_settings()),
        "link": {
            "kind": client.bus.link.kind.value,
            "keep_open": client.bus.keep_open,
            "quality_percent": coordinator.link_quality,
            "rssi": coordinator.rssi,
            "last_update_success": coordinator.last_update_success,
            "last_error": coordinator.last_error,
            "statistics": stats,
            "last_frames": [
                {"direction": direction, "hex": frame}
                for direction, frame in client.bus.history
            ],
        },
    }


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass as JSON-friendly data (sets become sorted lists)."""
    result: dict[str, Any] = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, frozenset | set):
            value = sorted(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        result[field.name] = value
    return result
