"""Fixtures: a virtual balancer on a real TCP socket and a config entry for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant.components import bluetooth, usb
from homeassistant.components.bluetooth import BluetoothServiceInfoBleak
from homeassistant.const import CONF_ADDRESS, MAJOR_VERSION, MINOR_VERSION, Platform
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.syrupy import (
    HomeAssistantSnapshotExtension,
)
from syrupy.assertion import SnapshotAssertion

from balancer_tools.ha_helpers import BLE_ADDRESS, ble_service_info
from balancer_tools.simulator import (
    FakeConnector,
    VirtualBalancer,
    VirtualServer,
    fake_connector,
    serve_tcp,
)
from custom_components.active_balancer.const import (
    CONF_BAUDRATE,
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DEFAULT_POLL_INTERVAL,
    DOMAIN,
    TRANSPORT_BLE,
    TRANSPORT_SERIAL,
)
from custom_components.active_balancer.protocol import Chemistry


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    enable_custom_integrations: None, short_timings: None
) -> None:
    """Load the integration from custom_components/; its buses wait briefly.

    Short timeouts (``timings``) make a silent device fail fast in tests.
    """


@pytest.fixture
def cells() -> int:
    """Number of cells of the virtual balancer."""
    return 16


@pytest.fixture
def balancer(cells: int) -> VirtualBalancer:
    """A virtual LFP balancer with a slightly unbalanced pack."""
    voltages = [3.300 + 0.002 * (i % 4) for i in range(cells)]
    return VirtualBalancer(cells, Chemistry.LFP, cell_voltages=voltages)


@pytest.fixture
async def server(balancer: VirtualBalancer) -> AsyncIterator[VirtualServer]:
    """The virtual balancer served on a loopback TCP port."""
    async with await serve_tcp(balancer) as srv:
        yield srv


def serial_entry_data(
    url: str, variant: str = "d2", address: int = 1
) -> dict[str, Any]:
    """Entry data for a serial balancer at *url*."""
    return {
        CONF_TRANSPORT: TRANSPORT_SERIAL,
        CONF_PORT: url,
        CONF_BAUDRATE: 9600,
        CONF_RS485_ADDRESS: address,
        CONF_VARIANT: variant,
    }


@pytest.fixture
def entry(hass: HomeAssistant, server: VirtualServer) -> MockConfigEntry:
    """A config entry for the served balancer."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Balancer 16S",
        data=serial_entry_data(server.url),
        unique_id="virtual-1",
    )
    entry.add_to_hass(hass)
    return entry


async def setup_entry(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Set up *entry* and wait until everything settled."""
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


# --- Platform, coordinator, repair and diagnostics tests ---------------------


async def async_next_poll(
    hass: HomeAssistant, seconds: float = DEFAULT_POLL_INTERVAL
) -> None:
    """Let *seconds* pass for the poll timer and wait until the poll is done.

    The clock is not frozen (freezegun would freeze the event loop's clock
    too, and the real socket timeouts with it): the poll timer is fired early.
    """
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=seconds))
    await hass.async_block_till_done(wait_background_tasks=True)


def inject_advertisement(hass: HomeAssistant, info: BluetoothServiceInfoBleak) -> None:
    """Hand *info* to Home Assistant's Bluetooth manager, like a scanner does."""
    bluetooth.async_get_advertisement_callback(hass)(info)


@pytest.fixture
async def ble_connector(
    balancer: VirtualBalancer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeConnector]:
    """Bluetooth connections reach the virtual balancer through a fake client."""
    from custom_components.active_balancer.protocol import ble

    connector = fake_connector(balancer)
    monkeypatch.setattr(ble, "establish_connection", connector)
    yield connector
    await connector.close()


@pytest.fixture
def ble_entry(
    hass: HomeAssistant, enable_bluetooth: None, ble_connector: FakeConnector
) -> MockConfigEntry:
    """A config entry for the virtual balancer behind a Bluetooth dongle.

    The dongle has been seen advertising at -60 dBm.
    """
    inject_advertisement(hass, ble_service_info())
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Balancer BLE",
        data={
            CONF_TRANSPORT: TRANSPORT_BLE,
            CONF_ADDRESS: BLE_ADDRESS,
            CONF_VARIANT: "d2",
        },
        unique_id=BLE_ADDRESS,
    )
    entry.add_to_hass(hass)
    return entry


async def setup_platforms(
    hass: HomeAssistant, entry: MockConfigEntry, *platforms: Platform
) -> None:
    """Set up *entry* with only *platforms* loaded."""
    with patch("custom_components.active_balancer.PLATFORMS", list(platforms)):
        await setup_entry(hass, entry)


def name_entry_for(hass: HomeAssistant, entry: MockConfigEntry, cells: int) -> None:
    """Title the entry after the served balancer's size (entity ids follow)."""
    hass.config_entries.async_update_entry(entry, title=f"Balancer {cells}S")


# Where the config flow's port list comes from: Home Assistant's own scan
# where it has one (with ESPHome serial proxies), serialx on older releases.
SERIAL_PORT_SOURCE = (
    "homeassistant.components.usb.async_scan_serial_ports"
    if hasattr(usb, "async_scan_serial_ports")
    else "serialx.async_list_serial_ports"
)


# Registry entries gain fields from one Home Assistant release to the next, so
# each tested release has its own reviewed set: snapshots/<major>.<minor>/.
SNAPSHOT_RELEASE = f"{MAJOR_VERSION}.{MINOR_VERSION}"


class ReleaseSnapshotExtension(HomeAssistantSnapshotExtension):
    """Home Assistant's snapshot format, one folder per Home Assistant release."""

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        """snapshots/<release>/ beside the test module."""
        return str(Path(test_location.filepath).parent / "snapshots" / SNAPSHOT_RELEASE)


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Snapshots in Home Assistant's format, under snapshots/<release>/.

    The harness defines the same fixture, but syrupy's own one wins over a
    plugin's; a conftest fixture wins over both.
    """
    return snapshot.use_extension(ReleaseSnapshotExtension)
