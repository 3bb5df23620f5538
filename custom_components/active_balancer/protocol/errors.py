"""Exceptions raised by the protocol package.

Every error derives from :class:`BalancerError`; the messages are written for
the person who owns the battery, not for a protocol engineer.
"""

from __future__ import annotations

from enum import StrEnum

from .model import Chemistry, Setting


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


class RefusalReason(StrEnum):
    """Which rule refused a value (see :mod:`.rules`)."""

    RANGE = "range"
    """Outside ``minimum``..``maximum`` of the setting."""
    STEP = "step"
    """Not a multiple of ``step`` (of the rule, or of the register)."""
    CHEMISTRY = "chemistry"
    """Outside the cell voltage range of the configured ``chemistry``."""
    ALARM_ORDER = "alarm_order"
    """The over-voltage alarm would not be above the under-voltage alarm:
    ``minimum`` (writing the over-voltage alarm) or ``maximum`` (writing the
    under-voltage alarm) is the other alarm, which the value must not reach."""


class OutOfRange(BalancerError, ValueError):
    """A setting value is outside what the balancer accepts; nothing was sent.

    The figures are typed, in the setting's unit, so that a user interface
    can build its own (translated) message from ``reason`` and them.
    ``setting`` is ``None`` for a value that is no setting (an RS485 address).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: RefusalReason,
        value: float,
        setting: Setting | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        step: float | None = None,
        unit: str = "",
        chemistry: Chemistry | None = None,
    ) -> None:
        """Create the error with a readable *message* and its figures."""
        super().__init__(message)
        self.reason = reason
        self.setting = setting
        self.value = value
        self.minimum = minimum
        self.maximum = maximum
        self.step = step
        self.unit = unit
        self.chemistry = chemistry


class WriteNotConfirmed(BalancerError):
    """A setting was written but reading it back gave another value."""
