"""Binary sensors: balancing, the manuals' four alarms, other faults, link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.components.binary_sensor import (
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import BalancerConfigEntry
from .coordinator import BalancerData
from .entity import BalancerEntity
from .protocol import Alarm

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


def _flag(alarm: Alarm) -> BalancerBinarySensorDescription:
    return BalancerBinarySensorDescription(
        key=f"alarm_{alarm.name.lower()}",
        translation_key=f"alarm_{alarm.name.lower()}",
        device_class=BinarySensorDeviceClass.PROBLEM,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda d: alarm in d.reading.alarms.flags,
    )


_GROUPED = {alarm for pair in ALARM_GROUPS.values() for alarm in pair}

BINARY_SENSORS: tuple[BalancerBinarySensorDescription, ...] = (
    BalancerBinarySensorDescription(
        key="balancing",
        translation_key="balancing",
        device_class=BinarySensorDeviceClass.RUNNING,
        value_fn=lambda d: d.reading.balancing,
    ),
    *(_group(name) for name in ALARM_GROUPS),
    *(_flag(alarm) for alarm in Alarm if alarm not in _GROUPED),
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
    async_add_entities(entities)


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
