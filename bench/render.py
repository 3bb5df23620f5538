"""The benchmark's report as Markdown tables (also readable in a terminal).

:func:`render` puts the sections together; each section has a function of its
own that returns its lines (a heading, a table, a blank line), or none when
its part did not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; ``None`` shows as ``-``, floats without trailing zeros."""

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


def line_description(config: dict[str, Any]) -> str:
    """The simulated line: speed, byte time and device turnaround."""
    return (
        f"{config['baudrate']} baud 8N1 ({1000 * 10 / config['baudrate']:.4f} ms "
        f"per byte), device turnaround {1000 * config['turnaround']:g} ms"
    )


def serial_section(rows: Sequence[dict[str, Any]], line: str) -> list[str]:
    """Part 1: the serial steady-state poll against the wire limit."""
    return [
        f"### 1. Serial steady-state poll vs wire limit and best plan ({line})",
        "",
        table(
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
                for row in rows
            ],
        ),
        "",
    ]


def _peer_rows(peers: dict[str, Any]) -> list[list[Any]]:
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
    rows.extend(
        [
            f"ours ({'auto: ' if name == 'auto' else ''}"
            f"{ours['variant'].upper()}, {ours['requests_per_poll']} requests)",
            f"{peers['cells']} cells, {peers['sensors']} temperatures, "
            "balancing cells, pack, current, alarms",
            ours["median_ms"],
            ours["ratio"],
        ]
        for name, ours in peers["ours"].items()
    )
    return rows


def peers_section(peers: dict[str, Any], line: str) -> list[str]:
    """Part 2: against dalybms on the same line (or why it was skipped)."""
    out = [f"### 2. Against dalybms on the same line ({line})", ""]
    if "skipped" in peers:
        return [*out, f"Skipped: {peers['skipped']}", ""]
    return [
        *out,
        table(
            ["Reader", "Reads", "Time per read (ms)", "Wire ratio"], _peer_rows(peers)
        ),
        "",
        table(
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


def _decode_lines(decode: dict[str, Any]) -> list[str]:
    peer = decode.get("aiobmsble", {})
    rows: list[list[Any]] = [
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
        rows.append(
            [
                f"aiobmsble {peer['version']} DALY, one notification",
                1,
                peer["reply_bytes"],
                peer["us_per_poll"],
            ]
        )
    out = [
        table(
            ["Decoder (24S D2 live reply)", "Notifications", "Bytes", "CPU (µs)"],
            rows,
        ),
        "",
    ]
    if "us_per_poll" not in peer:
        return [*out, f"aiobmsble: {peer.get('skipped', 'not run')}", ""]
    return [
        *out,
        f"aiobmsble / ours: {decode['ratio']:g} x (one notification each), "
        f"{decode['ratio_ours_chunked']:g} x with ours reassembling 20-byte "
        "notifications; aiobmsble reads 20-byte notifications: "
        f"{'yes' if peer['reads_20_byte_notifications'] else 'no'}.",
        "",
    ]


def ble_section(ble: dict[str, Any]) -> list[str]:
    """Part 3: BLE round trips over the fake bridge, and decode CPU."""
    return [
        "### 3. BLE round trips (fake bridge, 20-byte notifications) and decode CPU",
        "",
        table(
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
        *_decode_lines(ble["decode"]),
    ]


def event_loop_section(loop: dict[str, Any]) -> list[str]:
    """Part 4: Home Assistant's event loop per poll."""
    return [
        f"### 4. Home Assistant event loop, {loop['cells']}S, "
        f"{loop['entities_enabled']} entities enabled ({loop['polls']} polls)",
        "",
        table(
            [
                "Poll",
                "CPU median (ms)",
                "CPU max (ms)",
                "State writes/poll",
                "State changes/poll",
            ],
            [
                [
                    "nothing changed" if kind == "unchanged" else loop[kind]["what"],
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


def bus_section(bus: Sequence[dict[str, Any]], line: str) -> list[str]:
    """Part 5a: p81 balancers sharing one RS485 bus."""
    return [
        f"### 5a. p81 balancers on one RS485 bus ({line})",
        "",
        table(
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


def ble_scale_section(scale: dict[str, Any]) -> list[str]:
    """Part 5b: many BLE balancers in Home Assistant."""
    return [
        f"### 5b. {scale['devices']} BLE balancers in Home Assistant (fakes)",
        "",
        table(
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


def write_section(write: dict[str, Any], line: str) -> list[str]:
    """Part 6: write latency from the action to the confirmed state."""
    return [
        f"### 6. Write latency: number.set_value to confirmed state ({line})",
        "",
        table(
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


def targets_section(targets: Sequence[dict[str, Any]]) -> list[str]:
    """Each target, what was measured and whether it was met."""
    return [
        "### Targets",
        "",
        table(
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


def run_lines(report: dict[str, Any]) -> list[str]:
    """The command, its duration and the machine it ran on."""
    machine = report["machine"]
    return [
        f"Command: `{report['command']}` ({report['duration_s']:g} s, "
        f"{report['started']})",
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, Python "
        f"{machine['python']}, Home Assistant {machine['homeassistant']}, "
        f"{machine['platform']}; load average (1 min) {machine['load_before']:g} "
        f"before, {machine['load_after']:g} after",
    ]


def render(report: dict[str, Any]) -> str:
    """The report as Markdown tables, in the order of BENCHMARKS.md."""
    results = report["results"]
    line = line_description(report["config"])
    ha = results.get("ha", {})
    out: list[str] = []
    if "serial" in results:
        out += serial_section(results["serial"], line)
    if results.get("peers") is not None:
        out += peers_section(results["peers"], line)
    if results.get("ble") is not None:
        out += ble_section(results["ble"])
    if ha.get("event_loop"):
        out += event_loop_section(ha["event_loop"])
    if results.get("bus"):
        out += bus_section(results["bus"], line)
    if ha.get("ble_scale"):
        out += ble_scale_section(ha["ble_scale"])
    if ha.get("write"):
        out += write_section(ha["write"], line)
    if report["targets"]:
        out += targets_section(report["targets"])
    out += run_lines(report)
    return "\n".join(out)
