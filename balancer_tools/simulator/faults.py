"""Fault injection for the virtual balancer: what goes wrong on a real line.

Rates are probabilities drawn from a seeded :class:`random.Random`, so a run
with a given ``seed`` is repeatable; :meth:`Faults.once` queues one-shot faults
that are applied, in order, to the next replies whatever the rates say.
:meth:`Faults.apply` turns the correct reply frames into the :class:`Reply`
that goes on the line.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import random

FAULT_KINDS = ("disconnect", "drop", "garbage", "truncate", "corrupt", "delay")
"""Every fault kind, in the order the rates are drawn for each reply."""

_START_BYTES = frozenset((0xA5, 0xD2, *range(0x50, 0x60), *range(0x80, 0x90)))
JUNK_BYTES = bytes(b for b in range(256) if b not in _START_BYTES)
"""Bytes garbage is made of: never a frame's first byte in any variant, so a
correct reassembler always finds the real reply after the junk."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the virtual balancer puts on the line for one request."""

    request: bytes
    frames: tuple[bytes, ...]
    """The correct reply frames, before faults."""
    data: bytes
    """Bytes to send, after faults (empty: nothing is sent)."""
    faults: frozenset[str] = field(default_factory=frozenset)
    delay: float = 0.0
    """Seconds to hold the data back."""
    disconnect: bool = False
    """Drop the link after sending ``data``."""
    chunk_size: int | None = None
    """Send ``data`` in pieces of this many bytes (``None``: the line's own)."""


@dataclass
class Faults:
    """What goes wrong with the virtual balancer's replies.

    Every rate is the probability that one reply suffers that fault. A reply
    can suffer several (garbage, truncation, corruption and delay combine);
    ``disconnect`` and ``drop`` replace the answer.
    """

    drop: float = 0.0
    """Probability a reply is not sent at all."""
    corrupt: float = 0.0
    """Probability the last (checksum) byte of each frame of a reply is flipped."""
    truncate: float = 0.0
    """Probability a reply is cut short (in the middle of its first frame)."""
    garbage: float = 0.0
    """Probability junk bytes are sent before a reply."""
    delay: float = 0.0
    """Probability a reply is held back for ``delay_seconds``."""
    delay_seconds: float = 1.5
    disconnect: float = 0.0
    """Probability the link is dropped instead of answering."""
    chunk_size: int | None = None
    """Send replies in pieces of this many bytes, each its own write, on every
    line (TCP, pty, the fake BLE bridge, whose default is 20)."""
    silent: bool = False
    """Answer nothing at all (requests are still received and acted on)."""
    seed: int | None = None
    disconnect_mid_frame: bool = False
    """With a disconnect fault, send the first half of the reply before the
    link drops (a link lost while the reply is on its way)."""
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _queue: deque[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Seed the random source."""
        self._rng = random.Random(self.seed)
        self._queue = deque()

    def once(self, *kinds: str) -> None:
        """Queue one-shot faults applied to the next replies, one per reply.

        ``once("drop", "corrupt")`` drops the next reply and corrupts the one
        after it. Kinds: drop, corrupt, truncate, garbage, delay, disconnect.
        """
        for kind in kinds:
            if kind not in FAULT_KINDS:
                msg = f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}"
                raise ValueError(msg)
        self._queue.extend(kinds)

    def set_rate(self, kind: str, rate: float) -> None:
        """Set the probability of one fault kind (see :data:`FAULT_KINDS`)."""
        if kind not in FAULT_KINDS:
            msg = f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}"
            raise ValueError(msg)
        setattr(self, kind, rate)

    @property
    def pending(self) -> tuple[str, ...]:
        """One-shot faults not yet applied."""
        return tuple(self._queue)

    def clear(self) -> None:
        """Forget queued one-shot faults and switch every rate off."""
        self._queue.clear()
        self.drop = self.corrupt = self.truncate = 0.0
        self.garbage = self.delay = self.disconnect = 0.0
        self.silent = False

    def decide(self) -> frozenset[str]:
        """Return the faults that hit the next reply."""
        drawn = {kind for kind in FAULT_KINDS if self._draw(getattr(self, kind))}
        if self._queue:
            return frozenset((self._queue.popleft(),))
        return frozenset(drawn)

    def _draw(self, rate: float) -> bool:
        # Always draw, so that the sequence for a seed does not depend on
        # which rates happen to be zero.
        return self._rng.random() < rate

    def junk(self) -> bytes:
        """Return 3..8 junk bytes."""
        size = self._rng.randint(3, 8)
        return bytes(self._rng.choice(JUNK_BYTES) for _ in range(size))

    def apply(self, request: bytes, frames: tuple[bytes, ...]) -> Reply:
        """Decide the faults of one reply and return what goes on the line."""
        kinds = self.decide()
        chunk_size = self.chunk_size
        if "disconnect" in kinds:
            data = b""
            if self.disconnect_mid_frame:
                data = frames[0][: max(1, len(frames[0]) // 2)]
            return Reply(
                request, frames, data, kinds, disconnect=True, chunk_size=chunk_size
            )
        if "drop" in kinds:
            return Reply(request, frames, b"", kinds, chunk_size=chunk_size)
        parts = [bytearray(frame) for frame in frames]
        if "corrupt" in kinds:
            for part in parts:
                part[-1] ^= 0xFF
        data = b"".join(parts)
        if "truncate" in kinds:
            data = data[: max(1, len(frames[0]) // 2)]
        if "garbage" in kinds:
            data = self.junk() + data
        delay = self.delay_seconds if "delay" in kinds else 0.0
        return Reply(request, frames, data, kinds, delay=delay, chunk_size=chunk_size)
