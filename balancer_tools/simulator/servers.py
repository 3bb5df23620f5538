"""Serve virtual balancers on a loopback TCP port or a pseudo-terminal.

Both look like a serial line to :class:`..serial.SerialLink`: the TCP server is
reached with ``socket://127.0.0.1:PORT`` and the pty by its slave path. All
balancers of a server share the line: each request is offered to every one,
and each answers only what it is addressed by (p81 board numbers).

:class:`Line` is what every transport shares, the fake BLE bridge included:
request parsing, pacing, delayed replies, disconnects and chunking (a reply
with a ``chunk_size`` goes out in pieces of that size, each its own write).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
import contextlib
import ipaddress
import logging
import os
import tty
from types import TracebackType
from typing import Self

from .device import Reply, RequestParser, VirtualBalancer

_LOGGER = logging.getLogger(__name__)

Sender = Callable[[bytes], Awaitable[None]]
HangUp = Callable[[], bool]
"""Drop the link; return whether the line still exists afterwards."""


class Line:
    """One half-duplex line: parse requests, answer them in order, pace, send.

    Replies go out one request at a time, as on a real line. A delayed reply
    is held back on its own, without blocking the replies that follow. A
    reply is sent in pieces of its ``chunk_size`` (from the balancer's
    :class:`.Faults`), else of the line's own *chunk_size* (``None``: whole),
    each piece its own write followed by a turn of the event loop; with a
    *baudrate*, each piece when its last byte would have crossed the wire.
    """

    def __init__(
        self,
        balancers: Sequence[VirtualBalancer],
        *,
        send: Sender,
        hangup: HangUp,
        baudrate: int | None = None,
        turnaround: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        """Start answering; must be created inside a running event loop."""
        self.balancers = tuple(balancers)
        self.baudrate = baudrate
        self.turnaround = turnaround
        self.chunk_size = chunk_size
        self._send = send
        self._hangup = hangup
        self._parser = RequestParser()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self._spawn(self._run())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def received(self, data: bytes) -> None:
        """Bytes arrived from the host."""
        if self.closed:
            return
        for frame in self._parser.feed(data):
            self._queue.put_nowait(frame)

    def _wire(self, size: int) -> float:
        return size * 10 / self.baudrate if self.baudrate else 0.0

    @staticmethod
    async def _wait_until(deadline: float) -> None:
        wait = deadline - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            frame = await self._queue.get()
            replies: list[Reply] = []
            for balancer in self.balancers:
                try:
                    reply = balancer.answer(frame)
                except Exception:  # a bug in the virtual must not hang the host
                    _LOGGER.exception("%r failed on %s", balancer, frame.hex())
                    continue
                if reply is not None:
                    replies.append(reply)
            # When the first reply byte may go out: after the request's wire
            # time and the turnaround. Each piece then goes out when its last
            # byte would have crossed the wire, so the last reply byte arrives
            # when it would, without one timer wake-up's lateness per step.
            ready = loop.time() + self._wire(len(frame))
            if replies:
                ready += self.turnaround
            if not replies or replies[0].delay:
                await self._wait_until(ready)  # the line is busy all the same
            for reply in replies:
                if reply.delay:
                    self._spawn(self._transmit_later(reply))
                elif not await self._transmit(reply, max(ready, loop.time())):
                    return

    async def _transmit_later(self, reply: Reply) -> None:
        await asyncio.sleep(reply.delay)
        await self._transmit(reply, asyncio.get_running_loop().time())

    async def _transmit(self, reply: Reply, start: float) -> bool:
        """Send one reply from *start* on; return whether the line is still up."""
        await self._send_pieces(reply, start)
        if reply.disconnect:
            up = self._hangup()
            if not up:
                self.stop()
            return up
        return True

    async def _send_pieces(self, reply: Reply, start: float) -> None:
        """Send *reply*'s data whole or in pieces, each when its wire time is up."""
        data = reply.data
        size = reply.chunk_size or self.chunk_size
        if not data or not size:
            await self._wait_until(start + self._wire(len(data)))
            if data:
                await self._send(data)
            return
        for offset in range(0, len(data), size):
            piece = data[offset : offset + size]
            await self._wait_until(start + self._wire(offset + len(piece)))
            if self.closed:  # dropped while the reply was on its way
                return
            await self._send(piece)
            # Each piece its own event, as from a gateway or a BLE adapter.
            await asyncio.sleep(0)

    def stop(self) -> None:
        """Stop answering and cancel pending replies (does not wait)."""
        self.closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def close(self) -> None:
        """Stop answering and wait until every pending reply is cancelled."""
        self.stop()
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _as_tuple(
    balancers: VirtualBalancer | Iterable[VirtualBalancer],
) -> tuple[VirtualBalancer, ...]:
    result = (
        (balancers,) if isinstance(balancers, VirtualBalancer) else tuple(balancers)
    )
    if not result:
        msg = "serve at least one balancer"
        raise ValueError(msg)
    return result


class VirtualServer:
    """A line with virtual balancers on it; an async context manager.

    ``url`` is what :class:`..serial.SerialLink` opens; ``port`` (TCP) and
    ``path`` (pty) are ``None`` where they do not apply.
    """

    url: str = ""
    port: int | None = None
    path: str | None = None

    def __init__(
        self,
        balancers: VirtualBalancer | Iterable[VirtualBalancer],
        *,
        baudrate: int | None = None,
        turnaround: float = 0.0,
    ) -> None:
        """Remember what to serve; :meth:`start` opens the line."""
        if baudrate is not None and baudrate <= 0:
            msg = f"baudrate must be positive, not {baudrate}"
            raise ValueError(msg)
        self.balancers = _as_tuple(balancers)
        self.baudrate = baudrate
        self.turnaround = turnaround
        self.closed = False

    def _line(self, send: Sender, hangup: HangUp) -> Line:
        return Line(
            self.balancers,
            send=send,
            hangup=hangup,
            baudrate=self.baudrate,
            turnaround=self.turnaround,
        )

    async def start(self) -> None:
        """Open the line."""
        raise NotImplementedError

    async def forget_closed(self) -> int:
        """Forget connections the host closed; return how many.

        A server keeps closed connections until it is closed itself, to wait
        for their pending replies then. A long run that reconnects thousands
        of times calls this now and then to keep that bookkeeping bounded.
        """
        return 0

    async def close(self) -> None:
        """Close the line and cancel every pending reply."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        """Return the running server."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the server."""
        await self.close()


def loopback_host(host: str) -> str:
    """Return *host* as a loopback IP address; refuse anything else."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        msg = f"the virtual server binds a loopback address only, not {host!r}"
        raise ValueError(msg) from None
    if not address.is_loopback:
        msg = f"the virtual server binds a loopback address only, not {host!r}"
        raise ValueError(msg)
    return str(address)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._line: Line | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._line = self._server._line(self._send, self._hangup)
        self._server._opened(self)

    def data_received(self, data: bytes) -> None:
        if self._line is not None:
            self._line.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._line is not None:
            self._line.stop()
        self._server._lost(self)

    async def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _hangup(self) -> bool:
        self.close()
        return False

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        if self._line is not None:
            await self._line.close()


class TcpServer(VirtualServer):
    """Virtual balancers behind a loopback TCP port (``socket://`` URL)."""

    def __init__(
        self,
        balancers: VirtualBalancer | Iterable[VirtualBalancer],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        baudrate: int | None = None,
        turnaround: float = 0.0,
    ) -> None:
        """Prepare a server on *host* (loopback only) and *port* (0: any)."""
        super().__init__(balancers, baudrate=baudrate, turnaround=turnaround)
        self.host = loopback_host(host)
        self.port: int = port
        self.connects = 0
        """Connections accepted so far."""
        self._server: asyncio.Server | None = None
        self._connections: set[_TcpConnection] = set()
        self._gone: set[_TcpConnection] = set()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _TcpConnection(self), self.host, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"socket://{host}:{self.port}"

    def _opened(self, connection: _TcpConnection) -> None:
        self.connects += 1
        if self.closed:  # pragma: no cover - accepted just before close()
            connection.close()
        self._connections.add(connection)

    def _lost(self, connection: _TcpConnection) -> None:
        self._connections.discard(connection)
        self._gone.add(connection)

    async def forget_closed(self) -> int:
        """Wait for the closed connections' pending replies; forget them."""
        gone = list(self._gone)
        for connection in gone:
            await connection.wait_closed()
            self._gone.discard(connection)
        return len(gone)

    def disconnect_clients(self) -> None:
        """Close every open connection (the host may connect again)."""
        for connection in list(self._connections):
            connection.close()

    async def close(self) -> None:
        """Stop listening, close connections, cancel pending replies."""
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()
        self.disconnect_clients()
        if self._server is not None:
            await self._server.wait_closed()
        for connection in self._connections | self._gone:
            await connection.wait_closed()
        self._gone.clear()


class PtyServer(VirtualServer):
    """Virtual balancers behind a pseudo-terminal (``path`` is the serial port)."""

    def __init__(
        self,
        balancers: VirtualBalancer | Iterable[VirtualBalancer],
        *,
        baudrate: int | None = None,
        turnaround: float = 0.0,
    ) -> None:
        """Prepare a pty server."""
        super().__init__(balancers, baudrate=baudrate, turnaround=turnaround)
        self._master: int | None = None
        self._slave: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._line_: Line | None = None

    async def start(self) -> None:
        """Open the pty pair and start reading."""
        master, slave = os.openpty()
        try:
            # Raw mode: no echo, no line editing, no CR/LF translation. The
            # server keeps the slave open so the master never sees a hang-up.
            tty.setraw(slave)
            os.set_blocking(master, False)
            path = os.ttyname(slave)
        except OSError:  # pragma: no cover - a pty without a name
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave = master, slave
        self.path: str = path
        self.url = path
        self._loop = asyncio.get_running_loop()
        self._line_ = self._line(self._write, self._hangup)
        self._loop.add_reader(master, self._readable)

    def _readable(self) -> None:
        if self._master is None or self._line_ is None:  # pragma: no cover
            return
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):  # pragma: no cover
            return
        except OSError as err:  # pragma: no cover - the slave is held open
            _LOGGER.debug("pty read failed: %s", err)
            return
        self._line_.received(data)

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._master is not None:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:  # pragma: no cover - pty buffer full
                _LOGGER.debug("pty buffer full: %d bytes lost", len(view))
                return
            view = view[written:]

    @staticmethod
    def _hangup() -> bool:
        # A serial line cannot be unplugged from here: the reply is just lost.
        _LOGGER.debug("disconnect fault on a pty: reply lost")
        return True

    async def close(self) -> None:
        """Stop reading, cancel pending replies and close both ends."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and self._master is not None:
            self._loop.remove_reader(self._master)
        if self._line_ is not None:
            await self._line_.close()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None


async def serve_tcp(
    balancers: VirtualBalancer | Sequence[VirtualBalancer],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    baudrate: int | None = None,
    turnaround: float = 0.0,
) -> VirtualServer:
    """Serve *balancers* on a loopback TCP port; ``.url`` is a ``socket://`` URL.

    With *baudrate*, each request and reply takes its wire time at that speed,
    plus *turnaround* before the reply.
    """
    server = TcpServer(
        balancers, host=host, port=port, baudrate=baudrate, turnaround=turnaround
    )
    await server.start()
    return server


async def serve_pty(
    balancers: VirtualBalancer | Sequence[VirtualBalancer],
    *,
    baudrate: int | None = None,
    turnaround: float = 0.0,
) -> VirtualServer:
    """Serve *balancers* on a new pseudo-terminal; ``.url`` is its path."""
    server = PtyServer(balancers, baudrate=baudrate, turnaround=turnaround)
    await server.start()
    return server
