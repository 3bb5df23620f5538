"""The benchmark's command line: arguments in, the table (or ``--json``) out.

scripts/bench                 # everything, about 2 minutes
scripts/bench --json          # one JSON object on stdout
scripts/bench --smoke --json  # seconds: keeps every part working (CI)
scripts/bench --only serial,bus --rounds 5

The parts run in :mod:`bench.run`; :mod:`bench.render` draws the tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
from pathlib import Path
import sys
from typing import Any

from .common import SMOKE, BenchConfig
from .render import render
from .run import PARTS, PEER_PYTHON, peer_python, run_benchmark

__all__ = ["build_parser", "main", "render"]


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure polls, round trips, CPU and latency against "
        "the wire limit on the virtual balancer (see BENCHMARKS.md).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a run of seconds at 115200 baud (CI: counts, not timings)",
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: {','.join(PARTS)})",
    )
    parser.add_argument("--rounds", type=int, help="polls measured per configuration")
    parser.add_argument("--baud", type=int, help="line speed (default 9600)")
    parser.add_argument(
        "--turnaround", type=float, help="simulated device turnaround in s (0.010)"
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip dalybms and aiobmsble"
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=PEER_PYTHON,
        help="Python of the peers' virtualenv (default .bench-venv/bin/python)",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The run's configuration: the defaults (or the smoke run's) and the flags."""
    base = SMOKE if args.smoke else BenchConfig()
    changes: dict[str, Any] = {}
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if args.baud is not None:
        changes["baudrate"] = args.baud
    if args.turnaround is not None:
        changes["turnaround"] = args.turnaround
    if args.no_peers:
        changes["peers"] = False
    return BenchConfig.from_dict(base.as_dict() | changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"bench: unknown part(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    argv_shown = list(sys.argv[1:] if argv is None else argv)
    report = run_benchmark(
        config, parts, peer_python(config, args.peer_python), argv_shown
    )
    text = json.dumps(report, indent=2)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text if args.json else render(report))
    return 0
