"""How long a bus and its links wait: one object, handed to their constructors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """The waiting times of a :class:`Bus` and its link.

    The defaults suit real balancers. A line that is known to be fast (a
    virtual balancer on loopback) may use shorter ones, so that a silent
    device is given up on sooner.
    """

    serial_timeout: float = 0.5
    """Seconds a serial link waits for an answer beyond the bytes' wire time."""
    ble_timeout: float = 1.0
    """The same for the Bluetooth bridge (it forwards in notification chunks)."""
    settle: float = 0.1
    """Seconds the bus lets pass after a failed request, dropping late bytes."""
    late_window: float = 2.0
    """Seconds after a failed request during which its answer may still come;
    meanwhile no request that answer could be taken for is sent."""
    byte_time: float | None = None
    """Seconds one byte takes on the balancer's UART; None: from the baud rate
    (serial) or the bridge's 9600 baud (Bluetooth)."""


DEFAULT_TIMINGS = Timings()
