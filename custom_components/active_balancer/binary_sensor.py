"""Binary sensors: balancing, the manuals' four alarms, the link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.components.binary_sensor import (
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import BalancerConfigEntry, BalancerData
from .entity import BalancerEntity

try:  # Home Assistant 2026.10 and newer
    from homeassistant.components.binary_sensor.const import BinarySensorDeviceClass
except ImportError:  # pragma: no cover - older Home Assistant
    from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined]
        BinarySensorDeviceClass,
    )
from .protocol.model import ALARM_GROUPS

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class BalancerBinarySensorDescription(BinarySensorEntityDescription):
    """A binary sensor and how to get its value."""

    value_fn: Callable[[BalancerData], bool | None]


def _group(name: str) -> BalancerBinarySensorDescription:
    return BalancerBinarySensorDescription(
        key=name,
        translation_key=name,
        device_class=BinarySensorDeviceClass.PROBLEM,
        value_fn=lambda d: d.reading.alarms.group(name),
    )


BINARY_SENSORS: tuple[BalancerBinarySensorDescription, ...] = (
    BalancerBinarySensorDescription(
        key="balancing",
        translation_key="balancing",
        device_class=BinarySensorDeviceClass.RUNNING,
        value_fn=lambda d: d.reading.balancing,
    ),
    # Only the four alarms the manuals say a balancer shows. The other bits
    # of the mask are a BMS's (MOSFETs, current, state of charge); a balancer
    # never sets them. The raw mask is in the diagnostics.
    *(_group(name) for name in ALARM_GROUPS),
)

CONNECTIVITY = BalancerBinarySensorDescription(
    key="connectivity",
    translation_key="connectivity",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
    value_fn=lambda _: None,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BalancerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the binary sensors of one balancer."""
    coordinator = entry.runtime_data
    entities: list[BinarySensorEntity] = [
        BalancerBinarySensor(coordinator, description) for description in BINARY_SENSORS
    ]
    entities.append(ConnectivitySensor(coordinator, CONNECTIVITY))
    _remove_dropped(hass, entry, {entity.unique_id for entity in entities})
    async_add_entities(entities)


def _remove_dropped(
    hass: HomeAssistant, entry: BalancerConfigEntry, kept: set[str | None]
) -> None:
    """Remove the BMS fault bits earlier versions registered (disabled)."""
    registry = er.async_get(hass)
    for registered in er.async_entries_for_config_entry(registry, entry.entry_id):
        if registered.domain == "binary_sensor" and registered.unique_id not in kept:
            registry.async_remove(registered.entity_id)


class BalancerBinarySensor(BalancerEntity, BinarySensorEntity):
    """A binary sensor whose value comes from its description."""

    entity_description: BalancerBinarySensorDescription

    @property
    def is_on(self) -> bool | None:
        """The value."""
        return self.entity_description.value_fn(self.coordinator.data)

    def _shown(self) -> bool | None:
        return self.is_on


class ConnectivitySensor(BalancerEntity, BinarySensorEntity):
    """Whether the last poll reached the balancer; always available."""

    @property
    def available(self) -> bool:
        """Always available, so it can show the link is down."""
        return True

    @property
    def is_on(self) -> bool:
        """Whether the last poll succeeded."""
        return self.coordinator.last_update_success

    def _shown(self) -> bool:
        return self.is_on
