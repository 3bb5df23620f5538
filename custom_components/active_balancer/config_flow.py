"""Config flow: Bluetooth discovery, Bluetooth pick list, serial port or URL.

Forms: ``config_schema``; probe: ``probe``; one entry per balancer:
``duplicates``; options: ``options_flow``; discovery: ``protocol.advertisement``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeassistant.components.bluetooth import (
    BluetoothServiceInfoBleak,
    async_discovered_service_info,
)
from homeassistant.config_entries import ConfigEntry, ConfigFlow, ConfigFlowResult
from homeassistant.const import CONF_ADDRESS
from homeassistant.core import callback

from .config_schema import (
    MANUAL_PORT,
    pick_schema,
    port_schema,
    reconfigure_suggestions,
    serial_schema,
)
from .const import (
    CONF_PORT,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DOMAIN,
    TRANSPORT_BLE,
    TRANSPORT_SERIAL,
)
from .coordinator import port_suffix, serial_title
from .duplicates import refuse_duplicate
from .options_flow import BalancerOptionsFlow
from .ports import async_serial_ports
from .probe import (
    LINE_ERRORS,
    ProbeError,
    ProbeResult,
    async_probe,
    async_probe_serial,
)
from .protocol.advertisement import Identity, classify


def identify(info: BluetoothServiceInfoBleak) -> Identity:
    """How well an advertisement identifies a balancer's dongle."""
    return classify(info.name, info.service_uuids, info.manufacturer_data)


class BalancerConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a balancer over Bluetooth or a serial line."""

    VERSION = 1
    MINOR_VERSION = 2
    """1.2: one stored key, the detected ``variant`` (1.1 also had ``protocol``)."""

    _discovery: BluetoothServiceInfoBleak
    """The advertisement that started a Bluetooth discovery flow."""

    def __init__(self) -> None:
        """Create the flow."""
        self._probed: ProbeResult | None = None
        """The discovered dongle's probe, from showing the form to confirming."""
        self._discovered: dict[str, BluetoothServiceInfoBleak] = {}
        self._serial_input: dict[str, Any] = {}

    # --- Bluetooth ------------------------------------------------------------

    async def _async_probe_ble(
        self, info: BluetoothServiceInfoBleak, errors: dict[str, str]
    ) -> ProbeResult | None:
        """Probe a dongle; on failure fill *errors* and return None."""
        try:
            return await async_probe(self.hass, _ble_data(info))
        except ProbeError as err:
            errors[err.field] = err.reason
            return None

    async def async_step_bluetooth(
        self, discovery_info: BluetoothServiceInfoBleak
    ) -> ConfigFlowResult:
        """A device that may be a balancer's dongle was discovered."""
        await self.async_set_unique_id(discovery_info.address)
        self._abort_if_unique_id_configured()
        identity = identify(discovery_info)
        if identity is Identity.FOREIGN:
            # Not ours by any rule: never connected to, never offered.
            return self.async_abort(reason="not_supported")
        self._discovery = discovery_info
        self.context["title_placeholders"] = {"name": discovery_info.name}
        if identity is Identity.IDENTIFIED:
            return await self.async_step_bluetooth_confirm()
        return await self.async_step_bluetooth_unprobed()

    async def async_step_bluetooth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Our name and service: probe (read only), then ask for confirmation."""
        if self._probed is None:
            try:
                self._probed = await async_probe(self.hass, _ble_data(self._discovery))
            except ProbeError as err:
                # Nobody asked for this device: drop it rather than show an error.
                reason = (
                    err.reason if err.reason == "cannot_connect" else "not_a_balancer"
                )
                return self.async_abort(reason=reason)
        if user_input is not None:
            return self._create_ble_entry(self._discovery, self._probed)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="bluetooth_confirm",
            description_placeholders=self._probed.placeholders(self._discovery.name),
        )

    async def async_step_bluetooth_unprobed(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Not identified by name and service: ask before anything is sent."""
        errors: dict[str, str] = {}
        if user_input is not None:
            probed = await self._async_probe_ble(self._discovery, errors)
            if probed is not None:
                return self._create_ble_entry(self._discovery, probed)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="bluetooth_unprobed",
            description_placeholders={
                "name": self._discovery.name,
                "address": self._discovery.address,
            },
            errors=errors,
        )

    def _create_ble_entry(
        self, info: BluetoothServiceInfoBleak, probed: ProbeResult
    ) -> ConfigFlowResult:
        return self.async_create_entry(
            title=info.name or info.address,
            data=_ble_data(info) | {CONF_VARIANT: probed.variant.value},
        )

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose how the balancer is connected."""
        return self.async_show_menu(
            step_id="user", menu_options=["pick_bluetooth", "serial"]
        )

    async def async_step_pick_bluetooth(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Pick one of the balancers seen over Bluetooth."""
        errors: dict[str, str] = {}
        if user_input is not None:
            info = self._discovered[user_input[CONF_ADDRESS]]
            await self.async_set_unique_id(info.address, raise_on_progress=False)
            self._abort_if_unique_id_configured()
            probed = await self._async_probe_ble(info, errors)
            if probed is not None:
                return self._create_ble_entry(info, probed)
        configured = self._async_current_ids(include_ignore=False)
        self._discovered |= {
            info.address: info
            for info in async_discovered_service_info(self.hass, connectable=True)
            if info.address not in configured and identify(info) is not Identity.FOREIGN
        }
        if not self._discovered:
            return self.async_abort(reason="no_devices_found")
        return self.async_show_form(
            step_id="pick_bluetooth",
            data_schema=pick_schema(self._discovered),
            errors=errors,
        )

    # --- serial ---------------------------------------------------------------

    async def async_step_serial(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Pick a serial port, or choose to type a path or URL."""
        errors: dict[str, str] = {}
        if user_input is not None:
            self._serial_input = user_input
            if user_input[CONF_PORT] == MANUAL_PORT:
                return await self.async_step_serial_manual()
            if (result := await self._async_add_serial(user_input, errors)) is not None:
                return result
        schema = serial_schema(await async_serial_ports(self.hass))
        return self.async_show_form(
            step_id="serial",
            data_schema=self.add_suggested_values_to_schema(schema, user_input),
            errors=errors,
        )

    async def async_step_serial_manual(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Type a device path or a socket:// / rfc2217:// URL.

        The line settings were chosen on the serial step and are not asked
        again; only after a failed probe they are shown here too, so that a
        wrong baud rate, protocol or address can be corrected.
        """
        errors: dict[str, str] = {}
        if user_input is not None and CONF_PORT in user_input:
            self._serial_input = self._serial_input | user_input
            result = await self._async_add_serial(self._serial_input, errors)
            if result is not None:
                return result
        suggested = {
            key: value
            for key, value in self._serial_input.items()
            if not (key == CONF_PORT and value == MANUAL_PORT)
        }
        schema = port_schema(line=errors.get("base") in LINE_ERRORS)
        return self.async_show_form(
            step_id="serial_manual",
            data_schema=self.add_suggested_values_to_schema(schema, suggested),
            errors=errors,
        )

    async def _async_add_serial(
        self, user_input: Mapping[str, Any], errors: dict[str, str]
    ) -> ConfigFlowResult | None:
        """Probe; create the entry or fill *errors* and return None."""
        if (found := await self._async_probe_serial(user_input, errors)) is None:
            return None
        data, probed = found
        if probed.serial_number is not None:
            # The machine code identifies the balancer on whatever port.
            await self.async_set_unique_id(
                probed.serial_number, raise_on_progress=False
            )
            self._abort_if_unique_id_configured()
        # Without one there is no unique id: a port or URL is not the identity
        # of a device (it may be moved); refuse_duplicate matched port and address.
        return self.async_create_entry(
            title=serial_title(data, probed.cells), data=data
        )

    async def _async_probe_serial(
        self,
        user_input: Mapping[str, Any],
        errors: dict[str, str],
        reconfiguring: ConfigEntry | None = None,
    ) -> tuple[dict[str, Any], ProbeResult] | None:
        """Probe a serial form: entry data and result, or None with *errors*.

        Aborts for a balancer another entry has (see ``duplicates``).
        """
        try:
            data, probed = await async_probe_serial(self.hass, user_input)
        except ProbeError as err:
            errors[err.field] = err.reason
            return None
        entries = self._async_current_entries(include_ignore=False)
        refuse_duplicate(data, entries, ignore=reconfiguring)
        return data, probed

    # --- reconfigure ----------------------------------------------------------

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the port, URL, line settings or RS485 address."""
        entry = self._get_reconfigure_entry()
        if entry.data[CONF_TRANSPORT] != TRANSPORT_SERIAL:
            return self.async_abort(reason="reconfigure_ble")
        errors: dict[str, str] = {}
        if user_input is not None and (
            found := await self._async_probe_serial(user_input, errors, entry)
        ):
            data, probed = found
            title = entry.title
            if title.endswith(port_suffix(entry.data)):
                title = serial_title(data, probed.cells)  # ours: follow the port
            return self.async_update_reload_and_abort(entry, data=data, title=title)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                port_schema(line=True),
                user_input or reconfigure_suggestions(entry.data),
            ),
            errors=errors,
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> BalancerOptionsFlow:
        """Options: poll interval, BLE link, settings refresh."""
        return BalancerOptionsFlow()


def _ble_data(info: BluetoothServiceInfoBleak) -> dict[str, Any]:
    """Entry data of a Bluetooth balancer, without the variant."""
    return {CONF_TRANSPORT: TRANSPORT_BLE, CONF_ADDRESS: info.address}
