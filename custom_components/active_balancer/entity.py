"""Base class of every entity of a balancer."""

from __future__ import annotations

from typing import Any

from homeassistant.const import CONF_ADDRESS
from homeassistant.core import callback
from homeassistant.helpers.device_registry import (
    CONNECTION_BLUETOOTH,
    DeviceInfo,
)
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import CONF_TRANSPORT, DOMAIN, TRANSPORT_BLE
from .coordinator import BalancerCoordinator

MANUFACTURER = "DALY / 100balance"


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
        *,
        key: str | None = None,
        placeholders: dict[str, str] | None = None,
    ) -> None:
        """Create the entity described by *description*."""
        super().__init__(coordinator)
        self.entity_description = description
        entry = coordinator.config_entry
        self._attr_unique_id = f"{entry.unique_id}-{key or description.key}"
        if placeholders:
            self._attr_translation_placeholders = placeholders
        info = coordinator.data.info
        connections = set()
        if entry.data[CONF_TRANSPORT] == TRANSPORT_BLE:
            connections.add((CONNECTION_BLUETOOTH, entry.data[CONF_ADDRESS]))
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, str(entry.unique_id))},
            connections=connections,
            name=entry.title,
            manufacturer=MANUFACTURER,
            model=f"Smart Active Balancer {coordinator.data.reading.cell_count}S",
            model_id=info.hardware_version,
            sw_version=info.software_version,
            hw_version=info.hardware_version,
            serial_number=info.serial_number,
        )
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
