"""The forms of the config and options flows, and form input as entry data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from homeassistant.components.bluetooth import BluetoothServiceInfoBleak
from homeassistant.const import CONF_ADDRESS
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
    MAX_POLL_INTERVAL,
    MAX_SETTINGS_EVERY,
    MIN_POLL_INTERVAL,
    MIN_SETTINGS_EVERY,
    PROTOCOL_AUTO,
    TRANSPORT_SERIAL,
)
from .ports import SerialPortChoice
from .protocol import Variant
from .protocol.serial import check_port

MANUAL_PORT = "manual"
"""The port choice "enter a path or URL"."""
UNIT_SECONDS = "s"
UNIT_POLLS = "polls"
UNIT_TRANSLATIONS = "translation_key" in NumberSelectorConfig.__annotations__
"""Whether number selectors translate their unit (newer Home Assistant)."""
BAUDRATES = ["1200", "2400", "4800", "9600", "19200", "38400", "57600", "115200"]
PROTOCOLS = [PROTOCOL_AUTO, *(variant.value for variant in Variant)]
OPTION_RANGES = {
    "poll_min": str(MIN_POLL_INTERVAL),
    "poll_max": str(MAX_POLL_INTERVAL),
    "every_min": str(MIN_SETTINGS_EVERY),
    "every_max": str(MAX_SETTINGS_EVERY),
}
"""The options' allowed ranges, as the options step's description shows them."""


def serial_entry_data(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """The entry data a serial form describes, before the probe.

    The protocol field is stored as the variant only when the user chose one;
    with "automatic" the probe detects it. Raises ``ValueError`` for a
    malformed path or URL.
    """
    data: dict[str, Any] = {
        CONF_TRANSPORT: TRANSPORT_SERIAL,
        CONF_PORT: check_port(str(user_input[CONF_PORT])),
        CONF_BAUDRATE: int(user_input.get(CONF_BAUDRATE, DEFAULT_BAUDRATE)),
        CONF_RS485_ADDRESS: int(
            user_input.get(CONF_RS485_ADDRESS, DEFAULT_RS485_ADDRESS)
        ),
    }
    if (protocol := user_input.get(CONF_PROTOCOL, PROTOCOL_AUTO)) != PROTOCOL_AUTO:
        data[CONF_VARIANT] = protocol
    return data


def line_schema() -> dict[Any, Any]:
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


def serial_schema(ports: Iterable[SerialPortChoice]) -> vol.Schema:
    """The serial step: the ports to pick from, and the line settings.

    A USB adapter is preselected where there is one; otherwise "enter a path
    or URL", not a built-in UART such as /dev/ttyS0 that is almost never the
    balancer's.
    """
    options: list[SelectOptionDict] = []
    default = MANUAL_PORT
    for port in ports:
        options.append(SelectOptionDict(value=port.path, label=port.label))
        if port.usb and default == MANUAL_PORT:
            default = port.path
    options.append(SelectOptionDict(value=MANUAL_PORT, label=MANUAL_PORT))
    selector = SelectSelector(
        SelectSelectorConfig(
            options=options, translation_key="port", mode=SelectSelectorMode.DROPDOWN
        )
    )
    return vol.Schema(
        {vol.Required(CONF_PORT, default=default): selector} | line_schema()
    )


def port_schema(*, line: bool) -> vol.Schema:
    """A typed path or URL; with the line settings when *line* is set."""
    return vol.Schema(
        {vol.Required(CONF_PORT): TextSelector()} | (line_schema() if line else {})
    )


def reconfigure_suggestions(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the reconfigure form shows pre-filled for an entry's *data*."""
    return {
        CONF_PORT: data.get(CONF_PORT),
        CONF_BAUDRATE: str(data.get(CONF_BAUDRATE) or DEFAULT_BAUDRATE),
        CONF_PROTOCOL: data.get(CONF_VARIANT, PROTOCOL_AUTO),
        CONF_RS485_ADDRESS: data.get(CONF_RS485_ADDRESS),
    }


def pick_schema(discovered: Mapping[str, BluetoothServiceInfoBleak]) -> vol.Schema:
    """The Bluetooth pick list: "name (address)" for each device."""
    return vol.Schema(
        {
            vol.Required(CONF_ADDRESS): vol.In(
                {
                    address: f"{info.name} ({address})"
                    for address, info in discovered.items()
                }
            )
        }
    )


def options_schema(current: Mapping[str, Any], *, ble: bool) -> vol.Schema:
    """The options; keeping the link open only for a Bluetooth entry."""
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
    return vol.Schema(fields)


def option_errors(user_input: Mapping[str, Any]) -> dict[str, str]:
    """The options form's errors: a poll interval or refresh out of range."""
    errors: dict[str, str] = {}
    if not MIN_POLL_INTERVAL <= user_input[CONF_POLL_INTERVAL] <= MAX_POLL_INTERVAL:
        errors[CONF_POLL_INTERVAL] = "poll_interval_range"
    if not MIN_SETTINGS_EVERY <= user_input[CONF_SETTINGS_EVERY] <= MAX_SETTINGS_EVERY:
        errors[CONF_SETTINGS_EVERY] = "settings_every_range"
    return errors


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
