"""Constants of the Smart Active Balancer integration."""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "active_balancer"

CONF_TRANSPORT: Final = "transport"
CONF_PORT: Final = "port"
CONF_BAUDRATE: Final = "baudrate"
CONF_PROTOCOL: Final = "protocol"
"""The flow's protocol field (automatic, D2, p81, A5); never stored since 1.2."""
CONF_RS485_ADDRESS: Final = "rs485_address"
CONF_VARIANT: Final = "variant"
"""The one stored protocol key: the variant the flow's probe found (d2, p81, a5).

It skips detection at set-up. Entries of version 1.1 also stored the user's
choice under ``protocol``; ``async_migrate_entry`` folds it into this key."""

CONF_POLL_INTERVAL: Final = "poll_interval"
CONF_KEEP_CONNECTED: Final = "keep_connected"
CONF_SETTINGS_EVERY: Final = "settings_every"

TRANSPORT_BLE: Final = "ble"
TRANSPORT_SERIAL: Final = "serial"

PROTOCOL_AUTO: Final = "auto"

DEFAULT_BAUDRATE: Final = 9600
DEFAULT_RS485_ADDRESS: Final = 1
DEFAULT_POLL_INTERVAL: Final = 30
MIN_POLL_INTERVAL: Final = 5
MAX_POLL_INTERVAL: Final = 3600
DEFAULT_KEEP_CONNECTED: Final = True
DEFAULT_SETTINGS_EVERY: Final = 10
MIN_SETTINGS_EVERY: Final = 1
MAX_SETTINGS_EVERY: Final = 1000

LINK_QUALITY_WINDOW: Final = 100
"""Polls over which the link quality is computed."""

MISWIRED_POLLS: Final = 3
"""Polls in a row a cell must be implausible before the repair issue shows."""

DEFAULT_SLEEP_TIME: Final = 3600
"""Sleep time the manuals ship with; used when sleep is switched back on."""
