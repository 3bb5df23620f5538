"""Exceptions raised by the protocol package.

Every error derives from :class:`BalancerError`; the messages are written for
the person who owns the battery, not for a protocol engineer.
"""

from __future__ import annotations


class BalancerError(Exception):
    """Base class of every error this package raises."""


class ConnectionFailed(BalancerError):
    """The serial port, network gateway or Bluetooth link could not be opened."""


class BalancerTimeout(BalancerError):
    """The balancer did not answer in time."""


class ChecksumError(BalancerError):
    """A frame arrived with a wrong CRC or checksum."""


class UnexpectedReply(BalancerError):
    """The balancer answered, but not with what was asked for."""


class NotSupported(BalancerError):
    """The balancer or its protocol variant cannot do this."""


class OutOfRange(BalancerError, ValueError):
    """A setting value is outside what the balancer accepts; nothing was sent.

    ``reason`` names the rule that refused the value (``range``, ``step``,
    ``chemistry``, ``alarm_order``) and ``placeholders`` holds
    its figures as text, so a user interface can show a translated message.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "range",
        placeholders: dict[str, str] | None = None,
    ) -> None:
        """Create the error with a readable *message*."""
        super().__init__(message)
        self.reason = reason
        self.placeholders = placeholders or {}


class WriteNotConfirmed(BalancerError):
    """A setting was written but reading it back gave another value."""
