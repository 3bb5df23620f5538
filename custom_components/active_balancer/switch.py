"""Switches: balancer on/off and sleep on/off."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import BalancerConfigEntry
from .const import DEFAULT_SLEEP_TIME
from .coordinator import BalancerCoordinator
from .entity import BalancerEntity
from .protocol import Setting
from .protocol.model import NEVER_SLEEP

PARALLEL_UPDATES = 1

BALANCER = SwitchEntityDescription(key="balancer", translation_key="balancer")
SLEEP = SwitchEntityDescription(
    key="sleep", translation_key="sleep", entity_category=EntityCategory.CONFIG
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BalancerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the switches this balancer supports."""
    coordinator = entry.runtime_data
    writable = coordinator.client.writable_settings()
    entities: list[SwitchEntity] = []
    if Setting.BALANCER_ENABLED in writable:
        entities.append(BalancerSwitch(coordinator, BALANCER))
    if Setting.SLEEP_TIME in writable:
        entities.append(SleepSwitch(coordinator, SLEEP))
    async_add_entities(entities)


class BalancerSwitch(BalancerEntity, SwitchEntity):
    """Switches balancing on or off (the green LED)."""

    def __init__(
        self, coordinator: BalancerCoordinator, description: SwitchEntityDescription
    ) -> None:
        """Create the switch; unavailable while its register is unanswered."""
        super().__init__(coordinator, description)
        self._part = coordinator.client.setting_part(Setting.BALANCER_ENABLED)

    @property
    def is_on(self) -> bool | None:
        """Whether balancing is enabled."""
        return self.coordinator.data.settings.balancer_enabled

    def _shown(self) -> bool | None:
        return self.is_on

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Enable balancing."""
        await self.coordinator.async_write(Setting.BALANCER_ENABLED, True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Disable balancing."""
        await self.coordinator.async_write(Setting.BALANCER_ENABLED, False)


class SleepSwitch(BalancerEntity, SwitchEntity):
    """Whether the balancer may sleep; off writes 65535 (never sleep)."""

    def __init__(
        self, coordinator: BalancerCoordinator, description: SwitchEntityDescription
    ) -> None:
        """Create the switch; unavailable while its register is unanswered."""
        super().__init__(coordinator, description)
        self._part = coordinator.client.setting_part(Setting.SLEEP_TIME)
        self._last_sleep_time = DEFAULT_SLEEP_TIME

    @property
    def is_on(self) -> bool | None:
        """Whether sleeping is enabled."""
        sleep_time = self.coordinator.data.settings.sleep_time
        if sleep_time is None:
            return None
        if sleep_time != NEVER_SLEEP:
            self._last_sleep_time = sleep_time
        return sleep_time != NEVER_SLEEP

    def _shown(self) -> bool | None:
        return self.is_on

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Restore the last sleep time (or the manuals' 3600 s)."""
        await self.coordinator.async_write(Setting.SLEEP_TIME, self._last_sleep_time)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Never sleep."""
        await self.coordinator.async_write(Setting.SLEEP_TIME, NEVER_SLEEP)
