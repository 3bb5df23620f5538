"""Home Assistant helpers shared by the tests and the benchmark.

One builder of a Bluetooth advertisement, one way to create every entity
enabled, and one seam for the waiting times of the buses the integration
creates (``connection.TIMINGS``). The fixtures that wrap them live in
``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import time
from unittest.mock import patch

from bleak.backends.scanner import AdvertisementData
from homeassistant.components.bluetooth import BluetoothServiceInfoBleak
from homeassistant.helpers.entity import Entity

from balancer_tools.simulator import ble_device
from custom_components.active_balancer import connection
from custom_components.active_balancer.protocol import Timings

BLE_ADDRESS = "DA:17:BA:1A:0C:E5"
BLE_NAME = "DL-DA17BA1A0CE5"

FAST_TIMINGS = Timings(serial_timeout=0.2, settle=0.02, late_window=0.05)
"""Waiting times for a virtual balancer on loopback, which answers at once:
a silent device is given up on within a fraction of a second."""


def ble_service_info(
    address: str = BLE_ADDRESS,
    name: str = BLE_NAME,
    *,
    rssi: int = -60,
    source: str = "local",
    manufacturer_data: dict[int, bytes] | None = None,
    service_uuids: list[str] | None = None,
    connectable: bool = True,
) -> BluetoothServiceInfoBleak:
    """An advertisement of a Bluetooth dongle, as Home Assistant hands it on."""
    manufacturer_data = manufacturer_data or {}
    service_uuids = service_uuids or []
    return BluetoothServiceInfoBleak(
        name=name,
        address=address,
        rssi=rssi,
        manufacturer_data=manufacturer_data,
        service_data={},
        service_uuids=service_uuids,
        source=source,
        device=ble_device(address, name, {"source": source}),
        advertisement=AdvertisementData(
            local_name=name,
            manufacturer_data=manufacturer_data,
            service_data={},
            service_uuids=service_uuids,
            tx_power=-127,
            rssi=rssi,
            platform_data=(),
        ),
        connectable=connectable,
        time=time.monotonic(),
        tx_power=None,
    )


def _enabled(_entity: Entity) -> bool:
    return True


@contextmanager
def all_entities_enabled() -> Iterator[None]:
    """Meanwhile every entity is created enabled, also those disabled by default.

    A plain property, not a ``PropertyMock``: a mock records every call, and
    the benchmark would count that memory as the integration's.
    """
    with patch.object(Entity, "entity_registry_enabled_default", property(_enabled)):
        yield


@contextmanager
def bus_timings(timings: Timings) -> Iterator[None]:
    """Meanwhile the buses the integration creates wait for *timings*."""
    with patch.object(connection, "TIMINGS", timings):
        yield
