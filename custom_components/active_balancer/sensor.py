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

from . import BalancerConfigEntry
from .coordinator import BalancerCoordinator, BalancerData
from .entity import BalancerEntity

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class BalancerSensorDescription(SensorEntityDescription):
    """A sensor and how to get its value."""

    value_fn: Callable[[BalancerData], StateType]
    exists_fn: Callable[[BalancerData], bool] = lambda _: True


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
    _voltage("delta_cell_voltage", lambda d: d.reading.delta_cell_voltage),
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
        suggested_display_precision=3,
        value_fn=lambda d: d.reading.balance_current,
        exists_fn=lambda d: d.reading.balance_current is not None,
    ),
    BalancerSensorDescription(
        key="balancing_cells",
        translation_key="balancing_cells",
        value_fn=lambda d: _cell_list(d.reading.balancing_cells),
        exists_fn=lambda d: d.reading.balancing_cells is not None,
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

CELL_VOLTAGE = BalancerSensorDescription(
    key="cell_voltage",
    translation_key="cell_voltage",
    device_class=SensorDeviceClass.VOLTAGE,
    state_class=SensorStateClass.MEASUREMENT,
    native_unit_of_measurement=UnitOfElectricPotential.VOLT,
    suggested_display_precision=3,
    value_fn=lambda _: None,
)

TEMPERATURE = BalancerSensorDescription(
    key="temperature",
    translation_key="temperature",
    device_class=SensorDeviceClass.TEMPERATURE,
    state_class=SensorStateClass.MEASUREMENT,
    native_unit_of_measurement=UnitOfTemperature.CELSIUS,
    value_fn=lambda _: None,
)

RSSI = BalancerSensorDescription(
    key="rssi",
    translation_key="rssi",
    device_class=SensorDeviceClass.SIGNAL_STRENGTH,
    state_class=SensorStateClass.MEASUREMENT,
    native_unit_of_measurement=SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
    entity_category=EntityCategory.DIAGNOSTIC,
    entity_registry_enabled_default=False,
    value_fn=lambda _: None,
)


def _cell_list(cells: frozenset[int] | None) -> str | None:
    if cells is None:
        return None
    return ", ".join(str(cell) for cell in sorted(cells)) or "none"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BalancerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the sensors of one balancer."""
    coordinator = entry.runtime_data
    data = coordinator.data
    entities: list[SensorEntity] = [
        BalancerSensor(coordinator, description)
        for description in SENSORS
        if description.exists_fn(data)
    ]
    entities.extend(
        CellVoltageSensor(coordinator, cell)
        for cell in range(1, data.reading.cell_count + 1)
    )
    entities.extend(
        TemperatureSensor(coordinator, sensor)
        for sensor in range(1, len(data.reading.temperatures) + 1)
    )
    if coordinator.ble_link is not None:
        entities.append(RssiSensor(coordinator, RSSI))
    async_add_entities(entities)


class BalancerSensor(BalancerEntity, SensorEntity):
    """A sensor whose value comes from its description."""

    entity_description: BalancerSensorDescription

    @property
    def native_value(self) -> StateType:
        """The value."""
        return self.entity_description.value_fn(self.coordinator.data)

    def _shown(self) -> StateType:
        return self.native_value


class CellVoltageSensor(BalancerEntity, SensorEntity):
    """The voltage of one cell."""

    def __init__(self, coordinator: BalancerCoordinator, cell: int) -> None:
        """Create the sensor of cell number *cell* (1-based)."""
        super().__init__(
            coordinator,
            CELL_VOLTAGE,
            key=f"cell_{cell}_voltage",
            placeholders={"cell": str(cell)},
        )
        self._index = cell - 1

    @property
    def native_value(self) -> float | None:
        """The cell's voltage; unknown when the balancer reports fewer cells."""
        cells = self.coordinator.data.reading.cell_voltages
        return cells[self._index] if self._index < len(cells) else None

    def _shown(self) -> float | None:
        return self.native_value


class TemperatureSensor(BalancerEntity, SensorEntity):
    """One temperature sensor."""

    def __init__(self, coordinator: BalancerCoordinator, sensor: int) -> None:
        """Create the sensor for temperature sensor *sensor* (1-based)."""
        super().__init__(
            coordinator,
            TEMPERATURE,
            key=f"temperature_{sensor}",
            placeholders={"sensor": str(sensor)},
        )
        self._index = sensor - 1

    @property
    def native_value(self) -> float | None:
        """The temperature; unknown when the sensor is not fitted."""
        temps = self.coordinator.data.reading.temperatures
        return temps[self._index] if self._index < len(temps) else None

    def _shown(self) -> float | None:
        return self.native_value


class RssiSensor(BalancerEntity, SensorEntity):
    """Signal strength of the balancer's Bluetooth dongle."""

    @property
    def native_value(self) -> int | None:
        """The last RSSI seen."""
        return self.coordinator.rssi

    def _shown(self) -> int | None:
        return self.native_value
