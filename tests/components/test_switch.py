"""Switches: balancing on/off and sleep on/off."""

from __future__ import annotations

from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_OFF,
    STATE_ON,
    STATE_UNKNOWN,
    Platform,
)
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    mock_restore_cache_with_extra_data,
    snapshot_platform,
)
from syrupy.assertion import SnapshotAssertion

from balancer_tools.simulator import VirtualBalancer
from custom_components.active_balancer.const import DEFAULT_SLEEP_TIME
from custom_components.active_balancer.protocol.model import NEVER_SLEEP

from .conftest import async_next_poll, name_entry_for, setup_entry, setup_platforms

BALANCER = "switch.balancer_16s_balancer"
SLEEP = "switch.balancer_16s_allow_sleep"
SLEEP_TIME = "number.balancer_16s_sleep_time"

D2_BALANCER_REGISTER = 0xCF
D2_SLEEP_REGISTER = 0x8A


async def switch(hass: HomeAssistant, service: str, entity_id: str) -> None:
    """Turn *entity_id* on or off and wait for it."""
    await hass.services.async_call(
        SWITCH_DOMAIN, service, {ATTR_ENTITY_ID: entity_id}, blocking=True
    )


def last_write(balancer: VirtualBalancer) -> tuple[int, int]:
    """(register, raw value) of the last write the device received."""
    write = balancer.writes[-1]
    return write.register, write.value


@pytest.mark.parametrize("cells", [4, 24])
async def test_snapshot(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    entry: MockConfigEntry,
    cells: int,
) -> None:
    """Both switches of a 4S and a 24S balancer: registry entry and state."""
    name_entry_for(hass, entry, cells)
    await setup_platforms(hass, entry, Platform.SWITCH)
    await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)


async def test_balancer_off_and_on(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Off writes 0 to 0xCF and shows off at once; on writes 1."""
    await setup_entry(hass, entry)
    assert hass.states.get(BALANCER).state == STATE_ON

    await switch(hass, SERVICE_TURN_OFF, BALANCER)
    assert [(w.register, w.value) for w in balancer.writes] == [
        (D2_BALANCER_REGISTER, 0)
    ]
    assert not balancer.balancer_enabled
    assert hass.states.get(BALANCER).state == STATE_OFF

    await switch(hass, SERVICE_TURN_ON, BALANCER)
    assert last_write(balancer) == (D2_BALANCER_REGISTER, 1)
    assert balancer.balancer_enabled
    assert hass.states.get(BALANCER).state == STATE_ON


async def test_sleep_on_uses_the_manuals_default(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A balancer that never slept gets the manuals' 3600 s when sleep goes on."""
    await setup_entry(hass, entry)
    assert hass.states.get(SLEEP).state == STATE_OFF

    await switch(hass, SERVICE_TURN_ON, SLEEP)
    assert last_write(balancer) == (D2_SLEEP_REGISTER, DEFAULT_SLEEP_TIME)
    assert hass.states.get(SLEEP).state == STATE_ON
    assert hass.states.get(SLEEP_TIME).state == "3600"

    await switch(hass, SERVICE_TURN_OFF, SLEEP)
    assert last_write(balancer) == (D2_SLEEP_REGISTER, NEVER_SLEEP)
    assert hass.states.get(SLEEP).state == STATE_OFF
    assert hass.states.get(SLEEP_TIME).state == "65535"


async def test_sleep_on_restores_the_previous_time(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Sleep off writes 65535 (never); on restores the sleep time seen before."""
    balancer.sleep_time = 600
    await setup_entry(hass, entry)
    assert hass.states.get(SLEEP).state == STATE_ON

    await switch(hass, SERVICE_TURN_OFF, SLEEP)
    assert last_write(balancer) == (D2_SLEEP_REGISTER, NEVER_SLEEP)
    assert balancer.sleep_time == NEVER_SLEEP
    assert hass.states.get(SLEEP).state == STATE_OFF

    await async_next_poll(hass)
    await switch(hass, SERVICE_TURN_ON, SLEEP)
    assert last_write(balancer) == (D2_SLEEP_REGISTER, 600)
    assert hass.states.get(SLEEP).state == STATE_ON
    assert len(balancer.writes) == 2


async def test_sleep_time_survives_a_restart(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Switched to "never sleep" before a restart, sleep on restores 900 s."""
    balancer.sleep_time = NEVER_SLEEP
    mock_restore_cache_with_extra_data(
        hass, [(State(SLEEP, STATE_OFF), {"last_sleep_time": 900})]
    )
    await setup_entry(hass, entry)
    assert hass.states.get(SLEEP).state == STATE_OFF

    await switch(hass, SERVICE_TURN_ON, SLEEP)
    assert last_write(balancer) == (D2_SLEEP_REGISTER, 900)
    assert hass.states.get(SLEEP).state == STATE_ON


@pytest.mark.parametrize("restored", [0, NEVER_SLEEP, "900", None])
async def test_implausible_restored_sleep_time_is_ignored(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    restored: object,
) -> None:
    """A restored value that is no sleep time leaves the manuals' default."""
    balancer.sleep_time = NEVER_SLEEP
    mock_restore_cache_with_extra_data(
        hass, [(State(SLEEP, STATE_OFF), {"last_sleep_time": restored})]
    )
    await setup_entry(hass, entry)
    await switch(hass, SERVICE_TURN_ON, SLEEP)
    assert last_write(balancer) == (D2_SLEEP_REGISTER, DEFAULT_SLEEP_TIME)


async def test_balancer_switch_unknown_for_an_odd_value(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A switch register holding neither 0 nor 1 shows unknown, not off."""
    balancer.balancer_enabled = 2  # type: ignore[assignment]
    await setup_entry(hass, entry)
    assert hass.states.get(BALANCER).state == STATE_UNKNOWN
