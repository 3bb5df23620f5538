"""Raw units the wire views share: offsets, 16-bit words, fixed-size text."""

from __future__ import annotations

from custom_components.active_balancer.protocol.registers import UNAVAILABLE

CURRENT_OFFSET = 30000
"""Raw value of a zero current (D2 0x29/0x40, p81 0x39/0x4E, A5 0x90)."""

TEMPERATURE_OFFSET = 40
"""Raw temperatures are degrees Celsius plus this."""


def clip(value: int) -> int:
    """*value* limited to what one register holds (0..0xFFFF)."""
    return min(max(value, 0), UNAVAILABLE)


def u16(value: int) -> bytes:
    """*value*, clipped, as one big-endian register."""
    return clip(value).to_bytes(2, "big")


def ascii_bytes(text: str, size: int) -> bytes:
    """*text* in exactly *size* bytes, NUL-padded."""
    return text.encode("ascii", "replace")[:size].ljust(size, b"\x00")


def words(data: bytes) -> list[int]:
    """*data* as big-endian 16-bit words."""
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
