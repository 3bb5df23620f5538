"""Repair issues the manuals' rules call for; each clears itself."""

from __future__ import annotations

from homeassistant.const import STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from balancer_tools.simulator import (
    VirtualBalancer,
    VirtualServer,
)
from custom_components.active_balancer.const import DOMAIN, MISWIRED_POLLS
from custom_components.active_balancer.protocol import Chemistry, Setting
from custom_components.active_balancer.protocol.registers import (
    UNAVAILABLE,
    ModbusTable,
)

from .conftest import async_next_poll, serial_entry_data, setup_entry


class MiscountedBalancer(VirtualBalancer):
    """A balancer whose configured cell count can differ from what it measures.

    The virtual balancer derives both from its cells; a real one keeps the
    configured count as a setting.
    """

    configured_cells: int | None = None

    def _settings_registers(self, table: ModbusTable) -> dict[int, int]:
        registers = super()._settings_registers(table)
        if self.configured_cells is not None:
            registers[table.settings[Setting.CELL_COUNT].register] = (
                self.configured_cells
            )
        return registers


class NoPackVoltageBalancer(VirtualBalancer):
    """A balancer whose pack voltage register reads 0xFFFF (not measured)."""

    def _live_registers(
        self, table: ModbusTable, stats: dict[str, int]
    ) -> dict[int, int]:
        registers = super()._live_registers(table, stats)
        registers[table.live.pack_voltage] = UNAVAILABLE
        return registers


def issue(hass: HomeAssistant, key: str, entry: MockConfigEntry) -> ir.IssueEntry:
    """The repair issue *key* of *entry*, or None."""
    return ir.async_get(hass).async_get_issue(DOMAIN, f"{key}_{entry.entry_id}")


def our_issues(issue_registry: ir.IssueRegistry) -> set[str]:
    """Ids of the integration's issues."""
    return {issue_id for domain, issue_id in issue_registry.issues if domain == DOMAIN}


async def test_no_issue_for_a_healthy_pack(
    hass: HomeAssistant, issue_registry: ir.IssueRegistry, entry: MockConfigEntry
) -> None:
    """A plausible 16S LFP pack raises nothing."""
    await setup_entry(hass, entry)
    for _ in range(MISWIRED_POLLS):
        await async_next_poll(hass)
    assert our_issues(issue_registry) == set()


async def test_miswired(
    hass: HomeAssistant,
    issue_registry: ir.IssueRegistry,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
) -> None:
    """Cells outside the LFP range for 3 polls in a row; fixed: the issue goes."""
    await setup_entry(hass, entry)
    balancer.set_cell_voltage(4, 3.95)
    balancer.set_cell_voltage(11, 1.20)

    await async_next_poll(hass)
    await async_next_poll(hass)
    assert issue(hass, "miswired", entry) is None

    await async_next_poll(hass)
    found = issue(hass, "miswired", entry)
    assert found is not None
    assert found.severity is ir.IssueSeverity.ERROR
    assert not found.is_fixable
    assert found.translation_key == "miswired"
    assert found.translation_placeholders == {
        "name": "Balancer 16S",
        "cells": "4, 11",
        "chemistry": "LFP",
        "low": "2.5",
        "high": "3.6",
    }

    balancer.set_cell_voltage(4, 3.30)
    balancer.set_cell_voltage(11, 3.30)
    await async_next_poll(hass)
    assert issue(hass, "miswired", entry) is None
    assert our_issues(issue_registry) == set()


async def test_miswired_needs_polls_in_a_row(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """One plausible reading in between starts the count again."""
    await setup_entry(hass, entry)
    balancer.set_cell_voltage(2, 0.0)
    await async_next_poll(hass)
    await async_next_poll(hass)
    balancer.set_cell_voltage(2, 3.30)
    await async_next_poll(hass)
    balancer.set_cell_voltage(2, 0.0)
    await async_next_poll(hass)
    await async_next_poll(hass)
    assert issue(hass, "miswired", entry) is None

    await async_next_poll(hass)
    assert issue(hass, "miswired", entry) is not None


@pytest.mark.parametrize("balancer", [VirtualBalancer(16, Chemistry.NMC)])
async def test_miswired_uses_the_chemistry(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """An NMC pack: 3.3 V is fine for LFP but too low for NMC (3.0 to 4.15 V)."""
    await setup_entry(hass, entry)
    balancer.set_cell_voltage(1, 2.9)
    for _ in range(MISWIRED_POLLS):
        await async_next_poll(hass)

    found = issue(hass, "miswired", entry)
    assert found is not None
    assert found.translation_placeholders["chemistry"] == "NMC"
    assert found.translation_placeholders["low"] == "3"
    assert found.translation_placeholders["high"] == "4.15"


@pytest.mark.parametrize("balancer", [MiscountedBalancer(16)])
async def test_cell_count_mismatch(
    hass: HomeAssistant,
    issue_registry: ir.IssueRegistry,
    entry: MockConfigEntry,
    balancer: MiscountedBalancer,
) -> None:
    """Set up for 16 cells but 15 measured: an issue until the numbers match."""
    balancer.configured_cells = 16
    balancer.cell_count = 15
    await setup_entry(hass, entry)

    found = issue(hass, "cell_count_mismatch", entry)
    assert found is not None
    assert found.severity is ir.IssueSeverity.WARNING
    assert found.translation_placeholders == {
        "name": "Balancer 16S",
        "configured": "16",
        "measured": "15",
    }

    balancer.cell_count = 16
    await async_next_poll(hass)
    assert issue(hass, "cell_count_mismatch", entry) is None
    assert our_issues(issue_registry) == set()


@pytest.mark.parametrize("cells", [3])
async def test_pack_voltage_low(
    hass: HomeAssistant,
    issue_registry: ir.IssueRegistry,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
) -> None:
    """A 3S LFP pack (9.9 V) is below the 10 V the manufacturer requires."""
    await setup_entry(hass, entry)

    found = issue(hass, "pack_voltage_low", entry)
    assert found is not None
    assert found.severity is ir.IssueSeverity.WARNING
    assert found.translation_placeholders == {
        "name": "Balancer 16S",
        "voltage": "9.9",
        "minimum": "10",
    }
    assert our_issues(issue_registry) == {f"pack_voltage_low_{entry.entry_id}"}

    balancer.cell_count = 4
    await async_next_poll(hass)
    assert issue(hass, "pack_voltage_low", entry) is None


@pytest.mark.parametrize(
    "balancer", [NoPackVoltageBalancer(3, cell_voltages=[3.3, 3.3, 3.29])]
)
async def test_pack_voltage_low_from_the_cells(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """Without a pack voltage reading, the sum of the cells is checked."""
    await setup_entry(hass, entry)

    assert hass.states.get("sensor.balancer_16s_pack_voltage").state == STATE_UNKNOWN
    found = issue(hass, "pack_voltage_low", entry)
    assert found is not None
    assert found.translation_placeholders["voltage"] == "9.9"


@pytest.mark.parametrize("cells", [3])
async def test_unload_removes_the_issues(
    hass: HomeAssistant, issue_registry: ir.IssueRegistry, entry: MockConfigEntry
) -> None:
    """Issues of an entry that is unloaded (or removed) do not linger."""
    await setup_entry(hass, entry)
    assert our_issues(issue_registry)

    assert await hass.config_entries.async_unload(entry.entry_id)
    assert our_issues(issue_registry) == set()


async def test_miswired_without_a_chemistry(
    hass: HomeAssistant, server: VirtualServer, balancer: VirtualBalancer
) -> None:
    """p81 reports no chemistry: only voltages no chemistry allows are flagged."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="RS485 balancer",
        data=serial_entry_data(server.url, variant="p81"),
        unique_id="virtual-p81",
    )
    entry.add_to_hass(hass)
    balancer.set_cell_voltage(5, 4.3)
    await setup_entry(hass, entry)
    await async_next_poll(hass)
    await async_next_poll(hass)

    found = issue(hass, "miswired", entry)
    assert found is not None
    assert found.translation_placeholders == {
        "name": "RS485 balancer",
        "cells": "5",
        "chemistry": "any",
        "low": "1.8",
        "high": "4.15",
    }
