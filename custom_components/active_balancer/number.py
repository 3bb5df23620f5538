"""Number entities: the balancer's settings, written through the coordinator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

from .coordinator import BalancerConfigEntry, BalancerCoordinator
from .entity import BalancerEntity
from .protocol import Setting
from .protocol.rules import RULES

PARALLEL_UPDATES = 1

OPEN_RANGE = 1e6
"""What Home Assistant's own range check is given (see :class:`BalancerNumber`)."""


@dataclass(frozen=True, kw_only=True)
class BalancerNumberDescription(NumberEntityDescription):
    """A setting shown as a number; range and step come from the rules."""

    setting: Setting
    scale: int = 1
    """Shown units per unit of the rules: 1000 shows a rule in volts in mV."""


def _number(
    setting: Setting,
    unit: str,
    device_class: NumberDeviceClass | None,
    *,
    scale: int = 1,
    enabled: bool = True,
) -> BalancerNumberDescription:
    rule = RULES[setting]
    return BalancerNumberDescription(
        key=setting.value,
        translation_key=setting.value,
        setting=setting,
        scale=scale,
        native_unit_of_measurement=unit,
        device_class=device_class,
        native_min_value=round(rule.minimum * scale, 6),
        native_max_value=round(rule.maximum * scale, 6),
        native_step=round(rule.step * scale, 6),
        mode=NumberMode.BOX,
        entity_category=EntityCategory.CONFIG,
        entity_registry_enabled_default=enabled,
    )


VOLT = UnitOfElectricPotential.VOLT
CELSIUS = UnitOfTemperature.CELSIUS

NUMBERS: tuple[BalancerNumberDescription, ...] = (
    _number(Setting.BALANCE_START_VOLTAGE, VOLT, NumberDeviceClass.VOLTAGE),
    # Both manuals give the delta in mV ("≥ 20 mV"); the rules keep volts.
    _number(
        Setting.BALANCE_DELTA_VOLTAGE,
        UnitOfElectricPotential.MILLIVOLT,
        NumberDeviceClass.VOLTAGE,
        scale=1000,
    ),
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
    """A writable setting.

    Its ``min``, ``max`` and ``step`` attributes are the manuals' (the rules
    table). Home Assistant's own check of a value against them answers with
    the entity id and no unit ("Value 0.005 for number.x is outside valid
    range 0.02 - 1.0"), so the entity gives that check an open range and
    leaves the check to the library's rules; the coordinator translates a
    refusal into a message that names the setting, the unit shown and the
    allowed range. Nothing is written either way.
    """

    entity_description: BalancerNumberDescription

    def __init__(
        self, coordinator: BalancerCoordinator, description: BalancerNumberDescription
    ) -> None:
        """Create the number; unavailable while its settings part is unanswered."""
        super().__init__(coordinator, description)
        self._part = coordinator.client.setting_part(description.setting)

    @property
    def _integer(self) -> bool:
        """Whether the value is a whole number ("3600 s", not "3600.0 s").

        Not when Home Assistant converts it (°F): it keeps the decimals of
        the native value then.
        """
        step = self.entity_description.native_step or 1
        converted = self.unit_of_measurement != self.native_unit_of_measurement
        return float(step).is_integer() and not converted

    @property
    def native_value(self) -> float | None:
        """The value last read from or confirmed by the balancer."""
        value = self.coordinator.data.settings.get(self.entity_description.setting)
        if not isinstance(value, int | float):
            return None
        shown = round(float(value) * self.entity_description.scale, 6)
        return round(shown) if self._integer else shown

    def _range(self) -> tuple[float, float]:
        """The allowed range; the start voltage follows the cell chemistry."""
        description = self.entity_description
        chemistry = self.coordinator.data.settings.chemistry
        if description.setting is Setting.BALANCE_START_VOLTAGE and chemistry:
            return chemistry.voltage_range
        assert description.native_min_value is not None
        assert description.native_max_value is not None
        return description.native_min_value, description.native_max_value

    @property
    def native_min_value(self) -> float:
        """Open for Home Assistant's check; the entity checks (class doc)."""
        return -OPEN_RANGE

    @property
    def native_max_value(self) -> float:
        """Open for Home Assistant's check; the entity checks (class doc)."""
        return OPEN_RANGE

    @property
    def capability_attributes(self) -> dict[str, Any]:
        """The manuals' range as ``min`` and ``max``, in the shown unit."""
        attributes = dict(super().capability_attributes)
        low, high = self._range()
        attributes["min"] = self._shown_value(low)
        attributes["max"] = self._shown_value(high)
        return attributes

    def _shown_value(self, native: float) -> float:
        """A native value in the unit the user sees (°F, a chosen unit)."""
        return self._convert_to_state_value(native, round, self.device_class)

    def _shown(self) -> tuple[float | None, tuple[float, float]]:
        return (self.native_value, self._range())

    async def async_set_native_value(self, value: float) -> None:
        """Write the value (checked by the library), and show it once confirmed."""
        description = self.entity_description
        if self.unit_of_measurement != self.native_unit_of_measurement:
            # Entered in the user's unit (°F): take the nearest value the
            # balancer can hold, instead of refusing most of them.
            step = description.native_step or 1
            value = round(round(value / step) * step, 6)
        scale = description.scale
        await self._async_write(
            description.setting,
            round(value / scale, 6),
            unit=self.unit_of_measurement or "",
            convert=lambda rules_value: self._shown_value(
                round(rules_value * scale, 6)
            ),
        )
