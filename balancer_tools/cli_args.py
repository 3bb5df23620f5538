"""The command line: arguments, their validators and setting values."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import math
import re
from typing import Any

from balancer_tools.cli_common import (
    MAX_SIMULATED_CELLS,
    PROG,
    UsageError,
)
from custom_components.active_balancer.protocol.model import (
    NEVER_SLEEP,
    Chemistry,
    Setting,
    Variant,
)
from custom_components.active_balancer.protocol.rules import (
    RULES,
    WRITABLE_SETTINGS,
)
from custom_components.active_balancer.protocol.serial import DEFAULT_BAUDRATE

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


def ranged[N: (int, float)](
    parse: Callable[[str], N],
    message: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
) -> Callable[[str], N]:
    """An argparse ``type``: *parse* the text, then check it lies in the range.

    *minimum* and *maximum* are inclusive (*minimum* exclusive with
    *exclusive_minimum*); ``None`` is no limit, and infinity and NaN never
    pass. *message* is the error for text that does not parse or lies
    outside, with ``{text!r}`` for what was typed. An
    :class:`argparse.ArgumentTypeError` from *parse* passes through as is.
    """

    def check(text: str) -> N:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not _within(value, minimum, maximum, exclusive_minimum):
            raise argparse.ArgumentTypeError(message.format(text=text))
        return value

    return check


def _within(
    value: float, minimum: float | None, maximum: float | None, exclusive: bool
) -> bool:
    if not math.isfinite(value):
        return False
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        return False
    return maximum is None or value <= maximum


def _any_base(text: str) -> int:
    """An integer in decimal, or with a 0x / 0o / 0b prefix."""
    return int(text, 0)


_board_number = ranged(
    _any_base, "the RS485 board number must be 1..15, not {text!r}", 1, 15
)
_positive_float = ranged(
    float, "expected a positive number, not {text!r}", 0, exclusive_minimum=True
)
_non_negative_float = ranged(float, "expected a number of at least 0, not {text!r}", 0)
_rate = ranged(float, "a fault rate is between 0 and 1, not {text!r}", 0, 1)
_positive_int = ranged(int, "expected a whole number of at least 1, not {text!r}", 1)
_tcp_port = ranged(
    int, "a TCP port is 0..65535 (0 = any free port), not {text!r}", 0, 65535
)
_cell_count = ranged(
    _positive_int,
    f"the simulator handles 1..{MAX_SIMULATED_CELLS} cells (D2 has "
    f"{MAX_SIMULATED_CELLS} cell registers), not {{text!r}}",
    maximum=MAX_SIMULATED_CELLS,
)
_command = ranged(_any_base, "an A5 command is 0x00..0xFF, not {text!r}", 0, 0xFF)


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


def _register_range(text: str) -> tuple[int, int]:
    from balancer_tools.simulator.quirks import parse_range  # noqa: PLC0415

    try:
        return parse_range(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
