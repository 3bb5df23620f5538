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
    CONF_KEEP_CONNECTED,
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_SETTINGS_EVERY,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DEFAULT_BAUDRATE,
    DEFAULT_KEEP_CONNECTED,
    DEFAULT_RS485_ADDRESS,
    DEFAULT_SETTINGS_EVERY,
    DOMAIN,
    TRANSPORT_BLE,
)
from .protocol import (
    BalancerClient,
    Bus,
    BusRegistry,
    ConnectionFailed,
    Timings,
    Variant,
)
from .protocol.ble import BleLink
from .protocol.serial import SerialLink

BUSES: HassKey[BusRegistry] = HassKey(DOMAIN)
TIMINGS = Timings()
"""The waiting times of every bus created here: the library's defaults (the
tests shorten them, as their virtual balancers answer at once)."""


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
    hass: HomeAssistant,
    data: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None = None,
    probing: bool = False,
) -> Connection:
    """Create a client for *data* (entry data or config flow input).

    *options* are the entry's options (how often the settings are read,
    whether a Bluetooth link stays open). Serial balancers on the same port
    share one bus (one connection, one lock), which stays open. Raises
    :class:`ConnectionFailed` when a Bluetooth device is not in range.
    """
    options = options or {}
    variant = configured_variant(data)
    settings_every = options.get(CONF_SETTINGS_EVERY, DEFAULT_SETTINGS_EVERY)
    if data[CONF_TRANSPORT] == TRANSPORT_BLE:
        address = data[CONF_ADDRESS]
        device = bluetooth.async_ble_device_from_address(
            hass, address, connectable=True
        )
        if device is None:
            msg = f"{address} is not in range of any Bluetooth adapter or proxy"
            raise ConnectionFailed(msg)
        link = BleLink(device, timings=TIMINGS)
        bus = Bus(
            link,
            retries=1 if probing else 2,
            keep_open=options.get(CONF_KEEP_CONNECTED, DEFAULT_KEEP_CONNECTED),
            timings=TIMINGS,
        )
        client = BalancerClient(bus, variant=variant, settings_every=settings_every)
        return Connection(client, link, bus.close)
    port = data[CONF_PORT]
    registry = hass.data.setdefault(BUSES, BusRegistry())
    bus = registry.acquire(
        port,
        lambda: Bus(
            SerialLink(
                port, data.get(CONF_BAUDRATE, DEFAULT_BAUDRATE), timings=TIMINGS
            ),
            retries=1 if probing else 2,
            timings=TIMINGS,
        ),
    )
    client = BalancerClient(
        bus,
        variant=variant,
        address=data.get(CONF_RS485_ADDRESS, DEFAULT_RS485_ADDRESS),
        settings_every=settings_every,
    )

    async def release() -> None:
        await registry.release(port)

    return Connection(client, None, release)
