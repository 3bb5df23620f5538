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
    UnexpectedReply,
    WriteNotConfirmed,
)
from .link import Bus, BusRegistry, ByteLink, FrameObserver, LinkKind
from .model import (
    Alarm,
    Alarms,
    Chemistry,
    DeviceInfo,
    Reading,
    Setting,
    Settings,
    Variant,
)

__all__ = [
    "Alarm",
    "Alarms",
    "BalancerClient",
    "BalancerError",
    "BalancerTimeout",
    "Bus",
    "BusRegistry",
    "ByteLink",
    "ChecksumError",
    "Chemistry",
    "ConnectionFailed",
    "DeviceInfo",
    "FrameObserver",
    "LinkKind",
    "NotSupported",
    "OutOfRange",
    "Reading",
    "Setting",
    "Settings",
    "UnexpectedReply",
    "Variant",
    "WriteNotConfirmed",
]
