"""Number entities: the balancer's settings, written through the coordinator."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.components.number import (
    NumberDeviceClass,
    NumberEntity,
    NumberEntityDescription,
    NumberMode,
)
from homeassistant.const import (
    EntityCategory,
    UnitOfElectricCurrent,
    UnitOfElectricPotential,
    UnitOfTemperature,
    UnitOfTime,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import BalancerConfigEntry
from .coordinator import BalancerCoordinator
from .entity import BalancerEntity
from .protocol import Setting
from .protocol.rules import RULES

PARALLEL_UPDATES = 1


@dataclass(frozen=True, kw_only=True)
class BalancerNumberDescription(NumberEntityDescription):
    """A setting shown as a number; range and step come from the rules."""

    setting: Setting


def _number(
    setting: Setting,
    unit: str,
    device_class: NumberDeviceClass | None,
    *,
    enabled: bool = True,
) -> BalancerNumberDescription:
    rule = RULES[setting]
    return BalancerNumberDescription(
        key=setting.value,
        translation_key=setting.value,
        setting=setting,
        native_unit_of_measurement=unit,
        device_class=device_class,
        native_min_value=rule.minimum,
        native_max_value=rule.maximum,
        native_step=rule.step,
        mode=NumberMode.BOX,
        entity_category=EntityCategory.CONFIG,
        entity_registry_enabled_default=enabled,
    )


VOLT = UnitOfElectricPotential.VOLT
CELSIUS = UnitOfTemperature.CELSIUS

NUMBERS: tuple[BalancerNumberDescription, ...] = (
    _number(Setting.BALANCE_START_VOLTAGE, VOLT, NumberDeviceClass.VOLTAGE),
    _number(Setting.BALANCE_DELTA_VOLTAGE, VOLT, NumberDeviceClass.VOLTAGE),
    _number(Setting.SLEEP_TIME, UnitOfTime.SECONDS, NumberDeviceClass.DURATION),
    _number(
        Setting.CELL_OVERVOLTAGE_ALARM, VOLT, NumberDeviceClass.VOLTAGE, enabled=False
    ),
    _number(
        Setting.CELL_UNDERVOLTAGE_ALARM, VOLT, NumberDeviceClass.VOLTAGE, enabled=False
    ),
    _number(
        Setting.DISCHARGE_OVERTEMPERATURE_ALARM,
        CELSIUS,
        NumberDeviceClass.TEMPERATURE,
        enabled=False,
    ),
    _number(
        Setting.DISCHARGE_UNDERTEMPERATURE_ALARM,
        CELSIUS,
        NumberDeviceClass.TEMPERATURE,
        enabled=False,
    ),
    _number(
        Setting.BALANCE_CURRENT_LIMIT,
        UnitOfElectricCurrent.AMPERE,
        NumberDeviceClass.CURRENT,
        enabled=False,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BalancerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a number for every setting this balancer can write."""
    coordinator = entry.runtime_data
    writable = coordinator.client.writable_settings()
    async_add_entities(
        BalancerNumber(coordinator, description)
        for description in NUMBERS
        if description.setting in writable
    )


class BalancerNumber(BalancerEntity, NumberEntity):
    """A writable setting."""

    entity_description: BalancerNumberDescription

    def __init__(
        self, coordinator: BalancerCoordinator, description: BalancerNumberDescription
    ) -> None:
        """Create the number; unavailable while its settings part is unanswered."""
        super().__init__(coordinator, description)
        self._part = coordinator.client.setting_part(description.setting)

    @property
    def native_value(self) -> float | None:
        """The value last read from or confirmed by the balancer."""
        value = getattr(self.coordinator.data.settings, self.entity_description.key)
        return None if value is None else float(value)

    def _chemistry_range(self) -> tuple[float, float] | None:
        """The start voltage's range for the cell chemistry, where known."""
        chemistry = self.coordinator.data.settings.chemistry
        if self.entity_description.setting is not Setting.BALANCE_START_VOLTAGE:
            return None
        return chemistry.voltage_range if chemistry is not None else None

    @property
    def native_min_value(self) -> float:
        """Lowest value; the start voltage follows the cell chemistry."""
        limits = self._chemistry_range()
        return limits[0] if limits else super().native_min_value

    @property
    def native_max_value(self) -> float:
        """Highest value; the start voltage follows the cell chemistry."""
        limits = self._chemistry_range()
        return limits[1] if limits else super().native_max_value

    def _shown(self) -> tuple[float | None, float, float]:
        return (self.native_value, self.native_min_value, self.native_max_value)

    async def async_set_native_value(self, value: float) -> None:
        """Write the value to the balancer and show it once confirmed."""
        if self.unit_of_measurement != self.native_unit_of_measurement:
            # Entered in the user's unit (°F): take the nearest value the
            # balancer can hold, instead of refusing most of them.
            step = self.native_step or 1
            value = round(round(value / step) * step, 6)
        await self.coordinator.async_write(self.entity_description.setting, value)
