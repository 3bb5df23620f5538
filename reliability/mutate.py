"""Mutating fuzz inputs: bit flips, byte changes, insertions, deletions,
splices, truncation and junk, often with the checksum repaired so that the
mutation reaches the decoders (see :mod:`reliability.fuzz`)."""

# The inputs are drawn with `random` on purpose: repeatable, not secret.

from __future__ import annotations

from collections.abc import Sequence
import random

from custom_components.active_balancer.protocol.crc import a5_checksum, append_crc
from custom_components.active_balancer.protocol.frames import A5_LENGTH, FC_ERROR_FLAG

# Longest generated input, in bytes (a long reply is 255).
MAX_INPUT = 600


def _fix_checksum(data: bytearray, rng: random.Random) -> None:
    """Repair the checksum of the frame the input starts with (if it can)."""
    if not data:
        return
    if data[0] == 0xA5 and len(data) >= A5_LENGTH:  # noqa: PLR2004
        data[A5_LENGTH - 1] = a5_checksum(data[: A5_LENGTH - 1])
        return
    if len(data) < 4:  # noqa: PLR2004
        return
    # Modbus: guess the frame length from the header, else repair at the end.
    length = len(data)
    if data[1] == 0x03 and 5 + data[2] <= len(data):  # noqa: PLR2004
        length = 5 + data[2]
    elif data[1] in (0x06, 0x10) and len(data) >= 8:  # noqa: PLR2004
        length = 8
    elif data[1] & FC_ERROR_FLAG and len(data) >= 5:  # noqa: PLR2004
        length = 5
    if rng.random() < 0.2:  # noqa: PLR2004
        length = rng.randint(3, len(data))
    data[:length] = append_crc(bytes(data[: length - 2]))


_INTERESTING = (
    0x00,
    0x01,
    0x02,
    0x03,
    0x06,
    0x10,
    0x7F,
    0x80,
    0x83,
    0xA5,
    0xD2,
    0xFE,
    0xFF,
)
_RANDOM_SHARE = 0.2
_STACKED_SHARE = 0.3


def mutate(data: bytes, rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One to four random mutations of *data*, maybe with the checksum repaired."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        match rng.randrange(9) if out else 3:
            case 0:  # flip a bit
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            case 1:  # any byte
                out[rng.randrange(len(out))] = rng.randrange(256)
            case 2:  # an interesting byte
                out[rng.randrange(len(out))] = rng.choice(_INTERESTING)
            case 3:  # insert bytes
                i = rng.randint(0, len(out))
                out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            case 4:  # delete bytes
                i = rng.randrange(len(out))
                del out[i : i + rng.randint(1, 4)]
            case 5:  # duplicate a slice
                i = rng.randrange(len(out))
                j = rng.randint(i, min(len(out), i + 16))
                out[j:j] = out[i:j]
            case 6:  # splice with another seed
                other = rng.choice(seeds)
                out = out[: rng.randint(0, len(out))] + bytearray(
                    other[rng.randint(0, len(other)) :]
                )
            case 7:  # truncate
                del out[rng.randint(0, len(out) - 1) :]
            case _:  # junk before or after
                junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
                out = bytearray(junk) + out if rng.random() < 0.5 else out + junk  # noqa: PLR2004
    if rng.random() < 0.5:  # noqa: PLR2004
        _fix_checksum(out, rng)
    return bytes(out[:MAX_INPUT])


def generate(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A random input: plain random bytes, or mutated valid frames."""
    roll = rng.random()
    if roll < _RANDOM_SHARE:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    base = rng.choice(seeds)
    if roll < _STACKED_SHARE:  # several valid frames back to back, then mutated
        base = b"".join(rng.choice(seeds) for _ in range(rng.randint(2, 4)))
    return mutate(base, rng, seeds)
