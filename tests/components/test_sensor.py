"""Sensors of a balancer: what the user sees for cells, pack and link."""

from __future__ import annotations

from homeassistant.const import STATE_UNKNOWN, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    snapshot_platform,
)
from syrupy.assertion import SnapshotAssertion

from custom_components.active_balancer.const import DOMAIN
from custom_components.active_balancer.protocol.virtual import (
    VirtualBalancer,
    VirtualServer,
)

from .conftest import (
    async_next_poll,
    name_entry_for,
    serial_entry_data,
    setup_entry,
    setup_platforms,
)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize("cells", [4, 24])
async def test_snapshot(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    entry: MockConfigEntry,
    cells: int,
) -> None:
    """Every sensor of a 4S and a 24S balancer: registry entry and state."""
    name_entry_for(hass, entry, cells)
    await setup_platforms(hass, entry, Platform.SENSOR)
    await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)


async def test_cells_follow_the_device(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A changed cell shows after the next poll, with the derived values."""
    await setup_entry(hass, entry)
    balancer.set_cell_voltage(5, 3.290)
    await async_next_poll(hass)

    assert hass.states.get("sensor.balancer_16s_cell_05_voltage").state == "3.29"
    assert hass.states.get("sensor.balancer_16s_minimum_cell_voltage").state == "3.29"
    assert hass.states.get("sensor.balancer_16s_lowest_cell").state == "5"
    assert hass.states.get("sensor.balancer_16s_highest_cell").state == "4"
    assert (
        hass.states.get("sensor.balancer_16s_cell_voltage_difference").state == "16.0"
    )


async def test_balancing_cells_and_current(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """While the device balances, the cells and the current are shown."""
    await setup_entry(hass, entry)
    assert hass.states.get("sensor.balancer_16s_cells_being_balanced").state == "none"
    assert hass.states.get("sensor.balancer_16s_balance_current").state == "0.0"

    balancer.set_cell_voltage(2, 3.250)
    balancer.set_cell_voltage(16, 3.400)
    await async_next_poll(hass)

    # Charge moves from the highest cell to the lowest one.
    assert hass.states.get("sensor.balancer_16s_cells_being_balanced").state == "2, 16"
    assert hass.states.get("sensor.balancer_16s_balance_current").state == "1.0"


async def test_fewer_cells_reported(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Cells the device stops reporting read unknown, not a stale value."""
    await setup_entry(hass, entry)
    balancer.cell_count = 15
    await async_next_poll(hass)

    assert hass.states.get("sensor.balancer_16s_cell_16_voltage").state == STATE_UNKNOWN
    assert hass.states.get("sensor.balancer_16s_cell_15_voltage").state == "3.304"


@pytest.mark.parametrize("balancer", [VirtualBalancer(4, temperatures=(25.0, 31.0))])
async def test_temperature_sensor_removed(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A temperature sensor the device stops reporting reads unknown."""
    await setup_entry(hass, entry)
    assert hass.states.get("sensor.balancer_16s_temperature_2").state == "31.0"

    balancer.temperatures = [25.0]
    await async_next_poll(hass)

    assert hass.states.get("sensor.balancer_16s_temperature_2").state == STATE_UNKNOWN
    assert hass.states.get("sensor.balancer_16s_temperature_1").state == "25.0"


async def test_a5_has_no_balance_current(
    hass: HomeAssistant, server: VirtualServer
) -> None:
    """The A5 protocol reports no balance current: no sensor for it."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Old balancer",
        data=serial_entry_data(server.url, variant="a5"),
        unique_id="virtual-a5",
    )
    entry.add_to_hass(hass)
    await setup_entry(hass, entry)

    assert hass.states.get("sensor.old_balancer_balance_current") is None
    assert hass.states.get("sensor.old_balancer_cell_16_voltage").state == "3.306"
