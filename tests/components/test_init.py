"""Set-up, unload and availability of a balancer entry."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.active_balancer.protocol.virtual import VirtualBalancer

from .conftest import setup_entry


async def test_setup_and_unload(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """The entry loads, shows every cell, and unloads cleanly."""
    await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    state = hass.states.get("sensor.balancer_16s_cell_1_voltage")
    assert state is not None
    assert float(state.state) == balancer.cell_voltages[0]
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED
