"""Read one reply from a virtual line the way it arrives: read by read.

Each piece is what one read returned. A reader may be slower than the line
and get two pieces at once, so a chunked reply shows as reads whose lengths
all end on a chunk boundary; an unchunked one as a single read.
"""

from __future__ import annotations

import asyncio
import os


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.changed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.changed.set()


async def _until(recorder: _Recorder, size: int) -> list[bytes]:
    async with asyncio.timeout(5):
        while sum(map(len, recorder.pieces)) < size:
            await recorder.changed.wait()
            recorder.changed.clear()
    return recorder.pieces


async def tcp_pieces(port: int, request: bytes, size: int) -> list[bytes]:
    """Send *request* to a loopback TCP server; the reads of *size* bytes."""
    loop = asyncio.get_running_loop()
    transport, recorder = await loop.create_connection(_Recorder, "127.0.0.1", port)
    try:
        transport.write(request)
        return await _until(recorder, size)
    finally:
        transport.close()


async def pty_pieces(path: str, request: bytes, size: int) -> list[bytes]:
    """Send *request* to a pty server's slave *path*; the reads of *size* bytes."""
    loop = asyncio.get_running_loop()
    recorder = _Recorder()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def readable() -> None:
        try:
            recorder.data_received(os.read(fd, 4096))
        except BlockingIOError:  # pragma: no cover - woken for nothing
            return

    loop.add_reader(fd, readable)
    try:
        os.write(fd, request)
        return await _until(recorder, size)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def on_chunk_boundaries(pieces: list[bytes], chunk: int) -> bool:
    """Whether every read but the last ended on a multiple of *chunk* bytes."""
    ends = [sum(map(len, pieces[: i + 1])) for i in range(len(pieces) - 1)]
    return all(end % chunk == 0 for end in ends)
