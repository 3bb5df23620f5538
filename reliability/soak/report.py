"""The soak's report: totals over the lanes, the targets and the verdict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .config import MEMORY_LIMIT, RECOVERY_LIMIT, LaneStats, ProcessStats, SoakConfig


def lanes_report(stats: Sequence[LaneStats], process: ProcessStats) -> dict[str, Any]:
    """Lanes and their process as written to ``SOAK_REPORT``."""
    return {
        "lanes": [lane.as_dict() for lane in stats],
        "processes": [process.as_dict()],
    }


def failed_targets(report: Mapping[str, Any]) -> dict[str, Any]:
    """The targets a report misses (empty when it passed)."""
    return {name: t for name, t in report["targets"].items() if not t["ok"]}


SUMMED = (
    "polls",
    "failed_polls",
    "unhandled_exceptions",
    "writes_requested",
    "writes_confirmed",
    "writes_reported_failed",
    "writes_refused",
    "writes_silently_lost",
    "writes_confirmed_without_device_record",
    "writes_overwritten_later",
    "writes_skipped_unavailable",
    "clean_writes",
    "clean_write_failures",
    "concurrent_write_pairs",
    "device_writes",
    "device_writes_outside_allow_list",
    "device_writes_unrequested",
    "device_rule_violations",
    "stale_replies_accepted",
    "unknown_replies_accepted",
    "recoveries",
    "recovery_failures",
    "clean_poll_failures",
)
MAXED = (
    "longest_unavailable_streak",
    "longest_unavailable_seconds",
    "recovery_polls_max",
    "recovery_seconds_max",
)


def summarise(
    config: SoakConfig,
    lanes: Sequence[Mapping[str, Any]],
    processes: Sequence[Mapping[str, Any]],
    *,
    seconds: float,
    errors: Sequence[str] = (),
) -> dict[str, Any]:
    """Totals, targets and the verdict of a soak run."""
    totals: dict[str, Any] = {
        name: sum(lane[name] for lane in lanes) for name in SUMMED
    }
    for name in MAXED:
        totals[name] = max((lane[name] for lane in lanes), default=0)
    totals["unhandled_exceptions"] += sum(
        p["loop_errors"] + p["logged_exceptions"] for p in processes
    )
    totals["leaked_tasks"] = sum(p["leaked_tasks"] for p in processes)
    totals["leaked_fds"] = sum(p["leaked_fds"] for p in processes)
    totals["memory_growth_max"] = max(
        (p["traced_memory_growth"] for p in processes), default=0
    )
    faults: Counter[str] = Counter()
    for lane in lanes:
        faults.update(lane["faults_injected"])
    totals["faults_injected"] = dict(sorted(faults.items()))

    def target(value: float, limit: float, *, below: bool = False) -> dict[str, Any]:
        ok = value < limit if below else value <= limit
        return {"value": value, "limit": limit, "ok": ok}

    targets = {
        "unhandled_exceptions": target(totals["unhandled_exceptions"], 0),
        "writes_silently_lost": target(
            totals["writes_silently_lost"] + totals["writes_overwritten_later"], 0
        ),
        "device_writes_outside_allow_list": target(
            totals["device_writes_outside_allow_list"], 0
        ),
        "device_writes_unrequested": target(totals["device_writes_unrequested"], 0),
        "recovery_failures": target(totals["recovery_failures"], 0),
        "recovery_seconds_max": target(
            totals["recovery_seconds_max"], RECOVERY_LIMIT, below=True
        ),
        "memory_growth_bytes": target(
            totals["memory_growth_max"], MEMORY_LIMIT, below=True
        ),
        "leaked_tasks": target(totals["leaked_tasks"], 0),
        "leaked_fds": target(totals["leaked_fds"], 0),
        "stale_replies_accepted": target(
            totals["stale_replies_accepted"] + totals["unknown_replies_accepted"], 0
        ),
        "clean_failures": target(
            totals["clean_write_failures"] + totals["clean_poll_failures"], 0
        ),
        "device_rule_violations": target(totals["device_rule_violations"], 0),
    }
    return {
        "config": {
            "polls": config.polls,
            "fault_rate": config.fault_rate,
            "seed": config.seed,
            "lanes": list(config.lanes),
            "base_timeout": config.base_timeout,
            "settle": config.settle,
            "late_window": config.late_window,
            "delay_range": [config.min_delay, config.max_delay],
            "timeout_factor": config.timeout_factor,
            "write_rate": config.write_rate,
            "pair_rate": config.pair_rate,
            "recovery_every": config.recovery_every,
        },
        "seconds": round(seconds, 2),
        "totals": totals,
        "targets": targets,
        "errors": list(errors),
        "passed": not errors and all(t["ok"] for t in targets.values()),
        "lanes": list(lanes),
        "processes": list(processes),
    }


def format_summary(report: Mapping[str, Any]) -> str:
    """The report as a few readable lines."""
    totals = report["totals"]
    lines = [
        f"soak: {totals['polls']} polls in {report['seconds']} s, "
        f"{totals['failed_polls']} failed; longest unavailable streak "
        f"{totals['longest_unavailable_streak']} polls",
        f"writes: {totals['writes_requested']} requested, "
        f"{totals['writes_confirmed']} confirmed, "
        f"{totals['writes_reported_failed']} reported failed, "
        f"{totals['writes_silently_lost']} silently lost",
    ]
    for name, target in report["targets"].items():
        mark = "ok  " if target["ok"] else "FAIL"
        lines.append(f"  {mark} {name}: {target['value']} (limit {target['limit']})")
    lines.extend(f"  error: {error}" for error in report["errors"] if error)
    lines.append("soak: PASSED" if report["passed"] else "soak: FAILED")
    return "\n".join(lines)
