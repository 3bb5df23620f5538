"""Run the benchmark and print its table (or ``--json``).

scripts/bench                 # everything, about 2 minutes
scripts/bench --json          # one JSON object on stdout
scripts/bench --smoke --json  # seconds: keeps every part working (CI)
scripts/bench --only serial,bus --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import datetime as dt
import json
import os
from pathlib import Path
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

from .ble_bench import ble_part
from .common import ROOT, SMOKE, BenchConfig, machine_info
from .serial_bench import bus_cycles, peer_comparison, serial_polls

PARTS = ("serial", "peers", "ble", "ha", "bus")
PEER_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
HA_TIMEOUT = 900


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


def _config(args: argparse.Namespace) -> BenchConfig:
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


def run_ha(config: BenchConfig) -> dict[str, Any]:
    """Parts 4, 5b and 6 in a pytest process of their own (the HA harness)."""
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as out:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("COV_")
        }
        env["BENCH_HA_CONFIG"] = json.dumps(config.as_dict())
        env["BENCH_HA_OUT"] = out
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(Path(__file__).with_name("ha_part.py")),
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            # pytest's log capture keeps every record: memory that is not ours.
            "-p",
            "no:logging",
            f"--timeout={HA_TIMEOUT}",
        ]
        proc = subprocess.run(  # noqa: S603 - our own interpreter and file
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=HA_TIMEOUT + 60,
        )
        if proc.returncode != 0:
            msg = f"the Home Assistant part failed:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
            raise RuntimeError(msg)
        return {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in Path(out).glob("*.json")
        }


async def run_async(
    config: BenchConfig, parts: Sequence[str], peer_python: Path | None
) -> dict[str, Any]:
    """Parts 1, 2, 3 and 5a (one event loop, virtual lines in-process)."""
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    for part in ("serial", "peers", "ble", "bus"):
        if part not in parts:
            continue
        start = time.perf_counter()
        if part == "serial":
            results[part] = await serial_polls(config)
        elif part == "peers":
            results[part] = (
                {"skipped": _peer_skip_reason(config)}
                if peer_python is None
                else await peer_comparison(config, peer_python)
            )
        elif part == "ble":
            results[part] = await ble_part(config, peer_python)
        else:
            results[part] = await bus_cycles(config)
        durations[part] = round(time.perf_counter() - start, 1)
    results["durations_s"] = durations
    return results


def _peer_skip_reason(config: BenchConfig) -> str:
    if not config.peers:
        return "peers not requested (--no-peers or --smoke)"
    return f"{PEER_PYTHON} missing: scripts/bench installs it (bench/requirements.txt)"


def _peer_python(config: BenchConfig, path: Path) -> Path | None:
    if not config.peers or not path.exists():
        return None
    return path


# --- targets -------------------------------------------------------------------


def evaluate_targets(
    results: dict[str, Any], *, timings: bool = True
) -> list[dict[str, Any]]:
    """Each target of the issue against what was measured.

    With ``timings=False`` (smoke runs) only counts are judged; timing targets
    are listed with ``met: None``.
    """
    targets: list[dict[str, Any]] = []

    def _target(
        name: str,
        value: float | None,
        limit: float,
        *,
        at_most: bool = True,
        timing: bool = True,
    ) -> dict[str, Any]:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        return {
            "target": name,
            "kind": "timing" if timing else "count",
            "measured": value,
            "limit": f"{'<=' if at_most else '>='} {limit:g}",
            "met": met if timings or not timing else None,
        }

    targets.extend(
        _target(
            f"serial poll / best plan, {row['variant']} {row['cells']}S",
            row["vs_best_plan"],
            1.1,
        )
        for row in results.get("serial", [])
    )
    for row in results.get("serial", []):
        limit = 1.3 if row["variant"] == "a5" else 1.15
        targets.append(
            _target(
                f"serial poll / wire limit, {row['variant']} {row['cells']}S",
                row["ratio"],
                limit,
            )
        )
        if row["variant"] in ("d2", "p81"):
            targets.append(
                _target(
                    f"requests per steady-state poll, {row['variant']} {row['cells']}S",
                    row["requests_per_poll"],
                    row["best_plan_reads"],
                    timing=False,
                )
            )
            rereads = row["settings_polls"]
            targets.append(
                _target(
                    f"polls that re-read settings, {row['variant']} {row['cells']}S "
                    f"(of {row['polls']})",
                    rereads,
                    -(-row["polls"] // 10),
                    timing=False,
                )
            )
    peers = results.get("peers", {})
    for name, ours in peers.get("ours", {}).items():
        label = "auto (D2)" if name == "auto" else "A5"
        targets.append(
            _target(
                f"faster than dalybms get_all(), ours {label}",
                ours["vs_dalybms_get_all"],
                3,
                at_most=False,
            )
        )
        targets.append(
            _target(
                f"faster than dalybms' three targeted reads, ours {label}",
                ours["vs_dalybms_targeted"],
                3,
                at_most=False,
            )
        )
    ha = results.get("ha", {})
    loop = ha.get("event_loop")
    if loop:
        targets.extend(
            _target(
                f"event loop CPU per poll, 24S, values {kind} (ms)",
                loop[kind]["cpu_ms_median"],
                2,
            )
            for kind in ("unchanged", "changed")
        )
        targets.append(
            _target(
                "state writes per poll, nothing changed",
                loop["unchanged"]["state_writes_per_poll"],
                0,
                timing=False,
            )
        )
    bus = results.get("bus", [])
    if bus:
        largest = max(bus, key=lambda row: row["balancers"])
        targets.append(
            _target(
                f"bus of {largest['balancers']}: cycle / sum of wire limits",
                largest["ratio"],
                1.2,
            )
        )
        targets.append(
            _target(
                f"bus of {largest['balancers']}: cycle / sum of best plans",
                largest["vs_best_plan"],
                1.1,
            )
        )
    return targets


# --- output ----------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The report as Markdown tables (also readable in a terminal)."""
    config = report["config"]
    results = report["results"]
    line = (
        f"{config['baudrate']} baud 8N1 ({1000 * 10 / config['baudrate']:.4f} ms "
        f"per byte), device turnaround {1000 * config['turnaround']:g} ms"
    )
    out: list[str] = []
    if "serial" in results:
        out += [
            f"### 1. Serial steady-state poll vs wire limit and best plan ({line})",
            "",
            _table(
                [
                    "Protocol",
                    "Cells",
                    "Poll (ms)",
                    "Wire limit (ms)",
                    "Ratio",
                    "Best plan (ms)",
                    "vs best plan",
                    "Requests/poll",
                    "Bytes out/in",
                    "Settings re-read (polls of N)",
                ],
                [
                    [
                        row["variant"].upper(),
                        row["cells"],
                        row["median_ms"],
                        row["wire_limit_ms"],
                        row["ratio"],
                        row["best_plan_ms"],
                        row["vs_best_plan"],
                        row["requests_per_poll"],
                        f"{row['bytes_out_per_poll']}/{row['bytes_in_per_poll']}",
                        f"{row['settings_polls']} of {row['polls']} "
                        f"(+{(row['requests_settings_poll'] or row['requests_per_poll']) - row['requests_per_poll']} requests)",
                    ]
                    for row in results["serial"]
                ],
            ),
            "",
        ]
    peers = results.get("peers")
    if peers is not None:
        out += [f"### 2. Against dalybms on the same line ({line})", ""]
        if "skipped" in peers:
            out += [f"Skipped: {peers['skipped']}", ""]
        else:
            daly = peers["dalybms"]
            targeted = daly["targeted"]
            everything = daly["get_all"]
            rows: list[list[Any]] = [
                [
                    f"dalybms {daly['version']} get_all()",
                    "everything it knows; failed: "
                    + (", ".join(everything["failed"]) or "nothing")
                    + f" (waited {everything['waited_ms']:g} ms)",
                    everything["median_ms"],
                    "-",
                ],
                [
                    "dalybms cells + temperatures + balancing",
                    f"{targeted['read']['cell_voltages']} cells, "
                    f"{targeted['read']['temperatures']} temperatures, balancing: "
                    f"{targeted['read']['balancing_status']}",
                    targeted["median_ms"],
                    round(targeted["median_ms"] / targeted["wire_limit_ms"], 3),
                ],
            ]
            for name, ours in peers["ours"].items():
                rows.append(
                    [
                        f"ours ({'auto: ' if name == 'auto' else ''}"
                        f"{ours['variant'].upper()}, {ours['requests_per_poll']} requests)",
                        f"{peers['cells']} cells, {peers['sensors']} temperatures, "
                        "balancing cells, pack, current, alarms",
                        ours["median_ms"],
                        ours["ratio"],
                    ]
                )
            out += [
                _table(["Reader", "Reads", "Time per read (ms)", "Wire ratio"], rows),
                "",
                _table(
                    ["Ours", "vs dalybms get_all()", "vs dalybms targeted reads"],
                    [
                        [
                            ours["variant"].upper(),
                            f"{ours['vs_dalybms_get_all']:g} x",
                            f"{ours['vs_dalybms_targeted']:g} x",
                        ]
                        for ours in peers["ours"].values()
                    ],
                ),
                "",
            ]
    ble = results.get("ble")
    if ble is not None:
        decode = ble["decode"]
        out += [
            "### 3. BLE round trips (fake bridge, 20-byte notifications) and decode CPU",
            "",
            _table(
                [
                    "Protocol",
                    "Cells",
                    "Requests/poll",
                    "Notifications/poll",
                    "Bytes in",
                    "Poll (ms)",
                    "Wire limit (ms)",
                ],
                [
                    [
                        row["variant"].upper(),
                        row["cells"],
                        row["requests_per_poll"],
                        row["notifications_per_poll"],
                        row["bytes_in_per_poll"],
                        row["median_ms"],
                        row["wire_limit_ms"],
                    ]
                    for row in ble["round_trips"]
                ],
            ),
            "",
        ]
        peer = decode.get("aiobmsble", {})
        decode_rows: list[list[Any]] = [
            [
                "ours, 20-byte notifications",
                decode["notifications"],
                decode["reply_bytes"],
                decode["ours_us_20_byte_notifications"],
            ],
            [
                "ours, one notification",
                1,
                decode["reply_bytes"],
                decode["ours_us_one_notification"],
            ],
        ]
        if "us_per_poll" in peer:
            decode_rows.append(
                [
                    f"aiobmsble {peer['version']} DALY, one notification",
                    1,
                    peer["reply_bytes"],
                    peer["us_per_poll"],
                ]
            )
        out += [
            _table(
                ["Decoder (24S D2 live reply)", "Notifications", "Bytes", "CPU (µs)"],
                decode_rows,
            ),
            "",
        ]
        if "us_per_poll" in peer:
            out += [
                f"aiobmsble / ours: {decode['ratio']:g} x (one notification each), "
                f"{decode['ratio_ours_chunked']:g} x with ours reassembling 20-byte "
                "notifications; aiobmsble reads 20-byte notifications: "
                f"{'yes' if peer['reads_20_byte_notifications'] else 'no'}.",
                "",
            ]
        else:
            out += [f"aiobmsble: {peer.get('skipped', 'not run')}", ""]
    ha = results.get("ha", {})
    loop = ha.get("event_loop")
    if loop:
        out += [
            f"### 4. Home Assistant event loop, {loop['cells']}S, "
            f"{loop['entities_enabled']} entities enabled ({loop['polls']} polls)",
            "",
            _table(
                [
                    "Poll",
                    "CPU median (ms)",
                    "CPU max (ms)",
                    "State writes/poll",
                    "State changes/poll",
                ],
                [
                    [
                        "nothing changed"
                        if kind == "unchanged"
                        else loop[kind]["what"],
                        loop[kind]["cpu_ms_median"],
                        loop[kind]["cpu_ms_max"],
                        loop[kind]["state_writes_per_poll"],
                        loop[kind]["state_changes_per_poll"],
                    ]
                    for kind in ("unchanged", "changed")
                ],
            ),
            "",
        ]
    bus = results.get("bus")
    if bus:
        out += [
            f"### 5a. p81 balancers on one RS485 bus ({line})",
            "",
            _table(
                [
                    "Balancers",
                    "Cycle (ms)",
                    "Sum of wire limits (ms)",
                    "Ratio",
                    "Sum of best plans (ms)",
                    "vs best plans",
                    "Requests/cycle",
                    "ms per balancer",
                ],
                [
                    [
                        row["balancers"],
                        row["cycle_ms"],
                        row["wire_limit_ms"],
                        row["ratio"],
                        row["best_plan_ms"],
                        row["vs_best_plan"],
                        row["requests_per_cycle"],
                        row["per_balancer_ms"],
                    ]
                    for row in bus
                ],
            ),
            "",
        ]
    scale = ha.get("ble_scale")
    if scale:
        out += [
            f"### 5b. {scale['devices']} BLE balancers in Home Assistant (fakes)",
            "",
            _table(
                [
                    "Devices",
                    "Entities/device",
                    "Memory/device (KiB)",
                    "CPU per polling round (ms)",
                    "CPU per device (µs)",
                    "Requests/round",
                ],
                [
                    [
                        scale["devices"],
                        scale["entities_per_device"],
                        scale["memory_kib_per_device"],
                        scale["round_cpu_ms"],
                        scale["cpu_us_per_device"],
                        scale["requests_per_round"],
                    ]
                ],
            ),
            "",
        ]
    write = ha.get("write")
    if write:
        out += [
            f"### 6. Write latency: number.set_value to confirmed state ({line})",
            "",
            _table(
                [
                    "Setting",
                    "Round trips",
                    "Bytes",
                    "Latency (ms)",
                    "Wire limit (ms)",
                    "Ratio",
                ],
                [
                    [
                        write["setting"],
                        write["round_trips"],
                        write["bytes_per_write"],
                        write["latency_ms"],
                        write["wire_limit_ms"],
                        write["ratio"],
                    ]
                ],
            ),
            "",
        ]
    targets = report["targets"]
    if targets:
        out += [
            "### Targets",
            "",
            _table(
                ["Target", "Measured", "Limit", "Met"],
                [
                    [
                        t["target"],
                        t["measured"],
                        t["limit"],
                        "-" if t["met"] is None else ("yes" if t["met"] else "**no**"),
                    ]
                    for t in targets
                ],
            ),
            "",
        ]
    machine = report["machine"]
    out += [
        f"Command: `{report['command']}` ({report['duration_s']:g} s, "
        f"{report['started']})",
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, Python "
        f"{machine['python']}, Home Assistant {machine['homeassistant']}, "
        f"{machine['platform']}; load average (1 min) {machine['load_before']:g} "
        f"before, {machine['load_after']:g} after",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    args = build_parser().parse_args(argv)
    config = _config(args)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"bench: unknown part(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    peer_python = _peer_python(config, args.peer_python)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    results = asyncio.run(run_async(config, parts, peer_python))
    if "ha" in parts:
        ha_start = time.perf_counter()
        results["ha"] = run_ha(config)
        results["durations_s"]["ha"] = round(time.perf_counter() - ha_start, 1)
    argv_shown = list(sys.argv[1:] if argv is None else argv)
    report = {
        "command": shlex.join(["scripts/bench", *argv_shown]),
        "started": started.isoformat(),
        "duration_s": round(time.perf_counter() - start, 1),
        "machine": machine_info()
        | {
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
        "config": config.as_dict(),
        "results": results,
        "targets": evaluate_targets(results, timings=not config.smoke),
    }
    text = json.dumps(report, indent=2)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text if args.json else render(report))
    return 0
