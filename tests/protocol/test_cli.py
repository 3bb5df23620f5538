"""The command line tool, against virtual balancers on TCP and a pty."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from balancer_tools import cli, cli_args, cli_simulate
from balancer_tools.simulator import (
    Faults,
    Quirks,
    VirtualBalancer,
    fake_connector,
    serve_pty,
    serve_tcp,
)
from custom_components.active_balancer.protocol import ble as ble_module, codec
from custom_components.active_balancer.protocol.client import BalancerClient
from custom_components.active_balancer.protocol.errors import (
    BalancerTimeout,
    OutOfRange,
)
from custom_components.active_balancer.protocol.link import Bus
from custom_components.active_balancer.protocol.model import (
    Alarm,
    Alarms,
    Chemistry,
    Reading,
    Setting,
    Settings,
    Variant,
)
from custom_components.active_balancer.protocol.registers import Block
from custom_components.active_balancer.protocol.serial import SerialLink

from .pieces import on_chunk_boundaries, tcp_pieces

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "custom_components" / "active_balancer"
BALANCER_SCRIPT = ROOT / "scripts" / "balancer"

CELLS_MV = [3300 + 3 * i for i in range(16)]  # 3.300 .. 3.345 V, delta 45 mV


class Served:
    """Virtual balancers served from a background thread with its own loop.

    ``main()`` runs its own event loop with ``asyncio.run``, so the virtual
    balancer has to live in another thread to answer it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="virtual-balancer", daemon=True
        )
        self.thread.start()
        self.servers: list[Any] = []
        self.balancers: list[VirtualBalancer] = []

    def call[T](self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def start(
        self,
        serve: Callable[..., Coroutine[Any, Any, Any]] = serve_tcp,
        **kwargs: Any,
    ) -> tuple[str, VirtualBalancer]:
        """Serve one balancer built from *kwargs*; return (port, balancer)."""

        async def build() -> tuple[Any, VirtualBalancer]:
            balancer = VirtualBalancer(**kwargs)
            return await serve([balancer]), balancer

        server, balancer = self.call(build())
        self.servers.append(server)
        self.balancers.append(balancer)
        port = server.path if serve is serve_pty else server.url
        return str(port), balancer

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                self.call(server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)
        self.loop.close()


@pytest.fixture
def served(socket_enabled: None) -> Iterator[Served]:
    """Start virtual balancers on demand; stop them after the test."""
    served = Served()
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def d2(served: Served) -> tuple[str, VirtualBalancer]:
    """A 16-cell LFP balancer speaking every variant, on loopback TCP."""
    return served.start(
        cells=16,
        chemistry=Chemistry.LFP,
        cell_voltages=[mv / 1000 for mv in CELLS_MV],
        temperatures=(25.0,),
    )


def _writes(balancer: VirtualBalancer) -> list[tuple[Variant, int, int]]:
    return [(w.variant, w.register, w.value) for w in balancer.writes]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _env() -> dict[str, str]:
    """The environment of a real process: scripts/balancer on this Python."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["BALANCER_PYTHON"] = sys.executable
    return env


# --- read ---------------------------------------------------------------------


def test_read_json_contract(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """``read --json`` prints one object with the documented keys and values."""
    port, _ = d2
    code, out, err = _run(capsys, "read", "--port", port, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["protocol"] == "d2"
    assert data["cell_count"] == 16
    assert data["cell_voltages"] == [mv / 1000 for mv in CELLS_MV]
    assert data["temperatures"] == [25.0]
    assert data["pack_voltage"] == pytest.approx(sum(CELLS_MV) / 1000, abs=0.11)
    assert isinstance(data["balancing"], bool)
    assert data["balancing_cells"] is None or isinstance(data["balancing_cells"], list)
    assert isinstance(data["balance_current"], float | int)
    assert data["alarms"] == []
    assert data["min_cell_voltage"] == 3.300
    assert data["min_cell"] == 1
    assert data["max_cell_voltage"] == 3.345
    assert data["max_cell"] == 16
    assert data["delta_cell_voltage"] == 0.045
    assert data["average_cell_voltage"] == pytest.approx(3.3225, abs=0.001)
    settings = data["settings"]
    assert set(settings) == {f.name for f in dataclasses.fields(Settings)}
    assert settings["chemistry"] == "lfp"
    assert settings["cell_count"] == 16
    assert settings["balance_delta_voltage"] >= 0.02
    assert isinstance(settings["balancer_enabled"], bool)
    device = data["device"]
    assert device["protocol"] == "d2"
    assert {"software_version", "hardware_version", "address"} <= set(device)


def test_read_table(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """Without --json, ``read`` prints a table for people."""
    port, _ = d2
    code, out, _ = _run(capsys, "read", "--port", port, "--protocol", "d2")
    assert code == 0
    assert "Cells (16)" in out
    assert "3.345 V" in out
    assert "Settings" in out
    assert "balance_delta_voltage" in out
    assert "25.0 °C" in out


@pytest.mark.parametrize("variant", ["p81", "a5"])
def test_read_other_variants(
    capsys: pytest.CaptureFixture[str],
    d2: tuple[str, VirtualBalancer],
    variant: str,
) -> None:
    """``--protocol`` selects the variant; the cells are the same."""
    port, _ = d2
    code, out, err = _run(
        capsys, "read", "--port", port, "--protocol", variant, "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["protocol"] == variant
    assert data["cell_voltages"] == [mv / 1000 for mv in CELLS_MV]


def test_read_over_pty(capsys: pytest.CaptureFixture[str], served: Served) -> None:
    """A virtual balancer on a pseudo terminal reads like a serial port."""
    path, _ = served.start(serve_pty, cells=8, chemistry=Chemistry.NMC)
    assert path.startswith("/dev/")
    code, out, err = _run(capsys, "read", "--port", path, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["cell_count"] == 8
    assert data["settings"]["chemistry"] == "nmc"


@pytest.mark.parametrize("serve", [serve_tcp, serve_pty], ids=["tcp", "pty"])
def test_read_a5_without_settings_commands(
    capsys: pytest.CaptureFixture[str], served: Served, serve: Any
) -> None:
    """``read --protocol a5 --json`` from a device that never answers 0x59,
    0x5C or 0x5F: the live values, with the settings marked unknown."""
    port, balancer = served.start(
        serve,
        cells=16,  # the captured pack: 5 mV spread, no balancing
        variants=(Variant.A5,),
        quirks=Quirks(ignore_commands={0x59, 0x5C, 0x5F}),
    )
    code, out, err = _run(
        capsys, "read", "--port", port, "--protocol", "a5", "--json", "--timeout", "0.1"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["cell_voltages"] == balancer.cell_voltages
    assert data["pack_voltage"] == pytest.approx(sum(balancer.cell_voltages), abs=0.11)
    assert data["settings"]["balance_delta_voltage"] is None
    assert data["settings"]["cell_count"] == 16
    assert data["unanswered"] == {
        "balance_settings": "no answer",
        "cell_thresholds": "no answer",
        "temperature_thresholds": "no answer",
    }
    assert "balance_start_voltage" in data["settings_unknown"]
    assert "cell_count" not in data["settings_unknown"]
    code, out, _ = _run(capsys, "read", "--port", port, "--protocol", "a5")
    assert code == 0
    assert "Not answered by the device (unknown): balance_settings" in out


def test_read_nothing_listening(
    capsys: pytest.CaptureFixture[str], served: Served
) -> None:
    """A port nobody answers on: one clear line, exit 1, no traceback."""
    port, _ = served.start()
    server = served.servers.pop()
    served.call(server.close())
    code, out, err = _run(capsys, "read", "--port", port, "--timeout", "0.2")
    assert code == 1
    assert out == ""
    assert err.startswith("balancer: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


# --- set ----------------------------------------------------------------------


def test_set_delta_voltage(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """``set balance_delta_voltage 0.03`` writes 30 mV once to 0xA4, read back."""
    port, balancer = d2
    code, out, err = _run(
        capsys, "set", "--port", port, "balance_delta_voltage", "0.03"
    )
    assert code == 0, err
    assert _writes(balancer) == [(Variant.D2, 0xA4, 30)]
    assert "balance_delta_voltage = 0.030 V" in out


def test_set_refused_sends_nothing(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """0.019 V is below the manuals' 20 mV: exit 2, reason on stderr, no write."""
    port, balancer = d2
    code, out, err = _run(
        capsys, "set", "--port", port, "balance_delta_voltage", "0.019"
    )
    assert code == 2
    assert out == ""
    assert "balance_delta_voltage must be between 0.02 and 1 V" in err
    assert "nothing was sent" in err
    assert _writes(balancer) == []


def test_set_refused_before_opening_the_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The range check runs before the port is opened (it does not exist)."""
    missing = str(tmp_path / "no-such-tty")
    code, _, err = _run(capsys, "set", "--port", missing, "sleep_time", "70000")
    assert code == 2
    assert "sleep_time must be between 0 and 65535 s" in err


def test_set_refused_by_device_chemistry(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """3.9 V passes the range check, but not for LFP cells (read from the device)."""
    port, balancer = d2
    code, _, err = _run(capsys, "set", "--port", port, "balance_start_voltage", "3.9")
    assert code == 2
    assert "LFP" in err
    assert _writes(balancer) == []


@pytest.mark.parametrize(
    ("name", "value", "register", "raw"),
    [
        ("balancer_enabled", "off", 0xCF, 0),
        ("sleep_time", "never", 0x8A, 65535),
        ("balance_start_voltage", "3350mV", 0xA3, 3350),
        ("discharge_undertemperature_alarm", "-20", 0x9E, 20),
    ],
)
def test_set_other_settings(
    capsys: pytest.CaptureFixture[str],
    d2: tuple[str, VirtualBalancer],
    *,
    name: str,
    value: str,
    register: int,
    raw: int,
) -> None:
    """Switches, ``never``, unit suffixes and negative numbers all work."""
    port, balancer = d2
    code, out, err = _run(
        capsys, "set", "--port", port, "--protocol", "d2", "--json", name, value
    )
    assert code == 0, err
    assert _writes(balancer) == [(Variant.D2, register, raw)]
    assert json.loads(out)["setting"] == name


def test_set_over_a5_is_refused(
    capsys: pytest.CaptureFixture[str], served: Served
) -> None:
    """A5 is read-only: a clear message, a non-zero exit, no write."""
    port, balancer = served.start(variants=(Variant.A5,))
    code, out, err = _run(
        capsys,
        "set",
        "--port",
        port,
        "--protocol",
        "a5",
        "balance_delta_voltage",
        "0.03",
    )
    assert code != 0
    assert out == ""
    assert "read-only" in err
    assert err.count("\n") == 1
    assert _writes(balancer) == []


def test_set_experimental_current_limit(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """The unconfirmed 0xD0 register is written with a warning."""
    port, balancer = d2
    code, out, err = _run(
        capsys, "set", "--port", port, "balance_current_limit", "500mA"
    )
    assert code == 0, err
    assert "EXPERIMENTAL" in err
    assert _writes(balancer) == [(Variant.D2, 0xD0, 5)]
    assert "balance_current_limit = 0.5 A" in out


def test_set_p81_sleep_time_off_its_grid(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """p81 stores the sleep time in 10 s steps: 3605 s is refused, not written."""
    port, balancer = d2
    code, _, err = _run(
        capsys, "set", "--port", port, "--protocol", "p81", "sleep_time", "3605"
    )
    assert code == 2
    assert "steps of 10 s" in err
    assert _writes(balancer) == []
    code, _, err = _run(
        capsys, "set", "--port", port, "--protocol", "p81", "sleep_time", "3600"
    )
    assert code == 0, err
    assert _writes(balancer) == [(Variant.P81, 0x115, 360)]


async def test_client_write_before_connect_checks_chemistry(
    socket_enabled: None,
) -> None:
    """Regression: ``write`` without ``connect`` still applies the LFP range."""
    balancer = VirtualBalancer(chemistry=Chemistry.LFP)
    async with await serve_tcp([balancer]) as server:
        client = BalancerClient(Bus(SerialLink(server.url)), variant=Variant.D2)
        try:
            with pytest.raises(OutOfRange, match="LFP"):
                await client.write(Setting.BALANCE_START_VOLTAGE, 3.9)
        finally:
            await client.close()
    assert balancer.writes == []


# --- probe / watch ------------------------------------------------------------


def test_probe(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """``probe`` reports every variant the balancer answers."""
    port, _ = d2
    code, out, err = _run(capsys, "probe", "--port", port, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["answers"] == ["d2", "p81", "a5"]
    d2_entry = data["variants"][0]
    assert d2_entry["device"]["protocol"] == "d2"
    assert d2_entry["cell_count"] == 16


def test_probe_only_a5(capsys: pytest.CaptureFixture[str], served: Served) -> None:
    """A balancer that speaks only A5 is found, the others reported silent."""
    port, _ = served.start(variants=(Variant.A5,))
    code, out, _ = _run(capsys, "probe", "--port", port, "--timeout", "0.1")
    assert code == 0
    assert re.search(r"a5\s+answers", out)
    assert re.search(r"d2\s+no answer", out)
    assert re.search(r"p81\s+no answer", out)


def test_probe_nothing_answers(
    capsys: pytest.CaptureFixture[str], served: Served
) -> None:
    """A silent line: every variant reported, exit 1."""
    port, _ = served.start(faults=Faults(silent=True))
    code, out, err = _run(
        capsys, "probe", "--port", port, "--protocol", "d2", "--timeout", "0.05"
    )
    assert code == 1
    assert re.search(r"d2\s+no answer", out)
    assert "no protocol variant answered" in err


def test_watch_count(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """``watch --count 2`` polls twice and stops."""
    port, _ = d2
    code, out, err = _run(
        capsys, "watch", "--port", port, "--interval", "0.05", "--count", "2"
    )
    assert code == 0, err
    assert "poll 1" in out
    assert "poll 2" in out
    assert "poll 3" not in out
    assert out.count("Cells (16)") == 2


def test_watch_json_lines(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """``watch --json`` prints one JSON object per line."""
    port, _ = d2
    code, out, _ = _run(
        capsys,
        "watch",
        "--port",
        port,
        "--interval",
        "0.05",
        "--count",
        "3",
        "--json",
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["poll"] for line in lines] == [1, 2, 3]
    assert all(line["cell_count"] == 16 for line in lines)


def test_watch_survives_a_failed_poll(
    capsys: pytest.CaptureFixture[str],
    d2: tuple[str, VirtualBalancer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A poll that fails is reported on stderr; watching goes on."""
    port, _ = d2
    original = BalancerClient.poll
    calls = 0

    async def flaky(self: BalancerClient) -> Reading:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BalancerTimeout("no answer (simulated)")
        return await original(self)

    monkeypatch.setattr(BalancerClient, "poll", flaky)
    code, out, err = _run(
        capsys, "watch", "--port", port, "--interval", "0.01", "--count", "2"
    )
    assert code == 0
    assert "poll 1 failed: no answer (simulated)" in err
    assert "poll 2" in out


def test_watch_every_poll_failed(
    capsys: pytest.CaptureFixture[str],
    d2: tuple[str, VirtualBalancer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When no poll succeeds, ``watch`` exits 1."""
    port, _ = d2

    async def failing(self: BalancerClient) -> Reading:
        raise BalancerTimeout("no answer (simulated)")

    monkeypatch.setattr(BalancerClient, "poll", failing)
    code, out, _ = _run(
        capsys, "watch", "--port", port, "--interval", "0.01", "--count", "2"
    )
    assert code == 1
    assert out == ""


def test_verbose_logs_frames(
    capsys: pytest.CaptureFixture[str], d2: tuple[str, VirtualBalancer]
) -> None:
    """``-v`` logs the package's debug messages to stderr, then stops again."""
    port, _ = d2
    code, _, err = _run(capsys, "read", "--port", port, "-v", "--protocol", "d2")
    assert code == 0
    assert "Connected" in err
    package = logging.getLogger(cli.__package__)
    assert not any(
        isinstance(h, logging.StreamHandler) and h.stream is sys.stderr
        for h in package.handlers
    )


@pytest.mark.parametrize(("command", "expected"), [("watch", 0), ("read", 130)])
def test_keyboard_interrupt(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    expected: int,
) -> None:
    """Ctrl-C ends ``watch`` normally and anything else with 130."""

    async def interrupted(_args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    code, _, err = _run(capsys, command, "--port", "/dev/x")
    assert code == expected
    assert "Traceback" not in err


def test_format_reading_without_optional_values() -> None:
    """Values a variant does not report show as "-" / "not fitted"."""
    reading = Reading(
        cell_voltages=(3.3, 3.31, 3.32),
        temperatures=(None, 21.0),
        alarms=Alarms.from_flags({Alarm.CELL_OVERVOLTAGE_L1}),
    )
    text = cli.format_reading(reading)
    assert "Pack voltage     -" in text
    assert "not fitted, 21.0 °C" in text
    assert "Balancing        -" in text
    assert "Balance current  -" in text
    assert "Alarms           cell_overvoltage_l1" in text
    assert cli.format_setting(Setting.CHEMISTRY, Chemistry.LTO) == "LTO"
    assert cli.format_setting(Setting.SLEEP_TIME, 3600) == "3600 s"
    assert cli.format_setting(Setting.CELL_COUNT, None) == "-"


# --- simulate in process ------------------------------------------------------


async def _printed_lines(
    capsys: pytest.CaptureFixture[str], count: int
) -> tuple[list[str], str]:
    """Wait for *count* lines on stdout; return them and stderr so far."""
    lines: list[str] = []
    errors = ""
    async with asyncio.timeout(10):
        while len(lines) < count:
            await asyncio.sleep(0.01)
            out, err = capsys.readouterr()
            lines += out.splitlines()
            errors += err
    return lines, errors


async def test_simulate_in_process(
    capsys: pytest.CaptureFixture[str], socket_enabled: None
) -> None:
    """Two p81 balancers on one bus, every fault option, writes reported."""
    args = cli.build_parser().parse_args(
        [
            "simulate",
            "--tcp",
            "0",
            "--cells",
            "4",
            "--chemistry",
            "nmc",
            "--protocol",
            "p81",
            "--address",
            "1",
            "2",
            "--link",
            "rs485",
            "--unbalanced",
            "20",
            "--baud-pacing",
            "--baud",
            "115200",
            "--turnaround",
            "0.001",
            "--fault-drop",
            "0",
            "--fault-corrupt",
            "0",
            "--fault-truncate",
            "0",
            "--fault-garbage",
            "0",
            "--fault-delay",
            "0",
            "--fault-delay-seconds",
            "0.1",
            "--fault-disconnect",
            "0",
            "--fault-disconnect-mid-frame",
            "--fault-chunk-size",
            "5",
            "--seed",
            "7",
        ]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(cli.cmd_simulate(args, stop))
    try:
        (url,), _ = await _printed_lines(capsys, 1)
        assert url.startswith("socket://127.0.0.1:")
        code = await cli.async_main(
            ["read", "--port", url, "--protocol", "p81", "--address", "2", "--json"]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        data = json.loads(out)
        assert data["device"]["address"] == 2
        assert data["cell_count"] == 4
        assert data["delta_cell_voltage"] == pytest.approx(0.020, abs=0.002)
        # --fault-chunk-size 5: the reply comes in 5-byte pieces on TCP too.
        request = codec.read_request(Variant.P81, 2, Block(0x100, 8)).frame
        pieces = await tcp_pieces(int(url.rsplit(":", 1)[1]), request, 21)
        assert len(pieces) > 1
        assert on_chunk_boundaries(pieces, 5)
        assert b"".join(pieces)[:3] == bytes((0x52, 0x03, 16))
        code = await cli.async_main(
            [
                "set",
                "--port",
                url,
                "--protocol",
                "p81",
                "--address",
                "2",
                "balance_delta_voltage",
                "0.03",
            ]
        )
        assert code == 0, capsys.readouterr().err
        await asyncio.sleep(0.6)  # the simulator reports writes twice a second
    finally:
        stop.set()
        assert await task == 0
    err = capsys.readouterr().err
    assert "board 2: p81 write register 0x011B = 30" in err
    assert "board 1:" not in err


async def test_simulate_in_process_pty_warns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """D2 has no board numbers: several D2 balancers on one line get a warning."""
    args = cli.build_parser().parse_args(
        ["simulate", "--pty", "--protocol", "d2", "--address", "1", "2"]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(cli.cmd_simulate(args, stop))
    try:
        (path,), err = await _printed_lines(capsys, 1)
        assert await asyncio.to_thread(Path(path).exists)
    finally:
        stop.set()
        assert await task == 0
    assert "only p81 has board numbers" in err


def test_fault_options_build_faults() -> None:
    """Each fault option sets its :class:`Faults` field; none means no faults."""
    parser = cli.build_parser()
    assert cli_simulate._faults(parser.parse_args(["simulate"])) is None
    faults = cli_simulate._faults(
        parser.parse_args(
            ["simulate", "--fault-silent", "--fault-drop", "0.5", "--seed", "3"]
        )
    )
    assert isinstance(faults, Faults)
    assert faults.silent is True
    assert faults.drop == 0.5
    assert faults.seed == 3


# --- Bluetooth ----------------------------------------------------------------


def test_read_over_ble(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--ble`` scans for the address and talks through the BLE bridge."""
    from bleak import BleakScanner
    from bleak.backends.device import BLEDevice

    from balancer_tools.simulator import ble_device

    balancer = VirtualBalancer(cells=4, ble=True)
    device = ble_device("40:17:10:01:06:C7", "DL-4017100106C7", {})

    async def find(address: str, **kwargs: Any) -> BLEDevice:
        assert address == device.address
        assert kwargs["timeout"] == 10.0
        return device

    monkeypatch.setattr(BleakScanner, "find_device_by_address", find)
    monkeypatch.setattr(ble_module, "establish_connection", fake_connector(balancer))
    code, out, err = _run(
        capsys, "read", "--ble", device.address, "--json", "--timeout", "2"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["protocol"] == "d2"
    assert data["cell_count"] == 4


def test_ble_device_not_found(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No advertisement within the scan time: exit 1 with one clear line."""
    from bleak import BleakScanner

    async def find(address: str, **_: Any) -> None:
        return None

    monkeypatch.setattr(BleakScanner, "find_device_by_address", find)
    code, _, err = _run(capsys, "probe", "--ble", "AA:BB:CC:DD:EE:FF")
    assert code == 1
    assert "No Bluetooth device AA:BB:CC:DD:EE:FF found within 10 s" in err


def test_ble_scan_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Bluetooth adapter: exit 1 with one clear line."""
    from bleak import BleakScanner
    from bleak.exc import BleakError

    async def find(address: str, **_: Any) -> None:
        raise BleakError("No Bluetooth adapters found.")

    monkeypatch.setattr(BleakScanner, "find_device_by_address", find)
    code, _, err = _run(capsys, "read", "--ble", "AA:BB:CC:DD:EE:FF")
    assert code == 1
    assert (
        err == "balancer: error: Bluetooth scan failed: No Bluetooth adapters found.\n"
    )


# --- usage errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["read"],
        ["read", "--port", "/dev/x", "--ble", "AA:BB"],
        ["read", "--port", "/dev/x", "--address", "16"],
        ["read", "--port", "/dev/x", "--protocol", "modbus"],
        ["set", "--port", "/dev/x", "cell_count", "16"],
        ["set", "--port", "/dev/x", "balance_voltage", "3.3"],
        ["set", "--port", "/dev/x", "balancer_enabled", "maybe"],
        ["set", "--port", "/dev/x", "balance_delta_voltage", "30 kV"],
        ["set", "--port", "/dev/x", "balance_delta_voltage", "abc"],
        ["read", "--port", "socket://nohost"],
        ["watch", "--port", "/dev/x", "--interval", "0"],
        ["read", "--port", "/dev/x", "--address", "x"],
        ["read", "--port", "/dev/x", "--timeout", "soon"],
        ["read", "--port", "/dev/x", "--baud", "fast"],
        ["watch", "--port", "/dev/x", "--count", "0"],
        ["simulate", "--tcp", "http"],
        ["simulate", "--tcp", "70000"],
        ["simulate", "--turnaround", "-1"],
        ["simulate", "--turnaround", "later"],
        ["simulate", "--fault-drop", "often"],
        ["simulate", "--address", "1", "1"],
        ["simulate", "--cells", "many"],
        ["simulate", "--cells", "0"],
        ["simulate", "--cells", "33"],
        ["simulate", "--fault-drop", "1.5"],
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Bad command lines exit 2 without touching any port."""
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["read", "--port", "/dev/x", "--address", "0x10"],
            "the RS485 board number must be 1..15, not '0x10'",
        ),
        (
            ["read", "--port", "/dev/x", "--timeout", "inf"],
            "expected a positive number, not 'inf'",
        ),
        (["read", "--port", "/dev/x", "--timeout", "0"], "positive number, not '0'"),
        (
            ["simulate", "--turnaround", "nan"],
            "expected a number of at least 0, not 'nan'",
        ),
        (
            ["simulate", "--fault-corrupt", "-0.1"],
            "a fault rate is between 0 and 1, not '-0.1'",
        ),
        (
            ["watch", "--port", "/dev/x", "--count", "2.5"],
            "expected a whole number of at least 1, not '2.5'",
        ),
        (
            ["simulate", "--tcp", "-1"],
            "a TCP port is 0..65535 (0 = any free port), not '-1'",
        ),
        (["simulate", "--cells", "0"], "expected a whole number of at least 1"),
        (
            ["simulate", "--cells", "33"],
            "the simulator handles 1..32 cells (D2 has 32 cell registers), not '33'",
        ),
        (
            ["simulate", "--ignore-command", "0x100"],
            "an A5 command is 0x00..0xFF, not '0x100'",
        ),
    ],
)
def test_number_arguments_say_what_they_take(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A number out of range or not a number: the message names the range."""
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert message in err


async def test_async_main_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``async_main`` reports usage errors like ``main``."""
    assert await cli.async_main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` exits 0 and lists the commands."""
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for command in ("read", "set", "probe", "watch", "simulate"):
        assert command in out


@pytest.mark.parametrize(
    ("setting", "text", "value"),
    [
        (Setting.BALANCE_DELTA_VOLTAGE, "0.03", 0.03),
        (Setting.BALANCE_DELTA_VOLTAGE, "30mV", 0.03),
        (Setting.BALANCE_DELTA_VOLTAGE, "0.05 V", 0.05),
        (Setting.SLEEP_TIME, "never", 65535.0),
        (Setting.SLEEP_TIME, "3600", 3600.0),
        (Setting.SLEEP_TIME, "1h", 3600.0),
        (Setting.BALANCER_ENABLED, "ON", True),
        (Setting.BALANCER_ENABLED, "false", False),
        (Setting.BALANCER_ENABLED, "1", True),
        (Setting.BALANCE_CURRENT_LIMIT, "500mA", 0.5),
        (Setting.DISCHARGE_UNDERTEMPERATURE_ALARM, "-20°C", -20.0),
    ],
)
def test_parse_setting_value(setting: Setting, text: str, value: object) -> None:
    """SI values, unit suffixes and words."""
    assert cli_args.parse_setting_value(setting, text) == value


def test_unbalanced_voltages() -> None:
    """``--unbalanced`` spreads the cells evenly over the given millivolts."""
    volts = cli_simulate.unbalanced_voltages(16, Chemistry.LFP, 40)
    assert len(volts) == 16
    assert round(max(volts) - min(volts), 3) == 0.040
    assert volts == sorted(volts)
    assert cli_simulate.unbalanced_voltages(1, Chemistry.LTO, 40) == [2.4]


# --- real processes -----------------------------------------------------------


def test_script_read_json(d2: tuple[str, VirtualBalancer]) -> None:
    """``scripts/balancer read --json`` in a real process prints only JSON."""
    port, _ = d2
    result = subprocess.run(  # noqa: S603
        [str(BALANCER_SCRIPT), "read", "--port", port, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["protocol"] == "d2"
    assert data["cell_count"] == 16


def test_script_refused_value_exit_code(d2: tuple[str, VirtualBalancer]) -> None:
    """A refused value exits 2 from the real process too."""
    port, balancer = d2
    result = subprocess.run(  # noqa: S603
        [str(BALANCER_SCRIPT), "set", "--port", port, "balance_delta_voltage", "0.019"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert result.returncode == 2
    assert "nothing was sent" in result.stderr
    assert "Traceback" not in result.stderr
    assert _writes(balancer) == []


def _start_simulator(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603
        [str(BALANCER_SCRIPT), "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _stop(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, err


def test_simulate_subprocess(
    capsys: pytest.CaptureFixture[str], socket_enabled: None
) -> None:
    """``simulate`` prints a loopback URL, serves it, and stops on SIGTERM."""
    process = _start_simulator(
        "--tcp", "0", "--cells", "16", "--chemistry", "lfp", "--unbalanced", "40"
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", url), url
        code, out, err = _run(capsys, "read", "--port", url, "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["cell_count"] == 16
        assert data["delta_cell_voltage"] == pytest.approx(0.040, abs=0.002)
        code, _, err = _run(
            capsys, "set", "--port", url, "balance_delta_voltage", "0.025"
        )
        assert code == 0, err
    finally:
        returncode, stderr = _stop(process, signal.SIGTERM)
    assert returncode == 0, stderr
    assert "write register 0x00A4 = 25" in stderr


def test_simulate_pty_and_tcp_stop_on_sigint(socket_enabled: None) -> None:
    """``--pty --tcp 0`` prints both; SIGINT stops it cleanly."""
    process = _start_simulator(
        "--pty", "--tcp", "0", "--protocol", "p81", "--address", "1", "2"
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        second = process.stdout.readline().strip()
        assert first.startswith("/dev/")
        assert second.startswith("socket://127.0.0.1:")
        assert Path(first).exists()
    finally:
        returncode, stderr = _stop(process, signal.SIGINT)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


# --- no Home Assistant needed -------------------------------------------------


def test_library_imports_without_home_assistant() -> None:
    """The protocol library (what HACS ships) never imports Home Assistant.

    It is imported as a top-level package, the way it would be as its own
    distribution; the tools around it live outside the integration's folder.
    """
    code = (
        "import sys\n"
        f"sys.path.append({str(PACKAGE_DIR)!r})\n"
        "sys.modules['homeassistant'] = None\n"
        "import protocol, protocol.ble, protocol.serial, protocol.plan\n"
        "import protocol.advertisement\n"
        "assert not any(m == 'homeassistant' or m.startswith('homeassistant.')"
        " for m in sys.modules if sys.modules[m] is not None)\n"
        "print('ok')\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_integration_folder_holds_no_tools() -> None:
    """HACS copies the integration's folder: no simulator, no CLI in it."""
    shipped = [p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.py")]
    assert not [p for p in shipped if "virtual" in p or p.endswith("cli.py")]
    for path in PACKAGE_DIR.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "balancer_tools" not in text, path
        assert "BleakClient" not in text or path.name == "ble.py", path


def test_module_entry_point() -> None:
    """``python -m balancer_tools.cli --help`` from the repository root."""
    result = subprocess.run(
        [sys.executable, "-m", "balancer_tools.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: balancer")
