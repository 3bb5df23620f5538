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

from custom_components.active_balancer.protocol import (
    BalancerClient,
    BalancerError,
    Bus,
    LinkKind,
    Setting,
    Variant,
)
from custom_components.active_balancer.protocol.frames import FrameReassembler
from custom_components.active_balancer.protocol.link import DataCallback, LostCallback
from custom_components.active_balancer.protocol.virtual.faults import JUNK_BYTES
from reliability import fuzz

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
    fuzz.run_one(fuzz.mutate(seed, random.Random(salt), SEEDS))


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
                lambda pair: fuzz.mutate(pair[0], random.Random(pair[1]), SEEDS)
            ),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=60, deadline=None)
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
    """The corpus covers decoders of every variant and its refusals."""
    names = {name for name, _ in corpus()}
    assert len(names) >= 40
    for needed in (
        "decode:UnexpectedReply",
        "a5_counts:UnexpectedReply",
        "a5_live:UnexpectedReply",
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
