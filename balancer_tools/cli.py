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
import contextlib
import dataclasses
from enum import Enum
import json
import logging
import re
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from custom_components.active_balancer.protocol.client import BalancerClient
from custom_components.active_balancer.protocol.errors import (
    BalancerError,
    ConnectionFailed,
    OutOfRange,
)
from custom_components.active_balancer.protocol.link import Bus
from custom_components.active_balancer.protocol.model import (
    NEVER_SLEEP,
    Chemistry,
    DeviceInfo,
    Reading,
    Setting,
    Settings,
    Variant,
)
from custom_components.active_balancer.protocol.rules import (
    RULES,
    WRITABLE_SETTINGS,
    validate,
)
from custom_components.active_balancer.protocol.serial import DEFAULT_BAUDRATE

if TYPE_CHECKING:
    from custom_components.active_balancer.protocol.link import ByteLink

_LOGGER = logging.getLogger(__name__)
PROTOCOL_LOGGER = "custom_components.active_balancer.protocol"

PROG = "balancer"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
"""Usage errors and refused setting values (nothing was sent)."""
EXIT_INTERRUPTED = 130

BLE_SCAN_TIMEOUT = 10.0
LOOPBACK = "127.0.0.1"
MAX_SIMULATED_CELLS = 32


_NUMBER = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*([^\d\s.+-]*)\s*$")

_UNITS: dict[str, dict[str, float]] = {
    "V": {"": 1.0, "v": 1.0, "mv": 0.001},
    "A": {"": 1.0, "a": 1.0, "ma": 0.001},
    "s": {"": 1.0, "s": 1.0, "min": 60.0, "h": 3600.0},
    "°C": {"": 1.0, "c": 1.0, "°c": 1.0, "degc": 1.0},
}

_TRUE_WORDS = frozenset({"on", "true", "1", "yes", "enable", "enabled"})
_FALSE_WORDS = frozenset({"off", "false", "0", "no", "disable", "disabled"})
_NEVER_WORDS = frozenset({"never", "off", "disabled", "none"})

_SETTING_FORMAT: dict[Setting, tuple[str, int]] = {
    Setting.BALANCE_START_VOLTAGE: ("V", 3),
    Setting.BALANCE_DELTA_VOLTAGE: ("V", 3),
    Setting.CELL_OVERVOLTAGE_ALARM: ("V", 3),
    Setting.CELL_UNDERVOLTAGE_ALARM: ("V", 3),
    Setting.DISCHARGE_OVERTEMPERATURE_ALARM: ("°C", 0),
    Setting.DISCHARGE_UNDERTEMPERATURE_ALARM: ("°C", 0),
    Setting.SLEEP_TIME: ("s", 0),
    Setting.BALANCE_CURRENT_LIMIT: ("A", 1),
    Setting.CELL_COUNT: ("", 0),
}


class UsageError(Exception):
    """A command line value that cannot be used; exit code 2."""


# --- value parsing ------------------------------------------------------------


def parse_setting_name(text: str) -> Setting:
    """Return the writable setting called *text* (dashes allowed)."""
    name = text.strip().lower().replace("-", "_")
    try:
        setting = Setting(name)
    except ValueError:
        setting = None
    if setting is None or setting not in WRITABLE_SETTINGS:
        names = ", ".join(sorted(s.value for s in WRITABLE_SETTINGS))
        msg = f"{text!r} is not a setting that can be written; use one of: {names}"
        raise argparse.ArgumentTypeError(msg)
    return setting


def parse_setting_value(setting: Setting, text: str) -> float | bool:
    """Turn the command line *text* into an SI value for *setting*.

    Accepts a plain number in the setting's SI unit, optionally followed by
    the unit (``0.03``, ``0.03V``, ``30mV``); ``on``/``off`` for switches and
    ``never`` for the sleep time. Raises :class:`UsageError`.
    """
    word = text.strip().lower()
    if setting is Setting.BALANCER_ENABLED:
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        msg = f"balancer_enabled takes on/off (or true/false, 1/0), not {text!r}"
        raise UsageError(msg)
    if setting is Setting.SLEEP_TIME and word in _NEVER_WORDS:
        return float(NEVER_SLEEP)
    unit = RULES[setting].unit
    match = _NUMBER.match(text)
    if match is None:
        msg = f"{setting.value} needs a number in {unit}, not {text!r}"
        raise UsageError(msg)
    number, suffix = float(match.group(1)), match.group(2).lower()
    factors = _UNITS.get(unit, {"": 1.0})
    if suffix not in factors:
        accepted = ", ".join(s for s in factors if s) or "none"
        msg = (
            f"{setting.value} is set in {unit}; unit {match.group(2)!r} is not "
            f"understood (accepted: {accepted})"
        )
        raise UsageError(msg)
    return round(number * factors[suffix], 9)


def _board_number(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = 0
    if not 1 <= value <= 15:  # noqa: PLR2004
        msg = f"the RS485 board number must be 1..15, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        msg = f"expected a positive number, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        msg = f"expected a number of at least 0, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        msg = f"a fault rate is between 0 and 1, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a whole number of at least 1, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _tcp_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:  # noqa: PLR2004
        msg = f"a TCP port is 0..65535 (0 = any free port), not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _cell_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_SIMULATED_CELLS:
        msg = (
            f"the simulator handles 1..{MAX_SIMULATED_CELLS} cells (D2 has "
            f"{MAX_SIMULATED_CELLS} cell registers), not {text!r}"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


# --- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the tool."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Read, configure, watch and simulate DALY / 100balance 1 A smart "
            "active balancers over a serial port, a network serial gateway or "
            "Bluetooth LE."
        ),
        epilog="Exit codes: 0 ok, 1 the balancer or link failed, 2 usage error or refused value.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    link = argparse.ArgumentParser(add_help=False)
    group = link.add_argument_group("connection")
    where = group.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--port",
        metavar="PATH|URL",
        help="serial device (/dev/ttyUSB0, COM3) or socket://host:port / rfc2217://host:port",
    )
    where.add_argument(
        "--ble", metavar="ADDRESS", help="Bluetooth address of the balancer's dongle"
    )
    group.add_argument(
        "--protocol",
        choices=("auto", *(v.value for v in Variant)),
        default="auto",
        help="protocol variant (default: detect D2, then p81, then A5)",
    )
    group.add_argument(
        "--address",
        type=_board_number,
        default=1,
        metavar="N",
        help="RS485 board number 1..15, used by the p81 protocol (default 1)",
    )
    group.add_argument(
        "--baud",
        type=_positive_int,
        default=DEFAULT_BAUDRATE,
        help=f"serial speed (default {DEFAULT_BAUDRATE})",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="seconds to wait for an answer (default 0.5 serial, 1.0 Bluetooth)",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="log every frame to stderr"
    )

    read = commands.add_parser(
        "read", parents=[link], help="read live values, settings and identity once"
    )
    read.add_argument("--json", action="store_true", help="print one JSON object")

    set_ = commands.add_parser(
        "set",
        parents=[link],
        help="change one setting (read back to confirm)",
        description=(
            "Change one setting. Values are in SI units: V, A, s, °C; on/off "
            "for balancer_enabled; 'never' for sleep_time. The value is checked "
            "against the manuals' rules before anything is sent and read back "
            "after writing."
        ),
    )
    set_.add_argument(
        "name",
        type=parse_setting_name,
        metavar="NAME",
        help=", ".join(sorted(s.value for s in WRITABLE_SETTINGS)),
    )
    set_.add_argument("value", metavar="VALUE", help="new value, e.g. 0.03 or 30mV")
    set_.add_argument("--json", action="store_true", help="print the result as JSON")

    probe = commands.add_parser(
        "probe", parents=[link], help="find out which protocol variants answer"
    )
    probe.add_argument("--json", action="store_true", help="print one JSON object")

    watch = commands.add_parser(
        "watch", parents=[link], help="live table, refreshed until Ctrl-C"
    )
    watch.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds between polls (default 2)",
    )
    watch.add_argument(
        "--count", type=_positive_int, metavar="N", help="stop after N polls"
    )
    watch.add_argument(
        "--json", action="store_true", help="print one JSON object per poll"
    )

    _add_simulate(commands)
    return parser


def _add_simulate(commands: Any) -> None:
    sim: argparse.ArgumentParser = commands.add_parser(
        "simulate",
        help="run a virtual balancer on a loopback TCP port and/or a pty",
        description=(
            "Run virtual balancers until SIGINT/SIGTERM. Prints the pty path "
            "and/or the socket://127.0.0.1:PORT URL on stdout, one per line."
        ),
    )
    sim.add_argument("--cells", type=_cell_count, default=16, help="default 16")
    sim.add_argument(
        "--chemistry",
        choices=tuple(c.value for c in Chemistry),
        default=Chemistry.LFP.value,
        help="default lfp",
    )
    sim.add_argument(
        "--protocol",
        choices=("all", *(v.value for v in Variant)),
        default="all",
        help="protocol variants the balancer answers (default all)",
    )
    sim.add_argument(
        "--address",
        type=_board_number,
        nargs="+",
        default=[1],
        metavar="N",
        help="board number(s); several = several balancers on one bus",
    )
    sim.add_argument(
        "--tcp",
        type=_tcp_port,
        metavar="PORT",
        help="serve on 127.0.0.1:PORT (0 = any free port; default when no --pty)",
    )
    sim.add_argument("--pty", action="store_true", help="serve on a pseudo terminal")
    sim.add_argument(
        "--baud-pacing",
        action="store_true",
        help="send replies no faster than the real 9600 baud line",
    )
    sim.add_argument(
        "--baud",
        type=_positive_int,
        default=DEFAULT_BAUDRATE,
        help="line speed for --baud-pacing (default 9600)",
    )
    sim.add_argument(
        "--turnaround",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="seconds before each reply (default 0)",
    )
    sim.add_argument(
        "--link",
        choices=("uart", "rs485"),
        default="uart",
        help="line type: rs485 serves p81 board numbers (default uart)",
    )
    sim.add_argument(
        "--unbalanced",
        type=_non_negative_float,
        metavar="MV",
        help="spread the cell voltages evenly over MV millivolts",
    )
    sim.add_argument(
        "--balance-rate",
        type=_non_negative_float,
        default=0.5,
        metavar="MV",
        help="millivolts a cell moves per second at 1 A of balancing (default 0.5)",
    )
    faults = sim.add_argument_group("fault injection (rates 0..1)")
    for kind in ("drop", "corrupt", "truncate", "garbage", "delay", "disconnect"):
        faults.add_argument(
            f"--fault-{kind}",
            type=_rate,
            metavar="R",
            help=f"share of replies to {kind}",
        )
    faults.add_argument(
        "--fault-delay-seconds",
        type=_non_negative_float,
        metavar="S",
        help="how long a delayed reply waits (default 1.5)",
    )
    faults.add_argument(
        "--fault-chunk-size",
        type=_positive_int,
        metavar="N",
        help="send replies in pieces of N bytes",
    )
    faults.add_argument(
        "--fault-silent", action="store_true", help="never answer at all"
    )
    faults.add_argument(
        "--fault-disconnect-mid-frame",
        action="store_true",
        help="a disconnect fault sends half a reply before dropping the link",
    )
    faults.add_argument("--seed", type=int, help="random seed for the faults")
    quirks = sim.add_argument_group("firmware quirks")
    quirks.add_argument(
        "--ignore-command",
        type=_command,
        action="append",
        default=[],
        metavar="CMD",
        help="A5 command never answered, e.g. 0x59 (repeatable)",
    )
    quirks.add_argument(
        "--ignore-registers",
        type=_register_range,
        action="append",
        default=[],
        metavar="FIRST-LAST",
        help="Modbus reads touching this range get no answer, e.g. 0x3E-0x40",
    )
    quirks.add_argument(
        "--max-read",
        type=_positive_int,
        metavar="N",
        help="refuse Modbus reads of more than N registers",
    )


def _command(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFF:  # noqa: PLR2004
        msg = f"an A5 command is 0x00..0xFF, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _register_range(text: str) -> tuple[int, int]:
    from balancer_tools.simulator.quirks import parse_range  # noqa: PLC0415

    try:
        return parse_range(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


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
        _error("interrupted")
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
        _error(str(err))
        return EXIT_USAGE
    except OutOfRange as err:
        _error(f"{err}; nothing was sent")
        return EXIT_USAGE
    except (BalancerError, OSError) as err:
        _error(str(err) or type(err).__name__)
        return EXIT_FAILED
    return result


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


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
        info = await client.connect()
        reading = client.reading or await client.poll()
        settings = client.settings
    finally:
        await client.close()
    unanswered = dict(client.unanswered)
    unknown = sorted(
        setting.value
        for setting in Setting
        if client.setting_part(setting) in unanswered
    )
    if args.json:
        result = full_json(info, reading, settings, _where(args))
        result["unanswered"] = unanswered
        result["settings_unknown"] = unknown
        _print_json(result)
    else:
        text = format_full(info, reading, settings, _where(args))
        if unanswered:
            parts = ", ".join(f"{part} ({why})" for part, why in unanswered.items())
            text += f"\n\nNot answered by the device (unknown): {parts}"
        print(text, flush=True)
    return EXIT_OK


def full_json(
    info: DeviceInfo, reading: Reading, settings: Settings, where: str | None = None
) -> dict[str, Any]:
    """The ``read --json`` object (``cmd_read`` adds what was not answered)."""
    result: dict[str, Any] = {"protocol": info.variant.value}
    if where is not None:
        result["port"] = where
    result.update(reading_json(reading))
    result["settings"] = settings_json(settings)
    result["device"] = device_json(info)
    return result


def reading_json(reading: Reading) -> dict[str, Any]:
    """A reading as JSON-ready values (volts, °C, amperes)."""
    cells = reading.balancing_cells
    return {
        "cell_count": reading.cell_count,
        "cell_voltages": list(reading.cell_voltages),
        "temperatures": list(reading.temperatures),
        "pack_voltage": reading.pack_voltage,
        "cell_voltage_sum": reading.cell_voltage_sum,
        "min_cell_voltage": reading.min_cell_voltage,
        "min_cell": reading.min_cell,
        "max_cell_voltage": reading.max_cell_voltage,
        "max_cell": reading.max_cell,
        "average_cell_voltage": reading.average_cell_voltage,
        "delta_cell_voltage": reading.delta_cell_voltage,
        "balancing": reading.balancing,
        "balancing_cells": None if cells is None else sorted(cells),
        "balance_current": reading.balance_current,
        "alarms": reading.alarms.names,
        "alarm_mask": reading.alarms.raw,
        "implausible": dict(reading.implausible),
    }


def settings_json(settings: Settings) -> dict[str, Any]:
    """Every field of :class:`Settings`; enums as their string value."""
    result: dict[str, Any] = {}
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        result[item.name] = value.value if isinstance(value, Enum) else value
    return result


def device_json(info: DeviceInfo) -> dict[str, Any]:
    """Identity as JSON-ready values."""
    return {
        "protocol": info.variant.value,
        "address": info.address,
        "software_version": info.software_version,
        "hardware_version": info.hardware_version,
        "serial_number": info.serial_number,
    }


def _print_json(value: object, *, indent: int | None = 2) -> None:
    print(json.dumps(value, indent=indent, ensure_ascii=False), flush=True)


# --- tables -------------------------------------------------------------------


def _volts(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} V"


def format_setting(setting: Setting, value: object) -> str:
    """One setting value with its unit, for people."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Enum):
        return str(value.value).upper()
    if setting is Setting.SLEEP_TIME and value == NEVER_SLEEP:
        return f"never ({NEVER_SLEEP})"
    unit, digits = _SETTING_FORMAT.get(setting, ("", 3))
    if isinstance(value, int | float):
        text = f"{value:.{digits}f}"
        return f"{text} {unit}".rstrip()
    return str(value)


def format_reading(reading: Reading) -> str:
    """The live part of a reading as a table."""
    lines = [f"Cells ({reading.cell_count})"]
    per_row = 4
    cells = reading.cell_voltages
    marks = reading.balancing_cells or frozenset()
    for start in range(0, len(cells), per_row):
        row = []
        for number in range(start + 1, min(start + per_row, len(cells)) + 1):
            flag = "*" if number in marks else " "
            row.append(f"{number:>3}{flag} {_volts(cells[number - 1])}")
        lines.append("  ".join(row))
    temps = ", ".join(
        "not fitted" if t is None else f"{t:.1f} °C" for t in reading.temperatures
    )
    if reading.balancing is None:
        balancing = "-"
    elif reading.balancing:
        balancing = "yes"
        if reading.balancing_cells:
            numbers = ", ".join(str(n) for n in sorted(reading.balancing_cells))
            balancing += f" (cells {numbers})"
    else:
        balancing = "no"
    current = (
        "-" if reading.balance_current is None else f"{reading.balance_current:.3f} A"
    )
    rows = [
        ("Pack voltage", _volts(reading.pack_voltage)),
        (
            "Min cell",
            f"{_volts(reading.min_cell_voltage)} (cell {reading.min_cell})",
        ),
        (
            "Max cell",
            f"{_volts(reading.max_cell_voltage)} (cell {reading.max_cell})",
        ),
        ("Average cell", _volts(reading.average_cell_voltage)),
        ("Delta", _volts(reading.delta_cell_voltage)),
        ("Temperatures", temps or "-"),
        ("Balancing", balancing),
        ("Balance current", current),
        ("Alarms", ", ".join(reading.alarms.names) or "none"),
    ]
    lines.extend(f"{label:<16} {value}" for label, value in rows)
    return "\n".join(lines)


def format_settings(settings: Settings) -> str:
    """Settings as a table."""
    lines = ["Settings"]
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        lines.append(f"  {item.name:<34} {format_setting(Setting(item.name), value)}")
    return "\n".join(lines)


def format_device(info: DeviceInfo, where: str | None = None) -> str:
    """Identity as one or two lines."""
    parts = [f"Protocol {info.variant.value}"]
    if info.address is not None:
        parts.append(f"board {info.address}")
    parts.append(f"software {info.software_version or '-'}")
    parts.append(f"hardware {info.hardware_version or '-'}")
    if info.serial_number:
        parts.append(f"serial {info.serial_number}")
    text = "  ".join(parts)
    return f"{where}\n{text}" if where else text


def format_full(
    info: DeviceInfo, reading: Reading, settings: Settings, where: str | None = None
) -> str:
    """The ``read`` table."""
    return "\n\n".join(
        (format_device(info, where), format_reading(reading), format_settings(settings))
    )


# --- set ----------------------------------------------------------------------


async def cmd_set(args: argparse.Namespace) -> int:
    """``set``: check, write, read back."""
    setting: Setting = args.name
    value = parse_setting_value(setting, args.value)
    # Range and step first, before the port is even opened. The rules that
    # depend on the device (chemistry, OV above UV) run again in write().
    validate(setting, value, Settings())
    if setting is Setting.BALANCE_CURRENT_LIMIT:
        _warn(
            "balance_current_limit uses a register that is not confirmed on a "
            "balancer (EXPERIMENTAL)"
        )
    client = await _client(args, _variant(args.protocol))
    try:
        await client.connect()
        await client.write(setting, value)
        confirmed = getattr(client.settings, setting.value)
    finally:
        await client.close()
    if args.json:
        if isinstance(confirmed, Enum):
            confirmed = confirmed.value
        _print_json({"setting": setting.value, "value": confirmed, "confirmed": True})
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
                info = await client.connect()
            except ConnectionFailed:
                raise
            except BalancerError as err:
                entry.update(answers=False, error=str(err))
            else:
                reading = client.reading
                entry.update(answers=True, device=device_json(info))
                entry["cell_count"] = (
                    reading.cell_count if reading else client.settings.cell_count
                )
                chemistry = client.settings.chemistry
                entry["chemistry"] = chemistry.value if chemistry else None
            results.append(entry)
    finally:
        await bus.close()
    answering = [entry["protocol"] for entry in results if entry["answers"]]
    if args.json:
        _print_json({"port": _where(args), "answers": answering, "variants": results})
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
        _error("no protocol variant answered")
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
        info = await client.connect()
        while args.count is None or polls < args.count:
            if polls:
                await asyncio.sleep(args.interval)
            polls += 1
            try:
                reading = await client.poll()
            except BalancerError as err:
                _warn(f"poll {polls} failed: {err}")
                continue
            good += 1
            _print_watch(args, info, reading, client.settings, polls, clear=clear)
    finally:
        await client.close()
    return EXIT_OK if good else EXIT_FAILED


def _print_watch(
    args: argparse.Namespace,
    info: DeviceInfo,
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
        _print_json(value, indent=None)
        return
    out: TextIO = sys.stdout
    if clear:
        out.write("\x1b[H\x1b[2J")
    enabled = format_setting(Setting.BALANCER_ENABLED, settings.balancer_enabled)
    header = (
        f"{_where(args)}  {info.variant.value}  poll {poll}  {stamp}  "
        f"balancer {enabled}  start {_volts(settings.balance_start_voltage)}  "
        f"delta {_volts(settings.balance_delta_voltage)}"
    )
    out.write(f"{header}\n{format_reading(reading)}\n")
    if not clear:
        out.write("\n")
    out.flush()


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
        _warn("several balancers share one bus, but only p81 has board numbers")
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


_COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "read": cmd_read,
    "set": cmd_set,
    "probe": cmd_probe,
    "watch": cmd_watch,
    "simulate": cmd_simulate,
}


if __name__ == "__main__":
    sys.exit(main())
