"""Fuzzing of the frame reassembler and every decoder.

    python -m reliability.fuzz --inputs 1000000 --json
    python -m reliability.fuzz --engine atheris --inputs 1000000

Each input goes through :func:`run_one`:

* the :class:`FrameReassembler` of every variant, for replies (the client's
  side) and requests (the virtual balancer's side), fed in chunks whose size
  the input chooses; every frame it yields must have a valid checksum and an
  allowed first byte, and it may never hold more than its buffer limit;
* every reply frame found goes where the client would send it: each request
  of the client it answers (``Request.matches``) and that request's decoder
  (live values, compatibility blocks, settings, identity, write read-backs,
  each A5 command);
* the input is also read as raw register values and as A5 frames and given
  to every decoder directly, so that decoders see any value, not only the
  few that survive a checksum.

Only the package's own protocol errors (:class:`BalancerError`) may escape a
decoder; anything else is a crash, and a broken invariant is a crash too.

Inputs come from a seeded generator (random bytes, and valid frames of the
virtual balancer mutated: bit flips, byte changes, insertions, deletions,
splices, truncation, junk; often with the checksum repaired so the mutation
reaches the decoders) or, with ``--engine atheris``, from libFuzzer's
coverage-guided mutator.
"""

# The inputs are drawn with `random` on purpose: repeatable, not secret.
# ruff: noqa: S311

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
import importlib
import json
import os
from pathlib import Path
import random
import re
import sys
import time
import traceback
from typing import Any

from balancer_tools.simulator import VirtualBalancer
from custom_components.active_balancer.protocol import codec
from custom_components.active_balancer.protocol.crc import a5_checksum, append_crc
from custom_components.active_balancer.protocol.errors import BalancerError
from custom_components.active_balancer.protocol.frames import (
    A5_LENGTH,
    P81_REPLY_BASE,
    A5Frame,
    Frame,
    FrameReassembler,
    ModbusFrame,
)
from custom_components.active_balancer.protocol.model import Setting, Variant
from custom_components.active_balancer.protocol.registers import (
    A5_TABLE,
    MODBUS_TABLES,
    Block,
    ModbusTable,
)

from .mutate import MAX_INPUT, generate

"""Longest generated input, in bytes (a long reply is 255)."""
_MAX_BUFFER = 4096
"""The reassembler's buffer limit (frames._MAX_BUFFER)."""
_SAMPLES = 20


class InvariantBroken(AssertionError):
    """A reassembler or decoder broke one of its promises."""


# --- requests of the client and their decoders --------------------------------


def refusal(decoder: str, err: BalancerError) -> str:
    """Outcome key of a protocol error: decoder, error class, message shape."""
    message = re.sub(r"\[[^]]*\]", "[...]", str(err).split(":", 1)[0])
    shape = re.sub(r"\d+", "N", message)[:60]
    return f"{decoder}:{type(err).__name__}:{shape}"


Decoder = Callable[[Frame], object]
Named = tuple[codec.Request, str, Decoder]
"""A request of the client, the name of its decoder, and the decoder."""


def _words(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def _valid_balancer() -> VirtualBalancer:
    return VirtualBalancer(16, variants=tuple(Variant))


_REFERENCE = _valid_balancer()


@cache
def _reference_registers(variant: Variant, block: Block) -> dict[int, int]:
    values = _REFERENCE.registers(variant, block.start, block.count)
    return {block.start + i: value for i, value in enumerate(values)}


def _modbus_decoders(table: ModbusTable, board: int) -> list[Named]:
    """Every request the client sends on *table*, with what decodes its answer."""
    variant = table.variant
    name = variant.value
    pairs: list[Named] = []

    def live(block: Block, others: Sequence[Block]) -> Decoder:
        def decode(frame: Frame) -> object:
            regs = codec.registers_of(block, frame)
            for other in others:
                regs.update(_reference_registers(variant, other))
            return codec.decode_modbus_live(table, regs)

        return decode

    pairs.append(
        (
            codec.read_request(variant, board, table.live.block),
            f"{name}_live",
            live(table.live.block, ()),
        )
    )
    if variant is Variant.D2:
        first, second = codec_compat_blocks()
        pairs.append(
            (
                codec.read_request(variant, board, first),
                f"{name}_compat_live",
                live(first, (second,)),
            )
        )
        pairs.append(
            (
                codec.read_request(variant, board, second),
                f"{name}_compat_tail",
                live(second, (first,)),
            )
        )

    for block in table.settings_blocks:
        others = [b for b in table.settings_blocks if b != block]

        def settings(
            frame: Frame, block: Block = block, others: list[Block] = others
        ) -> object:
            regs = codec.registers_of(block, frame)
            for other in others:
                regs.update(_reference_registers(variant, other))
            return codec.decode_modbus_settings(table, regs)

        pairs.append(
            (codec.read_request(variant, board, block), f"{name}_settings", settings)
        )

    def info(frame: Frame) -> object:
        regs = codec.registers_of(table.info_block, frame)
        return codec.decode_modbus_info(table, board, regs)

    pairs.append(
        (codec.read_request(variant, board, table.info_block), f"{name}_info", info)
    )

    for setting, register in table.settings.items():
        block = Block(register.register, 1)

        def read_back(
            frame: Frame, setting: Setting = setting, block: Block = block
        ) -> object:
            return codec.setting_register_value(
                table, setting, codec.registers_of(block, frame)
            )

        pairs.append(
            (codec.read_request(variant, board, block), f"{name}_read_back", read_back)
        )
    return pairs


def codec_compat_blocks() -> tuple[Block, Block]:
    """The two reads that replace D2's long live read on some firmware."""
    from custom_components.active_balancer.protocol.client import (  # noqa: PLC0415
        D2_COMPAT_BLOCKS,
    )

    first, second = D2_COMPAT_BLOCKS
    return first, second


_MODBUS: dict[tuple[Variant, int], list[Named]] = {}


def modbus_pairs(variant: Variant, board: int) -> list[Named]:
    """Cached :func:`_modbus_decoders`."""
    key = (variant, board)
    if key not in _MODBUS:
        _MODBUS[key] = _modbus_decoders(MODBUS_TABLES[variant], board)
    return _MODBUS[key]


def _reference_a5() -> dict[int, list[A5Frame]]:
    """Valid A5 replies of the reference balancer, by command."""
    replies: dict[int, list[A5Frame]] = {}
    table = A5_TABLE
    commands = (
        table.pack,
        table.counts,
        table.cells,
        table.temperatures,
        table.balancing,
        table.alarms,
        table.balance_settings,
        table.cell_thresholds,
        table.temperature_thresholds,
        table.software_version,
        table.hardware_version,
    )
    for command in commands:
        request = codec.a5_request(command, 0x40)
        answer = _REFERENCE.handle(request.frame)
        frames = [answer] if isinstance(answer, bytes) else list(answer or [])
        replies[command] = [
            A5Frame(address=f[1], command=f[2], data=f[4:12], raw=f) for f in frames
        ]
    return replies


_A5_REFERENCE = _reference_a5()


def decode_a5(replies: dict[int, list[A5Frame]], outcomes: Counter[str]) -> None:
    """Run every A5 decoder on *replies* (valid ones fill the gaps)."""
    table = A5_TABLE
    merged = {**_A5_REFERENCE, **{c: f for c, f in replies.items() if f}}

    def attempt(name: str, decode: Callable[[], object]) -> object:
        try:
            result = decode()
        except BalancerError as err:
            outcomes[refusal(name, err)] += 1
            return None
        outcomes[f"{name}:ok"] += 1
        return result

    counts = attempt("a5_counts", lambda: codec.decode_a5_counts(merged[table.counts]))
    cells, sensors = counts if isinstance(counts, tuple) else (16, 1)
    attempt("a5_live", lambda: codec.decode_a5_live(merged, cells, sensors))
    attempt("a5_settings", lambda: codec.decode_a5_settings(merged, cells))
    for command in (table.software_version, table.hardware_version):
        attempt("a5_version", partial(codec.decode_a5_version, merged[command]))


# --- one input ----------------------------------------------------------------


def _feed(reassembler: FrameReassembler, data: bytes, chunk: int) -> list[Frame]:
    frames: list[Frame] = []
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        frames.extend(reassembler.feed(piece))
        if reassembler.pending > _MAX_BUFFER + len(piece):
            msg = f"the reassembler holds {reassembler.pending} bytes"
            raise InvariantBroken(msg)
    for frame in frames:
        raw = frame.raw
        if raw[0] not in reassembler.addresses:
            msg = f"frame {raw.hex()} starts with a byte that was not allowed"
            raise InvariantBroken(msg)
        if isinstance(frame, A5Frame):
            ok = len(raw) == A5_LENGTH and a5_checksum(raw[:-1]) == raw[-1]
        else:
            ok = append_crc(raw[:-2]) == raw
        if not ok:
            msg = f"frame {raw.hex()} has a wrong checksum"
            raise InvariantBroken(msg)
    return frames


def _decode_reply(
    frame: Frame, outcomes: Counter[str], a5: dict[int, list[A5Frame]]
) -> None:
    if isinstance(frame, A5Frame):
        a5.setdefault(frame.command, []).append(frame)
        return
    if frame.address >= P81_REPLY_BASE and frame.address < P81_REPLY_BASE + 16:
        variant, board = Variant.P81, frame.address - P81_REPLY_BASE
        if board == 0:
            return
    else:
        variant, board = Variant.D2, 1
    for request, name, decode in modbus_pairs(variant, board):
        if not request.matches(frame):
            continue
        outcomes["matched"] += 1
        try:
            decode(frame)
        except BalancerError as err:
            outcomes[refusal(name, err)] += 1
        else:
            outcomes[f"{name}:ok"] += 1


def _direct(data: bytes, outcomes: Counter[str]) -> None:
    """Give *data* to every decoder as raw values (no checksum in the way)."""
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]
    if not words:
        words = [0]
    for table in MODBUS_TABLES.values():

        def regs(block: Block, table: ModbusTable = table) -> dict[int, int]:
            return {block.start + i: words[i % len(words)] for i in range(block.count)}

        for name, decode in (
            ("live", lambda t=table: codec.decode_modbus_live(t, regs(t.live.block))),
            (
                "settings",
                lambda t=table: codec.decode_modbus_settings(
                    t, {k: v for b in t.settings_blocks for k, v in regs(b).items()}
                ),
            ),
            (
                "info",
                lambda t=table: codec.decode_modbus_info(t, 1, regs(t.info_block)),
            ),
        ):
            try:
                decode()
            except BalancerError as err:
                outcomes[refusal(f"direct_{name}", err)] += 1
            else:
                outcomes[f"direct_{name}:ok"] += 1
        for setting, register in table.settings.items():
            try:
                codec.setting_register_value(
                    table, setting, {register.register: words[0]}
                )
            except BalancerError as err:  # pragma: no cover - none raise today
                outcomes[refusal("direct_value", err)] += 1
    frame = ModbusFrame(
        address=data[0] if data else 0,
        function=data[1] if len(data) > 1 else 0,
        body=data[2:],
        raw=data,
    )
    for table in MODBUS_TABLES.values():
        for block in (table.live.block, table.info_block, *table.settings_blocks):
            try:
                codec.registers_of(block, frame)
            except BalancerError as err:
                outcomes[refusal("direct_registers", err)] += 1
            else:
                outcomes["direct_registers:ok"] += 1
    # A5: the input as 8-byte data fields of frames, numbered by the input.
    pieces = [data[i : i + 8].ljust(8, b"\x00") for i in range(0, max(len(data), 1), 8)]
    replies: dict[int, list[A5Frame]] = {}
    for index, command in enumerate(sorted(_A5_REFERENCE)):
        chosen = [pieces[(index + n) % len(pieces)] for n in range(1 + index % 3)]
        replies[command] = [
            A5Frame(address=1, command=command, data=piece, raw=b"") for piece in chosen
        ]
    decode_a5(replies, outcomes)


def run_one(data: bytes, outcomes: Counter[str] | None = None) -> Counter[str]:
    """Fuzz every target with *data*; raises on a crash or a broken invariant."""
    outcomes = Counter() if outcomes is None else outcomes
    chunk = 1 + (data[0] % 40) if data else 1
    if chunk > 32:  # noqa: PLR2004 - sometimes everything at once
        chunk = max(1, len(data))
    a5: dict[int, list[A5Frame]] = {}
    for variant in Variant:
        for replies in (True, False):
            frames = _feed(FrameReassembler(variant, replies=replies), data, chunk)
            if frames:
                side = "rx" if replies else "tx"
                outcomes[f"frames_{variant.value}_{side}"] += len(frames)
            if replies:
                for frame in frames:
                    _decode_reply(frame, outcomes, a5)
    if a5:
        decode_a5(a5, outcomes)
    _direct(data, outcomes)
    outcomes["inputs"] += 1
    return outcomes


# --- generating inputs --------------------------------------------------------


def seed_frames() -> list[bytes]:
    """Valid replies (and requests) of every kind, the mutator's raw material."""
    seeds: list[bytes] = []
    for cells in (1, 3, 16, 24, 32, 48):
        balancer = VirtualBalancer(
            cells,
            variants=tuple(Variant),
            temperatures=(25.0, -5.0, 60.0)[: 1 + cells % 3],
        )
        for variant in (Variant.D2, Variant.P81):
            table = MODBUS_TABLES[variant]
            if cells > table.live.max_cells:
                continue
            blocks = [table.live.block, *table.settings_blocks, table.info_block]
            if variant is Variant.D2:
                blocks.extend(codec_compat_blocks())
            blocks.extend(Block(r.register, 1) for r in table.settings.values())
            for block in blocks:
                request = codec.read_request(variant, 1, block)
                seeds.append(request.frame)
                answer = balancer.handle(request.frame)
                if isinstance(answer, bytes):
                    seeds.append(answer)
            for register in table.writable().values():
                request = codec.write_request(variant, 1, register, 1)
                answer = balancer.handle(request.frame)
                if isinstance(answer, bytes):
                    seeds.append(answer)
        for command in _A5_REFERENCE:
            request = codec.a5_request(command, 0x40)
            seeds.append(request.frame)
            answer = balancer.handle(request.frame)
            if isinstance(answer, bytes):
                seeds.append(answer)
            elif answer:
                seeds.append(b"".join(answer))
    # A Modbus exception reply of each variant.
    seeds.append(append_crc(bytes((0xD2, 0x83, 0x02))))
    seeds.append(append_crc(bytes((0x51, 0x83, 0x03))))
    return seeds


# --- running ------------------------------------------------------------------


@dataclass(slots=True)
class FuzzReport:
    """What a fuzz run saw."""

    inputs: int = 0
    crashes: int = 0
    invariant_failures: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, str]] = field(default_factory=list)
    firsts: dict[str, str] = field(default_factory=dict)
    """Outcome -> the first input (hex) that led to it: the edge cases found."""
    seconds: float = 0.0

    def add(self, other: FuzzReport) -> None:
        """Merge *other* into this report."""
        self.inputs += other.inputs
        self.crashes += other.crashes
        self.invariant_failures += other.invariant_failures
        self.outcomes.update(other.outcomes)
        self.samples.extend(other.samples[: _SAMPLES - len(self.samples)])
        for key, data in other.firsts.items():
            self.firsts.setdefault(key, data)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "inputs": self.inputs,
            "crashes": self.crashes,
            "invariant_failures": self.invariant_failures,
            "seconds": round(self.seconds, 1),
            "outcomes": dict(sorted(self.outcomes.items())),
            "samples": self.samples,
        }


def check_input(data: bytes, report: FuzzReport) -> None:
    """Run one input and file what happened in *report*."""
    known = len(report.outcomes)
    try:
        run_one(data, report.outcomes)
    except InvariantBroken as err:
        report.invariant_failures += 1
        _sample(report, data, err)
    except Exception as err:  # every other exception is a crash
        report.crashes += 1
        _sample(report, data, err)
    if len(report.outcomes) > known:
        for key in report.outcomes:
            report.firsts.setdefault(key, data.hex())
    report.inputs += 1


def _sample(report: FuzzReport, data: bytes, err: BaseException) -> None:
    if len(report.samples) < _SAMPLES:
        report.samples.append(
            {
                "input": data.hex(),
                "error": f"{type(err).__name__}: {err}",
                "where": "".join(traceback.format_tb(err.__traceback__)[-2:]),
            }
        )


def fuzz_random(inputs: int, seed: int) -> FuzzReport:
    """Run *inputs* generated inputs from *seed*."""
    started = time.monotonic()
    rng = random.Random(seed)
    seeds = seed_frames()
    report = FuzzReport()
    for data in seeds:
        check_input(data, report)
    while report.inputs < inputs:
        check_input(generate(rng, seeds), report)
    report.seconds = time.monotonic() - started
    return report


def _job(args: tuple[int, int]) -> FuzzReport:
    return fuzz_random(*args)


def fuzz_parallel(inputs: int, seed: int, jobs: int) -> FuzzReport:
    """Share *inputs* out over *jobs* processes (each with its own seed)."""
    started = time.monotonic()
    share, rest = divmod(inputs, jobs)
    work = [(share + (1 if i < rest else 0), seed * 1000 + i) for i in range(jobs)]
    total = FuzzReport()
    if jobs == 1:
        total.add(fuzz_random(*work[0]))
    else:
        with ProcessPoolExecutor(jobs) as pool:
            for part in pool.map(_job, work):
                total.add(part)
    total.seconds = time.monotonic() - started
    return total


def fuzz_atheris(inputs: int, corpus: Path | None) -> int:  # pragma: no cover
    """Run libFuzzer's coverage-guided engine for *inputs* runs (never returns)."""
    atheris: Any = importlib.import_module("atheris")
    atheris.instrument_all()

    def one_input(data: bytes) -> None:
        run_one(data)  # protocol errors are caught inside; the rest is a crash

    argv = [
        sys.argv[0],
        f"-runs={inputs}",
        f"-max_len={MAX_INPUT}",
        "-print_final_stats=1",
    ]
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(seed_frames()):
            (corpus / f"seed-{index:04d}").write_bytes(data)
        argv.append(str(corpus))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


def write_corpus(path: Path, report: FuzzReport, seed: int) -> None:
    """Save the first input of every outcome, shortest first within a kind."""
    lines = [
        "# Edge cases found by `scripts/fuzz --save-corpus` (engine random, "
        f"seed {seed}, {report.inputs} inputs):",
        "# the first input that led to each outcome. `outcome: input as hex`.",
    ]
    lines.extend(f"{key}: {data}" for key, data in sorted(report.firsts.items()))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def iter_corpus(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, input) of every entry of a corpus file (``name: hex`` lines)."""
    for raw_line in path.read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, text = line.rpartition(": ")
        yield name.strip(), bytes.fromhex(text.split("#", 1)[0].strip())


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/fuzz``."""
    parser = argparse.ArgumentParser(
        prog="fuzz", description="Fuzz the frame reassembler and every decoder."
    )
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--jobs", type=int, default=min(4, os.cpu_count() or 1), help="processes"
    )
    parser.add_argument(
        "--engine",
        choices=("random", "atheris"),
        default="random",
        help="seeded generator and mutator, or libFuzzer through atheris",
    )
    parser.add_argument(
        "--corpus", type=Path, default=None, help="atheris corpus directory"
    )
    parser.add_argument(
        "--save-corpus",
        type=Path,
        default=None,
        help="write the first input of every outcome to this file",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzer; exit 0 when nothing crashed."""
    args = build_parser().parse_args(argv)
    if args.engine == "atheris":
        return fuzz_atheris(args.inputs, args.corpus)
    report = fuzz_parallel(args.inputs, args.seed, max(1, args.jobs))
    if args.save_corpus is not None:
        write_corpus(args.save_corpus, report, args.seed)
    result = report.as_dict() | {
        "engine": "random",
        "seed": args.seed,
        "jobs": args.jobs,
        "passed": report.crashes == 0 and report.invariant_failures == 0,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"fuzz: {report.inputs} inputs in {report.seconds:.1f} s: "
            f"{report.crashes} crashes, {report.invariant_failures} broken "
            f"invariants; {report.outcomes['matched']} frames reached a decoder"
        )
        for sample in report.samples[:5]:
            print(f"  {sample['error']}\n    input {sample['input']}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
