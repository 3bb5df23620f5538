"""``balancer simulate``: virtual balancers on a pseudo-terminal or TCP port."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Any

from balancer_tools.cli_common import EXIT_OK, LOOPBACK, PROG, UsageError, print_warning
from custom_components.active_balancer.protocol.model import (
    Chemistry,
    Variant,
)

if TYPE_CHECKING:
    pass


# --- simulate -----------------------------------------------------------------


def unbalanced_voltages(
    cells: int, chemistry: Chemistry, spread_mv: float
) -> list[float]:
    """Cell voltages spread evenly over *spread_mv* around the nominal voltage."""
    from balancer_tools.simulator import CHEMISTRY_DEFAULTS  # noqa: PLC0415

    # The virtual balancer's own default pack voltage per cell.
    nominal = CHEMISTRY_DEFAULTS[chemistry].nominal
    if cells == 1:
        return [nominal]
    spread = spread_mv / 1000
    return [
        round(nominal - spread / 2 + spread * i / (cells - 1), 3) for i in range(cells)
    ]


def _faults(args: argparse.Namespace) -> Any:
    values: dict[str, Any] = {}
    for kind in ("drop", "corrupt", "truncate", "garbage", "delay", "disconnect"):
        rate = getattr(args, f"fault_{kind}")
        if rate is not None:
            values[kind] = rate
    if args.fault_delay_seconds is not None:
        values["delay_seconds"] = args.fault_delay_seconds
    if args.fault_chunk_size is not None:
        values["chunk_size"] = args.fault_chunk_size
    if args.fault_silent:
        values["silent"] = True
    if args.fault_disconnect_mid_frame:
        values["disconnect_mid_frame"] = True
    if args.seed is not None:
        values["seed"] = args.seed
    if not values:
        return None
    from balancer_tools.simulator import Faults  # noqa: PLC0415

    return Faults(**values)


async def cmd_simulate(
    args: argparse.Namespace, stop: asyncio.Event | None = None
) -> int:
    """``simulate``: serve virtual balancers until SIGINT/SIGTERM (or *stop*)."""
    from balancer_tools.simulator import (  # noqa: PLC0415
        Quirks,
        VirtualBalancer,
        serve_pty,
        serve_tcp,
    )

    if len(set(args.address)) != len(args.address):
        msg = "--address: each balancer on the bus needs its own board number"
        raise UsageError(msg)
    chemistry = Chemistry(args.chemistry)
    variants = tuple(Variant) if args.protocol == "all" else (Variant(args.protocol),)
    if len(args.address) > 1 and Variant.P81 not in variants:
        print_warning("several balancers share one bus, but only p81 has board numbers")
    voltages = (
        None
        if args.unbalanced is None
        else unbalanced_voltages(args.cells, chemistry, args.unbalanced)
    )
    faults = _faults(args)
    quirks = Quirks(
        ignore_commands=set(args.ignore_command),
        ignore_registers=list(args.ignore_registers),
        max_read=args.max_read,
    )
    balancers = [
        VirtualBalancer(
            cells=args.cells,
            chemistry=chemistry,
            variants=variants,
            address=address,
            cell_voltages=voltages,
            link=args.link,
            faults=faults,
            quirks=quirks,
            volts_per_amp_second=args.balance_rate / 1000,
        )
        for address in args.address
    ]
    baudrate = args.baud if args.baud_pacing else None
    servers: list[Any] = []
    if stop is None:
        stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        if args.pty:
            server = await serve_pty(
                balancers, baudrate=baudrate, turnaround=args.turnaround
            )
            servers.append(server)
            print(server.path, flush=True)
        if args.tcp is not None or not args.pty:
            server = await serve_tcp(
                balancers,
                host=LOOPBACK,
                port=args.tcp or 0,
                baudrate=baudrate,
                turnaround=args.turnaround,
            )
            servers.append(server)
            print(server.url, flush=True)
        names = "/".join(v.value for v in variants)
        boards = ", ".join(str(a) for a in args.address)
        print(
            f"{PROG}: simulating {len(balancers)} balancer(s) (board {boards}), "
            f"{args.cells} {chemistry.name} cells, {names} over {args.link}; "
            "Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        seen = [0] * len(balancers)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            _report_writes(balancers, args.address, seen)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                await server.close()
    return EXIT_OK


def _report_writes(
    balancers: Sequence[Any], addresses: Sequence[int], seen: list[int]
) -> None:
    for index, balancer in enumerate(balancers):
        writes = list(getattr(balancer, "writes", ()))
        for write in writes[seen[index] :]:
            variant = getattr(write.variant, "value", write.variant)
            print(
                f"{PROG}: board {addresses[index]}: {variant} write "
                f"register 0x{write.register:04X} = {write.value}",
                file=sys.stderr,
                flush=True,
            )
        seen[index] = len(writes)
