"""Diagnostics: what a maintainer needs to help, with addresses redacted."""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import re
from typing import Any
from urllib.parse import urlsplit

from homeassistant.components.diagnostics import REDACTED, async_redact_data
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
    scrub = _scrubber(
        entry.data.get(CONF_PORT),
        entry.data.get(CONF_ADDRESS),
        data.info.serial_number,
    )
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
        # What the device did not answer (those entities are unavailable).
        "unanswered": dict(client.unanswered),
        "read_plan": {
            "live_reads": [
                {"start": block.start, "count": block.count}
                for block in client.live_plan
            ],
            "max_read": client.max_read,
            "turnaround_ms": None
            if client.bus.turnaround is None
            else round(client.bus.turnaround * 1000, 1),
        },
        "link": {
            "kind": client.bus.link.kind.value,
            "keep_open": client.bus.keep_open,
            "quality_percent": coordinator.link_quality,
            "rssi": coordinator.rssi,
            "last_update_success": coordinator.last_update_success,
            "last_error": scrub(coordinator.last_error),
            "statistics": stats,
            "last_frames": [
                {"direction": direction, "hex": scrub(frame)}
                for direction, frame in client.bus.history
            ],
        },
    }


def _scrubber(*values: str | None) -> Callable[[str | None], str | None]:
    """Return a function that redacts *values* inside free text.

    Error messages name the port or the Bluetooth address (and the dongle's
    name, which holds the address without colons); the identity frames carry
    the serial number as ASCII, shown here in hex.
    """
    secrets: set[str] = set()
    for value in filter(None, values):
        secrets.add(value)
        if "://" in value:
            url = urlsplit(value)
            secrets.update((url.netloc, url.hostname or ""))
        if ":" in value and "://" not in value:
            secrets.add(value.replace(":", ""))
        secrets.add(value.encode().hex())
    secrets.discard("")
    if not secrets:
        return lambda text: text
    pattern = re.compile(
        "|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)),
        re.IGNORECASE,
    )

    def scrub(text: str | None) -> str | None:
        return None if text is None else pattern.sub(REDACTED, text)

    return scrub


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
