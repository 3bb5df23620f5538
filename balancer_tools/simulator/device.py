"""The virtual balancer: one model of the device, three wire views.

The state and physics are in :mod:`.state`, the D2 and p81 register maps in
:mod:`.modbus`, the A5 replies in :mod:`.a5` and what goes wrong on the line
in :mod:`.faults`. This module puts them together: it takes requests, lets
the firmware quirks and the sleep timer have their say, answers in the
request's variant and applies the faults.
"""

from __future__ import annotations

from custom_components.active_balancer.protocol.frames import P81_REQUEST_BASE
from custom_components.active_balancer.protocol.model import Variant

from .a5 import A5Views
from .faults import Reply
from .modbus import ModbusViews
from .parser import RequestParser, request_variant
from .quirks import IGNORE
from .state import CHEMISTRY_DEFAULTS, RecordedWrite

__all__ = [
    "CHEMISTRY_DEFAULTS",
    "RecordedWrite",
    "Reply",
    "RequestParser",
    "VirtualBalancer",
]


class VirtualBalancer(ModbusViews, A5Views):
    """A DALY / 100balance 1 A active balancer that lives in memory.

    It answers D2, p81 and A5 requests like the device (``handle``), applies
    :class:`Faults` to its replies (``answer``, ``respond``, ``feed``), moves
    charge between cells while balancing, raises alarms from its thresholds
    and falls asleep after ``sleep_time`` seconds without a request.
    Every attribute is public and may be changed by tests.
    """

    def handle(self, request: bytes | bytearray) -> bytes | list[bytes] | None:
        """Answer one complete request frame, without faults.

        Returns the reply frame, the frames of a multi-frame A5 reply, or
        ``None`` when the device does not answer (other variant or board,
        corrupt frame, unknown command, asleep, 0x93).
        """
        frame = bytes(request)
        variant = request_variant(frame)
        if variant is None or variant not in self.variants:
            return None
        if variant is Variant.P81 and frame[0] != P81_REQUEST_BASE + self.address:
            return None
        self.requests += 1
        self.step()
        if self.asleep:
            if self.link == "uart":
                # Activity on the UART RX pin wakes it; this request is lost.
                self.wake()
            return None
        self._last_activity = self.now()
        quirk = self.quirks.decide(variant, frame)
        if quirk == IGNORE:
            return None
        if quirk is not None:  # refused: Modbus exception 2 / 3
            return self._refuse(variant, frame)
        if variant is Variant.A5:
            reply: bytes | list[bytes] | None = self._handle_a5(frame)
        else:
            reply = self._handle_modbus(variant, frame)
        if reply is not None:
            self.replies += 1
        return reply

    def answer(self, request: bytes | bytearray) -> Reply | None:
        """Answer one complete request frame, with faults decided.

        ``None`` when the device does not answer at all (see :meth:`handle`)
        or is ``silent``.
        """
        result = self.handle(request)
        if result is None or self.faults.silent:
            return None
        frames = (result,) if isinstance(result, bytes) else tuple(result)
        return self.faults.apply(bytes(request), frames)

    def respond(self, data: bytes | bytearray) -> list[Reply]:
        """Take raw bytes in any chunking; return the replies they complete."""
        replies = []
        for frame in self._parser.feed(data):
            reply = self.answer(frame)
            if reply is not None:
                replies.append(reply)
        return replies

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Take raw bytes in any chunking; return the bytes to send back.

        Faults are applied: dropped replies are missing, corrupt, truncated
        and garbage-prefixed ones are altered. Delays and disconnects cannot
        be expressed as bytes: use :meth:`respond` to see them; chunking is
        the line's business.
        """
        return [reply.data for reply in self.respond(data) if reply.data]
