"""Command line tool for DALY / 100balance smart active balancers.

No running Home Assistant needed. From the repository's root
(``scripts/balancer`` runs it so)::

    python -m balancer_tools.cli read --port /dev/ttyUSB0 --json
    python -m balancer_tools.cli set --port socket://192.168.1.20:4001 balance_delta_voltage 0.03
    python -m balancer_tools.cli probe --ble 40:17:10:01:06:C7
    python -m balancer_tools.cli watch --port /dev/ttyUSB0 --interval 5
    python -m balancer_tools.cli simulate --tcp 0 --cells 16 --unbalanced 40

Exit codes: 0 success, 1 the balancer or the link failed (one line on stderr),
2 usage error or a setting value that was refused (nothing was sent).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from balancer_tools.cli_args import (
    build_parser,
    parse_setting_value,
)
from balancer_tools.cli_common import (
    BLE_SCAN_TIMEOUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    print_error,
    print_warning,
)
from balancer_tools.cli_output import (
    device_json,
    format_full,
    format_reading,
    format_setting,
    full_json,
    print_json,
    reading_json,
    volts_text,
)
from balancer_tools.cli_simulate import cmd_simulate
from custom_components.active_balancer.protocol.client import BalancerClient
from custom_components.active_balancer.protocol.errors import (
    BalancerError,
    ConnectionFailed,
    OutOfRange,
)
from custom_components.active_balancer.protocol.link import Bus
from custom_components.active_balancer.protocol.model import (
    BalancerInfo,
    Reading,
    Setting,
    Settings,
    Variant,
)
from custom_components.active_balancer.protocol.rules import (
    check_value,
)

if TYPE_CHECKING:
    from custom_components.active_balancer.protocol.link import ByteLink


_LOGGER = logging.getLogger(__name__)
PROTOCOL_LOGGER = "custom_components.active_balancer.protocol"

# --- entry points -------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool with *argv* (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    # The library's loggers and the simulator's.
    loggers = [logging.getLogger(name) for name in (PROTOCOL_LOGGER, "balancer_tools")]
    handler: logging.Handler | None = None
    levels = [logger.level for logger in loggers]
    if getattr(args, "verbose", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        for logger in loggers:
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        if args.command in ("watch", "simulate"):
            return EXIT_OK
        print_error("interrupted")
        return EXIT_INTERRUPTED
    finally:
        if handler is not None:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(handler)
                logger.setLevel(level)


async def async_main(argv: Sequence[str]) -> int:
    """Like :func:`main`, for callers that already run an event loop."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return await run(args)


async def run(args: argparse.Namespace) -> int:
    """Run the parsed command; errors become one line on stderr."""
    command: Callable[[argparse.Namespace], Any] = _COMMANDS[args.command]
    try:
        result: int = await command(args)
    except UsageError as err:
        print_error(str(err))
        return EXIT_USAGE
    except OutOfRange as err:
        print_error(f"{err}; nothing was sent")
        return EXIT_USAGE
    except (BalancerError, OSError) as err:
        print_error(str(err) or type(err).__name__)
        return EXIT_FAILED
    return result


# --- connecting ---------------------------------------------------------------


async def make_link(args: argparse.Namespace) -> ByteLink:
    """Return the byte link selected by ``--port`` or ``--ble``."""
    if args.ble:
        return await _ble_link(args.ble, args.timeout)
    from custom_components.active_balancer.protocol.serial import SerialLink  # noqa: PLC0415 - serialx only when needed

    try:
        if args.timeout is None:
            return SerialLink(args.port, args.baud)
        return SerialLink(args.port, args.baud, base_timeout=args.timeout)
    except ValueError as err:
        msg = f"--port: {err}"
        raise UsageError(msg) from err


async def _ble_link(address: str, answer_timeout: float | None) -> ByteLink:
    try:
        from bleak import BleakScanner  # noqa: PLC0415
        from bleak.exc import BleakError  # noqa: PLC0415

        from custom_components.active_balancer.protocol.ble import BleLink  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - bleak is a requirement
        msg = f"Bluetooth needs the bleak package: {err}"
        raise ConnectionFailed(msg) from err
    try:
        device = await BleakScanner.find_device_by_address(
            address, timeout=BLE_SCAN_TIMEOUT
        )
    except (BleakError, OSError, TimeoutError) as err:
        msg = f"Bluetooth scan failed: {err}"
        raise ConnectionFailed(msg) from err
    if device is None:
        msg = (
            f"No Bluetooth device {address} found within {BLE_SCAN_TIMEOUT:g} s; "
            "is it powered, in range and not connected to a phone app?"
        )
        raise ConnectionFailed(msg)
    if answer_timeout is None:
        return BleLink(device)
    return BleLink(device, base_timeout=answer_timeout)


def _variant(name: str) -> Variant | None:
    return None if name == "auto" else Variant(name)


async def _client(args: argparse.Namespace, variant: Variant | None) -> BalancerClient:
    link = await make_link(args)
    return BalancerClient(Bus(link), variant=variant, address=args.address)


def _where(args: argparse.Namespace) -> str:
    return str(args.ble or args.port)


# --- read ---------------------------------------------------------------------


async def cmd_read(args: argparse.Namespace) -> int:
    """``read``: connect, poll once, read settings and identity."""
    client = await _client(args, _variant(args.protocol))
    try:
        snapshot = await client.connect()
    finally:
        await client.close()
    info, reading, settings = snapshot.info, snapshot.reading, snapshot.settings
    unanswered = dict(snapshot.unanswered)
    unknown = sorted(
        setting.value
        for setting in Setting
        if client.setting_part(setting) in unanswered
    )
    if args.json:
        result = full_json(info, reading, settings, _where(args))
        result["unanswered"] = unanswered
        result["settings_unknown"] = unknown
        print_json(result)
    else:
        text = format_full(info, reading, settings, _where(args))
        if unanswered:
            parts = ", ".join(f"{part} ({why})" for part, why in unanswered.items())
            text += f"\n\nNot answered by the device (unknown): {parts}"
        print(text, flush=True)
    return EXIT_OK


# --- set ----------------------------------------------------------------------


async def cmd_set(args: argparse.Namespace) -> int:
    """``set``: check, write, read back."""
    setting: Setting = args.name
    value = parse_setting_value(setting, args.value)
    # Range and step first, before the port is even opened (the client checks
    # its variant's register and the rules that depend on the device).
    check_value(setting, value)
    if setting is Setting.BALANCE_CURRENT_LIMIT:
        print_warning(
            "balance_current_limit uses a register that is not confirmed on a "
            "balancer (EXPERIMENTAL)"
        )
    client = await _client(args, _variant(args.protocol))
    try:
        await client.connect()
        await client.write(setting, value)
        snapshot = client.snapshot
        assert snapshot is not None
        confirmed = snapshot.settings.get(setting)
    finally:
        await client.close()
    if args.json:  # a number or on/off: no chemistry is ever written
        print_json({"setting": setting.value, "value": confirmed, "confirmed": True})
    else:
        print(
            f"{setting.value} = {format_setting(setting, confirmed)} "
            "(read back from the balancer)",
            flush=True,
        )
    return EXIT_OK


# --- probe --------------------------------------------------------------------


async def cmd_probe(args: argparse.Namespace) -> int:
    """``probe``: try each protocol variant in turn and report who answers."""
    requested = _variant(args.protocol)
    variants = [requested] if requested else list(Variant)
    link = await make_link(args)
    bus = Bus(link)
    results: list[dict[str, Any]] = []
    try:
        for variant in variants:
            client = BalancerClient(bus, variant=variant, address=args.address)
            entry: dict[str, Any] = {"protocol": variant.value}
            try:
                snapshot = await client.connect()
            except ConnectionFailed:
                raise
            except BalancerError as err:
                entry.update(answers=False, error=str(err))
            else:
                entry.update(answers=True, device=device_json(snapshot.info))
                entry["cell_count"] = snapshot.reading.cell_count
                chemistry = snapshot.settings.chemistry
                entry["chemistry"] = chemistry.value if chemistry else None
            results.append(entry)
    finally:
        await bus.close()
    answering = [entry["protocol"] for entry in results if entry["answers"]]
    if args.json:
        print_json({"port": _where(args), "answers": answering, "variants": results})
    else:
        print(_where(args))
        for entry in results:
            if entry["answers"]:
                device = entry["device"]
                detail = (
                    f"answers  software {device['software_version'] or '-'}  "
                    f"hardware {device['hardware_version'] or '-'}  "
                    f"cells {entry['cell_count'] if entry['cell_count'] else '-'}"
                )
                if device["address"] is not None:
                    detail += f"  board {device['address']}"
            else:
                detail = f"no answer ({entry['error']})"
            print(f"  {entry['protocol']:<4} {detail}")
        sys.stdout.flush()
    if not answering:
        print_error("no protocol variant answered")
        return EXIT_FAILED
    return EXIT_OK


# --- watch --------------------------------------------------------------------


async def cmd_watch(args: argparse.Namespace) -> int:
    """``watch``: poll and print until Ctrl-C or ``--count`` polls."""
    client = await _client(args, _variant(args.protocol))
    clear = sys.stdout.isatty() and not args.json
    polls = 0
    good = 0
    try:
        info = (await client.connect()).info
        while args.count is None or polls < args.count:
            if polls:
                await asyncio.sleep(args.interval)
            polls += 1
            try:
                snapshot = await client.poll()
            except BalancerError as err:
                print_warning(f"poll {polls} failed: {err}")
                continue
            good += 1
            _print_watch(
                args, info, snapshot.reading, snapshot.settings, polls, clear=clear
            )
    finally:
        await client.close()
    return EXIT_OK if good else EXIT_FAILED


def _print_watch(
    args: argparse.Namespace,
    info: BalancerInfo,
    reading: Reading,
    settings: Settings,
    poll: int,
    *,
    clear: bool,
) -> None:
    stamp = time.strftime("%H:%M:%S")
    if args.json:
        value = {"poll": poll, "time": time.time(), "protocol": info.variant.value}
        value.update(reading_json(reading))
        print_json(value, indent=None)
        return
    out: TextIO = sys.stdout
    if clear:
        out.write("\x1b[H\x1b[2J")
    enabled = format_setting(Setting.BALANCER_ENABLED, settings.balancer_enabled)
    header = (
        f"{_where(args)}  {info.variant.value}  poll {poll}  {stamp}  "
        f"balancer {enabled}  start {volts_text(settings.balance_start_voltage)}  "
        f"delta {volts_text(settings.balance_delta_voltage)}"
    )
    out.write(f"{header}\n{format_reading(reading)}\n")
    if not clear:
        out.write("\n")
    out.flush()


_COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "read": cmd_read,
    "set": cmd_set,
    "probe": cmd_probe,
    "watch": cmd_watch,
    "simulate": cmd_simulate,
}


if __name__ == "__main__":
    sys.exit(main())
