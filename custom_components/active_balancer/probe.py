"""The config flow's probe: connect read-only, report what answered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import logging
from typing import Any

from homeassistant.core import HomeAssistant

from .config_schema import serial_entry_data
from .connection import create_connection
from .const import CONF_PORT, CONF_VARIANT
from .protocol import (
    BalancerError,
    BalancerTimeout,
    ConnectionFailed,
    NotSupported,
    UnexpectedReply,
    Variant,
)

_LOGGER = logging.getLogger(__name__)

LINE_ERRORS = frozenset({"no_response", "not_a_balancer", "cannot_connect"})
"""Probe errors a wrong baud rate, protocol or address can cause."""


class ProbeError(Exception):
    """The probe failed: the translation key of the error, for which field."""

    def __init__(self, reason: str, field: str = "base") -> None:
        """Create the error (``field`` is a form field, or "base" for the form)."""
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a probe found: everything the flow stores or shows."""

    variant: Variant
    cells: int
    firmware: str | None
    serial_number: str | None
    """The machine code, where the balancer reports one."""

    def placeholders(self, name: str) -> dict[str, str]:
        """What the Bluetooth confirmation shows about the balancer."""
        return {
            "name": name,
            "protocol": self.variant.name,
            "cells": str(self.cells),
            "firmware": self.firmware or "unknown",
        }


async def async_probe(hass: HomeAssistant, data: Mapping[str, Any]) -> ProbeResult:
    """Connect to the balancer described by *data* and identify it.

    Raises :class:`ProbeError` with ``cannot_connect``, ``no_response`` or
    ``not_a_balancer``. The connection is released in every case.
    """
    try:
        connection = create_connection(hass, data, probing=True)
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
    return ProbeResult(
        variant=snapshot.info.variant,
        cells=snapshot.reading.cell_count,
        firmware=snapshot.info.software_version,
        serial_number=snapshot.info.serial_number,
    )


async def async_probe_serial(
    hass: HomeAssistant, user_input: Mapping[str, Any]
) -> tuple[dict[str, Any], ProbeResult]:
    """Probe what a serial form describes: the entry data to store, the result.

    The data holds the detected variant. A malformed path or URL raises
    :class:`ProbeError` ``invalid_port`` for the port field; nothing is opened.
    """
    try:
        data = serial_entry_data(user_input)
    except ValueError as err:
        raise ProbeError("invalid_port", CONF_PORT) from err
    probed = await async_probe(hass, data)
    return data | {CONF_VARIANT: probed.variant.value}, probed
