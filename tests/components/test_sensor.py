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

from balancer_tools.simulator import (
    VirtualBalancer,
    VirtualServer,
)
from custom_components.active_balancer.const import DOMAIN
from custom_components.active_balancer.protocol import BalancerTimeout

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


@pytest.mark.parametrize(
    ("cells", "expected"),
    [(16, ("Cell 01 voltage", "Cell 10 voltage")), (9, ("Cell 1 voltage", None))],
)
async def test_cell_names_sort_in_order(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    entry: MockConfigEntry,
    cells: int,
    expected: tuple[str, str | None],
) -> None:
    """Sorted by name (device page), cell 2 comes before cell 10.

    The numbers are zero-padded on packs of 10 cells or more; the unique ids
    stay unpadded, so that existing installs keep their entities and history.
    """
    await setup_entry(hass, entry)
    cell_entities = [
        entity
        for entity in er.async_entries_for_config_entry(entity_registry, entry.entry_id)
        if entity.unique_id.endswith("_voltage")
        and entity.unique_id.split("-")[-1].startswith("cell_")
    ]
    names = {
        entity.unique_id.split("-")[-1]: hass.states.get(entity.entity_id)
        .attributes["friendly_name"]
        .removeprefix("Balancer 16S ")
        for entity in cell_entities
    }
    assert len(names) == cells
    by_name = sorted(names, key=names.__getitem__)
    assert by_name == [f"cell_{n}_voltage" for n in range(1, cells + 1)]
    first, tenth = expected
    assert names["cell_1_voltage"] == first
    if tenth:
        assert names["cell_10_voltage"] == tenth


async def test_balancing_follows_a_write_at_once(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Balancer off: balancing state, current and cells follow without a poll."""
    balancer.set_cell_voltage(2, 3.250)
    balancer.set_cell_voltage(16, 3.400)
    await setup_entry(hass, entry)
    assert hass.states.get("binary_sensor.balancer_16s_balancing").state == "on"
    assert hass.states.get("sensor.balancer_16s_balance_current").state == "1.0"

    await hass.services.async_call(
        "switch",
        "turn_off",
        {"entity_id": "switch.balancer_16s_balancer"},
        blocking=True,
    )

    # No poll ran (the timer was not fired): the write's own live read did it.
    assert hass.states.get("binary_sensor.balancer_16s_balancing").state == "off"
    assert hass.states.get("sensor.balancer_16s_balance_current").state == "0.0"
    assert hass.states.get("sensor.balancer_16s_cells_being_balanced").state == "none"


async def test_live_read_after_a_write_fails(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write is confirmed; a failed live read after it only waits for the poll."""
    await setup_entry(hass, entry)
    client = entry.runtime_data.client

    async def fails() -> None:
        raise BalancerTimeout("no answer")

    monkeypatch.setattr(client, "read_live", fails)
    await hass.services.async_call(
        "number",
        "set_value",
        {"entity_id": "number.balancer_16s_start_delta", "value": 30},
        blocking=True,
    )
    assert hass.states.get("number.balancer_16s_start_delta").state == "30"
    assert hass.states.get("sensor.balancer_16s_cell_01_voltage").state == "3.3"
