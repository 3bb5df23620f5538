"""Protocol library for DALY / 100balance 1 A smart active balancers.

No Home Assistant imports: this package talks to balancers over a serial line
(TTL UART, RS485, network serial gateways) or Bluetooth LE, in the D2, p81 and
A5 protocol variants. (The virtual balancer of the tests is in the
repository's tools, outside this package.)
"""

from .client import BalancerClient
from .errors import (
    BalancerError,
    BalancerTimeout,
    ChecksumError,
    ConnectionFailed,
    NotSupported,
    OutOfRange,
    RefusalReason,
    UnexpectedReply,
    WriteNotConfirmed,
)
from .link import Bus, BusRegistry, ByteLink, FrameObserver, LinkKind
from .model import (
    Alarm,
    Alarms,
    BalancerInfo,
    Chemistry,
    Reading,
    Setting,
    Settings,
    SettingValue,
    Snapshot,
    Variant,
)
from .timings import DEFAULT_TIMINGS, Timings
from .writes import PreparedWrite

__all__ = [
    "DEFAULT_TIMINGS",
    "Alarm",
    "Alarms",
    "BalancerClient",
    "BalancerError",
    "BalancerInfo",
    "BalancerTimeout",
    "Bus",
    "BusRegistry",
    "ByteLink",
    "ChecksumError",
    "Chemistry",
    "ConnectionFailed",
    "FrameObserver",
    "LinkKind",
    "NotSupported",
    "OutOfRange",
    "PreparedWrite",
    "Reading",
    "RefusalReason",
    "Setting",
    "SettingValue",
    "Settings",
    "Snapshot",
    "Timings",
    "UnexpectedReply",
    "Variant",
    "WriteNotConfirmed",
]
