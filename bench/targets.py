"""The benchmark's targets, judged against what a run measured."""

from __future__ import annotations

from typing import Any


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
