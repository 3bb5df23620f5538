"""Number entities: the balancer's settings, checked before anything is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from homeassistant.components.number import (
    ATTR_VALUE,
    DOMAIN as NUMBER_DOMAIN,
    SERVICE_SET_VALUE,
)
from homeassistant.const import ATTR_ENTITY_ID, STATE_UNAVAILABLE, Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.util.unit_system import US_CUSTOMARY_SYSTEM
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    snapshot_platform,
)
from syrupy.assertion import SnapshotAssertion

from balancer_tools.simulator import (
    Faults,
    RecordedWrite,
    VirtualBalancer,
    VirtualServer,
)
from custom_components.active_balancer.const import DOMAIN
from custom_components.active_balancer.protocol import Setting, Variant
from custom_components.active_balancer.protocol.frames import (
    FC_READ,
    FC_WRITE_SINGLE,
)

from .conftest import (
    async_next_poll,
    name_entry_for,
    serial_entry_data,
    setup_entry,
    setup_platforms,
)

DELTA = "number.balancer_16s_start_delta"
"""The balance delta voltage, in mV."""
START = "number.balancer_16s_start_voltage"
SLEEP_TIME = "number.balancer_16s_sleep_time"
OVER_ALARM = "number.balancer_16s_cell_high_alarm"
UNDER_ALARM = "number.balancer_16s_cell_low_alarm"
LIVE_BLOCK = 0x00

D2_DELTA_REGISTER = 0xA4
D2_START_REGISTER = 0xA3


async def set_value(hass: HomeAssistant, entity_id: str, value: float) -> None:
    """Call number.set_value and wait for it."""
    await hass.services.async_call(
        NUMBER_DOMAIN,
        SERVICE_SET_VALUE,
        {ATTR_ENTITY_ID: entity_id, ATTR_VALUE: value},
        blocking=True,
    )


def registers(writes: list[RecordedWrite]) -> list[tuple[int, int]]:
    """(register, raw value) of each recorded write."""
    return [(write.register, write.value) for write in writes]


@pytest.fixture
def received(
    balancer: VirtualBalancer, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, int]]:
    """(function code, register) of every Modbus request the device answers."""
    frames: list[tuple[int, int]] = []
    answer: Callable[[bytes], object] = balancer.answer

    def recording(request: bytes) -> object:
        frames.append((request[1], int.from_bytes(request[2:4], "big")))
        return answer(request)

    monkeypatch.setattr(balancer, "answer", recording)
    return frames


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize("cells", [4, 24])
async def test_snapshot(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    entry: MockConfigEntry,
    cells: int,
) -> None:
    """Every number of a 4S and a 24S balancer: registry entry and state."""
    name_entry_for(hass, entry, cells)
    await setup_platforms(hass, entry, Platform.NUMBER)
    await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)


async def test_set_value(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    received: list[tuple[int, int]],
) -> None:
    """One write, read back, one live read, shown at once: no full poll."""
    await setup_entry(hass, entry)
    received.clear()

    await set_value(hass, DELTA, 30)

    assert registers(balancer.writes) == [(D2_DELTA_REGISTER, 30)]
    assert balancer.writes[0].variant is Variant.D2
    assert balancer.balance_delta_voltage == pytest.approx(0.03)
    # The write, its read-back and one live read (the reads of the device's
    # plan); the settings are not read.
    plan = entry.runtime_data.client.live_plan
    assert plan[0].start == LIVE_BLOCK
    assert received == [
        (FC_WRITE_SINGLE, D2_DELTA_REGISTER),
        (FC_READ, D2_DELTA_REGISTER),
        *((FC_READ, block.start) for block in plan),
    ]
    assert hass.states.get(DELTA).state == "30"


async def test_settings_read_after_a_write(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    received: list[tuple[int, int]],
) -> None:
    """The poll after a write reads every setting again (not only the live block)."""
    await setup_entry(hass, entry)
    await set_value(hass, DELTA, 30)
    balancer.balance_start_voltage = 3.4  # changed in the vendor app meanwhile
    received.clear()

    await async_next_poll(hass)

    assert (FC_READ, 0x80) in received
    assert hass.states.get(START).state == "3.4"


@pytest.mark.parametrize(
    "case",
    [
        # Outside the manuals' range: the integration's translated message.
        pytest.param((DELTA, 19, "invalid_range"), id="range"),
        pytest.param((DELTA, 1001, "invalid_range"), id="range_high"),
        pytest.param((SLEEP_TIME, -1, "invalid_range"), id="sleep_range"),
        # Outside LFP's 2.5 to 3.6 V (the pack's chemistry), also where no
        # chemistry allows it: the message gives LFP's range.
        pytest.param((START, 3.7, "invalid_chemistry"), id="chemistry"),
        pytest.param((START, 2.4, "invalid_chemistry"), id="chemistry_low"),
        pytest.param((START, 1.0, "invalid_chemistry"), id="start_range"),
        # Between the steps.
        pytest.param((DELTA, 30.5, "invalid_step"), id="step"),
        pytest.param((SLEEP_TIME, 10.5, "invalid_step"), id="sleep_step"),
        # Over-voltage alarm at or below the under-voltage alarm (2.3 V).
        pytest.param((OVER_ALARM, 2.2, "invalid_alarm_order"), id="over"),
        pytest.param((UNDER_ALARM, 3.6, "invalid_alarm_order"), id="under"),
    ],
)
@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_refused_values(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    case: tuple[str, float, str],
) -> None:
    """Values the manuals forbid are refused with a message; nothing is written."""
    entity_id, value, key = case
    await setup_entry(hass, entry)
    before = hass.states.get(entity_id).state

    with pytest.raises(ServiceValidationError) as err:
        await set_value(hass, entity_id, value)

    # Never Home Assistant's "Value 19 for number.x is outside valid range".
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == key
    assert balancer.writes == []
    assert hass.states.get(entity_id).state == before


async def test_refused_value_message(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """The message names the setting, the value, the allowed range and the unit."""
    await setup_entry(hass, entry)
    with pytest.raises(ServiceValidationError) as err:
        await set_value(hass, DELTA, 5)
    assert err.value.translation_placeholders == {
        "setting": "Start delta",
        "value": "5",
        "minimum": "20",
        "maximum": "1000",
        "unit": "mV",
    }
    assert str(err.value) == (
        "Start delta: 5 mV is outside the allowed range of 20 to 1000 mV; "
        "nothing was written"
    )

    with pytest.raises(ServiceValidationError) as err:
        await set_value(hass, DELTA, 30.5)
    assert str(err.value) == (
        "Start delta: 30.5 mV is not a multiple of 1 mV; nothing was written"
    )

    with pytest.raises(ServiceValidationError) as err:
        await set_value(hass, START, 3.7)
    assert str(err.value) == (
        "A balance start voltage of 3.7 V is outside the 2.5 to 3.6 V range of "
        "LFP cells; nothing was written"
    )


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            (Setting.BALANCE_DELTA_VOLTAGE, 0.019, "invalid_range"), id="range"
        ),
        pytest.param(
            (Setting.BALANCE_START_VOLTAGE, 3.7, "invalid_chemistry"), id="chemistry"
        ),
        pytest.param((Setting.CELL_COUNT, 8, "not_writable"), id="cell_count"),
        pytest.param((Setting.CHEMISTRY, 1, "not_writable"), id="chemistry_code"),
    ],
)
async def test_write_helper_refuses(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    case: tuple[Setting, float, str],
) -> None:
    """The write helper checks the rules itself, whoever calls it."""
    setting, value, key = case
    await setup_entry(hass, entry)
    with pytest.raises(ServiceValidationError) as err:
        await entry.runtime_data.async_write(setting, value)
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == key
    assert balancer.writes == []


async def test_write_while_silent(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A write to a device that stopped answering fails; nothing is sent later."""
    await setup_entry(hass, entry)
    balancer.faults = Faults(silent=True)

    with pytest.raises(HomeAssistantError) as err:
        await set_value(hass, DELTA, 30)
    assert err.value.translation_key == "write_failed"
    assert hass.states.get(DELTA).state == "20"

    await async_next_poll(hass)
    assert hass.states.get(DELTA).state == STATE_UNAVAILABLE
    writes = len(balancer.writes)

    balancer.faults = Faults()
    await async_next_poll(hass)
    await async_next_poll(hass)
    assert len(balancer.writes) == writes
    # The device got the write even though its answer was lost: the settings
    # are read again as soon as it answers, so what is shown is true.
    assert hass.states.get(DELTA).state == "30"


async def test_write_while_unavailable(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """While the device is known to be silent, nothing is sent, now or later."""
    await setup_entry(hass, entry)
    balancer.faults = Faults(silent=True)
    await async_next_poll(hass)
    assert hass.states.get(DELTA).state == STATE_UNAVAILABLE

    # Home Assistant does not call unavailable entities ...
    await set_value(hass, DELTA, 30)
    # ... and the write helper refuses on its own.
    with pytest.raises(HomeAssistantError) as err:
        await entry.runtime_data.async_write(Setting.BALANCE_DELTA_VOLTAGE, 0.03)
    assert err.value.translation_key == "unavailable"
    assert balancer.writes == []

    balancer.faults = Faults()
    await async_next_poll(hass)
    await async_next_poll(hass)
    assert balancer.writes == []
    assert hass.states.get(DELTA).state == "20"


async def test_write_not_confirmed(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device that ignores a write: an error, and the old value stays shown."""
    await setup_entry(hass, entry)
    monkeypatch.setattr(balancer, "_apply", lambda *_: None)

    with pytest.raises(HomeAssistantError) as err:
        await set_value(hass, DELTA, 30)

    assert err.value.translation_key == "write_not_confirmed"
    assert registers(balancer.writes) == [(D2_DELTA_REGISTER, 30)]
    assert hass.states.get(DELTA).state == "20"


async def test_two_writes_at_once(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    received: list[tuple[int, int]],
) -> None:
    """Two writes at once are sent one after the other, each read back."""
    await setup_entry(hass, entry)
    received.clear()

    await asyncio.gather(
        set_value(hass, DELTA, 30),
        set_value(hass, START, 3.45),
    )

    assert sorted(registers(balancer.writes)) == [
        (D2_START_REGISTER, 3450),
        (D2_DELTA_REGISTER, 30),
    ]
    # Each write is followed by its own read-back: never interleaved.
    live = {(FC_READ, block.start) for block in entry.runtime_data.client.live_plan}
    writes = [frame for frame in received if frame not in live]
    assert len(writes) == 4
    for write, read_back in (writes[:2], writes[2:]):
        assert write[0] == FC_WRITE_SINGLE
        assert read_back == (FC_READ, write[1])
    # ... and each by one live read.
    assert received.count((FC_READ, LIVE_BLOCK)) == 2
    assert hass.states.get(DELTA).state == "30"
    assert hass.states.get(START).state == "3.45"


async def test_p81_unconfirmed_register(
    hass: HomeAssistant, server: VirtualServer, balancer: VirtualBalancer
) -> None:
    """p81 refuses to write a register that holds an implausible value."""
    balancer.balance_start_voltage = 0.0
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="RS485 balancer",
        data=serial_entry_data(server.url, variant="p81"),
        unique_id="virtual-p81",
    )
    entry.add_to_hass(hass)
    await setup_entry(hass, entry)
    # Without a chemistry, the range covers every chemistry.
    state = hass.states.get("number.rs485_balancer_start_voltage")
    assert state.attributes["min"] == 1.8
    assert state.attributes["max"] == 4.15

    with pytest.raises(ServiceValidationError) as err:
        await set_value(hass, "number.rs485_balancer_start_voltage", 3.2)

    assert err.value.translation_key == "not_writable"
    assert balancer.writes == []


async def test_a5_has_no_settings(hass: HomeAssistant, server: VirtualServer) -> None:
    """The A5 protocol cannot write: no number and no switch entities."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Old balancer",
        data=serial_entry_data(server.url, variant="a5"),
        unique_id="virtual-a5",
    )
    entry.add_to_hass(hass)
    await setup_entry(hass, entry)
    assert hass.states.async_entity_ids(NUMBER_DOMAIN) == []
    assert hass.states.async_entity_ids("switch") == []


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_temperature_in_fahrenheit(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """°F values are written as the nearest whole °C the balancer holds."""
    hass.config.units = US_CUSTOMARY_SYSTEM
    await setup_entry(hass, entry)
    entity_id = "number.balancer_16s_temp_high_alarm"
    state = hass.states.get(entity_id)
    assert state.state == "185.0"
    assert state.attributes["min"] == 32.0
    assert state.attributes["max"] == 212.0

    await set_value(hass, entity_id, 150)  # 65.56 °C

    assert registers(balancer.writes) == [(0x9C, 66 + 40)]
    assert balancer.discharge_overtemperature_alarm == 66
    assert hass.states.get(entity_id).state == "150.8"


# What the manuals say (seeds: "balance voltage difference must be >= 20 mV",
# "balance current is 0~1A", sleep "3600S" by default and "65535" for never),
# and the rules table for what they leave open. Written out here, not read
# from the rules, so that a change to either shows up.
MANUALS = {
    # entity id: (state of the virtual balancer, min, max, step, unit, class)
    START: ("3.2", 2.5, 3.6, 0.001, "V", "voltage"),  # LFP's range
    DELTA: ("20", 20, 1000, 1, "mV", "voltage"),
    SLEEP_TIME: ("65535", 0, 65535, 1, "s", "duration"),
    OVER_ALARM: ("3.55", 1.8, 4.5, 0.001, "V", "voltage"),
    UNDER_ALARM: ("2.3", 1.5, 4.2, 0.001, "V", "voltage"),
    "number.balancer_16s_temp_high_alarm": ("85", 0, 100, 1, "°C", "temperature"),
    "number.balancer_16s_temp_low_alarm": ("-40", -40, 30, 1, "°C", "temperature"),
    "number.balancer_16s_current_limit": ("1.0", 0, 1.0, 0.1, "A", "current"),
}


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_attributes_follow_the_manuals(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """Range, step, unit and format of every number, as the manuals give them."""
    await setup_entry(hass, entry)
    shown = {}
    for entity_id in hass.states.async_entity_ids(NUMBER_DOMAIN):
        state = hass.states.get(entity_id)
        attributes = state.attributes
        shown[entity_id] = (
            state.state,
            attributes["min"],
            attributes["max"],
            attributes["step"],
            attributes["unit_of_measurement"],
            attributes["device_class"],
        )
        assert attributes["mode"] == "box"
    assert shown == MANUALS


async def test_names_are_short(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Number names fit the device page's row next to the box (no "Balance delt…").

    The device page cuts a name next to a number box at about 16 characters;
    the browser test measures the real rows.
    """
    await setup_entry(hass, entry)
    names = [
        hass.states.get(entity_id)
        .attributes["friendly_name"]
        .removeprefix("Balancer 16S ")
        for entity_id in hass.states.async_entity_ids(NUMBER_DOMAIN)
    ]
    assert names
    assert all(len(name) <= 16 for name in names), names


async def test_delta_in_millivolts_is_written_in_volts(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """30 mV entered is 0.030 V on the device (30 in its mV register)."""
    await setup_entry(hass, entry)
    await set_value(hass, DELTA, 30)
    assert balancer.balance_delta_voltage == pytest.approx(0.030)
    assert registers(balancer.writes) == [(D2_DELTA_REGISTER, 30)]
    assert hass.states.get(DELTA).state == "30"
