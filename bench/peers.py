"""The peer libraries' side of the benchmark; runs in .bench-venv only.

``dalybms`` (python-daly-bms) and ``aiobmsble`` pin other versions of pyserial
and bleak than the integration's test harness, so they live in their own
virtualenv and this script is started there by the benchmark. It imports
nothing from the integration; it prints one JSON object on stdout.

    .bench-venv/bin/python bench/peers.py dalybms --port /dev/pts/5
    .bench-venv/bin/python bench/peers.py aiobmsble --frame d203...
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
import importlib
from importlib.metadata import version
import json
import logging
import statistics
import time
from typing import Any

BLE_CHUNK = 20
"""Notification payload with the default ATT MTU, as the HLK-B40 bridge sends."""


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _timed(
    name: str, function: Callable[[], Any], spent: dict[str, float]
) -> Callable[[], Any]:
    def wrapper() -> Any:
        start = time.perf_counter()
        try:
            return function()
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def run_dalybms(port: str, rounds: int, all_rounds: int) -> dict[str, Any]:
    """Read the balancer on *port* with dalybms, the way its README does."""
    daly_bms = importlib.import_module("dalybms")

    logging.disable(logging.CRITICAL)  # it logs every failed command as an error
    bms = daly_bms.DalyBMS(request_retries=3, address=4)  # 4: RS485/UART host address
    start = time.perf_counter()
    bms.connect(port)  # opens the port at 9600 8N1 and reads 0x94 (status)
    connect = time.perf_counter() - start
    targeted: list[float] = []
    read: dict[str, Any] = {}
    for _ in range(rounds):
        start = time.perf_counter()
        cells = bms.get_cell_voltages()
        temperatures = bms.get_temperatures()
        balancing = bms.get_balancing_status()
        targeted.append(time.perf_counter() - start)
        read = {
            "cell_voltages": len(cells) if cells else 0,
            "temperatures": len(temperatures) if temperatures else 0,
            "balancing_status": balancing,
        }
    methods = [
        "get_soc",
        "get_cell_voltage_range",
        "get_temperature_range",
        "get_mosfet_status",
        "get_status",
        "get_cell_voltages",
        "get_temperatures",
        "get_balancing_status",
        "get_errors",
    ]
    totals: list[float] = []
    calls: dict[str, list[float]] = {name: [] for name in methods}
    failed: list[str] = []
    for _ in range(all_rounds):
        spent: dict[str, float] = {}
        for name in methods:
            setattr(
                bms, name, _timed(name, getattr(type(bms), name).__get__(bms), spent)
            )
        start = time.perf_counter()
        data = bms.get_all()
        totals.append(time.perf_counter() - start)
        for name in methods:
            calls[name].append(spent.get(name, 0.0))
        failed = sorted(key for key, value in data.items() if value is False)
    bms.disconnect()
    waited = [
        sum(calls[f"get_{key}"][i] for key in failed if f"get_{key}" in calls)
        for i in range(all_rounds)
    ]
    return {
        "library": "dalybms",
        "version": version("dalybms"),
        "connect_ms": _ms(connect),
        "targeted": {
            "what": "get_cell_voltages + get_temperatures + get_balancing_status",
            "median_ms": _ms(statistics.median(targeted)),
            "rounds": rounds,
            "read": read,
        },
        "get_all": {
            "median_ms": _ms(statistics.median(totals)),
            "rounds": all_rounds,
            "calls_ms": {
                name: _ms(statistics.median(values)) for name, values in calls.items()
            },
            "failed": failed,
            "waited_ms": _ms(statistics.median(waited)) if waited else 0.0,
        },
    }


def run_aiobmsble(frame_hex: str, iterations: int) -> dict[str, Any]:
    """CPU time of aiobmsble's DALY class turning the D2 live reply into values."""
    daly_bms = importlib.import_module("aiobmsble.bms.daly_bms")
    bleak_device = importlib.import_module("bleak.backends.device")

    frame = bytes.fromhex(frame_hex)
    device = bleak_device.BLEDevice(
        "DA:17:BA:1A:0C:E5",
        "DL-DA17BA1A0CE5",
        {"path": "/org/bluez/hci0/dev_DA_17_BA_1A_0C_E5", "props": {}},
    )
    bms = daly_bms.BMS(device)  # creates a BleakClient object; nothing connects
    bms._mos_avail = False  # the balancer has no MOS sensor: one request a poll

    notifications = [frame]

    async def await_msg(*_args: Any, **_kwargs: Any) -> None:
        for chunk in notifications:
            bms._notification_handler(None, bytearray(chunk))

    bms._await_msg = await_msg

    async def measure() -> dict[str, Any]:
        sample = await bms._async_update()
        for _ in range(20):  # warm up
            await bms._async_update()
        start = time.process_time()
        for _ in range(iterations):
            await bms._async_update()
        per_poll = (time.process_time() - start) / iterations
        # The balancer's BLE bridge sends 20-byte notifications: can it read them?
        bms._msg = b""
        notifications[:] = [
            frame[i : i + BLE_CHUNK] for i in range(0, len(frame), BLE_CHUNK)
        ]
        try:
            await bms._async_update()
            chunked = True
        except (ValueError, IndexError, KeyError):
            chunked = False
        return {
            "library": "aiobmsble",
            "version": version("aiobmsble"),
            "us_per_poll": round(per_poll * 1e6, 2),
            "iterations": iterations,
            "cells": len(sample.get("cell_voltages", [])),
            "reads_20_byte_notifications": chunked,
        }

    return asyncio.run(measure())


def main() -> None:
    """Run one peer measurement and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    daly = commands.add_parser("dalybms")
    daly.add_argument("--port", required=True)
    daly.add_argument("--rounds", type=int, default=5)
    daly.add_argument("--all-rounds", type=int, default=2)
    ble = commands.add_parser("aiobmsble")
    ble.add_argument("--frame", required=True, help="the D2 live reply, hex")
    ble.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    if args.command == "dalybms":
        result = run_dalybms(args.port, args.rounds, args.all_rounds)
    else:
        result = run_aiobmsble(args.frame, args.iterations)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
