"""Options flow: poll interval, settings refresh, and the Bluetooth link."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigFlowResult, OptionsFlow

from .config_schema import OPTION_RANGES, option_errors, options_schema
from .const import (
    CONF_KEEP_CONNECTED,
    CONF_POLL_INTERVAL,
    CONF_SETTINGS_EVERY,
    CONF_TRANSPORT,
    TRANSPORT_BLE,
)

try:  # Home Assistant 2025.8 and newer reload the entry after the options
    from homeassistant.config_entries import OptionsFlowWithReload as OptionsFlowBase
except ImportError:  # pragma: no cover - older Home Assistant (minimum lane)
    OptionsFlowBase = OptionsFlow  # type: ignore[assignment,misc]


class BalancerOptionsFlow(OptionsFlowBase):
    """Options of one balancer; the Bluetooth link option only over Bluetooth."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show and save the options."""
        ble = self.config_entry.data.get(CONF_TRANSPORT) == TRANSPORT_BLE
        errors: dict[str, str] = {}
        if user_input is not None and not (errors := option_errors(user_input)):
            options: dict[str, Any] = {
                CONF_POLL_INTERVAL: int(user_input[CONF_POLL_INTERVAL]),
                CONF_SETTINGS_EVERY: int(user_input[CONF_SETTINGS_EVERY]),
            }
            if ble:
                options[CONF_KEEP_CONNECTED] = user_input[CONF_KEEP_CONNECTED]
            return self.async_create_entry(data=options)
        schema = options_schema(self.config_entry.options, ble=ble)
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(schema, user_input),
            errors=errors,
            description_placeholders=OPTION_RANGES,
        )
