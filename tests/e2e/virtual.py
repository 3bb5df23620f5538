"""A virtual balancer on a loopback TCP port, served from a background thread.

The balancer lives in this (the test) process so that tests can read what it
received (``balancer.writes``) and change it (``set_cell_voltage``) while Home
Assistant, in another process, polls it over ``socket://``. Its server runs on
an event loop of its own in a daemon thread, so it answers whatever the test
thread is doing (blocking HTTP calls, a browser, sleeps).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balancer_tools.simulator import (
        TcpServer,
        VirtualBalancer,
    )

CALL_TIMEOUT = 15.0


class BalancerThread:
    """Serve one :class:`VirtualBalancer` on 127.0.0.1 from a thread.

    ``stop()`` closes the server (the link drops); ``serve()`` listens again
    on the same port, like a device that was switched off and on.
    """

    def __init__(self, balancer: VirtualBalancer) -> None:
        """Prepare; :meth:`start` starts the thread and the server."""
        self.balancer = balancer
        self.port = 0
        self._server: TcpServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="virtual-balancer", daemon=True
        )

    @property
    def url(self) -> str:
        """The ``socket://`` URL to enter in the config flow."""
        return f"socket://127.0.0.1:{self.port}"

    @property
    def serving(self) -> bool:
        """Whether the server listens now."""
        return self._server is not None

    def _run[T](self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT)

    def call[T](self, func: Callable[[], T]) -> T:
        """Run *func* on the server's loop (no race with a request) and return."""

        async def run() -> T:
            return func()

        return self._run(run())

    def start(self) -> None:
        """Start the thread and listen on a free port."""
        self._thread.start()
        self.serve()

    def serve(self) -> None:
        """Listen (again) on ``self.port``; the first time on a free port."""
        from balancer_tools.simulator import (
            TcpServer,
            serve_tcp,
        )

        assert self._server is None, "already serving"
        server = self._run(serve_tcp(self.balancer, host="127.0.0.1", port=self.port))
        assert isinstance(server, TcpServer)
        self._server = server
        self.port = server.port

    def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._run(self._server.close())
            self._server = None

    @property
    def connections(self) -> int:
        """TCP connections open to the balancer now."""
        server = self._server
        return 0 if server is None else self.call(lambda: server.connections)

    @property
    def connects(self) -> int:
        """Connections accepted since the server last started listening."""
        server = self._server
        return 0 if server is None else self.call(lambda: server.connects)

    def close(self) -> None:
        """Stop the server, the loop and the thread."""
        try:
            self.stop()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()
