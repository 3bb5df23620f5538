"""A virtual DALY / 100balance balancer, and the lines to reach it.

* :class:`VirtualBalancer`: the device model, answering D2, p81 and A5
  (:mod:`.device`; its state and physics in :mod:`.state`, the wire views in
  :mod:`.modbus` and :mod:`.a5`).
* :class:`Faults`: what goes wrong on the line, random (seeded) or one-shot,
  chunked replies included (:mod:`.faults`); :class:`Quirks`: what a
  firmware does differently (:mod:`.quirks`).
* :func:`serve_tcp` / :func:`serve_pty`: a serial line for
  :class:`..serial.SerialLink` (``socket://`` URL or pty path).
* :func:`fake_connector`: a BLE connection for :class:`..ble.BleLink`.
"""

from .device import VirtualBalancer
from .fake_ble import (
    FakeBleakClient,
    FakeConnector,
    ble_device,
    fake_connector,
    fake_device,
)
from .faults import FAULT_KINDS, Faults, Reply
from .parser import RequestParser
from .quirks import Quirks
from .servers import (
    Line,
    PtyServer,
    TcpServer,
    VirtualServer,
    loopback_host,
    serve_pty,
    serve_tcp,
)
from .state import CHEMISTRY_DEFAULTS, RecordedWrite

__all__ = [
    "CHEMISTRY_DEFAULTS",
    "FAULT_KINDS",
    "FakeBleakClient",
    "FakeConnector",
    "Faults",
    "Line",
    "PtyServer",
    "Quirks",
    "RecordedWrite",
    "Reply",
    "RequestParser",
    "TcpServer",
    "VirtualBalancer",
    "VirtualServer",
    "ble_device",
    "fake_connector",
    "fake_device",
    "loopback_host",
    "serve_pty",
    "serve_tcp",
]
