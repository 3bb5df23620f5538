"""Parts 1, 2 and 5a: polls on a paced serial line, against dalybms, and a bus.

Every line here is a pseudo-terminal served by the virtual balancer with
baud-rate pacing on (each request and reply takes its wire time) and a fixed
turnaround before each reply; the client opens it with :class:`SerialLink`
like a USB serial adapter.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import fcntl
import json
import os
from pathlib import Path
import time
from typing import Any

from balancer_tools.simulator import (
    VirtualBalancer,
    serve_pty,
)
from custom_components.active_balancer.protocol import BalancerClient, Bus, Variant
from custom_components.active_balancer.protocol.frames import A5_LENGTH
from custom_components.active_balancer.protocol.plan import (
    OPTIONAL_LIVE_PARTS,
    Cost,
    best_plan,
    live_registers,
)
from custom_components.active_balancer.protocol.registers import (
    A5_TABLE,
    MODBUS_TABLES,
)
from custom_components.active_balancer.protocol.serial import SerialLink

from .common import BenchConfig, Traffic, median, mode, ms, snapshot

TEMPERATURES = (25.0, 26.0)
"""Two fitted temperature sensors, as on the captured balancer's connector."""

PEER_CELLS = 16
PORT_RELEASE_SECONDS = 5.0


@dataclass(slots=True)
class PollRecord:
    """One poll: how long it took and what it sent."""

    seconds: float
    traffic: Traffic


def summarize(records: list[PollRecord], config: BenchConfig) -> dict[str, Any]:
    """Median steady-state poll against the wire limit, and the counts.

    Steady state: the polls that only read live values (the fewest
    requests); the others also re-read the settings (every N polls).
    """
    fewest = min(record.traffic.requests for record in records)
    steady = [record for record in records if record.traffic.requests == fewest]
    other = [record for record in records if record.traffic.requests != fewest]
    seconds = median([record.seconds for record in steady])
    limits = [record.traffic.wire_limit(config) for record in steady]
    ratios = [
        record.seconds / limit for record, limit in zip(steady, limits, strict=True)
    ]
    traffic = steady[len(steady) // 2].traffic
    return {
        "polls": len(records),
        "steady_polls": len(steady),
        "median_ms": ms(seconds),
        "wire_limit_ms": ms(median(limits)),
        "ratio": round(median(ratios), 3),
        "requests_per_poll": mode([r.traffic.requests for r in steady]),
        "bytes_out_per_poll": traffic.bytes_out,
        "bytes_in_per_poll": traffic.bytes_in,
        "settings_polls": len(other),
        "requests_settings_poll": max(
            (r.traffic.requests for r in other), default=None
        ),
    }


def best_plan_seconds(
    config: BenchConfig, variant: Variant, cells: int, sensors: int
) -> tuple[float, int]:
    """The true limit of one poll: the cheapest reads of the same information.

    Modbus: the fewest wire seconds (bytes x 10 / baud + the device's
    turnaround per read) covering the registers that carry information for
    this device (its cells and sensors, pack voltage, counts, balancing flag,
    alarms, balancing bits, balance current), any read length. A5: one
    command per value group, as few frames as the counts need. Returns
    (seconds, reads).
    """
    cost = Cost(config.byte_time, config.turnaround)
    if variant is Variant.A5:
        frames = [
            1,  # 0x90 pack
            -(-cells // A5_TABLE.cells_per_frame),  # 0x95
            -(-sensors // A5_TABLE.temperatures_per_frame) if sensors else 0,
            1,  # 0x97 balancing bits
            1,  # 0x98 alarms
        ]
        reads = [n for n in frames if n]
        seconds = sum(
            (1 + n) * A5_LENGTH * config.byte_time + config.turnaround for n in reads
        )
        return seconds, len(reads)
    table = MODBUS_TABLES[variant]
    needed = live_registers(table.live, cells, sensors, OPTIONAL_LIVE_PARTS)
    plan = best_plan(needed, cost)
    return cost.plan(plan), len(plan)


async def _polls(client: BalancerClient, rounds: int) -> list[PollRecord]:
    records = []
    for _ in range(rounds):
        before = snapshot(client.bus.stats)
        start = time.perf_counter()
        await client.poll()
        elapsed = time.perf_counter() - start
        records.append(PollRecord(elapsed, Traffic.between(before, client.bus.stats)))
    return records


def _balancer(cells: int, variant: Variant | None = None) -> VirtualBalancer:
    variants = (variant,) if variant else (Variant.D2, Variant.P81, Variant.A5)
    return VirtualBalancer(
        cells,
        variants=variants,
        temperatures=TEMPERATURES,
        link="rs485" if variant is Variant.P81 else "uart",
    )


async def serial_poll(
    config: BenchConfig, variant: Variant, cells: int
) -> dict[str, Any]:
    """Part 1: steady-state polls of one balancer against the wire limit."""
    balancer = _balancer(cells, variant)
    async with await serve_pty(
        balancer, baudrate=config.baudrate, turnaround=config.turnaround
    ) as server:
        client = BalancerClient(
            Bus(SerialLink(server.url, config.baudrate)), variant=variant
        )
        try:
            await client.connect()
            records = await _polls(client, config.rounds)
        finally:
            await client.close()
    summary = summarize(records, config)
    best, reads = best_plan_seconds(config, variant, cells, len(TEMPERATURES))
    summary["best_plan_ms"] = ms(best)
    summary["best_plan_reads"] = reads
    summary["vs_best_plan"] = round(summary["median_ms"] / 1000 / best, 3)
    summary["plan"] = [[block.start, block.count] for block in client.live_plan]
    return {"variant": variant.value, "cells": cells} | summary


async def serial_polls(config: BenchConfig) -> list[dict[str, Any]]:
    """Part 1 for every variant and cell count."""
    return [
        await serial_poll(config, variant, cells)
        for variant in (Variant.D2, Variant.P81, Variant.A5)
        for cells in config.cell_counts
    ]


# --- part 2: the peer library on the same line ---------------------------------


async def port_released(path: str) -> None:
    """Wait until no process holds the serial lock (flock) of *path*.

    ``SerialLink.close`` does not wait for serialx to close the port, so the
    lock of the previous client may still be held right after it returns.
    """
    deadline = time.monotonic() + PORT_RELEASE_SECONDS
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
    finally:
        os.close(fd)


def dalybms_wire_limit(config: BenchConfig, cells: int, sensors: int) -> float:
    """Wire limit of dalybms' three reads: cells (0x95), temperatures, balancing."""
    frames = (
        -(-cells // A5_TABLE.cells_per_frame)
        + -(-sensors // A5_TABLE.temperatures_per_frame)
        + 1
    )
    requests = 3
    return (requests + frames) * A5_LENGTH * config.byte_time + (
        requests * config.turnaround
    )


async def peer_comparison(config: BenchConfig, peer_python: Path) -> dict[str, Any]:
    """Part 2: dalybms and our client read one balancer on one paced line."""
    balancer = _balancer(PEER_CELLS)
    result: dict[str, Any] = {"cells": PEER_CELLS, "sensors": len(TEMPERATURES)}
    async with await serve_pty(
        balancer, baudrate=config.baudrate, turnaround=config.turnaround
    ) as server:
        assert server.path is not None
        proc = await asyncio.create_subprocess_exec(
            str(peer_python),
            str(Path(__file__).with_name("peers.py")),
            "dalybms",
            "--port",
            server.path,
            "--rounds",
            str(config.peer_rounds),
            "--all-rounds",
            str(config.peer_all_rounds),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await proc.communicate()
        if proc.returncode != 0:
            msg = f"dalybms run failed: {stderr.decode(errors='replace')[-2000:]}"
            raise RuntimeError(msg)
        peer = json.loads(stdout)
        peer["targeted"]["wire_limit_ms"] = ms(
            dalybms_wire_limit(config, PEER_CELLS, len(TEMPERATURES))
        )
        result["dalybms"] = peer
        ours: dict[str, Any] = {}
        for name, variant in (("a5", Variant.A5), ("auto", None)):
            await port_released(server.path)
            client = BalancerClient(
                Bus(SerialLink(server.path, config.baudrate)), variant=variant
            )
            try:
                await client.connect()
                records = await _polls(client, config.peer_rounds + 1)
            finally:
                await client.close()
            assert client.variant is not None
            ours[name] = {"variant": client.variant.value} | summarize(records, config)
        result["ours"] = ours
    targeted = result["dalybms"]["targeted"]["median_ms"]
    everything = result["dalybms"]["get_all"]["median_ms"]
    for summary in ours.values():
        summary["vs_dalybms_targeted"] = round(targeted / summary["median_ms"], 2)
        summary["vs_dalybms_get_all"] = round(everything / summary["median_ms"], 2)
    return result


# --- part 5a: a bus of p81 balancers ---------------------------------------------


async def bus_cycle(config: BenchConfig, size: int) -> dict[str, Any]:
    """Part 5a: *size* p81 balancers on one line, all polled once per cycle."""
    balancers = [
        VirtualBalancer(
            config.bus_cells,
            variants=(Variant.P81,),
            address=board,
            link="rs485",
            temperatures=TEMPERATURES,
        )
        for board in range(1, size + 1)
    ]
    async with await serve_pty(
        balancers, baudrate=config.baudrate, turnaround=config.turnaround
    ) as server:
        bus = Bus(SerialLink(server.url, config.baudrate))
        clients = [
            BalancerClient(bus, variant=Variant.P81, address=board)
            for board in range(1, size + 1)
        ]
        records: list[PollRecord] = []
        try:
            for client in clients:
                await client.connect()
            for _ in range(config.bus_rounds):
                before = snapshot(bus.stats)
                start = time.perf_counter()
                await asyncio.gather(*(client.poll() for client in clients))
                elapsed = time.perf_counter() - start
                records.append(PollRecord(elapsed, Traffic.between(before, bus.stats)))
        finally:
            await bus.close()
    summary = summarize(records, config)
    best, _ = best_plan_seconds(
        config, Variant.P81, config.bus_cells, len(TEMPERATURES)
    )
    return {
        "best_plan_ms": ms(best * size),
        "vs_best_plan": round(summary["median_ms"] / 1000 / (best * size), 3),
        "balancers": size,
        "cells": config.bus_cells,
        "cycle_ms": summary["median_ms"],
        "wire_limit_ms": summary["wire_limit_ms"],
        "ratio": summary["ratio"],
        "requests_per_cycle": summary["requests_per_poll"],
        "per_balancer_ms": round(summary["median_ms"] / size, 3),
        "cycles": summary["polls"],
    }


async def bus_cycles(config: BenchConfig) -> list[dict[str, Any]]:
    """Part 5a for every bus size."""
    return [await bus_cycle(config, size) for size in config.bus_sizes]
