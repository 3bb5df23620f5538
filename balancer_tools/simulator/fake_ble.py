"""A stand-in for bleak's ``BleakClient`` talking to one virtual balancer.

It behaves like the HLK-B40 UART bridge in the balancer's UART port: requests
are written to ``fff2``, replies arrive as notifications on ``fff1`` in
20-byte pieces (or ``faults.chunk_size``: the :class:`.Line` chunks, as on
every transport). Use it through :func:`fake_connector` with
:class:`..ble.BleLink`.
"""

from __future__ import annotations

from collections.abc import Callable
import inspect
import logging
from typing import Any, cast

from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from custom_components.active_balancer.protocol.ble import NOTIFY_UUID, WRITE_UUID

from .device import VirtualBalancer
from .servers import Line

_LOGGER = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 20
"""Payload of one notification with the default 23-byte ATT MTU."""

_BASE_UUID = "0000{}-0000-1000-8000-00805f9b34fb"

NotifyCallback = Callable[[Any, bytearray], None]


def _normalize_uuid(uuid: str) -> str:
    uuid = uuid.lower().removeprefix("0x")
    if len(uuid) == 4:  # noqa: PLR2004
        return _BASE_UUID.format(uuid)
    return uuid


class FakeBleakClient:
    """A connected GATT client whose peer is a :class:`VirtualBalancer`."""

    def __init__(
        self,
        balancer: VirtualBalancer,
        *,
        disconnected_callback: Callable[[FakeBleakClient], None] | None = None,
        baudrate: int | None = None,
        turnaround: float = 0.0,
        address: str = "00:00:00:00:00:00",
    ) -> None:
        """Connect to *balancer* (call inside a running event loop)."""
        self.balancer = balancer
        self.address = address
        self.written: list[bytes] = []
        """Everything written to the bridge."""
        self.notifications: list[bytes] = []
        """Every notification sent."""
        self._disconnected_callback = disconnected_callback
        self._connected = True
        self._notify: dict[str, NotifyCallback] = {}
        self._line = Line(
            (balancer,),
            send=self._notify_piece,
            hangup=self._hangup,
            baudrate=baudrate,
            turnaround=turnaround,
            chunk_size=DEFAULT_CHUNK_SIZE,
        )

    @property
    def is_connected(self) -> bool:
        """Whether the link is up."""
        return self._connected

    def _check(self) -> None:
        if not self._connected:
            msg = f"{self.address}: not connected"
            raise BleakError(msg)

    async def start_notify(
        self, char_specifier: str, callback: NotifyCallback, **_kwargs: Any
    ) -> None:
        """Subscribe to the bridge's notify characteristic."""
        self._check()
        uuid = _normalize_uuid(char_specifier)
        if uuid != NOTIFY_UUID:
            msg = f"characteristic {char_specifier} does not notify"
            raise BleakError(msg)
        self._notify[uuid] = callback

    async def stop_notify(self, char_specifier: str) -> None:
        """Unsubscribe."""
        self._notify.pop(_normalize_uuid(char_specifier), None)

    async def write_gatt_char(
        self,
        char_specifier: str,
        data: bytes | bytearray | memoryview,
        response: bool = False,
    ) -> None:
        """Write to the bridge; only the UART TX characteristic is accepted."""
        self._check()
        if _normalize_uuid(char_specifier) != WRITE_UUID:
            msg = f"characteristic {char_specifier} is not the UART bridge"
            raise BleakError(msg)
        payload = bytes(data)
        self.written.append(payload)
        self._line.received(payload)

    async def disconnect(self) -> bool:
        """Disconnect (calls the disconnected callback, like bleak)."""
        self._drop()
        await self._line.close()
        return True

    async def _notify_piece(self, piece: bytes) -> None:
        """One notification (the line sends each piece of a reply apart)."""
        if not self._connected:  # pragma: no cover - dropped by a callback
            return
        self.notifications.append(piece)
        callback = self._notify.get(NOTIFY_UUID)
        if callback is not None:
            callback(NOTIFY_UUID, bytearray(piece))

    def _hangup(self) -> bool:
        self._drop()
        return False

    def _drop(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._line.stop()
        _LOGGER.debug("%s: link dropped", self.address)
        if self._disconnected_callback is not None:
            self._disconnected_callback(self)


class FakeConnector:
    """Async callable with the signature of ``establish_connection``.

    The first ``fail`` connects raise :class:`BleakError`. ``clients`` holds
    every client handed out; :meth:`close` disconnects them all.
    """

    def __init__(
        self,
        balancer: VirtualBalancer,
        *,
        fail: int = 0,
        baudrate: int | None = None,
        turnaround: float = 0.0,
    ) -> None:
        """Connect to *balancer*."""
        self.balancer = balancer
        self.fail = fail
        self.baudrate = baudrate
        self.turnaround = turnaround
        self.attempts = 0
        """Connects tried, failed ones included."""
        self.clients: list[FakeBleakClient] = []

    @property
    def connects(self) -> int:
        """Connects that succeeded."""
        return len(self.clients)

    async def __call__(
        self,
        client_class: Any,
        device: BLEDevice,
        name: str,
        disconnected_callback: Callable[[Any], None] | None = None,
        ble_device_callback: Callable[[], BLEDevice] | None = None,
        **_kwargs: Any,
    ) -> FakeBleakClient:
        """Connect, or raise :class:`BleakError` while failures are left."""
        self.attempts += 1
        if self.fail > 0:
            self.fail -= 1
            msg = f"{name}: failed to connect (simulated)"
            raise BleakError(msg)
        client = FakeBleakClient(
            self.balancer,
            disconnected_callback=disconnected_callback,
            baudrate=self.baudrate,
            turnaround=self.turnaround,
            address=device.address,
        )
        self.clients.append(client)
        return client

    async def close(self) -> None:
        """Disconnect every client still connected and cancel pending replies."""
        for client in self.clients:
            await client.disconnect()


def fake_connector(
    balancer: VirtualBalancer,
    *,
    fail: int = 0,
    baudrate: int | None = None,
    turnaround: float = 0.0,
) -> FakeConnector:
    """Return a connector for :class:`..ble.BleLink` reaching *balancer*."""
    return FakeConnector(balancer, fail=fail, baudrate=baudrate, turnaround=turnaround)


def fake_device(
    address: str = "DA:17:BA:1A:0C:E5", name: str | None = "DL-DA17BA1A0CE5"
) -> BLEDevice:
    """Return a ``BLEDevice`` for tests."""
    return ble_device(address, name, None)


def ble_device(address: str, name: str | None, details: Any) -> BLEDevice:
    """A ``BLEDevice`` on every supported bleak.

    bleak 1.0 dropped the ``rssi`` argument (the signal strength lives in the
    advertisement now); bleak 0.22, which Home Assistant 2025.4 pins, still
    requires it.
    """
    if "rssi" in inspect.signature(BLEDevice.__init__).parameters:
        device: BLEDevice = cast(Any, BLEDevice)(address, name, details, -60)
        return device
    return BLEDevice(address, name, details)
