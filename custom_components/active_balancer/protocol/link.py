"""The byte pipe a bus talks through, and the bus that serialises requests."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
import logging
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

_LOGGER = logging.getLogger(__name__)

DataCallback = Callable[[bytes], None]
LostCallback = Callable[[Exception | None], None]


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


class Bus:
    """Serialises requests on one link: one request outstanding at a time.

    Several clients (balancers with different p81 board numbers on one RS485
    line) share one bus; the lock keeps their requests apart. Each request is
    retried on a timeout or a corrupt reply. After a timeout the bus waits a
    short settle time and throws away whatever arrived late, so a late answer
    is never taken for the answer to the next request.
    """

    def __init__(
        self,
        link: ByteLink,
        *,
        retries: int = 2,
        settle: float = 0.1,
        keep_open: bool = True,
    ) -> None:
        """Create a bus over *link*."""
        self.link = link
        self.retries = retries
        self.settle = settle
        self.keep_open = keep_open
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
        self.users = 0
        """Clients sharing this bus (managed by :class:`BusRegistry`)."""

    async def exchange(self, request: Request) -> list[Frame]:
        """Send *request* and return the frames that answer it."""
        async with self.lock:
            return await self._exchange_locked(request)

    async def _exchange_locked(self, request: Request) -> list[Frame]:
        last_error: BalancerError | None = None
        for attempt in range(self.retries + 1):
            try:
                return await self._attempt(request)
            except (BalancerTimeout, ChecksumError, ConnectionFailed) as err:
                last_error = err
                _LOGGER.debug(
                    "Attempt %d of %s failed: %s",
                    attempt + 1,
                    request.frame.hex(),
                    err,
                )
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
        await self._ensure_open()
        if self._dirty:
            # Let a late answer to an earlier request arrive and be dropped.
            self._reassembler = None
            await asyncio.sleep(self.settle)
            self._dirty = False
        reassembler = FrameReassembler(request.variant)
        self._reassembler = reassembler
        self._request = request
        self._frames = []
        done = self._done = asyncio.Event()
        reply_bytes = 13 * request.frames
        if request.reply_bytes is not None:
            reply_bytes = 5 + request.reply_bytes
        elif request.echo is not None:
            reply_bytes = 8
        timeout = self.link.base_timeout + self.link.byte_time * (
            len(request.frame) + reply_bytes
        )
        self.stats.requests += 1
        self.stats.bytes_out += len(request.frame)
        self.history.append(("tx", request.frame.hex()))
        try:
            await self.link.write(request.frame)
        except (OSError, BalancerError) as err:
            self._lost = err
            msg = f"Could not send to the balancer: {err}"
            raise ConnectionFailed(msg) from err
        try:
            async with asyncio.timeout(timeout):
                await done.wait()
        except TimeoutError:
            self._dirty = True
            if self._lost is not None:
                msg = f"The link was lost: {self._lost}"
                raise ConnectionFailed(msg) from None
            if reassembler.rejected:
                self.stats.checksum_errors += reassembler.rejected
                msg = "The balancer's reply was corrupt (bad checksum)"
                raise ChecksumError(msg) from None
            self.stats.timeouts += 1
            msg = (
                f"No answer within {timeout:.2f} s; check wiring, address and "
                "that no other app holds the connection"
            )
            raise BalancerTimeout(msg) from None
        finally:
            self._reassembler = None
            self._request = None
        if self._lost is not None and len(self._frames) < request.frames:
            msg = f"The link was lost: {self._lost}"
            raise ConnectionFailed(msg)
        frames = self._frames
        self.stats.answered += 1
        first = frames[0]
        if isinstance(first, ModbusFrame) and first.is_exception:
            msg = (
                f"The balancer refused the request (exception code "
                f"{first.body[:1].hex()})"
            )
            raise NotSupported(msg)
        return frames

    def _on_data(self, chunk: bytes) -> None:
        self.stats.bytes_in += len(chunk)
        reassembler = self._reassembler
        request = self._request
        if reassembler is None or request is None or self._done is None:
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
                self.stats.unexpected_frames += 1

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
