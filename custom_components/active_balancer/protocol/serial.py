"""Serial line transport (TTL UART, RS485, network serial gateways) via serialx."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit, urlunsplit

import serialx

from .errors import ConnectionFailed
from .link import DataCallback, LinkKind, LostCallback
from .timings import DEFAULT_TIMINGS, Timings

_LOGGER = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 9600
URL_SCHEMES = ("socket://", "rfc2217://", "tcp://", "esphome://")


def redact_port(port: str) -> str:
    """*port* without credentials or query, for messages and logs.

    ``esphome://`` URLs may carry a noise key in the query and gateways a user
    and password before the host; a device path is returned as it is.
    """
    if "://" not in port:
        return port
    parts = urlsplit(port)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_port(port: str) -> str:
    """Return *port* stripped, or raise :class:`ValueError` if malformed.

    Accepts device paths (``/dev/ttyUSB0``, ``COM3``) and ``socket://host:port``
    / ``rfc2217://host:port`` URLs.
    """
    port = port.strip()
    if not port:
        msg = "the port is empty"
        raise ValueError(msg)
    if "://" in port:
        scheme, _, rest = port.partition("://")
        if f"{scheme}://" not in URL_SCHEMES:
            msg = f"unknown URL scheme {scheme!r}; use socket:// or rfc2217://"
            raise ValueError(msg)
        host, sep, number = rest.split("/", 1)[0].split("?", 1)[0].rpartition(":")
        if scheme != "esphome" and (
            not sep or not host or not number.isdigit() or not 0 < int(number) < 65536  # noqa: PLR2004
        ):
            msg = f"{port!r} needs a host and a port number, like socket://host:4001"
            raise ValueError(msg)
    elif any(ch.isspace() for ch in port):
        msg = f"{port!r} is not a serial device path"
        raise ValueError(msg)
    return port


class _Protocol(asyncio.Protocol):
    def __init__(self, on_data: DataCallback, on_lost: LostCallback) -> None:
        self._on_data = on_data
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)


class SerialLink:
    """A serial port or network serial URL, opened on demand."""

    kind = LinkKind.SERIAL

    def __init__(
        self,
        port: str,
        baudrate: int = DEFAULT_BAUDRATE,
        *,
        base_timeout: float | None = None,
        timings: Timings = DEFAULT_TIMINGS,
    ) -> None:
        """Create a link to *port* (a device path or a URL).

        *base_timeout* defaults to the serial timeout of *timings*.
        """
        self.port = check_port(port)
        self.baudrate = baudrate
        self.byte_time = (
            10 / baudrate if timings.byte_time is None else timings.byte_time
        )
        self.base_timeout = (
            timings.serial_timeout if base_timeout is None else base_timeout
        )
        self._transport: serialx.BaseSerialTransport | None = None

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._transport is not None and not self._transport.is_closing()

    async def open(self, on_data: DataCallback, on_lost: LostCallback) -> None:
        """Open the port at 8N1."""
        loop = asyncio.get_running_loop()

        def lost(exc: Exception | None) -> None:
            self._transport = None
            on_lost(exc)

        try:
            async with asyncio.timeout(10):
                transport, _ = await serialx.create_serial_connection(
                    loop,
                    lambda: _Protocol(on_data, lost),
                    url=self.port,
                    baudrate=self.baudrate,
                )
        except (OSError, TimeoutError, serialx.SerialException, ValueError) as err:
            msg = f"Could not open {redact_port(self.port)}: {err}"
            raise ConnectionFailed(msg) from err
        self._transport = transport
        _LOGGER.debug("Opened %s at %d baud", self.port, self.baudrate)

    async def write(self, data: bytes) -> None:
        """Send *data*."""
        if self._transport is None:
            msg = "the serial port is not open"
            raise ConnectionFailed(msg)
        self._transport.write(data)

    async def close(self) -> None:
        """Close the port and wait until it is released (it can be reopened)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            try:
                async with asyncio.timeout(5):
                    await transport.wait_closed()
            except (OSError, TimeoutError, serialx.SerialException) as err:
                _LOGGER.debug("Closing %s: %s", self.port, err)
