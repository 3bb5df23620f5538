"""Bluetooth LE transport: the HLK-B40 UART bridge in the balancer's UART port.

The service is ``advertisement.SERVICE_UUID`` (fff0). Responses arrive as
notifications on ``fff1``; requests are written to
``fff2`` without response. The caller hands in the ``BLEDevice`` (from Home
Assistant's Bluetooth stack, so ESPHome proxies work) and may replace it when a
better adapter or proxy sees the device.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import logging
from typing import Any, Protocol

from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

from .errors import ConnectionFailed
from .link import DataCallback, LinkKind, LostCallback
from .timings import DEFAULT_TIMINGS, Timings

_LOGGER = logging.getLogger(__name__)

NOTIFY_UUID = "0000fff1-0000-1000-8000-00805f9b34fb"
WRITE_UUID = "0000fff2-0000-1000-8000-00805f9b34fb"
BRIDGE_BYTE_TIME = 10 / 9600
"""The bridge talks to the balancer at 9600 baud."""


class GattClient(Protocol):
    """The part of ``BleakClient`` this transport uses."""

    @property
    def is_connected(self) -> bool:
        """Whether the client is connected."""

    async def start_notify(
        self, char_specifier: str, callback: Callable[[Any, bytearray], None]
    ) -> None:
        """Subscribe to notifications."""

    async def write_gatt_char(
        self, char_specifier: str, data: bytes, response: bool = ...
    ) -> None:
        """Write a characteristic."""

    async def disconnect(self) -> Any:
        """Disconnect."""


Connector = Callable[..., Awaitable[GattClient]]
"""``establish_connection`` or a stand-in with the same signature."""


class BleLink:
    """A BLE connection to a balancer's UART bridge."""

    kind = LinkKind.BLE
    byte_time = BRIDGE_BYTE_TIME

    def __init__(
        self,
        device: BLEDevice,
        *,
        base_timeout: float | None = None,
        connector: Connector | None = None,
        timings: Timings = DEFAULT_TIMINGS,
    ) -> None:
        """Create a link to *device*.

        *base_timeout* defaults to the Bluetooth timeout of *timings*.
        """
        self._device = device
        self.base_timeout = (
            timings.ble_timeout if base_timeout is None else base_timeout
        )
        if timings.byte_time is not None:
            self.byte_time = timings.byte_time
        self._connector: Connector = connector or establish_connection
        self._client: GattClient | None = None

    @property
    def address(self) -> str:
        """The device's Bluetooth address."""
        return self._device.address

    def set_device(self, device: BLEDevice) -> None:
        """Use *device* (a newer advertisement, maybe via another adapter)."""
        self._device = device

    @property
    def is_open(self) -> bool:
        """Whether the link is connected."""
        return self._client is not None and self._client.is_connected

    async def open(self, on_data: DataCallback, on_lost: LostCallback) -> None:
        """Connect and subscribe to the notify characteristic."""

        def disconnected(client: object) -> None:
            if self._client is not None and client is not self._client:
                return  # a late callback of an earlier connection
            _LOGGER.debug("%s disconnected", self._device.address)
            self._client = None
            on_lost(None)

        def notified(_char: object, data: bytearray) -> None:
            on_data(bytes(data))

        try:
            client = await self._connector(
                BleakClientWithServiceCache,
                self._device,
                self._device.name or self._device.address,
                disconnected_callback=disconnected,
                ble_device_callback=lambda: self._device,
            )
        except (BleakError, TimeoutError, OSError) as err:
            msg = f"Could not connect to {self._device.address}: {err}"
            raise ConnectionFailed(msg) from err
        try:
            await client.start_notify(NOTIFY_UUID, notified)
        except (BleakError, TimeoutError, OSError) as err:
            await client.disconnect()
            msg = f"{self._device.address} has no balancer UART bridge: {err}"
            raise ConnectionFailed(msg) from err
        self._client = client

    async def write(self, data: bytes) -> None:
        """Write *data* to the bridge without response."""
        client = self._client
        if client is None:
            msg = "not connected"
            raise ConnectionFailed(msg)
        try:
            await client.write_gatt_char(WRITE_UUID, data, response=False)
        except (BleakError, TimeoutError, OSError) as err:
            msg = f"Write to {self._device.address} failed: {err}"
            raise ConnectionFailed(msg) from err

    async def close(self) -> None:
        """Disconnect."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except (BleakError, TimeoutError, OSError) as err:
                _LOGGER.debug("Disconnect failed: %s", err)
