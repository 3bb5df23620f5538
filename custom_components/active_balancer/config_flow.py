"""Config flow: Bluetooth discovery, Bluetooth pick list, serial port or URL."""

from __future__ import annotations

from collections.abc import Mapping
import logging
from typing import Any, cast

from homeassistant.components.bluetooth import (
    BluetoothServiceInfoBleak,
    async_discovered_service_info,
)
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import CONF_ADDRESS
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
)

try:  # Home Assistant 2026.10 and newer validate with probatio
    import probatio as vol
except ImportError:  # pragma: no cover - older Home Assistant
    import voluptuous as vol  # type: ignore[no-redef]

from .connection import create_connection
from .const import (
    CONF_BAUDRATE,
    CONF_KEEP_CONNECTED,
    CONF_POLL_INTERVAL,
    CONF_PORT,
    CONF_PROTOCOL,
    CONF_RS485_ADDRESS,
    CONF_SETTINGS_EVERY,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DEFAULT_BAUDRATE,
    DEFAULT_KEEP_CONNECTED,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RS485_ADDRESS,
    DEFAULT_SETTINGS_EVERY,
    DOMAIN,
    MAX_POLL_INTERVAL,
    MAX_SETTINGS_EVERY,
    MIN_POLL_INTERVAL,
    MIN_SETTINGS_EVERY,
    PROTOCOL_AUTO,
    TRANSPORT_BLE,
    TRANSPORT_SERIAL,
)
from .coordinator import port_suffix, serial_title
from .ports import async_serial_ports
from .protocol import (
    BalancerError,
    BalancerInfo,
    BalancerTimeout,
    ConnectionFailed,
    NotSupported,
    UnexpectedReply,
    Variant,
)
from .protocol.advertisement import Identity, classify
from .protocol.serial import check_port

_LOGGER = logging.getLogger(__name__)

MANUAL_PORT = "manual"
UNIT_SECONDS = "s"
UNIT_POLLS = "polls"
UNIT_TRANSLATIONS = "translation_key" in NumberSelectorConfig.__annotations__
"""Whether number selectors translate their unit (newer Home Assistant)."""
LINE_ERRORS = frozenset({"no_response", "not_a_balancer", "cannot_connect"})
"""Probe errors a wrong baud rate, protocol or address can cause."""
BAUDRATES = ["1200", "2400", "4800", "9600", "19200", "38400", "57600", "115200"]
PROTOCOLS = [PROTOCOL_AUTO, *(variant.value for variant in Variant)]


def identify(info: BluetoothServiceInfoBleak) -> Identity:
    """How well an advertisement identifies a balancer's dongle.

    The rules live in ``protocol.advertisement``, with the manifest's matchers.
    """
    return classify(info.name, info.service_uuids, info.manufacturer_data)


def looks_like_balancer(info: BluetoothServiceInfoBleak) -> bool:
    """Whether an advertisement may come from a balancer's dongle.

    Only a protocol probe decides; this keeps unrelated devices off the list.
    """
    return identify(info) is not Identity.FOREIGN


class ProbeError(Exception):
    """The probe failed; ``reason`` is the translation key of the error."""

    def __init__(self, reason: str) -> None:
        """Create the error."""
        super().__init__(reason)
        self.reason = reason


class BalancerConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a balancer over Bluetooth or a serial line."""

    VERSION = 1

    def __init__(self) -> None:
        """Create the flow."""
        self._discovery: BluetoothServiceInfoBleak | None = None
        self._discovered: dict[str, BluetoothServiceInfoBleak] = {}
        self._info: BalancerInfo | None = None
        self._cells = 0
        self._serial_input: dict[str, Any] = {}

    # --- probing --------------------------------------------------------------

    async def _probe(self, data: Mapping[str, Any]) -> tuple[BalancerInfo, int]:
        """Connect to the balancer described by *data*; return its identity."""
        try:
            connection = create_connection(self.hass, data, probing=True)
        except ConnectionFailed as err:
            raise ProbeError("cannot_connect") from err
        try:
            snapshot = await connection.client.connect()
        except ConnectionFailed as err:
            _LOGGER.debug("Could not connect: %s", err)
            raise ProbeError("cannot_connect") from err
        except BalancerTimeout as err:
            _LOGGER.debug("No answer: %s", err)
            raise ProbeError("no_response") from err
        except (UnexpectedReply, NotSupported) as err:
            _LOGGER.debug("Not a balancer: %s", err)
            raise ProbeError("not_a_balancer") from err
        except BalancerError as err:
            _LOGGER.debug("Probe failed: %s", err)
            raise ProbeError("cannot_connect") from err
        finally:
            await connection.release()
        return snapshot.info, snapshot.reading.cell_count

    def _placeholders(self, name: str) -> dict[str, str]:
        assert self._info is not None
        return {
            "name": name,
            "protocol": self._info.variant.name,
            "cells": str(self._cells),
            "firmware": self._info.software_version or "unknown",
        }

    def _title(self, data: Mapping[str, Any]) -> str:
        """Size, and how the balancer is reached: tells two entries apart."""
        assert self._info is not None
        return serial_title(data, self._cells)

    # --- Bluetooth ------------------------------------------------------------

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
        assert self._discovery is not None
        data = {CONF_TRANSPORT: TRANSPORT_BLE, CONF_ADDRESS: self._discovery.address}
        if self._info is None:
            try:
                self._info, self._cells = await self._probe(data)
            except ProbeError as err:
                reason = (
                    "cannot_connect"
                    if err.reason == "cannot_connect"
                    else ("not_a_balancer")
                )
                return self.async_abort(reason=reason)
        if user_input is not None:
            return self._create_ble_entry(self._discovery)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="bluetooth_confirm",
            description_placeholders=self._placeholders(self._discovery.name),
        )

    async def async_step_bluetooth_unprobed(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Not identified by name and service: ask before anything is sent."""
        assert self._discovery is not None
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                self._info, self._cells = await self._probe(
                    {
                        CONF_TRANSPORT: TRANSPORT_BLE,
                        CONF_ADDRESS: self._discovery.address,
                    }
                )
            except ProbeError as err:
                errors["base"] = err.reason
            else:
                return self._create_ble_entry(self._discovery)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="bluetooth_unprobed",
            description_placeholders={
                "name": self._discovery.name,
                "address": self._discovery.address,
            },
            errors=errors,
        )

    def _create_ble_entry(self, info: BluetoothServiceInfoBleak) -> ConfigFlowResult:
        assert self._info is not None
        return self.async_create_entry(
            title=info.name or info.address,
            data={
                CONF_TRANSPORT: TRANSPORT_BLE,
                CONF_ADDRESS: info.address,
                CONF_VARIANT: self._info.variant.value,
            },
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
            address = user_input[CONF_ADDRESS]
            await self.async_set_unique_id(address, raise_on_progress=False)
            self._abort_if_unique_id_configured()
            try:
                self._info, self._cells = await self._probe(
                    {CONF_TRANSPORT: TRANSPORT_BLE, CONF_ADDRESS: address}
                )
            except ProbeError as err:
                errors["base"] = err.reason
            else:
                return self._create_ble_entry(self._discovered[address])
        configured = self._async_current_ids(include_ignore=False)
        for info in async_discovered_service_info(self.hass, connectable=True):
            if info.address not in configured and looks_like_balancer(info):
                self._discovered[info.address] = info
        if not self._discovered:
            return self.async_abort(reason="no_devices_found")
        return self.async_show_form(
            step_id="pick_bluetooth",
            data_schema=vol.Schema(
                {
                    vol.Required(CONF_ADDRESS): vol.In(
                        {
                            address: f"{info.name} ({address})"
                            for address, info in self._discovered.items()
                        }
                    )
                }
            ),
            errors=errors,
        )

    # --- serial ---------------------------------------------------------------

    async def _port_options(self) -> tuple[list[SelectOptionDict], str]:
        """The ports to pick from, and the one to preselect.

        A USB adapter is preselected where there is one; otherwise "enter a
        path or URL", not a built-in UART such as /dev/ttyS0 that is almost
        never the balancer's.
        """
        options: list[SelectOptionDict] = []
        default = MANUAL_PORT
        for port in await async_serial_ports(self.hass):
            options.append(SelectOptionDict(value=port.path, label=port.label))
            if port.usb and default == MANUAL_PORT:
                default = port.path
        options.append(SelectOptionDict(value=MANUAL_PORT, label=MANUAL_PORT))
        return options, default

    async def async_step_serial(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Pick a serial port, or choose to type a path or URL."""
        errors: dict[str, str] = {}
        if user_input is not None:
            self._serial_input = user_input
            if user_input[CONF_PORT] == MANUAL_PORT:
                return await self.async_step_serial_manual()
            result = await self._async_serial_done(user_input, errors)
            if result is not None:
                return result
        options, default = await self._port_options()
        return self.async_show_form(
            step_id="serial",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_PORT, default=default): SelectSelector(
                            SelectSelectorConfig(
                                options=options,
                                translation_key="port",
                                mode=SelectSelectorMode.DROPDOWN,
                            )
                        ),
                        **_line_schema(),
                    }
                ),
                user_input,
            ),
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
            result = await self._async_serial_done(self._serial_input, errors)
            if result is not None:
                return result
        suggested = {
            key: value
            for key, value in self._serial_input.items()
            if not (key == CONF_PORT and value == MANUAL_PORT)
        }
        fields: dict[Any, Any] = {vol.Required(CONF_PORT): TextSelector()}
        if errors.get("base") in LINE_ERRORS:
            fields |= _line_schema()
        return self.async_show_form(
            step_id="serial_manual",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(fields), suggested
            ),
            errors=errors,
        )

    async def _async_serial_done(
        self,
        user_input: dict[str, Any],
        errors: dict[str, str],
    ) -> ConfigFlowResult | None:
        """Probe; create the entry or fill *errors* and return None."""
        data = await self._async_check_serial(user_input, errors)
        if data is None:
            return None
        assert self._info is not None
        if abort := self._port_taken(data):
            return abort
        if self._info.serial_number is not None:
            # The machine code identifies the balancer on whatever port.
            await self.async_set_unique_id(
                self._info.serial_number, raise_on_progress=False
            )
            self._abort_if_unique_id_configured()
        # Without one there is no unique id: a port or URL is not the identity
        # of a device (it may be moved). _port_taken refused duplicates.
        return self.async_create_entry(title=self._title(data), data=data)

    async def _async_check_serial(
        self,
        user_input: Mapping[str, Any],
        errors: dict[str, str],
    ) -> dict[str, Any] | None:
        """Validate and probe a serial configuration; None when it failed."""
        try:
            port = check_port(str(user_input[CONF_PORT]))
        except ValueError:
            errors[CONF_PORT] = "invalid_port"
            return None
        data: dict[str, Any] = {
            CONF_TRANSPORT: TRANSPORT_SERIAL,
            CONF_PORT: port,
            CONF_BAUDRATE: int(user_input.get(CONF_BAUDRATE, DEFAULT_BAUDRATE)),
            CONF_PROTOCOL: user_input.get(CONF_PROTOCOL, PROTOCOL_AUTO),
            CONF_RS485_ADDRESS: int(
                user_input.get(CONF_RS485_ADDRESS, DEFAULT_RS485_ADDRESS)
            ),
        }
        try:
            self._info, self._cells = await self._probe(data)
        except ProbeError as err:
            errors["base"] = err.reason
            return None
        data[CONF_VARIANT] = self._info.variant.value
        return data

    def _port_taken(
        self, data: Mapping[str, Any], ignore: ConfigEntry | None = None
    ) -> ConfigFlowResult | None:
        """Refuse a second entry for a balancer that already has one.

        Only p81 has an address: boards with different addresses share a port.
        D2 and A5 reach the one balancer on the port whatever address is set,
        so any other entry on that port is the same balancer.
        """
        for entry in self._async_current_entries(include_ignore=False):
            if (
                entry is ignore
                or entry.data.get(CONF_TRANSPORT) != TRANSPORT_SERIAL
                or entry.data.get(CONF_PORT) != data[CONF_PORT]
            ):
                continue
            theirs = entry.data.get(CONF_VARIANT)
            if data[CONF_VARIANT] == Variant.P81 and theirs == Variant.P81:
                # Two p81 boards: the same address is the same board.
                if entry.data.get(CONF_RS485_ADDRESS) == data[CONF_RS485_ADDRESS]:
                    return self.async_abort(reason="already_configured")
                continue
            single = theirs if data[CONF_VARIANT] == Variant.P81 else data[CONF_VARIANT]
            return self.async_abort(
                reason="port_in_use",
                description_placeholders={
                    "title": entry.title,
                    "port": str(data[CONF_PORT]),
                    "protocol": str(single or "").upper(),
                },
            )
        return None

    # --- reconfigure ----------------------------------------------------------

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the port, URL, line settings or RS485 address."""
        entry = self._get_reconfigure_entry()
        if entry.data[CONF_TRANSPORT] != TRANSPORT_SERIAL:
            return self.async_abort(reason="reconfigure_ble")
        errors: dict[str, str] = {}
        if user_input is not None:
            data = await self._async_check_serial(user_input, errors)
            if data is not None:
                if abort := self._port_taken(data, ignore=entry):
                    return abort
                title = entry.title
                if title.endswith(port_suffix(entry.data)):
                    title = self._title(data)  # ours: follow the new port
                return self.async_update_reload_and_abort(entry, data=data, title=title)
        suggested = user_input or {
            key: entry.data.get(key)
            for key in (CONF_PORT, CONF_BAUDRATE, CONF_PROTOCOL, CONF_RS485_ADDRESS)
        }
        suggested[CONF_BAUDRATE] = str(suggested.get(CONF_BAUDRATE) or DEFAULT_BAUDRATE)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema({vol.Required(CONF_PORT): TextSelector(), **_line_schema()}),
                suggested,
            ),
            errors=errors,
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> BalancerOptionsFlow:
        """Options: poll interval, BLE link, settings refresh."""
        return BalancerOptionsFlow()


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
        if user_input is not None:
            poll = user_input[CONF_POLL_INTERVAL]
            every = user_input[CONF_SETTINGS_EVERY]
            if not MIN_POLL_INTERVAL <= poll <= MAX_POLL_INTERVAL:
                errors[CONF_POLL_INTERVAL] = "poll_interval_range"
            if not MIN_SETTINGS_EVERY <= every <= MAX_SETTINGS_EVERY:
                errors[CONF_SETTINGS_EVERY] = "settings_every_range"
            if not errors:
                options: dict[str, Any] = {
                    CONF_POLL_INTERVAL: int(poll),
                    CONF_SETTINGS_EVERY: int(every),
                }
                if ble:
                    options[CONF_KEEP_CONNECTED] = user_input[CONF_KEEP_CONNECTED]
                return self.async_create_entry(data=options)
        current = self.config_entry.options
        fields: dict[Any, Any] = {
            vol.Required(
                CONF_POLL_INTERVAL,
                default=current.get(CONF_POLL_INTERVAL, DEFAULT_POLL_INTERVAL),
            ): _count_selector(CONF_POLL_INTERVAL, UNIT_SECONDS),
            vol.Required(
                CONF_SETTINGS_EVERY,
                default=current.get(CONF_SETTINGS_EVERY, DEFAULT_SETTINGS_EVERY),
            ): _count_selector(CONF_SETTINGS_EVERY, UNIT_POLLS),
        }
        if ble:
            fields[
                vol.Required(
                    CONF_KEEP_CONNECTED,
                    default=current.get(CONF_KEEP_CONNECTED, DEFAULT_KEEP_CONNECTED),
                )
            ] = BooleanSelector()
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(fields), user_input
            ),
            errors=errors,
            description_placeholders={
                "poll_min": str(MIN_POLL_INTERVAL),
                "poll_max": str(MAX_POLL_INTERVAL),
                "every_min": str(MIN_SETTINGS_EVERY),
                "every_max": str(MAX_SETTINGS_EVERY),
            },
        )


def _count_selector(key: str, unit: str) -> NumberSelector:
    """A whole number in a box, with its unit (translated where HA can).

    No minimum or maximum here: the selector's own check would answer with
    Home Assistant's bare "Value 2.0 is too small"; the step explains the range.
    """
    translation = {"translation_key": key} if UNIT_TRANSLATIONS else {}
    config = {
        "step": 1,
        "unit_of_measurement": unit,
        "mode": NumberSelectorMode.BOX,
        **translation,
    }
    return NumberSelector(cast("NumberSelectorConfig", config))


def _line_schema() -> dict[Any, Any]:
    """Fields shared by the serial, manual and reconfigure steps."""
    return {
        vol.Required(CONF_BAUDRATE, default=str(DEFAULT_BAUDRATE)): SelectSelector(
            SelectSelectorConfig(options=BAUDRATES, mode=SelectSelectorMode.DROPDOWN)
        ),
        vol.Required(CONF_PROTOCOL, default=PROTOCOL_AUTO): SelectSelector(
            SelectSelectorConfig(
                options=PROTOCOLS,
                translation_key="protocol",
                mode=SelectSelectorMode.DROPDOWN,
            )
        ),
        vol.Required(CONF_RS485_ADDRESS, default=DEFAULT_RS485_ADDRESS): NumberSelector(
            NumberSelectorConfig(min=1, max=15, step=1, mode=NumberSelectorMode.BOX)
        ),
    }
