"""Frames, checksums and the stream reassembler, against captured frames."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.active_balancer.protocol.crc import (
    a5_checksum,
    append_crc,
    crc16_modbus,
    crc_ok,
)
from custom_components.active_balancer.protocol.frames import (
    A5Frame,
    Frame,
    FrameReassembler,
    ModbusFrame,
)
from custom_components.active_balancer.protocol.model import Variant

from . import captured as cap


def _feed(
    reassembler: FrameReassembler, data: bytes, cuts: Iterable[int] = ()
) -> list[Frame]:
    """Feed *data* cut at the positions *cuts*; return every frame out."""
    frames: list[Frame] = []
    start = 0
    for cut in sorted(set(cuts)):
        frames += reassembler.feed(data[start:cut])
        start = cut
    frames += reassembler.feed(data[start:])
    return frames


def _raw(frames: Iterable[Frame]) -> list[bytes]:
    return [frame.raw for frame in frames]


D2_REPLIES = [
    cap.D2_STATUS,
    cap.D2_SETTINGS,
    cap.D2_VERSIONS,
    cap.D2_PASSWORD,
    cap.D2_BLOCK_3E,
    cap.D2_CONTROL_ON,
    cap.D2_CONTROL_OFF,
    cap.D2_ECHO_OFF,
    cap.D2_ECHO_ON,
    cap.D2_D7,
    cap.D2_BLOCK_57,
    cap.D2_BMS_STATUS,
    cap.D2_BMS_BLOCK_3E,
    cap.D2_BMS_VERSIONS,
]


# --- checksums ----------------------------------------------------------------


def test_crc_worked_example() -> None:
    """protocol.md 5.1: body D2 03 00 00 00 3E has CRC 0xB9D7, sent low first."""
    body = bytes.fromhex("d2030000003e")
    assert crc16_modbus(body) == 0xB9D7
    assert append_crc(body).hex() == "d2030000003ed7b9"


@pytest.mark.parametrize(
    "hex_frame",
    [
        *D2_REPLIES,
        *cap.D2_REQUESTS.values(),
        *cap.P81_REQUESTS.values(),
        cap.P81_CF_REPLY,
        cap.P81_PROBE_REQUEST,
        cap.P81_PROBE_REPLY,
    ],
)
def test_captured_modbus_crc(hex_frame: str) -> None:
    """Every captured D2 / p81 frame carries a correct CRC."""
    assert crc_ok(bytes.fromhex(hex_frame))


@pytest.mark.parametrize(
    "hex_frame",
    [cap.A5_PROBE_REQUEST, cap.A5_REQUEST_90, *cap.A5_REPLIES.values()],
)
def test_captured_a5_checksum(hex_frame: str) -> None:
    """Every captured A5 frame carries a correct checksum."""
    raw = bytes.fromhex(hex_frame)
    assert len(raw) == 13
    assert a5_checksum(raw[:-1]) == raw[-1]


def test_a5_worked_checksum() -> None:
    """protocol.md 4.1: A5 40 90 08 00.. sums to 0x17D -> checksum 0x7D."""
    assert a5_checksum(bytes.fromhex("a5409008") + bytes(8)) == 0x7D
    assert a5_checksum(bytes.fromhex("a5809008") + bytes(8)) == 0xBD


@pytest.mark.parametrize("hex_frame", [cap.D2_BAD_CRC, cap.D2_BAD_LENGTH])
def test_negative_vectors_fail_crc(hex_frame: str) -> None:
    """The two corrupted frames of the capture do not pass the CRC check."""
    assert not crc_ok(bytes.fromhex(hex_frame))


def test_crc_ok_too_short() -> None:
    """Fewer than three bytes is never a frame."""
    assert not crc_ok(b"")
    assert not crc_ok(b"\xd2\x03")


@given(st.binary(min_size=1, max_size=300))
def test_crc_round_trip(body: bytes) -> None:
    """A body with its CRC appended always checks; the CRC is low byte first."""
    frame = append_crc(body)
    assert crc_ok(frame)
    assert int.from_bytes(frame[-2:], "little") == crc16_modbus(body)


@given(st.binary(min_size=1, max_size=200), st.data())
def test_crc_detects_single_bit_errors(body: bytes, data: st.DataObject) -> None:
    """CRC-16 catches every single-bit error."""
    frame = bytearray(append_crc(body))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    assert not crc_ok(frame)


@given(st.binary(min_size=12, max_size=12), st.integers(0, 11), st.integers(1, 255))
def test_a5_checksum_round_trip(body: bytes, index: int, delta: int) -> None:
    """The A5 sum checks on its own frame and fails when one byte changes."""
    frame = body + bytes((a5_checksum(body),))
    assert a5_checksum(frame[:-1]) == frame[-1]
    damaged = bytearray(frame)
    damaged[index] = (damaged[index] + delta) % 256
    assert a5_checksum(damaged[:-1]) != damaged[-1]


# --- reassembly of every captured frame ---------------------------------------


@pytest.mark.parametrize("hex_frame", D2_REPLIES)
@pytest.mark.parametrize("chunk", [1, 7, 20, 512])
def test_d2_replies_reassemble(hex_frame: str, chunk: int) -> None:
    """Each D2 reply comes out whole however the link chunks it."""
    raw = bytes.fromhex(hex_frame)
    reassembler = FrameReassembler(Variant.D2)
    frames = _feed(reassembler, raw, range(chunk, len(raw), chunk))
    assert _raw(frames) == [raw]
    assert reassembler.rejected == 0
    assert reassembler.pending == 0
    frame = frames[0]
    assert isinstance(frame, ModbusFrame)
    assert frame.address == 0xD2
    assert not frame.is_exception


def test_d2_replies_concatenated() -> None:
    """Several replies in one notification (pipelined requests) all come out."""
    raws = [bytes.fromhex(h) for h in D2_REPLIES]
    reassembler = FrameReassembler(Variant.D2)
    assert _raw(reassembler.feed(b"".join(raws))) == raws
    assert reassembler.rejected == 0


@pytest.mark.parametrize("hex_frame", list(cap.D2_REQUESTS.values()))
def test_d2_requests_reassemble_on_device_side(hex_frame: str) -> None:
    """The host's requests (FC03, FC06, FC10 without byte count) reassemble."""
    raw = bytes.fromhex(hex_frame)
    reassembler = FrameReassembler(Variant.D2, replies=False)
    assert _raw(_feed(reassembler, raw, range(1, len(raw)))) == [raw]


def test_d2_fc10_request_layout() -> None:
    """The RTC write: FC10 at 0xD4, 3 registers, no byte count."""
    raw = bytes.fromhex(cap.D2_REQUESTS["set_rtc"])
    (frame,) = FrameReassembler(Variant.D2, replies=False).feed(raw)
    assert isinstance(frame, ModbusFrame)
    assert frame.function == 0x10
    assert frame.body == bytes.fromhex("00d40003180b0709341c")
    assert tuple(frame.body[4:]) == (24, 11, 7, 9, 52, 28)  # 2024-11-07 09:52:28


def test_d2_password_block() -> None:
    """0xC9..0xCB hold the ASCII password "123456"."""
    (frame,) = FrameReassembler(Variant.D2).feed(bytes.fromhex(cap.D2_PASSWORD))
    assert isinstance(frame, ModbusFrame)
    assert frame.data == b"123456"
    assert frame.registers() == [0x3132, 0x3334, 0x3536]


def test_d2_small_blocks() -> None:
    """0xD7 and 0x57..0x62 read back as zeros."""
    reassembler = FrameReassembler(Variant.D2)
    d7, block = reassembler.feed(bytes.fromhex(cap.D2_D7 + cap.D2_BLOCK_57))
    assert isinstance(d7, ModbusFrame)
    assert isinstance(block, ModbusFrame)
    assert d7.registers() == [0]
    assert block.registers() == [0] * 12


@pytest.mark.parametrize(
    ("hex_frame", "value"), [(cap.D2_ECHO_OFF, 0), (cap.D2_ECHO_ON, 1)]
)
def test_d2_write_echo(hex_frame: str, value: int) -> None:
    """A write echo is 8 bytes: register 0xCF and the value written."""
    (frame,) = FrameReassembler(Variant.D2).feed(bytes.fromhex(hex_frame))
    assert isinstance(frame, ModbusFrame)
    assert frame.function == 0x06
    assert frame.body == bytes((0x00, 0xCF, 0x00, value))


@pytest.mark.parametrize("hex_frame", [cap.D2_BAD_CRC, cap.D2_BAD_LENGTH])
@pytest.mark.parametrize("chunk", [1, 20, 512])
def test_negative_vectors_rejected(hex_frame: str, chunk: int) -> None:
    """A corrupt frame yields nothing and counts as rejected."""
    raw = bytes.fromhex(hex_frame)
    reassembler = FrameReassembler(Variant.D2)
    assert _feed(reassembler, raw, range(chunk, len(raw), chunk)) == []
    assert reassembler.rejected == 1


def test_negative_vector_does_not_hide_next_frame() -> None:
    """After a corrupt echo, the next good frame still comes out."""
    reassembler = FrameReassembler(Variant.D2)
    data = bytes.fromhex(cap.D2_BAD_CRC + cap.D2_ECHO_ON)
    assert _raw(reassembler.feed(data)) == [bytes.fromhex(cap.D2_ECHO_ON)]
    assert reassembler.rejected == 1


@pytest.mark.parametrize(
    ("header", "replies"),
    [
        pytest.param("d20303", True, id="read-reply-odd-byte-count"),
        pytest.param("d203fc", True, id="read-reply-over-125-registers"),
        pytest.param("d2100000000000", False, id="write-request-no-registers"),
        pytest.param("d210000000ff", False, id="write-request-over-125-registers"),
    ],
)
def test_impossible_length_is_skipped(header: str, replies: bool) -> None:
    """A header no balancer sends is dropped; the good frame after it comes out."""
    good = bytes.fromhex(cap.D2_ECHO_ON if replies else cap.D2_REQUESTS["status"])
    reassembler = FrameReassembler(Variant.D2, replies=replies)
    assert _raw(reassembler.feed(bytes.fromhex(header) + good)) == [good]
    assert reassembler.rejected == 0
    assert reassembler.pending == 0


def test_p81_probe_pair() -> None:
    """The p81 FC10 probe and the balancer's 51 10 reply (S1)."""
    request = bytes.fromhex(cap.P81_PROBE_REQUEST)
    reply = bytes.fromhex(cap.P81_PROBE_REPLY)
    assert _raw(FrameReassembler(Variant.P81, replies=False).feed(request)) == [request]
    (frame,) = FrameReassembler(Variant.P81).feed(reply)
    assert isinstance(frame, ModbusFrame)
    assert frame.address == 0x51
    assert frame.function == 0x10
    assert frame.body == bytes.fromhex("0f05aaaa")


@pytest.mark.parametrize("hex_frame", list(cap.P81_REQUESTS.values()))
def test_p81_requests_reassemble(hex_frame: str) -> None:
    """p81 read requests reassemble on the device side."""
    raw = bytes.fromhex(hex_frame)
    frames = FrameReassembler(Variant.P81, replies=False).feed(raw)
    assert _raw(frames) == [raw]
    assert frames[0].address == 0x81


def test_p81_unsupported_register_reply() -> None:
    """51 03 02 FF FF: register 0xCF holds 0xFFFF (not available)."""
    (frame,) = FrameReassembler(Variant.P81).feed(bytes.fromhex(cap.P81_CF_REPLY))
    assert isinstance(frame, ModbusFrame)
    assert frame.address == 0x51
    assert frame.registers() == [0xFFFF]


def test_p81_reply_address_filter() -> None:
    """A reassembler for board 2 ignores board 1's reply."""
    reassembler = FrameReassembler(Variant.P81, addresses=(0x52,))
    assert reassembler.feed(bytes.fromhex(cap.P81_CF_REPLY)) == []


@pytest.mark.parametrize(("command", "hex_frame"), list(cap.A5_REPLIES.items()))
@pytest.mark.parametrize("chunk", [1, 5, 13, 20])
def test_a5_replies_reassemble(command: int, hex_frame: str, chunk: int) -> None:
    """All nine A5 replies come out whole, with command and data split out."""
    raw = bytes.fromhex(hex_frame)
    reassembler = FrameReassembler(Variant.A5)
    frames = _feed(reassembler, raw, range(chunk, len(raw), chunk))
    assert _raw(frames) == [raw]
    frame = frames[0]
    assert isinstance(frame, A5Frame)
    assert frame.address == 0x01
    assert frame.command == command
    assert frame.data == raw[4:12]


def test_a5_replies_two_per_notification() -> None:
    """A BLE notification may carry two A5 frames (26 bytes)."""
    raws = [bytes.fromhex(h) for h in cap.A5_REPLIES.values()]
    reassembler = FrameReassembler(Variant.A5)
    assert _raw(_feed(reassembler, b"".join(raws), range(26, 13 * 9, 26))) == raws


def test_a5_reply_values() -> None:
    """The values the A5 capture is annotated with (S17)."""
    data = {command: bytes.fromhex(h)[4:12] for command, h in cap.A5_REPLIES.items()}
    assert int.from_bytes(data[0x90][0:2], "big") == 528  # 52.8 V
    assert int.from_bytes(data[0x90][4:6], "big") == 30000  # 0.0 A
    assert int.from_bytes(data[0x90][6:8], "big") == 500  # 50.0 %
    assert int.from_bytes(data[0x91][0:2], "big") == 3784
    assert data[0x91][2] == 5
    assert int.from_bytes(data[0x91][3:5], "big") == 3740
    assert data[0x91][5] == 9
    assert (data[0x92][0] - 40, data[0x92][1]) == (21, 1)
    assert (data[0x92][2] - 40, data[0x92][3]) == (21, 1)
    assert tuple(data[0x93][:3]) == (0, 1, 1)  # idle, MOS on / on
    assert int.from_bytes(data[0x93][4:8], "big") == 20000  # mAh
    assert tuple(data[0x94][:2]) == (14, 1)


@pytest.mark.parametrize("hex_frame", [cap.A5_PROBE_REQUEST, cap.A5_REQUEST_90])
def test_a5_requests_reassemble_on_device_side(hex_frame: str) -> None:
    """Host requests (address 0x40) reassemble on the device side only."""
    raw = bytes.fromhex(hex_frame)
    assert _raw(FrameReassembler(Variant.A5, replies=False).feed(raw)) == [raw]
    assert FrameReassembler(Variant.A5).feed(raw) == []


def test_junk_before_frame_is_skipped() -> None:
    """Line noise before a frame is discarded and counted."""
    reassembler = FrameReassembler(Variant.D2)
    raw = bytes.fromhex(cap.D2_ECHO_ON)
    assert _raw(reassembler.feed(b"\x00\x11\xff" + raw)) == [raw]
    assert reassembler.discarded == 3
    reassembler.feed(b"\xd2")
    assert reassembler.pending == 1
    reassembler.clear()
    assert reassembler.pending == 0


# --- properties ---------------------------------------------------------------


def _d2_reply(data: bytes) -> bytes:
    return append_crc(bytes((0xD2, 0x03, len(data))) + data)


def _p81_reply(board: int, data: bytes) -> bytes:
    return append_crc(bytes((0x50 + board, 0x03, len(data))) + data)


def _a5_reply(command: int, data: bytes) -> bytes:
    body = bytes((0xA5, 0x01, command, 0x08)) + data
    return body + bytes((a5_checksum(body),))


_REGISTER_DATA = st.lists(st.binary(min_size=2, max_size=2), max_size=40).map(b"".join)

_FRAMES: dict[Variant, st.SearchStrategy[bytes]] = {
    Variant.D2: st.one_of(
        st.sampled_from([bytes.fromhex(h) for h in D2_REPLIES]),
        _REGISTER_DATA.map(_d2_reply),
        st.binary(min_size=4, max_size=4).map(lambda b: append_crc(b"\xd2\x06" + b)),
    ),
    Variant.P81: st.one_of(
        st.sampled_from([bytes.fromhex(cap.P81_CF_REPLY)]),
        st.builds(_p81_reply, st.integers(1, 15), _REGISTER_DATA),
        st.builds(
            lambda board, b: append_crc(bytes((0x50 + board, 0x10)) + b),
            st.integers(1, 15),
            st.binary(min_size=4, max_size=4),
        ),
    ),
    Variant.A5: st.one_of(
        st.sampled_from([bytes.fromhex(h) for h in cap.A5_REPLIES.values()]),
        st.builds(
            _a5_reply,
            st.integers(0, 255),
            st.binary(min_size=8, max_size=8),
        ),
    ),
}

_START_BYTES: dict[Variant, frozenset[int]] = {
    Variant.D2: frozenset({0xD2}),
    Variant.P81: frozenset(range(0x51, 0x60)),
    Variant.A5: frozenset({0xA5}),
}


@st.composite
def _stream(draw: st.DrawFn, variant: Variant) -> tuple[list[bytes], bytes]:
    """Valid frames with junk (free of start bytes) between them."""
    frames = draw(st.lists(_FRAMES[variant], min_size=1, max_size=6))
    junk_byte = st.integers(0, 255).filter(lambda b: b not in _START_BYTES[variant])
    junk = st.lists(junk_byte, max_size=12).map(bytes)
    stream = b"".join(draw(junk) + frame for frame in frames) + draw(junk)
    return frames, stream


@pytest.mark.parametrize("variant", list(Variant))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reassembly_independent_of_chunking(
    variant: Variant, data: st.DataObject
) -> None:
    """However the stream is cut, the same frames come out, in order."""
    frames, stream = data.draw(_stream(variant))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    reassembler = FrameReassembler(variant)
    assert _raw(_feed(reassembler, stream, cuts)) == frames
    assert reassembler.rejected == 0
    assert reassembler.pending == 0


def _checksum_valid(variant: Variant, frame: Frame) -> bool:
    if variant is Variant.A5:
        return (
            isinstance(frame, A5Frame)
            and len(frame.raw) == 13
            and a5_checksum(frame.raw[:-1]) == frame.raw[-1]
        )
    return isinstance(frame, ModbusFrame) and crc_ok(frame.raw)


@pytest.mark.parametrize("replies", [True, False])
@pytest.mark.parametrize("variant", list(Variant))
@settings(max_examples=150)
@given(chunks=st.lists(st.binary(max_size=64), max_size=20))
def test_random_bytes_never_raise(
    variant: Variant, replies: bool, chunks: list[bytes]
) -> None:
    """Random input never raises and only ever yields checksum-valid frames."""
    reassembler = FrameReassembler(variant, replies=replies)
    for chunk in chunks:
        for frame in reassembler.feed(chunk):
            assert _checksum_valid(variant, frame)
            assert frame.raw[0] in reassembler.addresses


@pytest.mark.parametrize("variant", list(Variant))
@settings(max_examples=100)
@given(data=st.data())
def test_random_bytes_around_valid_frames(
    variant: Variant, data: st.DataObject
) -> None:
    """Arbitrary junk (start bytes allowed) around frames never breaks decoding."""
    frames = data.draw(st.lists(_FRAMES[variant], min_size=1, max_size=4))
    pieces: list[bytes] = []
    for frame in frames:
        pieces += [data.draw(st.binary(max_size=20)), frame]
    reassembler = FrameReassembler(variant)
    out = _feed(reassembler, b"".join(pieces), data.draw(st.lists(st.integers(0, 400))))
    assert all(_checksum_valid(variant, frame) for frame in out)


def test_false_start_claiming_a_long_frame_does_not_hide_the_real_reply() -> None:
    """Junk `D2 03 F0` says 240 data bytes follow; the real reply behind it wins."""
    real = bytes.fromhex("d2030a0001010000100001000ac2bc")
    reassembler = FrameReassembler(Variant.D2)
    frames = reassembler.feed(bytes.fromhex("d203f0") + real)
    assert [frame.raw for frame in frames] == [real]
    assert reassembler.pending == 0
