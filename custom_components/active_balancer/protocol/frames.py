"""Frames on the wire and a stream reassembler.

The reassembler takes bytes in whatever chunks they arrive (20-byte BLE
notifications, two frames in one read, junk before a frame) and yields only
complete frames whose CRC or checksum is right. After junk or a bad frame it
resynchronises on the next plausible start byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .crc import a5_checksum, crc_ok
from .model import Variant

A5_START = 0xA5
A5_LENGTH = 13
A5_DATA_LENGTH = 8
A5_REPLY_ADDRESS = 0x01
A5_SERIAL_HOST = 0x40
"""A5 host address of a wired UART."""
A5_BLE_HOST = 0x80
"""A5 host address the Bluetooth dongle uses."""
A5_HOST_ADDRESSES = (A5_SERIAL_HOST, A5_BLE_HOST)

D2_ADDRESS = 0xD2
P81_REQUEST_BASE = 0x80
P81_REPLY_BASE = 0x50
P81_ADDRESSES = range(1, 16)

FC_READ = 0x03
FC_WRITE_SINGLE = 0x06
FC_WRITE_MULTIPLE = 0x10
FC_ERROR_FLAG = 0x80

MAX_READ_REGISTERS = 125
_MAX_BUFFER = 4096


@dataclass(frozen=True, slots=True)
class ModbusFrame:
    """A D2 or p81 frame: address, function code and the bytes up to the CRC."""

    address: int
    function: int
    body: bytes
    """Bytes after the function code, without the CRC."""
    raw: bytes

    @property
    def is_exception(self) -> bool:
        """Whether this is a Modbus exception reply."""
        return bool(self.function & FC_ERROR_FLAG)

    @property
    def data(self) -> bytes:
        """Register data of a read reply (after the byte count)."""
        return self.body[1:]

    def registers(self) -> list[int]:
        """Register values of a read reply, big endian."""
        data = self.data
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


@dataclass(frozen=True, slots=True)
class A5Frame:
    """A 13-byte legacy frame."""

    address: int
    command: int
    data: bytes
    raw: bytes


Frame = ModbusFrame | A5Frame


class FrameReassembler:
    """Turn a byte stream into checksum-valid frames.

    ``variants`` is one variant or several (a virtual balancer hears D2, p81
    and A5 requests on one line; their first bytes never overlap).
    ``replies`` selects what is expected: device replies (the client's side)
    or host requests (the device's side). ``addresses`` limits the accepted
    first bytes; by default every address of the variants is accepted.
    """

    def __init__(
        self,
        variants: Variant | Iterable[Variant],
        *,
        replies: bool = True,
        addresses: Iterable[int] | None = None,
    ) -> None:
        """Create a reassembler for *variants*."""
        chosen = (variants,) if isinstance(variants, Variant) else tuple(variants)
        self.variant = chosen[0]
        self.replies = replies
        self._variant_of_start = {
            start: variant
            for variant in chosen
            for start in _default_addresses(variant, replies=replies)
        }
        if addresses is not None:
            allowed = frozenset(addresses)
            self._variant_of_start = {
                start: variant
                for start, variant in self._variant_of_start.items()
                if start in allowed
            }
        self.addresses = frozenset(self._variant_of_start)
        self._buffer = bytearray()
        self.rejected = 0
        """Frames dropped for a bad checksum or impossible length."""
        self.discarded = 0
        """Bytes skipped while resynchronising."""

    def clear(self) -> None:
        """Forget any partial frame."""
        self._buffer.clear()

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a frame."""
        return len(self._buffer)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add *chunk* and return the frames it completed."""
        buf = self._buffer
        buf += chunk
        frames: list[Frame] = []
        while buf:
            if buf[0] not in self.addresses and not self._skip_to_start():
                break
            length = self._frame_length(buf)
            if length is None:  # header incomplete
                break
            if length < 0:  # impossible header
                self._drop_start()
                continue
            if len(buf) < length:
                if len(buf) > _MAX_BUFFER or self._later_frame_complete():
                    # A false start claimed a long frame, but a whole valid
                    # frame already follows it: resynchronise on that one.
                    self._drop_start()
                    continue
                break
            raw = bytes(buf[:length])
            if not self._checksum_ok(raw):
                self.rejected += 1
                self._drop_start()
                continue
            del buf[:length]
            frames.append(self._build(raw))
        return frames

    def _later_frame_complete(self) -> bool:
        """Whether a complete, valid frame starts after the first byte."""
        buf = self._buffer
        for index in range(1, len(buf)):
            if buf[index] not in self.addresses:
                continue
            rest = buf[index:]
            length = self._frame_length(rest)
            if (
                length is not None
                and length > 0
                and len(rest) >= length
                and self._checksum_ok(bytes(rest[:length]))
            ):
                return True
        return False

    def _skip_to_start(self) -> bool:
        buf = self._buffer
        for index, byte in enumerate(buf):
            if byte in self.addresses:
                self.discarded += index
                del buf[:index]
                return True
        self.discarded += len(buf)
        buf.clear()
        return False

    def _drop_start(self) -> None:
        self.discarded += 1
        del self._buffer[:1]

    def _frame_length(self, buf: bytearray) -> int | None:
        """Length of the frame at the start of *buf*; None = need more, -1 = bad."""
        if self._variant_of_start[buf[0]] is Variant.A5:
            return self._a5_length(buf)
        if len(buf) < 2:  # noqa: PLR2004
            return None
        if self.replies:
            return _modbus_reply_length(buf)
        return _modbus_request_length(buf)

    def _a5_length(self, buf: bytearray) -> int | None:
        """Length of the A5 frame at the start of *buf* (always 13 when valid)."""
        if len(buf) < 4:  # noqa: PLR2004
            return None
        expected = (A5_REPLY_ADDRESS,) if self.replies else A5_HOST_ADDRESSES
        if buf[1] not in expected or buf[3] != A5_DATA_LENGTH:
            return -1
        return A5_LENGTH

    def _checksum_ok(self, raw: bytes) -> bool:
        if self._variant_of_start[raw[0]] is Variant.A5:
            return a5_checksum(raw[:-1]) == raw[-1]
        return crc_ok(raw)

    def _build(self, raw: bytes) -> Frame:
        if self._variant_of_start[raw[0]] is Variant.A5:
            return A5Frame(address=raw[1], command=raw[2], data=raw[4:12], raw=raw)
        return ModbusFrame(address=raw[0], function=raw[1], body=raw[2:-2], raw=raw)


def _modbus_reply_length(buf: bytearray) -> int | None:
    """Length of the D2/p81 reply at the start of *buf* (function code known)."""
    function = buf[1]
    if function & FC_ERROR_FLAG:
        return 5
    if function in (FC_WRITE_SINGLE, FC_WRITE_MULTIPLE):
        return 8
    if function != FC_READ:
        return -1
    if len(buf) < 3:  # noqa: PLR2004
        return None
    count = buf[2]
    if count % 2 or count > 2 * MAX_READ_REGISTERS:
        return -1
    return 5 + count


def _modbus_request_length(buf: bytearray) -> int | None:
    """Length of the D2/p81 request at the start of *buf* (function code known)."""
    function = buf[1]
    if function in (FC_READ, FC_WRITE_SINGLE):
        return 8
    if function != FC_WRITE_MULTIPLE:
        return -1
    if len(buf) < 6:  # noqa: PLR2004
        return None
    count = int.from_bytes(buf[4:6], "big")
    if not 1 <= count <= MAX_READ_REGISTERS:
        return -1
    return 8 + 2 * count


def _default_addresses(variant: Variant, *, replies: bool) -> tuple[int, ...]:
    if variant is Variant.D2:
        return (D2_ADDRESS,)
    if variant is Variant.P81:
        base = P81_REPLY_BASE if replies else P81_REQUEST_BASE
        return tuple(base + n for n in P81_ADDRESSES)
    return (A5_START,)


def frame_variant(frame: Frame) -> Variant:
    """The variant a checksum-valid frame belongs to."""
    if isinstance(frame, A5Frame):
        return Variant.A5
    return Variant.D2 if frame.address == D2_ADDRESS else Variant.P81
