"""What the virtual balancer's UART makes of the bytes from the host."""

from __future__ import annotations

from custom_components.active_balancer.protocol.frames import (
    FrameReassembler,
    frame_variant,
)
from custom_components.active_balancer.protocol.model import Variant


class RequestParser:
    """Split a byte stream from the host into checksum-valid request frames.

    Understands every variant at once (the host may probe D2, p81 and A5 on
    the same line) and resynchronises after junk or a corrupt frame; the
    framing rules are the package's own :class:`~..frames.FrameReassembler`.
    """

    def __init__(self) -> None:
        """Create an empty parser."""
        self._reassembler = FrameReassembler(tuple(Variant), replies=False)

    @property
    def rejected(self) -> int:
        """Frames dropped for a bad checksum."""
        return self._reassembler.rejected

    @property
    def discarded(self) -> int:
        """Bytes skipped while resynchronising."""
        return self._reassembler.discarded

    def clear(self) -> None:
        """Forget a partial frame."""
        self._reassembler.clear()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Add *chunk*; return the complete request frames it finished."""
        return [frame.raw for frame in self._reassembler.feed(chunk)]


def request_variant(frame: bytes) -> Variant | None:
    """Variant of a complete, checksum-valid request frame, else ``None``."""
    frames = FrameReassembler(tuple(Variant), replies=False).feed(frame)
    if len(frames) != 1 or frames[0].raw != frame:
        return None
    return frame_variant(frames[0])
