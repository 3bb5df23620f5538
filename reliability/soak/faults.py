"""The device side of the soak: random faults, and a balancer that knows its replies.

:class:`SoakBalancer` remembers which request produced each reply. The virtual
balancer's fault knobs (:class:`Faults`) are shaken poll by poll, its
``chunk_size`` among them: the simulator's lines (TCP, pty and the fake
Bluetooth bridge) honour it, so replies arrive in changing pieces on every
transport.
"""

from __future__ import annotations

from collections import Counter
import random
import time
from typing import Any

from balancer_tools.simulator import FAULT_KINDS, Faults, Reply, VirtualBalancer
from custom_components.active_balancer.protocol import Variant
from custom_components.active_balancer.protocol.codec import Request
from custom_components.active_balancer.protocol.frames import Frame
from custom_components.active_balancer.protocol.model import Chemistry

from .config import ORIGIN_HORIZON


class CountingFaults(Faults):
    """:class:`Faults` that counts the faults it decides."""

    counts: Counter[str]

    def __post_init__(self) -> None:
        """Seed and start counting."""
        super().__post_init__()
        self.counts = Counter()

    def decide(self) -> frozenset[str]:
        """Decide and count."""
        kinds = super().decide()
        self.counts.update(kinds)
        return kinds


class FaultShaker:
    """Turns every fault knob on and off at random, poll by poll."""

    def __init__(
        self,
        faults: CountingFaults,
        rate: float,
        rng: random.Random,
        *,
        min_delay: float,
        max_delay: float,
        chunking: bool,
    ) -> None:
        """Shake *faults* at *rate*."""
        self.faults = faults
        self.rate = rate
        self.rng = rng
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.chunking = chunking
        self.active = False
        self._silent_left = 0

    def start(self) -> None:
        """Every per-reply fault fires at the rate from now on."""
        for kind in FAULT_KINDS:
            self.faults.set_rate(kind, self.rate)
        self.active = True

    def stop(self) -> None:
        """No fault from now on (a chunked line stays chunked: that is normal)."""
        self.faults.clear()
        self._silent_left = 0
        self.active = False

    def before_poll(self) -> None:
        """Draw the spells and knobs of the next poll."""
        if not self.active:
            return
        faults, rng = self.faults, self.rng
        if self._silent_left:
            self._silent_left -= 1
            faults.silent = self._silent_left > 0
        elif rng.random() < self.rate:
            faults.silent = True
            self._silent_left = rng.randint(1, 2)
            faults.counts["silent_spell"] += 1
        if self.chunking and rng.random() < self.rate:
            faults.chunk_size = rng.choice((None, *range(2, 20)))
            faults.counts["chunk_size_change"] += 1
        faults.delay_seconds = rng.uniform(self.min_delay, self.max_delay)
        faults.disconnect_mid_frame = rng.random() < 0.5  # noqa: PLR2004


class SoakBalancer(VirtualBalancer):
    """A virtual balancer that remembers which request produced each reply.

    A reply taken by the client is then checked: it must have been produced
    by the very request it was taken for, and not before a write that came
    between (a late reply must never answer another request).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the balancer."""
        super().__init__(*args, **kwargs)
        self.origins: dict[bytes, tuple[float, dict[bytes, int]]] = {}
        """Reply frame -> (last sent, {request frame: write count then})."""
        self._answers = 0

    @property
    def write_epoch(self) -> int:
        """Writes received so far."""
        return len(self.writes)

    def answer(self, request: bytes | bytearray) -> Reply | None:
        """Answer, and remember where the reply frames came from."""
        reply = super().answer(request)
        if reply is None:
            return None
        now = time.monotonic()
        epoch = self.write_epoch
        key = bytes(request)
        for frame in reply.frames:
            _, sources = self.origins.get(frame, (now, {}))
            sources[key] = max(sources.get(key, epoch), epoch)
            self.origins[frame] = (now, sources)
        self._answers += 1
        if self._answers % 200 == 0:
            horizon = now - ORIGIN_HORIZON
            for frame in [f for f, (t, _) in self.origins.items() if t < horizon]:
                del self.origins[frame]
        return reply

    def check_reply(self, request: Request, frame: Frame, epoch: int) -> str | None:
        """``None`` when *frame* answers *request*; else what is wrong with it."""
        origin = self.origins.get(frame.raw)
        if origin is None:
            return "unknown"
        produced = origin[1].get(request.frame)
        if produced is None or produced < epoch:
            return "stale"
        return None


def soak_balancer(variant: Variant, seed: int) -> SoakBalancer:
    """A 16-cell LFP virtual balancer with counted faults (all off)."""
    return SoakBalancer(
        16,
        Chemistry.LFP,
        variants=(variant,),
        address=3 if variant is Variant.P81 else 1,
        faults=CountingFaults(seed=seed),
    )
