"""One entry per balancer: which serial entry a new one would duplicate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.data_entry_flow import AbortFlow

from .const import (
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    TRANSPORT_SERIAL,
)
from .protocol import Variant


def refuse_duplicate(
    data: Mapping[str, Any],
    entries: Iterable[ConfigEntry],
    ignore: ConfigEntry | None = None,
) -> None:
    """Abort the flow when one of *entries* already reaches *data*'s balancer.

    A serial balancer is its port, plus its RS485 address where the protocol
    has one. Only p81 has an address: boards with different addresses share a
    port ("already_configured" for the same address). D2 and A5 reach the one
    balancer on the port whatever address is set, so any other entry on that
    port is the same balancer ("port_in_use", with that entry's title).
    *ignore* is the entry being reconfigured: its own port is not taken.
    """
    ours = data[CONF_VARIANT]
    for entry in entries:
        if (
            entry is ignore
            or entry.data.get(CONF_TRANSPORT) != TRANSPORT_SERIAL
            or entry.data.get(CONF_PORT) != data[CONF_PORT]
        ):
            continue
        theirs = entry.data.get(CONF_VARIANT)
        if ours == theirs == Variant.P81:
            if entry.data.get(CONF_RS485_ADDRESS) == data[CONF_RS485_ADDRESS]:
                raise AbortFlow("already_configured")
            continue
        single = theirs if ours == Variant.P81 else ours
        raise AbortFlow(
            "port_in_use",
            description_placeholders={
                "title": entry.title,
                "port": str(data[CONF_PORT]),
                "protocol": str(single or "").upper(),
            },
        )
