"""The serial ports a user can pick in the config flow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeassistant.components import usb
from homeassistant.core import HomeAssistant
import serialx


@dataclass(frozen=True, slots=True)
class SerialPortChoice:
    """One port of the list: what is stored, what is shown."""

    path: str
    """A stable ``/dev/serial/by-id/...`` path where there is one, or a URL."""
    label: str
    usb: bool
    """A USB adapter (the likely place of an RS485 or TTL converter)."""


async def async_serial_ports(hass: HomeAssistant) -> list[SerialPortChoice]:
    """Every serial port Home Assistant knows of.

    Where Home Assistant offers its own port scan, the list is that one: USB
    and built-in ports, and the ports other integrations contribute, such as
    ESPHome serial proxies (named by an ``esphome://`` URL, opened through
    serialx like any other). Older releases list with serialx directly.
    """
    scan = getattr(usb, "async_scan_serial_ports", None)
    if scan is None:  # pragma: no cover - Home Assistant 2025.4 (minimum lane)
        devices: list[Any] = list(await serialx.async_list_serial_ports())
    else:
        devices = list(await scan(hass))
    choices = []
    for device in devices:
        path = device.device
        if "://" not in path:
            path = await hass.async_add_executor_job(usb.get_serial_by_id, path)
        vid = getattr(device, "vid", None)
        label = usb.human_readable_device_name(
            device.device,
            device.serial_number,
            device.manufacturer,
            # serialx names it product (its description falls back to the
            # file name); Home Assistant's own devices call it description.
            device.product if hasattr(device, "product") else device.description,
            vid,
            getattr(device, "pid", None),
        )
        choices.append(SerialPortChoice(path=path, label=label, usb=vid is not None))
    return choices
