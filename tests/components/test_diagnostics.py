"""Diagnostics: what a maintainer needs, without the user's addresses."""

from __future__ import annotations

import json

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from balancer_tools.ha_helpers import BLE_ADDRESS
from balancer_tools.simulator import (
    FakeConnector,
    VirtualBalancer,
    VirtualServer,
)
from custom_components.active_balancer.diagnostics import _scrubber
from custom_components.active_balancer.protocol import Alarm, Alarms
from custom_components.active_balancer.protocol.registers import ModbusTable

from .conftest import async_next_poll, setup_entry

SERIAL_NUMBER = "SN2024A1B2C3D4"


class NumberedBalancer(VirtualBalancer):
    """A balancer with a machine code (serial number) in its info block."""

    serial_number = SERIAL_NUMBER

    def _info_registers(self, table: ModbusTable) -> dict[int, int]:
        registers = super()._info_registers(table)
        if table.serial_number is not None:
            offset, size = table.serial_number
            text = self.serial_number.encode().ljust(size, b"\0")
            start = table.info_block.start + offset // 2
            for i in range(0, size, 2):
                registers[start + i // 2] = int.from_bytes(text[i : i + 2], "big")
        return registers


def secrets(server: VirtualServer) -> list[str]:
    """What must not appear anywhere in the diagnostics, in any spelling."""
    return [
        server.url,
        f"127.0.0.1:{server.port}",
        "127.0.0.1",
        SERIAL_NUMBER,
        SERIAL_NUMBER.encode().hex(),
    ]


@pytest.mark.parametrize(
    "balancer",
    [NumberedBalancer(4, cell_voltages=[3.3, 3.302, 3.304, 3.306])],
)
async def test_diagnostics(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    snapshot: SnapshotAssertion,
    entry: MockConfigEntry,
    server: VirtualServer,
) -> None:
    """Entry, device, reading, settings and link, with the port redacted."""
    await setup_entry(hass, entry)
    assert entry.runtime_data.data.info.serial_number == SERIAL_NUMBER

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)

    # Measured on this machine's loopback: shown, but not part of the snapshot.
    assert diagnostics["read_plan"]["turnaround_ms"] >= 0
    diagnostics["read_plan"]["turnaround_ms"] = "measured"
    assert diagnostics == snapshot
    assert diagnostics["entry"]["data"]["port"] == "**REDACTED**"
    assert diagnostics["device"]["serial_number"] == "**REDACTED**"
    assert diagnostics["link"]["last_frames"]
    text = json.dumps(diagnostics)
    for secret in secrets(server):
        assert secret not in text


@pytest.mark.parametrize("balancer", [NumberedBalancer(4)])
async def test_diagnostics_after_a_failure(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    entry: MockConfigEntry,
    server: VirtualServer,
    balancer: VirtualBalancer,
) -> None:
    """The last error is kept for the maintainer; the address is not in it."""
    await setup_entry(hass, entry)
    await server.close()
    await async_next_poll(hass)

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)

    link = diagnostics["link"]
    assert link["last_update_success"] is False
    assert link["last_error"].startswith("Could not open")
    text = json.dumps(diagnostics)
    for secret in secrets(server):
        assert secret not in text


async def test_diagnostics_ble(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    ble_entry: MockConfigEntry,
    ble_connector: FakeConnector,
) -> None:
    """A Bluetooth balancer: the address is redacted, the RSSI is shown."""
    await setup_entry(hass, ble_entry)
    # The dongle goes away and cannot be reached again.
    ble_connector.fail = 100
    await ble_connector.close()
    await async_next_poll(hass)

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, ble_entry)

    assert diagnostics["entry"]["data"]["address"] == "**REDACTED**"
    assert diagnostics["link"]["kind"] == "ble"
    assert diagnostics["link"]["rssi"] == -60
    assert diagnostics["link"]["last_error"].startswith("Could not connect to")
    text = json.dumps(diagnostics)
    assert BLE_ADDRESS not in text
    assert BLE_ADDRESS.replace(":", "") not in text


def test_nothing_to_redact() -> None:
    """Without a port, an address or a serial number, text stays as it is."""
    scrub = _scrubber(None, None, "")
    assert scrub("No answer within 0.35 s") == "No answer within 0.35 s"
    assert scrub(None) is None


class BmsBits(VirtualBalancer):
    """A device that sets a BMS-only fault bit (charge MOSFET stuck closed)."""

    @property
    def alarms(self) -> Alarms:
        """The threshold alarms plus the BMS bit."""
        return Alarms.from_flags(super().alarms.flags | {Alarm.CHARGE_MOS_ADHESION})


@pytest.mark.parametrize("balancer", [BmsBits(4)])
async def test_bms_bits_only_in_the_diagnostics(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, entry: MockConfigEntry
) -> None:
    """No entity for a bit a balancer cannot raise; the raw mask shows it."""
    await setup_entry(hass, entry)
    assert not [
        entity_id
        for entity_id in hass.states.async_entity_ids("binary_sensor")
        if "mos" in entity_id
    ]
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    reading = diagnostics["reading"]
    assert reading["alarms"]["raw"] == 1 << Alarm.CHARGE_MOS_ADHESION
    assert reading["alarm_names"] == ["charge_mos_adhesion"]
