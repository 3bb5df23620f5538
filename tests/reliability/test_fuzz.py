# Inputs are drawn with `random` on purpose: repeatable, not secret.
# ruff: noqa: S311
"""Fuzz properties (a bounded number of examples) and the regression corpus.

The documented run (``scripts/fuzz``, RELIABILITY.md) feeds a million inputs
through :func:`reliability.fuzz.run_one`; here hypothesis feeds a few hundred,
and every edge case the fuzzer found is fed again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
import random

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from balancer_tools.simulator.faults import JUNK_BYTES
from custom_components.active_balancer.protocol import (
    BalancerClient,
    BalancerError,
    Bus,
    LinkKind,
    Setting,
    UnexpectedReply,
    Variant,
    codec,
)
from custom_components.active_balancer.protocol.crc import append_crc
from custom_components.active_balancer.protocol.frames import A5Frame, FrameReassembler
from custom_components.active_balancer.protocol.link import DataCallback, LostCallback
from custom_components.active_balancer.protocol.registers import D2_TABLE
from reliability import fuzz
from reliability.mutate import mutate

CORPUS = Path(__file__).with_name("fuzz_corpus.txt")
SEEDS = fuzz.seed_frames()
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def replies_of(variant: Variant) -> list[bytes]:
    """The valid single replies among the seeds, for *variant*."""
    frames = []
    for seed in SEEDS:
        found = FrameReassembler(variant).feed(seed)
        if len(found) == 1 and found[0].raw == seed:
            frames.append(seed)
    return frames


# --- the fuzz target, bounded ---------------------------------------------------


@given(data=st.binary(max_size=fuzz.MAX_INPUT))
@FUZZ
def test_random_bytes(data: bytes) -> None:
    """Any bytes: no crash, no broken invariant."""
    fuzz.run_one(data)


@given(seed=st.sampled_from(SEEDS), salt=st.integers(0, 2**32))
@FUZZ
def test_mutated_frames(seed: bytes, salt: int) -> None:
    """Valid frames, mutated (and often with the checksum repaired)."""
    fuzz.run_one(mutate(seed, random.Random(salt), SEEDS))


# --- the reassembler loses nothing on a clean line --------------------------------


@pytest.mark.parametrize("variant", list(Variant))
@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_every_frame_found_between_junk(variant: Variant, data: st.DataObject) -> None:
    """Frames with junk between them, in any chunks: each frame comes out once."""
    frames = data.draw(
        st.lists(st.sampled_from(replies_of(variant)), min_size=1, max_size=5)
    )
    junk = st.binary(max_size=8).map(
        lambda raw: bytes(JUNK_BYTES[b % len(JUNK_BYTES)] for b in raw)
    )
    stream = b"".join(data.draw(junk) + frame for frame in frames) + data.draw(junk)
    chunk = data.draw(st.integers(1, 64))
    reassembler = FrameReassembler(variant)
    found = []
    for start in range(0, len(stream), chunk):
        found.extend(reassembler.feed(stream[start : start + chunk]))
    assert [frame.raw for frame in found] == frames


# --- the client on a line of nonsense ---------------------------------------------


class NonsenseLink:
    """A serial line whose device answers each request with the next reply."""

    kind = LinkKind.SERIAL
    byte_time = 0.0
    base_timeout = 0.003

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self._on_data: DataCallback | None = None
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self, on_data: DataCallback, on_lost: LostCallback) -> None:
        self._on_data = on_data
        self._open = True

    async def write(self, data: bytes) -> None:
        if self.replies and self._on_data is not None:
            reply = self.replies.pop(0)
            self.replies.append(reply)
            asyncio.get_running_loop().call_soon(self._on_data, reply)

    async def close(self) -> None:
        self._open = False


async def talk(replies: list[bytes]) -> Counter[str]:
    """Detect, poll, read the settings and write over a line of *replies*."""
    outcomes: Counter[str] = Counter()
    bus = Bus(NonsenseLink(replies), retries=0, settle=0.0, late_window=0.005)
    client = BalancerClient(bus)
    for step in (
        client.connect,
        client.poll,
        client.read_settings,
        lambda: client.write(Setting.BALANCE_DELTA_VOLTAGE, 0.03),
    ):
        try:
            await step()
        except BalancerError as err:
            outcomes[type(err).__name__] += 1
        else:
            outcomes["ok"] += 1
    await client.close()
    return outcomes


@given(
    replies=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from(SEEDS),
            st.tuples(st.sampled_from(SEEDS), st.integers(0, 2**32)).map(
                lambda pair: mutate(pair[0], random.Random(pair[1]), SEEDS)
            ),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=20, deadline=None)
def test_client_on_a_line_of_nonsense(replies: list[bytes]) -> None:
    """Whatever comes back, the client raises only its own protocol errors."""
    outcomes = asyncio.run(talk(list(replies)))
    assert sum(outcomes.values()) == 4


# --- the regression corpus ----------------------------------------------------------


def corpus() -> list[tuple[str, bytes]]:
    return list(fuzz.iter_corpus(CORPUS))


def corpus_params() -> list[object]:
    return [pytest.param(name, data, id=name) for name, data in corpus()]


def test_corpus_is_there() -> None:
    """The corpus covers the decoders of every variant and their refusals."""
    names = {name for name, _ in corpus()}
    assert len(names) >= 30
    for needed in (
        "d2_live:UnexpectedReply:the device reports N cells, which is not a balancer",
        "p81_live:UnexpectedReply:the balancer refused the read request",
        "a5_counts:UnexpectedReply:the device reports N cells, which is not a balancer",
        "a5_live:UnexpectedReply:AN frames [...] are missing from the reply",
        "frames_d2_rx",
        "frames_p81_rx",
        "frames_a5_rx",
    ):
        assert needed in names


@pytest.mark.parametrize(("outcome", "data"), corpus_params())
def test_corpus(outcome: str, data: bytes) -> None:
    """Each edge case found still runs cleanly, and still ends the same way."""
    outcomes = fuzz.run_one(data)
    assert outcomes[outcome] > 0


# --- hand-picked edge cases -------------------------------------------------------


def d2_live_reply(cells: int, **registers: int) -> bytes:
    """A D2 live block reply claiming *cells* cells (other registers zero)."""
    values = [3300] * 0x41
    values[D2_TABLE.live.cell_count] = cells
    for register, value in registers.items():
        values[int(register.removeprefix("r"), 16)] = value
    body = bytes((0xD2, 0x03, 2 * len(values))) + b"".join(
        v.to_bytes(2, "big") for v in values
    )
    return append_crc(body)


@pytest.mark.parametrize("cells", [0, 33, 0xFFFF])
def test_live_reply_with_impossible_cell_count(cells: int) -> None:
    """Zero cells, one more than D2 has, 0xFFFF: not a balancer."""
    frame = FrameReassembler(Variant.D2).feed(d2_live_reply(cells))[0]
    regs = codec.registers_of(D2_TABLE.live.block, frame)
    with pytest.raises(UnexpectedReply, match="not a balancer"):
        codec.decode_modbus_live(D2_TABLE, regs)


def test_live_reply_with_unavailable_values() -> None:
    """0xFFFF pack voltage and current read as unknown; many sensors are cut."""
    reply = d2_live_reply(16, r28=0xFFFF, r40=0xFFFF, r32=200, r20=0xFFFF)
    frame = FrameReassembler(Variant.D2).feed(reply)[0]
    reading = codec.decode_modbus_live(
        D2_TABLE, codec.registers_of(D2_TABLE.live.block, frame)
    )
    assert reading.pack_voltage is None
    assert reading.balance_current is None
    assert len(reading.temperatures) == D2_TABLE.live.max_temperatures
    assert reading.temperatures[0] is None


def test_false_long_start_then_a_reply() -> None:
    """A stray start byte claiming a 250-byte frame does not hide the reply."""
    reply = d2_live_reply(16)
    for chunk in (1, 7, len(reply) + 3):
        stream = bytes((0xD2, 0x03, 0xFA)) + reply
        reassembler = FrameReassembler(Variant.D2)
        found = []
        for start in range(0, len(stream), chunk):
            found.extend(reassembler.feed(stream[start : start + chunk]))
        assert [frame.raw for frame in found] == [reply]


def test_truncated_reply_then_the_whole_one() -> None:
    """Half a reply (a truncate fault), then the reply again: the whole one counts."""
    reply = d2_live_reply(16)
    found = FrameReassembler(Variant.D2).feed(reply[: len(reply) // 2] + reply)
    assert [frame.raw for frame in found] == [reply]


def test_start_bytes_in_junk() -> None:
    """Junk made of start bytes and headers, then a reply: found."""
    reply = append_crc(bytes((0xD2, 0x03, 0x02, 0x00, 0x01)))
    junk = bytes((0xD2, 0xD2, 0x03, 0xD2, 0x83, 0xD2, 0x06, 0xD2))
    found = FrameReassembler(Variant.D2).feed(junk + reply)
    assert found[-1].raw == reply


def test_settings_with_unknown_codes() -> None:
    """Chemistry 7 and an on/off register of 2: unknown, not a crash."""
    regs = {
        reg: 0
        for block in D2_TABLE.settings_blocks
        for reg in range(block.start, block.start + block.count)
    }
    regs[D2_TABLE.settings[Setting.CHEMISTRY].register] = 7
    regs[D2_TABLE.settings[Setting.BALANCER_ENABLED].register] = 2
    settings = codec.decode_modbus_settings(D2_TABLE, regs)
    assert settings.chemistry is None
    assert settings.balancer_enabled is None


def test_identity_with_odd_bytes() -> None:
    """0xFF padding, NULs and bytes above 0x7F in the version strings."""
    block = D2_TABLE.info_block
    data = (b"B002\xff\xff\x00junk" + bytes(range(0x80, 0x90))).ljust(
        2 * block.count, b"\x00"
    )
    regs = {
        block.start + i: int.from_bytes(data[2 * i : 2 * i + 2], "big")
        for i in range(block.count)
    }
    info = codec.decode_modbus_info(D2_TABLE, None, regs)
    assert info.software_version == "B002"
    assert info.hardware_version is not None
    assert info.hardware_version.isprintable()


def test_a5_reply_with_a_missing_frame() -> None:
    """Cell frames 1 and 3 of 3 arrive, frame 2 is lost: refused, not guessed."""
    frames = [
        A5Frame(address=1, command=0x95, data=bytes((n,)) + bytes(7), raw=b"")
        for n in (1, 3)
    ]
    with pytest.raises(UnexpectedReply, match="missing"):
        codec.a5_multi(frames, 9, 3)


def test_exception_reply_is_a_refusal() -> None:
    """A Modbus exception reply to a read: refused, with no register taken."""
    frame = FrameReassembler(Variant.D2).feed(append_crc(bytes((0xD2, 0x83, 0x02))))[0]
    with pytest.raises(UnexpectedReply, match="refused"):
        codec.registers_of(D2_TABLE.live.block, frame)
