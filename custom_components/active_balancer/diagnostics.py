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

from .const import CONF_PORT
from .coordinator import BalancerConfigEntry

TO_REDACT = {CONF_ADDRESS, CONF_PORT, "serial_number", "unique_id", "title"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: BalancerConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for one balancer."""
    coordinator = entry.runtime_data
    data = coordinator.data
    client = coordinator.client.diagnostics()
    scrub = _scrubber(
        entry.data.get(CONF_PORT),
        entry.data.get(CONF_ADDRESS),
        data.info.serial_number,
    )
    link = client["link"]
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
        "protocol": client["protocol"],
        "reading": _plain(data.reading)
        | {
            "alarm_names": data.reading.alarms.names,
            "min_cell": data.reading.min_cell,
            "max_cell": data.reading.max_cell,
            "delta_cell_voltage": data.reading.delta_cell_voltage,
        },
        "settings": _plain(data.settings),
        "writable_settings": client["writable_settings"],
        # What the device did not answer (those entities are unavailable).
        "unanswered": client["unanswered"],
        "read_plan": client["read_plan"],
        "link": {
            "kind": link["kind"],
            "keep_open": link["keep_open"],
            "quality_percent": coordinator.link_quality,
            "rssi": coordinator.rssi,
            "last_update_success": coordinator.last_update_success,
            "last_error": scrub(coordinator.last_error),
            "statistics": link["statistics"],
            "last_frames": [
                {"direction": frame["direction"], "hex": scrub(frame["hex"])}
                for frame in link["last_frames"]
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
