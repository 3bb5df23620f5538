"""Base class of every entity of a balancer."""

from __future__ import annotations

from typing import Any

from homeassistant.core import callback
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .coordinator import BalancerCoordinator


class BalancerEntity(CoordinatorEntity[BalancerCoordinator]):
    """An entity of one balancer.

    It writes its state only when what it shows has changed, so a poll that
    changes nothing costs no state writes.
    """

    _attr_has_entity_name = True

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

    def _shown(self) -> Any:
        """What the entity shows; compared to decide whether to write state."""
        return None

    @callback
    def _handle_coordinator_update(self) -> None:
        """Write the state only when it changed."""
        shown = (self.available, self._shown())
        if shown == self._written:
            return
        self._written = shown
        self.async_write_ha_state()

    async def async_added_to_hass(self) -> None:
        """Remember what was written first."""
        await super().async_added_to_hass()
        self._written = (self.available, self._shown())
