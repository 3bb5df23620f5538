"""Switches: balancer on/off and sleep on/off."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.restore_state import RestoredExtraData, RestoreEntity

from .const import DEFAULT_SLEEP_TIME
from .coordinator import BalancerConfigEntry, BalancerCoordinator
from .entity import BalancerEntity
from .protocol import Setting
from .protocol.model import NEVER_SLEEP

PARALLEL_UPDATES = 1
LAST_SLEEP_TIME = "last_sleep_time"

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
        await self._async_write(Setting.BALANCER_ENABLED, True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Disable balancing."""
        await self._async_write(Setting.BALANCER_ENABLED, False)


class SleepSwitch(BalancerEntity, SwitchEntity, RestoreEntity):
    """Whether the balancer may sleep; off writes 65535 (never sleep).

    On restores the last sleep time the balancer held (or the manuals'
    3600 s); that time is kept across restarts with the entity's restored
    data, so a balancer switched to "never sleep" gets it back afterwards.
    """

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
        return sleep_time != NEVER_SLEEP

    @property
    def extra_restore_state_data(self) -> RestoredExtraData:
        """The sleep time that turning sleep on restores."""
        return RestoredExtraData({LAST_SLEEP_TIME: self._last_sleep_time})

    @callback
    def _remember_sleep_time(self) -> None:
        sleep_time = self.coordinator.data.settings.sleep_time
        if sleep_time is not None and sleep_time != NEVER_SLEEP:
            self._last_sleep_time = int(sleep_time)

    @callback
    def _handle_coordinator_update(self) -> None:
        self._remember_sleep_time()
        super()._handle_coordinator_update()

    async def async_added_to_hass(self) -> None:
        """Take the restored sleep time, unless the balancer holds one now."""
        if (extra := await self.async_get_last_extra_data()) is not None:
            restored = extra.as_dict().get(LAST_SLEEP_TIME)
            if isinstance(restored, int) and 0 < restored < NEVER_SLEEP:
                self._last_sleep_time = restored
        await super().async_added_to_hass()
        self._remember_sleep_time()

    def _shown(self) -> bool | None:
        return self.is_on

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Restore the last sleep time (or the manuals' 3600 s)."""
        await self._async_write(Setting.SLEEP_TIME, self._last_sleep_time)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Never sleep."""
        await self._async_write(Setting.SLEEP_TIME, NEVER_SLEEP)
