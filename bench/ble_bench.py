"""Part 3: round trips over the fake BLE bridge, and the CPU cost of decoding."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import time
from typing import Any

from balancer_tools.simulator import (
    VirtualBalancer,
    fake_connector,
    fake_device,
)
from balancer_tools.simulator.fake_ble import (
    DEFAULT_CHUNK_SIZE,
)
from custom_components.active_balancer.protocol import (
    BalancerClient,
    Bus,
    Variant,
    codec,
)
from custom_components.active_balancer.protocol.ble import BleLink
from custom_components.active_balancer.protocol.frames import FrameReassembler
from custom_components.active_balancer.protocol.model import Reading
from custom_components.active_balancer.protocol.registers import D2_TABLE, Block

from .common import BenchConfig, Traffic, median, mode, ms, snapshot

CELLS = 24
TEMPERATURES = (25.0, 26.0)
AIOBMSBLE_LIVE_BLOCK = Block(0x0000, 0x3E)
"""aiobmsble's DALY class reads 62 registers from 0 (its D2 "cmds")."""


async def ble_round_trips(config: BenchConfig, variant: Variant) -> dict[str, Any]:
    """Requests and notifications per steady-state poll over the fake bridge."""
    balancer = VirtualBalancer(CELLS, temperatures=TEMPERATURES, ble=True)
    connector = fake_connector(
        balancer, baudrate=config.baudrate, turnaround=config.turnaround
    )
    client = BalancerClient(
        Bus(BleLink(fake_device(), connector=connector)), variant=variant
    )
    rows: list[tuple[float, Traffic, int]] = []
    try:
        await client.connect()
        for _ in range(config.rounds):
            before = snapshot(client.bus.stats)
            notified = len(connector.clients[-1].notifications)
            start = time.perf_counter()
            await client.poll()
            elapsed = time.perf_counter() - start
            rows.append(
                (
                    elapsed,
                    Traffic.between(before, client.bus.stats),
                    len(connector.clients[-1].notifications) - notified,
                )
            )
    finally:
        await client.close()
        await connector.close()
    fewest = min(traffic.requests for _, traffic, _ in rows)
    steady = [row for row in rows if row[1].requests == fewest]
    return {
        "variant": variant.value,
        "cells": CELLS,
        "requests_per_poll": mode([traffic.requests for _, traffic, _ in steady]),
        "notifications_per_poll": mode([count for _, _, count in steady]),
        "bytes_in_per_poll": steady[0][1].bytes_in,
        "median_ms": ms(median([seconds for seconds, _, _ in steady])),
        "wire_limit_ms": ms(steady[0][1].wire_limit(config)),
        "connects": connector.connects,
    }


def _live_reply(balancer: VirtualBalancer, block: Block) -> tuple[codec.Request, bytes]:
    request = codec.read_request(Variant.D2, 1, block)
    reply = balancer.handle(request.frame)
    assert isinstance(reply, bytes)
    return request, reply


def decode_ours(request: codec.Request, chunks: list[bytes]) -> Reading:
    """What the bus and client do with one poll's notifications."""
    reassembler = FrameReassembler(Variant.D2)
    frames = [
        frame
        for chunk in chunks
        for frame in reassembler.feed(chunk)
        if request.matches(frame)
    ]
    regs = codec.registers_of(D2_TABLE.live.block, frames[0])
    return codec.decode_modbus_live(D2_TABLE, regs)


def _cpu_per_call(function: Any, iterations: int) -> float:
    for _ in range(min(iterations, 20)):
        function()
    start = time.process_time()
    for _ in range(iterations):
        function()
    return (time.process_time() - start) / iterations


async def decode_cost(config: BenchConfig, peer_python: Path | None) -> dict[str, Any]:
    """CPU per poll to decode a 24S D2 reading: ours against aiobmsble's DALY."""
    balancer = VirtualBalancer(CELLS, temperatures=TEMPERATURES, ble=True)
    request, reply = _live_reply(balancer, D2_TABLE.live.block)
    chunks = [
        reply[i : i + DEFAULT_CHUNK_SIZE]
        for i in range(0, len(reply), DEFAULT_CHUNK_SIZE)
    ]
    reading = decode_ours(request, chunks)
    assert reading.cell_count == CELLS
    iterations = config.decode_iterations
    ours_chunked = _cpu_per_call(lambda: decode_ours(request, chunks), iterations)
    ours_whole = _cpu_per_call(lambda: decode_ours(request, [reply]), iterations)
    result: dict[str, Any] = {
        "cells": CELLS,
        "reply_bytes": len(reply),
        "ours_us_20_byte_notifications": round(ours_chunked * 1e6, 2),
        "ours_us_one_notification": round(ours_whole * 1e6, 2),
        "notifications": len(chunks),
    }
    if peer_python is None:
        result["aiobmsble"] = {"skipped": "no .bench-venv (run scripts/bench)"}
        return result
    _, peer_reply = _live_reply(balancer, AIOBMSBLE_LIVE_BLOCK)
    proc = await asyncio.create_subprocess_exec(
        str(peer_python),
        str(Path(__file__).with_name("peers.py")),
        "aiobmsble",
        "--frame",
        peer_reply.hex(),
        "--iterations",
        str(iterations),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        msg = f"aiobmsble run failed: {stderr.decode(errors='replace')[-2000:]}"
        raise RuntimeError(msg)
    peer = json.loads(stdout)
    peer["reply_bytes"] = len(peer_reply)
    result["aiobmsble"] = peer
    result["ratio"] = round(peer["us_per_poll"] / (ours_whole * 1e6), 2)
    result["ratio_ours_chunked"] = round(peer["us_per_poll"] / (ours_chunked * 1e6), 2)
    return result


async def ble_part(config: BenchConfig, peer_python: Path | None) -> dict[str, Any]:
    """Part 3."""
    return {
        "round_trips": [
            await ble_round_trips(config, variant)
            for variant in (Variant.D2, Variant.A5)
        ],
        "decode": await decode_cost(config, peer_python),
    }
