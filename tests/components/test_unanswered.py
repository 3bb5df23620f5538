"""Parts a balancer does not answer: unavailable entities, never a wrong number.

The virtual balancer has firmware quirks here: it never answers some
registers or commands. The live reading still arrives; entities backed by an
unanswered part are unavailable, and diagnostics list what was not answered.
"""

from __future__ import annotations

from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from balancer_tools.simulator import (
    Quirks,
    VirtualBalancer,
    VirtualServer,
    serve_tcp,
)
from custom_components.active_balancer.const import DOMAIN
from custom_components.active_balancer.protocol import Chemistry, Variant

from .conftest import async_next_poll, serial_entry_data, setup_entry


def quirky_entry(hass: HomeAssistant, url: str, variant: str) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Balancer 16S",
        data=serial_entry_data(url, variant),
        unique_id=f"quirky-{variant}",
    )
    entry.add_to_hass(hass)
    return entry


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_d2_without_balance_registers_and_switch(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> None:
    """0x3E-0x40 and 0xCC-0xD0 unanswered: those entities are unavailable."""
    device = VirtualBalancer(
        16,
        Chemistry.LFP,
        variants=(Variant.D2,),
        quirks=Quirks(ignore_registers=[(0x3E, 0x40), (0xCC, 0xD0)]),
    )
    async with await serve_tcp(device) as server:
        entry = quirky_entry(hass, server.url, "d2")
        await setup_entry(hass, entry)
        for entity_id in (
            "sensor.balancer_16s_balance_current",
            "sensor.balancer_16s_cells_being_balanced",
            "switch.balancer_16s_balancer",
        ):
            state = hass.states.get(entity_id)
            assert state is not None, entity_id
            assert state.state == STATE_UNAVAILABLE, entity_id
        # The live reading and the other settings are there.
        assert hass.states.get("sensor.balancer_16s_cell_01_voltage").state == "3.335"
        delta = hass.states.get("number.balancer_16s_start_delta")
        assert delta is not None
        assert delta.state == "20"

        diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
        assert diagnostics["unanswered"] == {
            "balance_current": "no answer",
            "balancing_cells": "no answer",
            "balancer_switch": "no answer",
        }
        assert all(
            read["start"] + read["count"] <= 0x3E or read["start"] > 0x40
            for read in diagnostics["read_plan"]["live_reads"]
        )
        assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_a5_without_settings_commands(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> None:
    """An A5 balancer that never answers 0x59/0x5C/0x5F gives its live values."""
    device = VirtualBalancer(
        16,
        Chemistry.LFP,
        variants=(Variant.A5,),
        quirks=Quirks(ignore_commands={0x59, 0x5C, 0x5F}),
    )
    async with await serve_tcp(device) as server:
        entry = quirky_entry(hass, server.url, "a5")
        await setup_entry(hass, entry)
        assert hass.states.get("sensor.balancer_16s_cell_01_voltage").state == "3.335"
        assert hass.states.get("sensor.balancer_16s_balance_current") is None
        diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
        assert diagnostics["unanswered"] == {
            "balance_settings": "no answer",
            "cell_thresholds": "no answer",
            "temperature_thresholds": "no answer",
        }
        assert diagnostics["settings"]["balance_delta_voltage"] is None
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_implausible_balance_current_is_unknown(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    server: VirtualServer,
) -> None:
    """A raw 0 in the balance current register shows unknown, not -30 A."""
    original = balancer.registers

    def registers(variant: Variant, start: int, count: int) -> list[int]:
        values = original(variant, start, count)
        if variant is Variant.D2 and start <= 0x40 < start + count:
            values[0x40 - start] = 0
        return values

    await setup_entry(hass, entry)
    assert hass.states.get("sensor.balancer_16s_balance_current").state == "0.0"
    balancer.registers = registers  # type: ignore[method-assign]
    await async_next_poll(hass)
    assert hass.states.get("sensor.balancer_16s_balance_current").state == (
        STATE_UNKNOWN
    )
    assert entry.runtime_data.data.reading.implausible == (("balance_current", 0),)
