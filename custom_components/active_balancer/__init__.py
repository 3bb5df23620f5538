"""The Smart Active Balancer integration (DALY / 100balance 1 A balancers)."""

from __future__ import annotations

from homeassistant import config_entries
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.typing import ConfigType

from .card import async_register_card
from .connection import create_connection
from .const import CONF_PROTOCOL, CONF_VARIANT, DOMAIN, PROTOCOL_AUTO
from .coordinator import BalancerConfigEntry, BalancerCoordinator
from .protocol import ConnectionFailed

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

__all__ = ["BalancerConfigEntry"]

PLATFORMS: list[Platform] = [
    Platform.BINARY_SENSOR,
    Platform.NUMBER,
    Platform.SENSOR,
    Platform.SWITCH,
]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Serve the cell view card (once per Home Assistant run, for every entry)."""
    await async_register_card(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: BalancerConfigEntry) -> bool:
    """Connect to the balancer and set up its entities."""
    try:
        connection = create_connection(hass, entry.data, options=entry.options)
    except ConnectionFailed as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="device_not_found",
            translation_placeholders={"error": str(err)},
        ) from err
    coordinator = BalancerCoordinator(
        hass, entry, connection.client, ble_link=connection.ble_link
    )
    try:
        await coordinator.async_config_entry_first_refresh()
    except BaseException:
        await connection.release()
        raise
    entry.async_on_unload(connection.release)
    entry.async_on_unload(coordinator.issues.async_clear)
    # Newer releases reload after the options flow (OptionsFlowWithReload).
    if not hasattr(config_entries, "OptionsFlowWithReload"):  # pragma: no cover
        entry.async_on_unload(entry.add_update_listener(_async_options_updated))
    entry.runtime_data = coordinator
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_migrate_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Bring an entry of an earlier version to the current one.

    1.1 → 1.2: the user's protocol choice (``protocol``) and the detected
    variant (``variant``) become the one key ``variant``. The detected one
    wins; a forced protocol without a detected one is kept; "automatic" alone
    leaves no key, so the variant is detected at set-up as before.
    """
    if entry.minor_version < 2:  # noqa: PLR2004 - before 1.2
        data = dict(entry.data)
        chosen = data.pop(CONF_PROTOCOL, PROTOCOL_AUTO)
        if data.get(CONF_VARIANT) is None and chosen != PROTOCOL_AUTO:
            data[CONF_VARIANT] = chosen
        hass.config_entries.async_update_entry(entry, data=data, minor_version=2)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: BalancerConfigEntry) -> bool:
    """Unload the entities; the connection is released by the unload callbacks."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def _async_options_updated(  # pragma: no cover - Home Assistant 2025.4
    hass: HomeAssistant, entry: BalancerConfigEntry
) -> None:
    """Reload when the options change."""
    await hass.config_entries.async_reload(entry.entry_id)
