"""Firmware quirks of the virtual balancer: what real devices do differently.

Unlike :class:`.faults.Faults` (a bad line), a quirk is the device's own
behaviour and holds on every request: a firmware that never answers an A5
command or a Modbus register range, or that refuses reads longer than N
registers. The client must get its live reading anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from custom_components.active_balancer.protocol.frames import FC_READ
from custom_components.active_balancer.protocol.model import Variant

IGNORE = "ignore"
"""No answer at all (the request times out)."""
REFUSE = "refuse"
"""A Modbus exception reply (illegal data address / value)."""


@dataclass
class Quirks:
    """What this firmware does not answer."""

    ignore_commands: set[int] = field(default_factory=set)
    """A5 commands that get no answer (0x59, 0x5C, 0x5F on some firmware)."""
    ignore_registers: list[tuple[int, int]] = field(default_factory=list)
    """Inclusive (first, last) register ranges: a Modbus read touching one
    gets no answer."""
    refuse_registers: list[tuple[int, int]] = field(default_factory=list)
    """Ranges whose reads are refused with exception 2."""
    max_read: int | None = None
    """Reads of more registers are refused (exception 3), or not answered
    with ``max_read_silent``."""
    max_read_silent: bool = False
    wide_versions: bool = False
    """D2 version strings in the 32 + 32 byte layout (two real firmwares)."""

    def decide(self, variant: Variant, frame: bytes) -> str | None:
        """Whether the request *frame* is ignored, refused, or answered (None)."""
        if variant is Variant.A5:
            return IGNORE if frame[2] in self.ignore_commands else None
        if frame[1] != FC_READ:
            return None
        start = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        last = start + count - 1
        if self.max_read is not None and count > self.max_read:
            return IGNORE if self.max_read_silent else REFUSE
        for first, end in self.ignore_registers:
            if start <= end and first <= last:
                return IGNORE
        for first, end in self.refuse_registers:
            if start <= end and first <= last:
                return REFUSE
        return None


def parse_range(text: str) -> tuple[int, int]:
    """``0x3E-0x40`` or ``0x59`` as an inclusive (first, last) range."""
    first, _, last = text.partition("-")
    low = int(first, 0)
    high = int(last, 0) if last else low
    if not 0 <= low <= high <= 0xFFFF:  # noqa: PLR2004
        msg = f"{text!r} is not a register range like 0x3E-0x40"
        raise ValueError(msg)
    return low, high
