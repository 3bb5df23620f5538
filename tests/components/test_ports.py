"""The port list of the config flow, from Home Assistant's own scan."""

from __future__ import annotations

from dataclasses import dataclass
from unittest.mock import patch

from homeassistant.core import HomeAssistant

from custom_components.active_balancer.ports import async_serial_ports

from .conftest import SERIAL_PORT_SOURCE


@dataclass
class ScannedPort:
    """A port as Home Assistant's scan reports it (no ``product`` field)."""

    device: str
    serial_number: str | None
    manufacturer: str | None
    description: str | None
    vid: str | None = None
    pid: str | None = None


async def test_ports_from_home_assistants_scan(hass: HomeAssistant) -> None:
    """USB adapters, built-in ports and serial proxies, each labelled."""
    scanned = [
        ScannedPort("/dev/ttyUSB0", "A1", "FTDI", "FT232R USB UART", "0403", "6001"),
        ScannedPort("/dev/ttyS0", None, None, "ttyS0"),
        ScannedPort("esphome://proxy.local:6053/?port_name=rs485", None, None, None),
    ]
    with patch(SERIAL_PORT_SOURCE, return_value=scanned):
        ports = await async_serial_ports(hass)
    assert [(port.path, port.label, port.usb) for port in ports] == [
        (
            "/dev/ttyUSB0",
            "FT232R USB UART - /dev/ttyUSB0, s/n: A1 - FTDI - 0403:6001",
            True,
        ),
        ("/dev/ttyS0", "ttyS0 - /dev/ttyS0, s/n: n/a", False),
        (
            "esphome://proxy.local:6053/?port_name=rs485",
            "esphome://proxy.local:6053/?port_name=rs485, s/n: n/a",
            False,
        ),
    ]
