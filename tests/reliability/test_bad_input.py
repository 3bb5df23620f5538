"""Bad input: every case ends with a clear message, and nothing is written.

The config flow gets a port that does not exist, a port that echoes
everything back, a port that sends random bytes, a BMS that is not a
balancer, a wrong RS485 address, malformed URLs and a device that is already
set up. The entities get numbers outside their range or off their step, a
write while the balancer is unavailable, and two writes at once.
"""

# Line noise is drawn with `random` on purpose: repeatable, not secret.
# ruff: noqa: S311

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
import contextlib
import json
import os
from pathlib import Path
import random
import tty
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from balancer_tools.simulator import (
    VirtualBalancer,
    VirtualServer,
    serve_tcp,
)
from custom_components.active_balancer.connection import BUSES
from custom_components.active_balancer.const import (
    CONF_BAUDRATE,
    CONF_PORT,
    CONF_PROTOCOL,
    CONF_RS485_ADDRESS,
    DOMAIN,
)
from custom_components.active_balancer.coordinator import BalancerCoordinator
from custom_components.active_balancer.protocol import Setting, Variant
from custom_components.active_balancer.protocol.frames import (
    FC_WRITE_MULTIPLE,
    FC_WRITE_SINGLE,
    FrameReassembler,
    ModbusFrame,
)
from tests.components.conftest import SERIAL_PORT_SOURCE

ROOT = Path(__file__).resolve().parents[2]
STRINGS = json.loads(
    (ROOT / "custom_components/active_balancer/strings.json").read_text("utf-8")
)
LINE = {CONF_BAUDRATE: "9600", CONF_PROTOCOL: "auto", CONF_RS485_ADDRESS: 1}


# --- helpers ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_listed_ports() -> Iterator[None]:
    """The host lists no serial ports: every port is typed in."""
    with patch(
        SERIAL_PORT_SOURCE,
        return_value=[],
    ):
        yield


async def typed_port(hass: HomeAssistant, port: str, **line: Any) -> FlowResult:
    """Go through the serial branch and type *port*; return the flow's answer."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "serial"}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PORT: "manual", **LINE, **line}
    )
    assert result["step_id"] == "serial_manual"
    # The form asks only for the port: the line settings were chosen above.
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PORT: port}
    )


def assert_form_error(hass: HomeAssistant, result: FlowResult, key: str) -> None:
    """The form is shown again with the error *key*, which has a clear text."""
    assert result["type"] is FlowResultType.FORM
    errors = result["errors"] or {}
    assert key in errors.values(), errors
    assert len(STRINGS["config"]["error"][key]) > 40  # a sentence, not a code
    assert hass.config_entries.async_entries(DOMAIN) == []
    assert not hass.data.get(BUSES)  # the probe's connection is closed


def written(data: bytes) -> list[bytes]:
    """Every write request (FC06 / FC10) in bytes a device received."""
    parser = FrameReassembler(tuple(Variant), replies=False)
    return [
        frame.raw
        for frame in parser.feed(data)
        if isinstance(frame, ModbusFrame)
        and frame.function in (FC_WRITE_SINGLE, FC_WRITE_MULTIPLE)
    ]


class Peer:
    """A fake device on a pseudo-terminal: *answer* maps received bytes to a reply."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.received = bytearray()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self._master, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(self._master, 4096)
            self.received += data
            reply = self.answer(data)
            if reply:
                os.write(self._master, reply)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        os.close(self._master)
        os.close(self._slave)


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Callable[[bytes], bytes]], Peer]]:
    """Make fake devices on pseudo-terminals; closed at the end."""
    peers: list[Peer] = []

    def make(answer: Callable[[bytes], bytes]) -> Peer:
        peers.append(Peer(answer))
        return peers[-1]

    yield make
    for made in peers:
        made.close()


class Bms(VirtualBalancer):
    """A DALY BMS on the D2 address: valid frames, a BMS's register map.

    Cells at 0x00, temperatures (+40) from 0x30, pack voltage, current and
    state of charge (0.1 %) from 0x38: where a balancer keeps its cell count
    (0x31), a BMS has its second temperature.
    """

    def registers(self, variant: Variant, start: int, count: int) -> list[int]:
        bms = dict.fromkeys(range(0x100), 0)
        bms.update(dict.fromkeys(range(16), 3300))
        bms.update(dict.fromkeys(range(0x30, 0x34), 65))
        bms.update({0x38: 532, 0x39: 30000, 0x3A: 1000})
        return [bms.get(reg, 0) for reg in range(start, start + count)]


# --- the config flow ------------------------------------------------------------


async def test_port_that_does_not_exist(
    hass: HomeAssistant, integration: None, short_timings: None
) -> None:
    """A device path nobody has: cannot_connect, nothing created."""
    result = await typed_port(hass, "/dev/serial/by-id/usb-no-such-adapter-if00")
    assert_form_error(hass, result, "cannot_connect")


async def test_port_that_echoes(
    hass: HomeAssistant, integration: None, short_timings: None, peer
) -> None:
    """A port that echoes every byte (a loop-back plug, TX tied to RX)."""
    echo = peer(lambda data: data)
    result = await typed_port(hass, echo.path)
    assert_form_error(hass, result, "not_a_balancer")
    assert echo.received  # it was asked
    assert written(bytes(echo.received)) == []


async def test_port_that_sends_random_bytes(
    hass: HomeAssistant, integration: None, short_timings: None, peer
) -> None:
    """A port with line noise: random bytes (start bytes among them) to every request."""
    rng = random.Random(7)
    noise = peer(
        lambda _data: bytes(
            rng.choice((0xD2, 0x51, 0xA5, 0x03, rng.randrange(256)))
            for _ in range(rng.randint(20, 200))
        )
    )
    result = await typed_port(hass, noise.path)
    assert_form_error(hass, result, "not_a_balancer")
    assert written(bytes(noise.received)) == []


async def test_port_that_sends_random_bytes_unasked(
    hass: HomeAssistant, integration: None, short_timings: None
) -> None:
    """A TCP gateway that streams random bytes whatever it is asked."""
    rng = random.Random(11)
    received = bytearray()

    class Noise(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.task = asyncio.get_running_loop().create_task(self.stream())

        async def stream(self) -> None:
            while not self.transport.is_closing():
                self.transport.write(bytes(rng.randrange(256) for _ in range(64)))
                await asyncio.sleep(0.005)

        def data_received(self, data: bytes) -> None:
            received.extend(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.task.cancel()

    server = await asyncio.get_running_loop().create_server(Noise, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await typed_port(hass, f"socket://127.0.0.1:{port}")
        assert_form_error(hass, result, "not_a_balancer")
        assert written(bytes(received)) == []
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)


async def test_bms_is_not_a_balancer(
    hass: HomeAssistant, integration: None, short_timings: None
) -> None:
    """A BMS answers valid D2 frames, but its cell count makes no balancer."""
    bms = Bms(16, variants=(Variant.D2,))
    async with await serve_tcp(bms) as server:
        for protocol in ("auto", "d2"):
            result = await typed_port(hass, server.url, protocol=protocol)
            assert_form_error(hass, result, "not_a_balancer")
    assert bms.requests > 0
    assert bms.writes == []


async def test_wrong_rs485_address(
    hass: HomeAssistant, integration: None, short_timings: None
) -> None:
    """Board 1 on the bus, board 3 typed in: no answer, and it says to check."""
    balancer = VirtualBalancer(16, variants=(Variant.P81,), address=1)
    async with await serve_tcp(balancer) as server:
        result = await typed_port(hass, server.url, protocol="p81", rs485_address=3)
        assert_form_error(hass, result, "no_response")
        assert "RS485 address" in STRINGS["config"]["error"]["no_response"]
    assert balancer.requests == 0  # board 1 was never addressed
    assert balancer.writes == []


@pytest.mark.parametrize(
    "port",
    [
        "socket://nohost",
        "socket://:4001",
        "socket://host:99999",
        "http://192.168.1.5:80",
        "rfc2217://host:port",
        "/dev/tty USB0",
        "   ",
    ],
)
async def test_malformed_url(
    hass: HomeAssistant,
    integration: None,
    short_timings: None,
    server: VirtualServer,
    port: str,
) -> None:
    """Refused before anything is opened."""
    result = await typed_port(hass, port)
    assert result["errors"] == {CONF_PORT: "invalid_port"}
    assert_form_error(hass, result, "invalid_port")
    assert server.connects == 0  # type: ignore[attr-defined]


async def test_duplicate_device(
    hass: HomeAssistant, entry: MockConfigEntry, server: VirtualServer
) -> None:
    """The same balancer twice: aborted, the first entry keeps its connection."""
    url = entry.data[CONF_PORT]
    result = await typed_port(hass, url)
    assert result["type"] is FlowResultType.ABORT
    # D2 has no address: any second entry on the port is the same balancer.
    assert result["reason"] == "port_in_use"
    assert "{port}" in STRINGS["config"]["abort"]["port_in_use"]
    assert hass.config_entries.async_entries(DOMAIN) == [entry]


# --- the entities ---------------------------------------------------------------


NUMBER_NAMES = {
    Setting.BALANCE_DELTA_VOLTAGE: "start_delta",
    Setting.BALANCE_START_VOLTAGE: "start_voltage",
    Setting.SLEEP_TIME: "sleep_time",
}


def number_id(setting: Setting) -> str:
    return f"number.balancer_16s_{NUMBER_NAMES[setting]}"


async def test_start_voltage_outside_every_chemistry(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Above every chemistry's range: the message gives the pack's (LFP) range."""
    with pytest.raises(ServiceValidationError) as refused:
        await hass.services.async_call(
            "number",
            "set_value",
            {"entity_id": number_id(Setting.BALANCE_START_VOLTAGE), "value": 4.5},
            blocking=True,
        )
    assert refused.value.translation_key == "invalid_chemistry"
    assert refused.value.translation_placeholders == {
        "value": "4.5",
        "minimum": "2.5",
        "maximum": "3.6",
        "chemistry": "LFP",
    }
    assert balancer.writes == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (Setting.BALANCE_DELTA_VOLTAGE, 2000),  # mV
        (Setting.BALANCE_DELTA_VOLTAGE, 10),  # below the manuals' 20 mV
        (Setting.SLEEP_TIME, 70000),
        (Setting.SLEEP_TIME, -1),
    ],
)
async def test_number_outside_range(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    setting: Setting,
    value: float,
) -> None:
    """Refused with a message naming the range; nothing reaches the balancer."""
    with pytest.raises(ServiceValidationError) as refused:
        await hass.services.async_call(
            "number",
            "set_value",
            {"entity_id": number_id(setting), "value": value},
            blocking=True,
        )
    # The library's rules, in the integration's message, which names the
    # setting, the unit and the range (Home Assistant's would name the entity
    # id and no unit).
    assert refused.value.translation_domain == DOMAIN
    assert refused.value.translation_key == "invalid_range"
    placeholders = refused.value.translation_placeholders
    assert placeholders["value"] == f"{value:g}"
    assert {"setting", "minimum", "maximum", "unit"} <= set(placeholders)
    assert balancer.writes == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [(Setting.BALANCE_DELTA_VOLTAGE, 20.5), (Setting.BALANCE_START_VOLTAGE, 3.4004)],
)
async def test_number_not_on_step(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    setting: Setting,
    value: float,
) -> None:
    """Between two steps: refused (not rounded and written)."""
    with pytest.raises(ServiceValidationError) as refused:
        await hass.services.async_call(
            "number",
            "set_value",
            {"entity_id": number_id(setting), "value": value},
            blocking=True,
        )
    assert refused.value.translation_key == "invalid_step"
    assert "{step}" in STRINGS["exceptions"]["invalid_step"]["message"]
    assert balancer.writes == []


async def test_write_while_unavailable(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Unavailable: a clear error, and no write fires when it is back."""
    coordinator: BalancerCoordinator = entry.runtime_data
    balancer.faults.silent = True
    await coordinator.async_refresh()
    assert not coordinator.last_update_success
    entity = number_id(Setting.BALANCE_DELTA_VOLTAGE)
    assert hass.states.get(entity).state == "unavailable"
    # The write helper (what every entity calls) refuses at once.
    with pytest.raises(HomeAssistantError) as refused:
        await coordinator.async_write(Setting.BALANCE_DELTA_VOLTAGE, 0.03)
    assert refused.value.translation_key == "unavailable"
    assert "nothing was written" in STRINGS["exceptions"]["unavailable"]["message"]
    # An action on the unavailable entity is skipped by Home Assistant itself.
    await hass.services.async_call(
        "number", "set_value", {"entity_id": entity, "value": 40}, blocking=True
    )
    await hass.services.async_call(
        "switch",
        "turn_off",
        {"entity_id": "switch.balancer_16s_balancer"},
        blocking=True,
    )
    balancer.faults.silent = False
    await coordinator.async_refresh()
    assert coordinator.last_update_success
    await asyncio.sleep(0.3)
    await coordinator.async_refresh()
    await hass.async_block_till_done()
    assert balancer.writes == []  # nothing was queued
    assert balancer.balance_delta_voltage == 0.020
    assert balancer.balancer_enabled


async def test_two_writes_at_once(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Two actions at the same time: one after the other, both confirmed."""
    await asyncio.gather(
        hass.services.async_call(
            "number",
            "set_value",
            {"entity_id": number_id(Setting.BALANCE_DELTA_VOLTAGE), "value": 35},
            blocking=True,
        ),
        hass.services.async_call(
            "number",
            "set_value",
            {"entity_id": number_id(Setting.BALANCE_START_VOLTAGE), "value": 3.45},
            blocking=True,
        ),
    )
    assert balancer.balance_delta_voltage == 0.035
    assert balancer.balance_start_voltage == 3.45
    assert len(balancer.writes) == 2
    assert float(hass.states.get(number_id(Setting.BALANCE_DELTA_VOLTAGE)).state) == 35
    assert (
        float(hass.states.get(number_id(Setting.BALANCE_START_VOLTAGE)).state) == 3.45
    )


async def test_two_alarm_writes_that_conflict(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Each alarm is fine alone, together they cross: the second is refused.

    The rule that compares them is checked when each one's turn to write
    comes, against what the first one changed.
    """
    coordinator: BalancerCoordinator = entry.runtime_data
    under = balancer.cell_undervoltage_alarm
    results = await asyncio.gather(
        coordinator.async_write(Setting.CELL_OVERVOLTAGE_ALARM, 2.5),
        coordinator.async_write(Setting.CELL_UNDERVOLTAGE_ALARM, 3.0),
        return_exceptions=True,
    )
    assert results[0] is None  # confirmed
    refused = results[1]
    assert isinstance(refused, ServiceValidationError)
    assert refused.translation_key == "invalid_alarm_order"
    assert refused.translation_placeholders == {"over": "2.5", "under": "3"}
    assert balancer.cell_overvoltage_alarm == 2.5
    assert balancer.cell_undervoltage_alarm == under
    assert balancer.cell_overvoltage_alarm > balancer.cell_undervoltage_alarm
    assert [write.value for write in balancer.writes] == [2500]


async def test_write_after_a_lost_answer_checks_the_device(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """A write whose answers were lost may still have been taken.

    The next write must not be checked against settings that may be out of
    date: here the device took an under-voltage alarm of 3.0 V, the answers
    never came back, and an over-voltage alarm of 2.8 V would now cross it.
    """
    coordinator: BalancerCoordinator = entry.runtime_data
    balancer.faults.once("drop", "drop", "drop")  # every try of the write
    with pytest.raises(HomeAssistantError) as failed:
        await coordinator.async_write(Setting.CELL_UNDERVOLTAGE_ALARM, 3.0)
    assert failed.value.translation_key == "write_failed"
    assert balancer.cell_undervoltage_alarm == 3.0  # taken all the same
    writes = len(balancer.writes)
    with pytest.raises(ServiceValidationError) as refused:
        await coordinator.async_write(Setting.CELL_OVERVOLTAGE_ALARM, 2.8)
    assert refused.value.translation_key == "invalid_alarm_order"
    assert len(balancer.writes) == writes  # nothing more was written
    assert balancer.cell_overvoltage_alarm > balancer.cell_undervoltage_alarm
