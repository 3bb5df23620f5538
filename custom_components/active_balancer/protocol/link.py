"""The byte pipe a bus talks through, and the bus that serialises requests."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
from enum import StrEnum
import logging
import statistics
from typing import Protocol

from .codec import Request
from .errors import (
    BalancerError,
    BalancerTimeout,
    ChecksumError,
    ConnectionFailed,
    NotSupported,
)
from .frames import Frame, FrameReassembler, ModbusFrame
from .timings import DEFAULT_TIMINGS, Timings

_LOGGER = logging.getLogger(__name__)

DataCallback = Callable[[bytes], None]
LostCallback = Callable[[Exception | None], None]
FrameObserver = Callable[[Request, tuple[Frame, ...]], None]
"""Sees a request and the frames a :class:`Bus` hands out as its answer."""


class LinkKind(StrEnum):
    """What kind of line a link is."""

    SERIAL = "serial"
    BLE = "ble"


class ByteLink(Protocol):
    """A byte pipe to one or more balancers (serial line or BLE bridge)."""

    kind: LinkKind
    byte_time: float
    """Seconds one byte takes on the balancer's UART (10 bits / baud)."""
    base_timeout: float
    """Seconds to wait for an answer beyond the bytes' own wire time."""

    @property
    def is_open(self) -> bool:
        """Whether the link is open."""

    async def open(self, on_data: DataCallback, on_lost: LostCallback) -> None:
        """Open the link; raise :class:`ConnectionFailed` when it cannot."""

    async def write(self, data: bytes) -> None:
        """Send *data*."""

    async def close(self) -> None:
        """Close the link; safe to call when it is closed."""


@dataclass(slots=True)
class LinkStats:
    """Counters of one bus, for diagnostics and benchmarks."""

    requests: int = 0
    answered: int = 0
    timeouts: int = 0
    checksum_errors: int = 0
    unexpected_frames: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    connects: int = 0
    disconnects: int = 0


@dataclass(slots=True)
class _Unanswered:
    """A request that failed, whose answer may still arrive late."""

    request: Request
    writes: int
    """Writes sent on the bus before it (a reply from before a write is stale)."""
    expires: float


def _same_shape(first: Request, second: Request) -> bool:
    """Whether an answer to *first* would also be taken as one to *second*."""
    return (
        first.variant is second.variant
        and first.reply_address == second.reply_address
        and first.code == second.code
        and first.reply_bytes == second.reply_bytes
        and first.echo == second.echo
    )


class Bus:
    """Serialises requests on one link: one request outstanding at a time.

    Several clients (balancers with different p81 board numbers on one RS485
    line) share one bus; the lock keeps their requests apart. Each request is
    retried on a timeout or a corrupt reply. After a timeout the bus waits a
    short settle time and throws away whatever arrived late, so a late answer
    is never taken for the answer to the next request.

    The frames carry no transaction number, so an answer arriving after the
    settle time looks like the answer to any later request of the same shape
    (a one-register read-back of another setting, or the same read after a
    write). Until such a late answer has arrived, or ``late_window`` seconds
    have passed since its request failed, the bus does not send a request it
    could be taken for: the same request again (a retry) is fine, unless a
    write went out in between.

    :meth:`add_frame_observer` lets a caller see every answer the bus hands
    out, for example to check it against what the device sent.
    """

    def __init__(
        self,
        link: ByteLink,
        *,
        retries: int = 2,
        settle: float | None = None,
        keep_open: bool = True,
        late_window: float | None = None,
        timings: Timings = DEFAULT_TIMINGS,
    ) -> None:
        """Create a bus over *link*.

        *settle* and *late_window* default to those of *timings*.
        """
        self.link = link
        self.retries = retries
        self.settle = timings.settle if settle is None else settle
        self.keep_open = keep_open
        self.late_window = timings.late_window if late_window is None else late_window
        self.lock = asyncio.Lock()
        self.stats = LinkStats()
        self.history: deque[tuple[str, str]] = deque(maxlen=16)
        """Last frames seen, as ("tx"/"rx", hex)."""
        self._reassembler: FrameReassembler | None = None
        self._request: Request | None = None
        self._frames: list[Frame] = []
        self._done: asyncio.Event | None = None
        self._lost: BaseException | None = None
        self._dirty = False
        self._unanswered: list[_Unanswered] = []
        self._late_reassembler: FrameReassembler | None = None
        self._late_arrived: asyncio.Event | None = None
        self._writes = 0
        self._turnarounds: deque[float] = deque(maxlen=16)
        self._observers: list[FrameObserver] = []
        self.users = 0
        """Clients sharing this bus (managed by :class:`BusRegistry`)."""

    @property
    def turnaround(self) -> float | None:
        """The device's measured turnaround in seconds (median), once known.

        Each answered request's time from sending to the last reply frame,
        minus the wire time of its bytes on the balancer's UART.
        """
        if not self._turnarounds:
            return None
        return statistics.median(self._turnarounds)

    def add_frame_observer(self, observer: FrameObserver) -> Callable[[], None]:
        """Call *observer* with each answered request and its answer frames.

        It is called under the bus's lock, just before :meth:`exchange`
        returns the frames, so answers are seen in order; not for a request
        that fails or that the device refuses. It must not block, and what it
        raises reaches the caller of :meth:`exchange`. Returns a function that
        removes the observer again.
        """
        self._observers.append(observer)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)

        return remove

    async def exchange(
        self, request: Request, *, retries: int | None = None
    ) -> list[Frame]:
        """Send *request* and return the frames that answer it.

        *retries* overrides the bus's retries for this request (an optional
        request the device left unanswered before is tried once).
        """
        async with self.lock:
            if request.echo is not None:  # a write: older answers are stale now
                self._writes += 1
            frames = await self._exchange_locked(
                request, self.retries if retries is None else retries
            )
            if self._observers:
                answer = tuple(frames)
                for observer in tuple(self._observers):
                    observer(request, answer)
            return frames

    async def _exchange_locked(self, request: Request, retries: int) -> list[Frame]:
        last_error: BalancerError | None = None
        for attempt in range(retries + 1):
            try:
                frames = await self._attempt(request)
            except (BalancerTimeout, ChecksumError, ConnectionFailed) as err:
                last_error = err
                _LOGGER.debug(
                    "Attempt %d of %s failed: %s",
                    attempt + 1,
                    request.frame.hex(),
                    err,
                )
            else:
                if last_error is not None:
                    # An earlier attempt may still be answered late: let the
                    # next request settle first so it cannot take that answer.
                    self._dirty = True
                return frames
        assert last_error is not None
        raise last_error

    async def _ensure_open(self) -> None:
        if self.link.is_open and self._lost is None:
            return
        if self.link.is_open:
            await self.link.close()
        self._lost = None
        try:
            await self.link.open(self._on_data, self._on_lost)
        except ConnectionFailed:
            raise
        except (OSError, TimeoutError, BalancerError) as err:
            msg = f"Could not open the link: {err}"
            raise ConnectionFailed(msg) from err
        self.stats.connects += 1
        self._dirty = False

    async def _attempt(self, request: Request) -> list[Frame]:
        """Send *request* once and wait for its answer."""
        await self._ensure_open()
        await self._settle()
        await self._wait_for_late_answers(request)
        self._late_reassembler = None
        reassembler, done = self._listen(request)
        timeout = self._answer_timeout(request)
        sent = await self._transmit(request)
        try:
            await self._await_answer(request, reassembler, done, timeout)
        finally:
            self._reassembler = None
            self._request = None
        return self._answer(request, sent)

    async def _settle(self) -> None:
        """After a failed request, let a late answer arrive and be dropped."""
        if self._dirty:
            self._reassembler = None
            await asyncio.sleep(self.settle)
            self._dirty = False

    def _listen(self, request: Request) -> tuple[FrameReassembler, asyncio.Event]:
        """Take the bytes from now on as the answer to *request*."""
        reassembler = FrameReassembler(request.variant)
        self._reassembler = reassembler
        self._request = request
        self._frames = []
        done = self._done = asyncio.Event()
        return reassembler, done

    def _answer_timeout(self, request: Request) -> float:
        """Seconds to wait: the link's base timeout plus both ways' wire time."""
        reply_bytes = 13 * request.frames
        if request.reply_bytes is not None:
            reply_bytes = 5 + request.reply_bytes
        elif request.echo is not None:
            reply_bytes = 8
        return self.link.base_timeout + self.link.byte_time * (
            len(request.frame) + reply_bytes
        )

    async def _transmit(self, request: Request) -> float:
        """Write *request*; return the loop time it was sent at."""
        self.stats.requests += 1
        self.stats.bytes_out += len(request.frame)
        self.history.append(("tx", request.frame.hex()))
        sent = asyncio.get_running_loop().time()
        try:
            await self.link.write(request.frame)
        except (OSError, BalancerError) as err:
            self._lost = err
            msg = f"Could not send to the balancer: {err}"
            raise ConnectionFailed(msg) from err
        return sent

    async def _await_answer(
        self,
        request: Request,
        reassembler: FrameReassembler,
        done: asyncio.Event,
        seconds: float,
    ) -> None:
        """Wait for the answer (or the loss of the link) for *seconds*."""
        try:
            async with asyncio.timeout(seconds):
                await done.wait()
        except TimeoutError:
            # When the event loop was busy, the answer (or the loss of the
            # link) may have come in before the timeout was handled: it counts.
            if not done.is_set():
                raise self._no_answer(request, reassembler, seconds) from None

    def _no_answer(
        self, request: Request, reassembler: FrameReassembler, timeout: float
    ) -> BalancerError:
        """Note a request left unanswered; the error that says why."""
        self._dirty = True
        self._expect_late_answer(request)
        if self._lost is not None:
            return ConnectionFailed(f"The link was lost: {self._lost}")
        if reassembler.rejected:
            self.stats.checksum_errors += reassembler.rejected
            return ChecksumError("The balancer's reply was corrupt (bad checksum)")
        self.stats.timeouts += 1
        return BalancerTimeout(
            f"No answer within {timeout:.2f} s; check wiring, address and "
            "that no other app holds the connection"
        )

    def _answer(self, request: Request, sent: float) -> list[Frame]:
        """The frames that answered *request*, once the wait is over."""
        if self._lost is not None and len(self._frames) < request.frames:
            self._expect_late_answer(request)
            msg = f"The link was lost: {self._lost}"
            raise ConnectionFailed(msg)
        frames = self._frames
        self.stats.answered += 1
        wire = self.link.byte_time * (
            len(request.frame) + sum(len(frame.raw) for frame in frames)
        )
        elapsed = asyncio.get_running_loop().time() - sent
        self._turnarounds.append(max(0.0, elapsed - wire))
        first = frames[0]
        if isinstance(first, ModbusFrame) and first.is_exception:
            msg = (
                f"The balancer refused the request (exception code "
                f"{first.body[:1].hex()})"
            )
            raise NotSupported(msg)
        return frames

    def _expect_late_answer(self, request: Request) -> None:
        """Remember that the answer to *request* may still arrive."""
        loop = asyncio.get_running_loop()
        self._unanswered.append(
            _Unanswered(request, self._writes, loop.time() + self.late_window)
        )

    async def _wait_for_late_answers(self, request: Request) -> None:
        """Wait while a late answer could be taken for the answer to *request*."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._unanswered = [u for u in self._unanswered if u.expires > now]
            blocking = [
                u
                for u in self._unanswered
                if _same_shape(u.request, request)
                and (u.request.frame != request.frame or u.writes != self._writes)
            ]
            if not blocking:
                return
            _LOGGER.debug(
                "Waiting for %d late answer(s) before sending %s",
                len(blocking),
                request.frame.hex(),
            )
            arrived = self._late_arrived = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(u.expires for u in blocking) - now):
                    await arrived.wait()
            self._late_arrived = None

    def _late_answer(self, frame: Frame) -> None:
        """*frame* answers no current request: it may be a late answer."""
        self.stats.unexpected_frames += 1
        for unanswered in self._unanswered:
            if unanswered.request.matches(frame):
                self._unanswered.remove(unanswered)
                if self._late_arrived is not None:
                    self._late_arrived.set()
                return

    def _on_data(self, chunk: bytes) -> None:
        self.stats.bytes_in += len(chunk)
        reassembler = self._reassembler
        request = self._request
        if reassembler is None or request is None or self._done is None:
            self._on_late_data(chunk)
            return
        for frame in reassembler.feed(chunk):
            self.history.append(("rx", frame.raw.hex()))
            if request.matches(frame) and len(self._frames) < request.frames:
                self._frames.append(frame)
                if len(self._frames) >= request.frames or (
                    isinstance(frame, ModbusFrame) and frame.is_exception
                ):
                    self._done.set()
            else:
                self._late_answer(frame)

    def _on_late_data(self, chunk: bytes) -> None:
        """Bytes while no request is outstanding: look for late answers."""
        if not self._unanswered:
            self._late_reassembler = None
            return
        variant = self._unanswered[-1].request.variant
        if self._late_reassembler is None or self._late_reassembler.variant != variant:
            self._late_reassembler = FrameReassembler(variant)
        for frame in self._late_reassembler.feed(chunk):
            self.history.append(("rx", frame.raw.hex()))
            self._late_answer(frame)

    def _on_lost(self, err: Exception | None) -> None:
        self.stats.disconnects += 1
        self._lost = err or ConnectionFailed("closed by the other side")
        if self._done is not None:
            self._done.set()

    async def idle(self) -> None:
        """Close the link between polls when it is not to be kept open."""
        if not self.keep_open:
            async with self.lock:
                await self.link.close()

    async def close(self) -> None:
        """Close the link."""
        async with self.lock:
            await self.link.close()
            self._lost = None


class BusRegistry:
    """Hands out one :class:`Bus` per port, shared by all balancers on it."""

    def __init__(self) -> None:
        """Create an empty registry."""
        self._buses: dict[str, Bus] = {}

    def acquire(self, key: str, factory: Callable[[], Bus]) -> Bus:
        """Return the bus for *key*, creating it with *factory* if needed."""
        bus = self._buses.get(key)
        if bus is None:
            bus = self._buses[key] = factory()
        bus.users += 1
        return bus

    async def release(self, key: str) -> None:
        """Drop one user of the bus for *key*; close it with the last one."""
        bus = self._buses.get(key)
        if bus is None:
            return
        bus.users -= 1
        if bus.users <= 0:
            del self._buses[key]
            await bus.close()

    def __len__(self) -> int:
        """Number of open buses."""
        return len(self._buses)
