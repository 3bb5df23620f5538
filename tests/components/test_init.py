"""Set-up, unload and availability of a balancer entry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from syrupy.assertion import SnapshotAssertion

from balancer_tools.simulator import (
    Faults,
    VirtualBalancer,
    VirtualServer,
    serve_tcp,
)
from custom_components.active_balancer.connection import BUSES
from custom_components.active_balancer.const import (
    CONF_POLL_INTERVAL,
    CONF_PROTOCOL,
    CONF_SETTINGS_EVERY,
    CONF_VARIANT,
    DOMAIN,
)
from custom_components.active_balancer.protocol import Variant

from .conftest import async_next_poll, serial_entry_data, setup_entry


async def wait_for_connections(server: VirtualServer, count: int) -> None:
    """Wait until the server sees *count* open connections (at most 2 s)."""
    for _ in range(200):
        if server.connections == count:
            return
        await asyncio.sleep(0.01)
    assert server.connections == count


async def test_setup_and_unload(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """The entry loads, shows every cell, and unloads cleanly."""
    await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    state = hass.states.get("sensor.balancer_16s_cell_01_voltage")
    assert state is not None
    assert float(state.state) == balancer.cell_voltages[0]
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED


@pytest.mark.parametrize(
    ("old", "variant"),
    [
        pytest.param({CONF_PROTOCOL: "auto", CONF_VARIANT: "d2"}, "d2", id="detected"),
        pytest.param({CONF_PROTOCOL: "d2", CONF_VARIANT: "d2"}, "d2", id="forced"),
        pytest.param({CONF_PROTOCOL: "d2"}, "d2", id="forced-not-detected"),
        pytest.param({CONF_PROTOCOL: "auto"}, None, id="automatic-not-detected"),
    ],
)
async def test_entry_of_version_1_1_is_migrated(
    hass: HomeAssistant,
    server: VirtualServer,
    old: dict[str, str],
    variant: str | None,
) -> None:
    """An entry with both protocol keys loads, and keeps only the variant."""
    new = serial_entry_data(server.url)
    del new[CONF_VARIANT]
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Balancer 16S",
        data=new | old,
        unique_id="virtual-1",
        version=1,
        minor_version=1,
    )
    entry.add_to_hass(hass)
    await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    assert (entry.version, entry.minor_version) == (1, 2)
    assert entry.data == new | ({CONF_VARIANT: variant} if variant else {})
    # Without a stored variant it was detected, as version 1.1 did.
    assert entry.runtime_data.client.variant is Variant.D2
    assert hass.states.get("sensor.balancer_16s_cell_01_voltage") is not None


async def test_entry_of_a_newer_minor_version_loads(
    hass: HomeAssistant, server: VirtualServer
) -> None:
    """After a downgrade, an entry of a later 1.x version loads unchanged."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=serial_entry_data(server.url),
        version=1,
        minor_version=3,
    )
    entry.add_to_hass(hass)
    await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.minor_version == 3
    assert entry.data == serial_entry_data(server.url)


async def test_device(
    hass: HomeAssistant,
    device_registry: dr.DeviceRegistry,
    snapshot: SnapshotAssertion,
    entry: MockConfigEntry,
) -> None:
    """One device per balancer, with what the balancer says about itself."""
    await setup_entry(hass, entry)
    devices = dr.async_entries_for_config_entry(device_registry, entry.entry_id)
    assert [device.identifiers for device in devices] == [{(DOMAIN, "virtual-1")}]
    assert devices[0] == snapshot


async def test_unreachable_at_setup(
    hass: HomeAssistant, entry: MockConfigEntry, server: VirtualServer
) -> None:
    """Nothing listens on the port: set-up is retried later; no bus is left open."""
    await server.close()

    assert not await hass.config_entries.async_setup(entry.entry_id)

    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert str(entry.reason).startswith("Could not reach the balancer:")
    assert len(hass.data[BUSES]) == 0


async def test_silent_at_setup(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    server: VirtualServer,
    balancer: VirtualBalancer,
) -> None:
    """The port opens but the balancer does not answer: retried, line closed."""
    balancer.faults = Faults(silent=True)

    assert not await hass.config_entries.async_setup(entry.entry_id)

    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert "did not answer the d2 protocol" in str(entry.reason)
    assert len(hass.data[BUSES]) == 0
    await wait_for_connections(server, 0)


async def test_reload_and_unload_close_the_line(
    hass: HomeAssistant, entry: MockConfigEntry, server: VirtualServer
) -> None:
    """Reload opens the line again exactly once; unload leaves nothing open."""
    await setup_entry(hass, entry)
    assert len(hass.data[BUSES]) == 1
    await wait_for_connections(server, 1)

    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert len(hass.data[BUSES]) == 1
    await wait_for_connections(server, 1)
    assert server.connects == 2

    assert await hass.config_entries.async_unload(entry.entry_id)
    assert len(hass.data[BUSES]) == 0
    await wait_for_connections(server, 0)


async def test_options_change_reloads(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Options saved in the options dialog reload the entry with them."""
    await setup_entry(hass, entry)
    old = entry.runtime_data
    assert old.update_interval == timedelta(seconds=30)

    flow = await hass.config_entries.options.async_init(entry.entry_id)
    await hass.config_entries.options.async_configure(
        flow["flow_id"], {CONF_POLL_INTERVAL: 5, CONF_SETTINGS_EVERY: 1}
    )
    await hass.async_block_till_done()

    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not old
    assert entry.runtime_data.update_interval == timedelta(seconds=5)
    assert entry.runtime_data.client.diagnostics()["read_plan"]["settings_every"] == 1
    assert len(hass.data[BUSES]) == 1

    # Polled every 5 s now, with the settings read on every poll.
    balancer.balance_delta_voltage = 0.05
    await async_next_poll(hass, 5)
    state = hass.states.get("number.balancer_16s_start_delta")
    assert state.state == "50"


@pytest.mark.parametrize("balancer", [VirtualBalancer(8, address=2)])
async def test_two_balancers_share_one_line(
    hass: HomeAssistant, balancer: VirtualBalancer
) -> None:
    """Two RS485 balancers on one line: one bus, kept until the last one goes."""
    second = VirtualBalancer(4, address=3, cell_voltages=[3.31] * 4)
    async with await serve_tcp([balancer, second]) as line:
        entries = []
        for board, title in ((2, "Board 2"), (3, "Board 3")):
            entry = MockConfigEntry(
                domain=DOMAIN,
                title=title,
                data=serial_entry_data(line.url, variant="p81", address=board),
                unique_id=f"board-{board}",
            )
            entry.add_to_hass(hass)
            await setup_entry(hass, entry)
            entries.append(entry)

        assert len(hass.data[BUSES]) == 1
        assert line.connections == 1
        assert hass.states.get("sensor.board_2_cell_8_voltage") is not None
        assert hass.states.get("sensor.board_3_cell_1_voltage").state == "3.31"

        assert await hass.config_entries.async_unload(entries[0].entry_id)
        assert len(hass.data[BUSES]) == 1
        await async_next_poll(hass)
        assert hass.states.get("sensor.board_3_cell_1_voltage").state == "3.31"

        assert await hass.config_entries.async_unload(entries[1].entry_id)
        assert len(hass.data[BUSES]) == 0
        await wait_for_connections(line, 0)
