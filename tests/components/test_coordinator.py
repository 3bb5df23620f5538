"""The coordinator: polling, availability, logging, state writes, Bluetooth."""

from __future__ import annotations

from collections.abc import Callable
import logging
from typing import Any
from unittest.mock import patch

from bleak.backends.device import BLEDevice
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import (
    CONF_ADDRESS,
    EVENT_STATE_CHANGED,
    EVENT_STATE_REPORTED,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
)
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers.entity import Entity
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from balancer_tools.ha_helpers import BLE_ADDRESS, ble_service_info
from balancer_tools.simulator import (
    FakeConnector,
    Faults,
    VirtualBalancer,
    VirtualServer,
    serve_tcp,
)
from custom_components.active_balancer.const import (
    CONF_KEEP_CONNECTED,
    CONF_TRANSPORT,
    DOMAIN,
    TRANSPORT_BLE,
)

from .conftest import async_next_poll, inject_advertisement, setup_entry

CONNECTION = "binary_sensor.balancer_16s_connection"
LINK_QUALITY = "sensor.balancer_16s_link_quality"
CELL_1 = "sensor.balancer_16s_cell_01_voltage"
RSSI = "sensor.balancer_ble_signal_strength"


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings and errors logged.

    asyncio's debug mode (on in tests) warns about slow steps; not ours.
    """
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name != "asyncio"
    ]


def recoveries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Lines saying the balancer answers again."""
    return [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]


def unavailable(hass: HomeAssistant) -> set[str]:
    """Entity ids of the balancer's entities that are unavailable."""
    return {
        state.entity_id
        for state in hass.states.async_all()
        if state.state == STATE_UNAVAILABLE
    }


def entities(hass: HomeAssistant) -> set[str]:
    """Entity ids of every state."""
    return set(hass.states.async_entity_ids())


async def test_silent_device(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A silent device: unavailable, one line in the log; back: one line again."""
    await setup_entry(hass, entry)
    assert hass.states.get(CONNECTION).state == STATE_ON
    assert hass.states.get(LINK_QUALITY).state == "100.0"
    caplog.clear()

    balancer.faults = Faults(silent=True)
    await async_next_poll(hass)
    await async_next_poll(hass)

    # Everything but the connection sensor is unavailable; it shows the link down.
    assert unavailable(hass) == entities(hass) - {CONNECTION}
    assert hass.states.get(CONNECTION).state == STATE_OFF
    assert len(problems(caplog)) == 1
    assert "Balancer 16S" in problems(caplog)[0]
    assert "No answer" in problems(caplog)[0]
    assert recoveries(caplog) == []

    balancer.faults = Faults()
    await async_next_poll(hass)
    await async_next_poll(hass)

    assert unavailable(hass) == set()
    assert hass.states.get(CONNECTION).state == STATE_ON
    assert len(problems(caplog)) == 1
    assert len(recoveries(caplog)) == 1
    # Setup and 2 polls answered, 2 polls not.
    assert hass.states.get(LINK_QUALITY).state == "60.0"


async def test_device_gone_and_back(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    server: VirtualServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line is closed (gateway off); the same port comes back later."""
    await setup_entry(hass, entry)
    caplog.clear()
    assert server.port is not None

    await server.close()
    await async_next_poll(hass)
    await async_next_poll(hass)

    assert unavailable(hass) == entities(hass) - {CONNECTION}
    assert hass.states.get(CONNECTION).state == STATE_OFF
    assert len(problems(caplog)) == 1

    async with await serve_tcp(balancer, port=server.port) as again:
        await async_next_poll(hass)
        assert unavailable(hass) == set()
        assert hass.states.get(CONNECTION).state == STATE_ON
        assert again.connections == 1
        assert len(problems(caplog)) == 1
        assert len(recoveries(caplog)) == 1
        assert hass.states.get(LINK_QUALITY).state == "50.0"
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_link_quality_counts_failed_polls(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A reply lost now and then shows as a lower link quality, not as an outage."""
    await setup_entry(hass, entry)
    # Every try of the next poll is lost (first try and both retries).
    balancer.faults.once("drop", "drop", "drop")
    await async_next_poll(hass)
    await async_next_poll(hass)
    await async_next_poll(hass)

    assert hass.states.get(LINK_QUALITY).state == "75.0"
    assert hass.states.get(CONNECTION).state == STATE_ON


async def test_retried_reply_is_no_failure(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """One corrupt reply is retried within the poll: nothing is lost."""
    await setup_entry(hass, entry)
    balancer.faults.once("corrupt")
    balancer.set_cell_voltage(1, 3.299)
    await async_next_poll(hass)

    assert hass.states.get(CELL_1).state == "3.299"
    assert hass.states.get(LINK_QUALITY).state == "100.0"


async def test_poll_without_change_writes_no_state(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A poll where nothing changed writes no state at all."""
    await setup_entry(hass, entry)
    events: list[Event[Any]] = []
    hass.bus.async_listen(EVENT_STATE_CHANGED, events.append)
    hass.bus.async_listen(
        EVENT_STATE_REPORTED, events.append, event_filter=callback(lambda _: True)
    )
    polls = balancer.requests

    with patch.object(
        Entity, "async_write_ha_state", autospec=True, side_effect=lambda _: None
    ) as write:
        await async_next_poll(hass)
        await async_next_poll(hass)

    # Two polls, each the planned live reads only (no settings).
    plan = entry.runtime_data.client.live_plan
    assert balancer.requests == polls + 2 * len(plan)
    assert write.call_count == 0
    assert events == []


async def test_poll_writes_only_what_changed(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """One cell changes: only the entities showing something new are written."""
    await setup_entry(hass, entry)
    changed: list[str] = []
    hass.bus.async_listen(
        EVENT_STATE_CHANGED, lambda event: changed.append(event.data["entity_id"])
    )
    written: list[str] = []
    original: Callable[[Entity], None] = Entity.async_write_ha_state

    def write(entity: Entity) -> None:
        written.append(entity.entity_id)
        original(entity)

    with patch.object(Entity, "async_write_ha_state", autospec=True, side_effect=write):
        balancer.set_cell_voltage(3, 3.305)  # not the lowest nor the highest
        await async_next_poll(hass)

    assert sorted(written) == sorted(changed)
    # The average (3.30306 V) still shows 3.303 V.
    assert changed == ["sensor.balancer_16s_cell_03_voltage"]


async def test_ble_rssi_and_device(
    hass: HomeAssistant,
    ble_entry: MockConfigEntry,
    ble_connector: FakeConnector,
    entity_registry_enabled_by_default: None,
) -> None:
    """The signal strength follows the advertisements; so does the BLEDevice."""
    await setup_entry(hass, ble_entry)
    assert ble_connector.connects == 1
    assert hass.states.get(RSSI).state == "-60"
    assert hass.states.get("sensor.balancer_ble_cell_16_voltage").state == "3.306"
    coordinator = ble_entry.runtime_data
    assert coordinator.ble_link is not None

    # Seen by another adapter (or a proxy), with new content and a stronger signal.
    info = ble_service_info(rssi=-48, source="proxy", manufacturer_data={770: b"\x01"})
    inject_advertisement(hass, info)
    await hass.async_block_till_done()
    assert coordinator.ble_link._device is info.device
    await async_next_poll(hass)
    assert hass.states.get(RSSI).state == "-48"

    # Same content, weaker signal: Home Assistant does not call back for that;
    # the next poll shows it anyway.
    weaker = ble_service_info(
        rssi=-75, source="proxy", manufacturer_data={770: b"\x01"}
    )
    inject_advertisement(hass, weaker)
    await async_next_poll(hass)
    assert hass.states.get(RSSI).state == "-75"
    assert coordinator.ble_link._device is weaker.device
    assert ble_connector.connects == 1  # the link stayed open all along


async def test_ble_rssi_kept_without_advertisements(
    hass: HomeAssistant,
    ble_entry: MockConfigEntry,
    entity_registry_enabled_by_default: None,
) -> None:
    """No advertisement on record any more (still connected): RSSI is kept."""
    await setup_entry(hass, ble_entry)
    with patch(
        "custom_components.active_balancer.coordinator.bluetooth.async_last_service_info",
        return_value=None,
    ):
        await async_next_poll(hass)
    assert hass.states.get(RSSI).state == "-60"
    assert hass.states.get("binary_sensor.balancer_ble_connection").state == STATE_ON


async def test_ble_reconnects_with_the_latest_device(
    hass: HomeAssistant,
    ble_entry: MockConfigEntry,
    ble_connector: FakeConnector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without keeping the link open, each poll connects via the latest device."""
    from custom_components.active_balancer.protocol import ble

    hass.config_entries.async_update_entry(
        ble_entry, options={CONF_KEEP_CONNECTED: False}
    )
    devices: list[BLEDevice] = []

    async def connect(client_class: Any, device: BLEDevice, *args: Any, **kw: Any):
        devices.append(device)
        return await ble_connector(client_class, device, *args, **kw)

    monkeypatch.setattr(ble, "establish_connection", connect)
    await setup_entry(hass, ble_entry)
    assert len(devices) == 1
    assert not ble_connector.clients[-1].is_connected  # closed between polls

    info = ble_service_info(rssi=-50, source="proxy", manufacturer_data={770: b"\x02"})
    inject_advertisement(hass, info)
    await async_next_poll(hass)

    assert devices[-1] is info.device
    assert not ble_connector.clients[-1].is_connected


async def test_ble_device_out_of_range(
    hass: HomeAssistant, enable_bluetooth: None, ble_connector: FakeConnector
) -> None:
    """A Bluetooth balancer not seen by any adapter: set-up is retried later."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Balancer BLE",
        data={
            CONF_TRANSPORT: TRANSPORT_BLE,
            CONF_ADDRESS: BLE_ADDRESS,
        },
        unique_id=BLE_ADDRESS,
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert "not in range" in str(entry.reason)
    assert ble_connector.attempts == 0
