"""Sensors: every cell voltage, statistics, pack, temperatures, link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import (
    PERCENTAGE,
    SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
    EntityCategory,
    UnitOfElectricCurrent,
    UnitOfElectricPotential,
    UnitOfTemperature,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .balancing import statistics_sensors
from .coordinator import BalancerConfigEntry, BalancerCoordinator, BalancerData
from .entity import BalancerEntity
from .protocol import Variant
from .protocol.plan import PART_BALANCE_CURRENT, PART_BALANCING_CELLS

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class BalancerSensorDescription(SensorEntityDescription):
    """A sensor and how to get its value."""

    value_fn: Callable[[BalancerData], StateType]
    exists_fn: Callable[[BalancerData], bool] = lambda _: True
    part: str | None = None
    """Optional part of the device's answers the value comes from."""


def _voltage(
    key: str, fn: Callable[[BalancerData], StateType]
) -> BalancerSensorDescription:
    return BalancerSensorDescription(
        key=key,
        translation_key=key,
        device_class=SensorDeviceClass.VOLTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricPotential.VOLT,
        suggested_display_precision=3,
        value_fn=fn,
    )


SENSORS: tuple[BalancerSensorDescription, ...] = (
    _voltage("min_cell_voltage", lambda d: d.reading.min_cell_voltage),
    _voltage("max_cell_voltage", lambda d: d.reading.max_cell_voltage),
    _voltage("average_cell_voltage", lambda d: d.reading.average_cell_voltage),
    # In mV like the balance delta setting it is compared with. A suggested
    # unit applies to new entities only: existing ones keep V and history.
    BalancerSensorDescription(
        key="delta_cell_voltage",
        translation_key="delta_cell_voltage",
        device_class=SensorDeviceClass.VOLTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricPotential.VOLT,
        suggested_unit_of_measurement=UnitOfElectricPotential.MILLIVOLT,
        suggested_display_precision=0,
        value_fn=lambda d: d.reading.delta_cell_voltage,
    ),
    BalancerSensorDescription(
        key="min_cell",
        translation_key="min_cell",
        value_fn=lambda d: d.reading.min_cell,
    ),
    BalancerSensorDescription(
        key="max_cell",
        translation_key="max_cell",
        value_fn=lambda d: d.reading.max_cell,
    ),
    BalancerSensorDescription(
        key="pack_voltage",
        translation_key="pack_voltage",
        device_class=SensorDeviceClass.VOLTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricPotential.VOLT,
        suggested_display_precision=1,
        value_fn=lambda d: d.reading.pack_voltage,
    ),
    BalancerSensorDescription(
        key="balance_current",
        translation_key="balance_current",
        device_class=SensorDeviceClass.CURRENT,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricCurrent.AMPERE,
        suggested_display_precision=2,
        value_fn=lambda d: d.reading.balance_current,
        # A5 has no balance current; elsewhere it is optional (unavailable
        # while the device does not answer it).
        exists_fn=lambda d: d.info.variant is not Variant.A5,
        part=PART_BALANCE_CURRENT,
    ),
    BalancerSensorDescription(
        key="balancing_cells",
        translation_key="balancing_cells",
        value_fn=lambda d: _cell_list(d.reading.balancing_cells),
        part=PART_BALANCING_CELLS,
    ),
    BalancerSensorDescription(
        key="link_quality",
        translation_key="link_quality",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda d: d.link_quality,
    ),
)


def _cell_voltage(cell: int, cells: int) -> BalancerSensorDescription:
    """The voltage of cell number *cell* (1-based) of *cells*.

    The number in the name is zero-padded on packs of 10 or more cells
    ("Cell 01 voltage"), so that the cells sort in order where Home Assistant
    sorts by name (device page, generated dashboards). The key, and with it
    the unique id, stays unpadded, so existing entities keep their history.
    """
    return BalancerSensorDescription(
        key=f"cell_{cell}_voltage",
        translation_key="cell_voltage",
        translation_placeholders={"cell": str(cell).zfill(len(str(cells)))},
        device_class=SensorDeviceClass.VOLTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricPotential.VOLT,
        suggested_display_precision=3,
        value_fn=lambda d: _item(d.reading.cell_voltages, cell),
    )


def _temperature(sensor: int) -> BalancerSensorDescription:
    """Temperature sensor number *sensor* (1-based)."""
    return BalancerSensorDescription(
        key=f"temperature_{sensor}",
        translation_key="temperature",
        translation_placeholders={"sensor": str(sensor)},
        device_class=SensorDeviceClass.TEMPERATURE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfTemperature.CELSIUS,
        suggested_display_precision=0,
        value_fn=lambda d: _item(d.reading.temperatures, sensor),
    )


RSSI = BalancerSensorDescription(
    key="rssi",
    translation_key="rssi",
    device_class=SensorDeviceClass.SIGNAL_STRENGTH,
    state_class=SensorStateClass.MEASUREMENT,
    native_unit_of_measurement=SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
    entity_category=EntityCategory.DIAGNOSTIC,
    entity_registry_enabled_default=False,
    value_fn=lambda d: d.rssi,
)


def _item(values: tuple[float | None, ...], number: int) -> float | None:
    """Value *number* (1-based); unknown when the device reports fewer."""
    return values[number - 1] if number <= len(values) else None


NO_CELLS = "none"
"""State when no cell is balanced; translated (entity.sensor.*.state.none)."""


def _cell_list(cells: frozenset[int] | None) -> str | None:
    if cells is None:
        return None
    return ", ".join(str(cell) for cell in sorted(cells)) or NO_CELLS


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BalancerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the sensors of one balancer."""
    coordinator = entry.runtime_data
    data = coordinator.data
    cells = data.reading.cell_count
    descriptions = [
        *(description for description in SENSORS if description.exists_fn(data)),
        *(_cell_voltage(cell, cells) for cell in range(1, cells + 1)),
        *(_temperature(n) for n in range(1, len(data.reading.temperatures) + 1)),
    ]
    if coordinator.ble_link is not None:
        descriptions.append(RSSI)
    entities: list[BalancerEntity] = [
        BalancerSensor(coordinator, description) for description in descriptions
    ]
    entities.extend(statistics_sensors(coordinator))
    async_add_entities(entities)


class BalancerSensor(BalancerEntity, SensorEntity):
    """A sensor whose value comes from its description."""

    entity_description: BalancerSensorDescription
    is_measurement = True

    def __init__(
        self, coordinator: BalancerCoordinator, description: BalancerSensorDescription
    ) -> None:
        """Create the sensor; its part comes from the description."""
        super().__init__(coordinator, description)
        self._part = description.part

    @property
    def native_value(self) -> StateType:
        """The value."""
        return self.entity_description.value_fn(self.coordinator.data)

    def _shown(self) -> StateType:
        return self.native_value
