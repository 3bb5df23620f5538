"""Build a protocol client from a config entry's data (setup and config flow)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from homeassistant.components import bluetooth
from homeassistant.const import CONF_ADDRESS
from homeassistant.core import HomeAssistant
from homeassistant.util.hass_dict import HassKey

from .const import (
    CONF_BAUDRATE,
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DEFAULT_BAUDRATE,
    DEFAULT_RS485_ADDRESS,
    DOMAIN,
    TRANSPORT_BLE,
)
from .protocol import BalancerClient, Bus, BusRegistry, ConnectionFailed, Variant
from .protocol.ble import BleLink
from .protocol.serial import SerialLink

BUSES: HassKey[BusRegistry] = HassKey(DOMAIN)


@dataclass(slots=True)
class Connection:
    """A client and what must be released when it is no longer used."""

    client: BalancerClient
    ble_link: BleLink | None
    release: Callable[[], Coroutine[Any, Any, None]]


def configured_variant(data: Mapping[str, Any]) -> Variant | None:
    """The variant to use (detected, or forced in the flow); None detects it."""
    variant = data.get(CONF_VARIANT)
    return None if variant is None else Variant(variant)


def create_connection(
    hass: HomeAssistant, data: Mapping[str, Any], *, probing: bool = False
) -> Connection:
    """Create a client for *data* (entry data or config flow input).

    Serial balancers on the same port share one bus (one connection, one lock).
    Raises :class:`ConnectionFailed` when a Bluetooth device is not in range.
    """
    variant = configured_variant(data)
    if data[CONF_TRANSPORT] == TRANSPORT_BLE:
        address = data[CONF_ADDRESS]
        device = bluetooth.async_ble_device_from_address(
            hass, address, connectable=True
        )
        if device is None:
            msg = f"{address} is not in range of any Bluetooth adapter or proxy"
            raise ConnectionFailed(msg)
        link = BleLink(device)
        bus = Bus(link, retries=1 if probing else 2)
        client = BalancerClient(bus, variant=variant)
        return Connection(client, link, bus.close)
    port = data[CONF_PORT]
    registry = hass.data.setdefault(BUSES, BusRegistry())
    bus = registry.acquire(
        port,
        lambda: Bus(
            SerialLink(port, data.get(CONF_BAUDRATE, DEFAULT_BAUDRATE)),
            retries=1 if probing else 2,
        ),
    )
    client = BalancerClient(
        bus,
        variant=variant,
        address=data.get(CONF_RS485_ADDRESS, DEFAULT_RS485_ADDRESS),
    )

    async def release() -> None:
        await registry.release(port)

    return Connection(client, None, release)
