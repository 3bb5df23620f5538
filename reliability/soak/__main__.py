"""``python -m reliability.soak`` (``scripts/soak``): the soak's command line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import json
import logging
import sys

from .config import LANES, SoakConfig
from .report import format_summary
from .run import run_soak


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        msg = f"a rate is between 0 and 1, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _lanes(text: str) -> tuple[str, ...]:
    lanes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [lane for lane in lanes if lane not in LANES]
    if unknown or not lanes:
        msg = f"lanes are a comma-separated subset of {','.join(LANES)}"
        raise argparse.ArgumentTypeError(msg)
    return lanes


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/soak``."""
    parser = argparse.ArgumentParser(
        prog="soak",
        description=(
            "Poll virtual balancers under random faults with concurrent writes "
            "and check the reliability targets (see RELIABILITY.md)."
        ),
    )
    parser.add_argument("--polls", type=int, default=2000, help="polls over all lanes")
    parser.add_argument(
        "--fault-rate", type=_rate, default=0.05, help="rate of every fault knob"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--lanes", type=_lanes, default=LANES, help=f"subset of {','.join(LANES)}"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument(
        "--verbose", action="store_true", help="log what goes wrong to stderr"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; exit 0 when every target is met."""
    args = build_parser().parse_args(argv)
    if args.polls < len(args.lanes):
        build_parser().error("--polls must be at least the number of lanes")
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    config = SoakConfig(
        polls=args.polls, fault_rate=args.fault_rate, seed=args.seed, lanes=args.lanes
    )
    report = asyncio.run(run_soak(config))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_summary(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
