"""Base class of every entity of a balancer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.core import callback
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .coordinator import BalancerCoordinator, ShownAs
from .protocol import Setting


class BalancerEntity(CoordinatorEntity[BalancerCoordinator]):
    """An entity of one balancer.

    It writes its state only when what it shows has changed, so a poll that
    changes nothing costs no state writes.
    """

    _attr_has_entity_name = True
    # Measurements are written first in every update, everything else
    # (alarms, states, settings) after them: see the coordinator.
    is_measurement = False
    _part: str | None = None
    """The optional part of the device's answers this entity shows: while
    the device does not answer it, the entity is unavailable."""

    def __init__(
        self,
        coordinator: BalancerCoordinator,
        description: EntityDescription,
    ) -> None:
        """Create the entity described by *description*."""
        super().__init__(coordinator)
        self.entity_description = description
        self._attr_unique_id = f"{coordinator.identity}-{description.key}"
        self._attr_device_info = coordinator.device_info
        self._written: Any = None

    @property
    def available(self) -> bool:
        """Unavailable with the link, or while the device leaves its part out."""
        if not super().available:
            return False
        data = self.coordinator.data
        return self._part is None or self._part not in data.unanswered

    def _shown(self) -> Any:
        """What the entity shows; compared to decide whether to write state.

        By default its state and attributes as Home Assistant would write
        them, so an entity that does not override this still shows changes;
        subclasses return the cheaper native value.
        """
        return (self.state, self.extra_state_attributes)

    @callback
    def _handle_coordinator_update(self) -> None:
        """Write the state when it changed, after the measurements if not one."""
        if not self.is_measurement and self.coordinator.write_after_measurements(
            self._write_if_changed
        ):
            return
        self._write_if_changed()

    @callback
    def _write_if_changed(self) -> None:
        """Write the state only when it changed."""
        shown = (self.available, self._shown())
        if shown == self._written:
            return
        self._written = shown
        self.async_write_ha_state()

    async def _async_write(
        self,
        setting: Setting,
        value: float | bool,
        *,
        unit: str | None = None,
        convert: Callable[[float], float] = float,
    ) -> None:
        """Write *setting* through the coordinator, with this entity's name.

        *unit* and *convert* say how the entity shows the setting's values
        (the unit of the rules if not given), for the messages.
        """
        name = self.name if isinstance(self.name, str) else setting.value
        await self.coordinator.async_write(
            setting, value, shown=ShownAs(name, unit, convert)
        )

    async def async_added_to_hass(self) -> None:
        """Remember what was written first."""
        await super().async_added_to_hass()
        self._written = (self.available, self._shown())
