"""Binary sensors of a balancer: balancing, the alarms, the connection."""

from __future__ import annotations

from homeassistant.const import STATE_OFF, STATE_ON, Platform
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_track_state_change_event
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    snapshot_platform,
)
from syrupy.assertion import SnapshotAssertion

from balancer_tools.simulator import VirtualBalancer

from .conftest import async_next_poll, name_entry_for, setup_entry, setup_platforms

UNDER_VOLTAGE = "binary_sensor.balancer_16s_cell_under_voltage"
OVER_VOLTAGE = "binary_sensor.balancer_16s_cell_over_voltage"
BALANCING = "binary_sensor.balancer_16s_balancing"


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize("cells", [4, 24])
async def test_snapshot(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    entry: MockConfigEntry,
    cells: int,
) -> None:
    """Every binary sensor of a 4S and a 24S balancer: registry entry and state."""
    name_entry_for(hass, entry, cells)
    await setup_platforms(hass, entry, Platform.BINARY_SENSOR)
    await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)


ALL = {
    BALANCING,
    OVER_VOLTAGE,
    UNDER_VOLTAGE,
    "binary_sensor.balancer_16s_discharge_over_temperature",
    "binary_sensor.balancer_16s_discharge_under_temperature",
    "binary_sensor.balancer_16s_connection",
}


async def test_only_what_a_balancer_reports(
    hass: HomeAssistant, entity_registry: er.EntityRegistry, entry: MockConfigEntry
) -> None:
    """Balancing, the manuals' four alarms and the connection: no BMS fault bits.

    Earlier versions registered the BMS-only bits (disabled); they are removed.
    """
    stale = entity_registry.async_get_or_create(
        "binary_sensor",
        "active_balancer",
        f"{entry.unique_id}-alarm_charge_mos_adhesion",
        config_entry=entry,
        disabled_by=er.RegistryEntryDisabler.INTEGRATION,
    )
    await setup_entry(hass, entry)
    registered = {
        entity.entity_id
        for entity in er.async_entries_for_config_entry(entity_registry, entry.entry_id)
        if entity.domain == "binary_sensor"
    }
    assert registered == ALL
    assert entity_registry.async_get(stale.entity_id) is None
    assert all(entity_registry.async_get(e).disabled_by is None for e in ALL)


async def test_cell_under_voltage_alarm(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A cell below the under-voltage alarm raises the alarm; back up clears it."""
    await setup_entry(hass, entry)
    assert hass.states.get(UNDER_VOLTAGE).state == STATE_OFF

    balancer.set_cell_voltage(7, balancer.cell_undervoltage_alarm - 0.05)
    await async_next_poll(hass)
    assert hass.states.get(UNDER_VOLTAGE).state == STATE_ON
    assert hass.states.get(OVER_VOLTAGE).state == STATE_OFF

    balancer.set_cell_voltage(7, 3.300)
    await async_next_poll(hass)
    assert hass.states.get(UNDER_VOLTAGE).state == STATE_OFF


async def test_alarm_is_written_after_the_measurements_of_its_poll(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """What an automation on the alarm reads at the moment it fires.

    Home Assistant runs a state trigger's actions while the alarm's state is
    written; the lowest cell and the minimum cell voltage must already show
    the poll that raised the alarm. The binary sensors are set up before
    the sensors here, so they are the first to hear of every poll.
    """
    await setup_platforms(hass, entry, Platform.BINARY_SENSOR)
    await hass.config_entries.async_forward_entry_setups(entry, [Platform.SENSOR])
    await hass.async_block_till_done()
    seen: list[tuple[str, str]] = []

    @callback
    def alarm_changed(event: Event[EventStateChangedData]) -> None:
        new_state = event.data["new_state"]
        if new_state is not None and new_state.state == STATE_ON:
            seen.append(
                (
                    hass.states.get("sensor.balancer_16s_lowest_cell").state,
                    hass.states.get("sensor.balancer_16s_minimum_cell_voltage").state,
                )
            )

    unsubscribe = async_track_state_change_event(hass, UNDER_VOLTAGE, alarm_changed)
    balancer.set_cell_voltage(5, 2.25)
    await async_next_poll(hass)
    unsubscribe()
    assert seen == [("5", "2.25")]


async def test_cell_over_voltage_alarm(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A cell at the over-voltage alarm (level 1) raises the alarm."""
    await setup_entry(hass, entry)
    balancer.set_cell_voltage(3, balancer.cell_overvoltage_alarm + 0.01)
    await async_next_poll(hass)
    assert hass.states.get(OVER_VOLTAGE).state == STATE_ON
    assert hass.states.get(UNDER_VOLTAGE).state == STATE_OFF


async def test_balancing(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Balancing turns on when the device starts balancing, off when it stops."""
    await setup_entry(hass, entry)
    assert hass.states.get(BALANCING).state == STATE_OFF

    balancer.set_cell_voltage(9, 3.350)
    await async_next_poll(hass)
    assert balancer.balancing
    assert hass.states.get(BALANCING).state == STATE_ON

    balancer.balancer_enabled = False
    await async_next_poll(hass)
    assert hass.states.get(BALANCING).state == STATE_OFF
