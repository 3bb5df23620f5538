"""Config, reconfigure and options flows against the virtual balancer.

Every device is real as far as the flow can tell: a virtual balancer on a
loopback TCP socket (``socket://`` URL), on a pseudo-terminal, or behind the
fake BLE client that stands in for bleak.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
import contextlib
import dataclasses
from datetime import timedelta
import json
from pathlib import Path
import re
import socket
from typing import Any
from unittest.mock import AsyncMock, patch

from homeassistant.components.bluetooth import (
    BluetoothServiceInfoBleak,
    async_get_advertisement_callback,
)
from homeassistant.config_entries import (
    SOURCE_BLUETOOTH,
    SOURCE_IGNORE,
    SOURCE_RECONFIGURE,
    SOURCE_USER,
    ConfigEntryState,
)
from homeassistant.const import CONF_ADDRESS
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.helpers import discovery_flow
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import serialx

from balancer_tools.ha_helpers import (
    BLE_ADDRESS,
    BLE_NAME,
    FAST_TIMINGS,
    ble_service_info,
    bus_timings,
)
from balancer_tools.simulator import (
    FakeConnector,
    Faults,
    Reply,
    VirtualBalancer,
    VirtualServer,
    serve_pty,
    serve_tcp,
)
from custom_components.active_balancer import config_flow, connection
from custom_components.active_balancer.connection import BUSES
from custom_components.active_balancer.const import (
    CONF_BAUDRATE,
    CONF_KEEP_CONNECTED,
    CONF_POLL_INTERVAL,
    CONF_PORT,
    CONF_PROTOCOL,
    CONF_RS485_ADDRESS,
    CONF_SETTINGS_EVERY,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DOMAIN,
    TRANSPORT_BLE,
    TRANSPORT_SERIAL,
)
from custom_components.active_balancer.protocol import Chemistry, Timings, Variant
from custom_components.active_balancer.protocol.advertisement import (
    MANIFEST_MATCHERS,
    Identity,
    classify,
)
from custom_components.active_balancer.protocol.crc import append_crc
from custom_components.active_balancer.protocol.frames import (
    D2_ADDRESS,
    FC_ERROR_FLAG,
    FC_READ,
)
from custom_components.active_balancer.protocol.registers import (
    D2_TABLE,
    MODBUS_TABLES,
)

from .conftest import (
    SERIAL_PORT_SOURCE,
    serial_entry_data,
    setup_entry,
)

SERVICE_UUID = "0000fff0-0000-1000-8000-00805f9b34fb"
LINE = {CONF_BAUDRATE: "9600", CONF_PROTOCOL: "auto", CONF_RS485_ADDRESS: 1}
"""The line settings of the serial step as the form submits them."""


# --- virtual devices that are not quite balancers -----------------------------


def reads_settings(request: bytes) -> bool:
    """Whether *request* is a D2 read from 0x80 on (settings, identity)."""
    return (
        request[:2] == bytes((D2_ADDRESS, FC_READ))
        and int.from_bytes(request[2:4], "big") >= 0x80
    )


class Misbehaving(VirtualBalancer):
    """A device that answers, but not quite like a balancer, while ``fault`` is set.

    * ``zero_cells``: the cell count register reads 0;
    * ``refuse_settings``: reads from 0x80 on get a Modbus exception;
    * ``corrupt_settings``: replies to reads from 0x80 on have a bad CRC;
    * ``corrupt_later``: every reply after the first has a bad CRC.
    """

    fault: str | None = None

    def registers(self, variant: Variant, start: int, count: int) -> list[int]:
        """Show 0 in the cell count register for ``zero_cells``."""
        values = super().registers(variant, start, count)
        register = MODBUS_TABLES[variant].live.cell_count
        if self.fault == "zero_cells" and start <= register < start + count:
            values[register - start] = 0
        return values

    def handle(self, request: bytes | bytearray) -> bytes | list[bytes] | None:
        """Refuse settings reads for ``refuse_settings``."""
        if self.fault == "refuse_settings" and reads_settings(bytes(request)):
            return append_crc(bytes((D2_ADDRESS, FC_READ | FC_ERROR_FLAG, 0x02)))
        return super().handle(request)

    def answer(self, request: bytes | bytearray) -> Reply | None:
        """Flip the CRC of settings replies for ``corrupt_settings``."""
        reply = super().answer(request)
        if reply is not None and (
            (self.fault == "corrupt_settings" and reads_settings(bytes(request)))
            or (self.fault == "corrupt_later" and self.replies > 1)
        ):
            data = bytearray(reply.data)
            data[-1] ^= 0xFF
            return dataclasses.replace(reply, data=bytes(data))
        return reply


class WithSerialNumber(VirtualBalancer):
    """A balancer that reports a machine code in the D2 info block."""

    serial_number = "DL2024SN0001"

    def registers(self, variant: Variant, start: int, count: int) -> list[int]:
        """Put the serial number at bytes 32..63 of the info block."""
        values = super().registers(variant, start, count)
        if variant is Variant.D2:
            offset, size = D2_TABLE.serial_number or (0, 0)
            text = self.serial_number.encode().ljust(size, b"\x00")
            first = D2_TABLE.info_block.start + offset // 2
            for i in range(size // 2):
                register = first + i
                if start <= register < start + count:
                    values[register - start] = int.from_bytes(
                        text[2 * i : 2 * i + 2], "big"
                    )
        return values


# --- helpers ------------------------------------------------------------------


def closed_url() -> str:
    """A socket:// URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"socket://127.0.0.1:{port}"


def quick_serial_timeout() -> contextlib.AbstractContextManager[None]:
    """While nothing useful will answer: give up on each request sooner."""
    return bus_timings(dataclasses.replace(connection.TIMINGS, serial_timeout=0.05))


def field(result: FlowResult, name: str) -> Any:
    """The schema key *name* of a form (carries default and suggested value)."""
    for key in result["data_schema"].schema:
        if key == name:
            return key
    raise AssertionError(f"{name} is not on the form")


def suggested(result: FlowResult, name: str) -> Any:
    """The value a form shows pre-filled in field *name*."""
    return (field(result, name).description or {}).get("suggested_value")


def port_options(result: FlowResult) -> list[dict[str, str]]:
    """The options of the port drop-down of the serial step."""
    return list(
        result["data_schema"].schema[field(result, CONF_PORT)].config["options"]
    )


def listed_port(path: str, **usb: Any) -> serialx.SerialPortInfo:
    """A port as serialx lists it; *usb* sets vid, pid, product and so on."""
    fields: dict[str, Any] = dict.fromkeys(
        (
            "vid",
            "pid",
            "serial_number",
            "manufacturer",
            "product",
            "bcd_device",
            "interface_description",
            "interface_num",
        )
    )
    return serialx.SerialPortInfo(device=path, resolved_device=path, **(fields | usb))


async def inject(
    hass: HomeAssistant, *infos: BluetoothServiceInfoBleak, discover: bool = True
) -> None:
    """Let the Bluetooth integration see *infos*, as if a scanner heard them.

    With ``discover=False`` no discovery flow is started for them.
    """
    received = async_get_advertisement_callback(hass)
    with contextlib.ExitStack() as stack:
        if not discover:
            stack.enter_context(patch.object(discovery_flow, "async_create_flow"))
        for info in infos:
            received(info)
        await hass.async_block_till_done(wait_background_tasks=True)


async def start_serial(hass: HomeAssistant) -> FlowResult:
    """Open the user flow and choose the serial branch of the menu."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "serial"}
    )


async def start_manual(hass: HomeAssistant, **line: Any) -> FlowResult:
    """Open the serial branch and choose to type the port."""
    result = await start_serial(hass)
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PORT: "manual", **LINE, **line}
    )


async def submit(hass: HomeAssistant, result: FlowResult, **data: Any) -> FlowResult:
    """Submit *data* to the form of *result*, as the UI does: with what it shows.

    The frontend sends every field, pre-filled ones included; *data* is what
    the user typed over them.
    """
    shown: dict[str, Any] = {}
    schema = result.get("data_schema")
    if schema is not None:
        for key in schema.schema:
            value = (getattr(key, "description", None) or {}).get("suggested_value")
            if value is not None:
                shown[str(key)] = value
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], shown | data
    )


async def start_pick(hass: HomeAssistant) -> FlowResult:
    """Open the user flow and choose the Bluetooth branch of the menu."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "pick_bluetooth"}
    )


def ble_config_entry(address: str = BLE_ADDRESS, **kwargs: Any) -> MockConfigEntry:
    """A Bluetooth entry for *address*."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=BLE_NAME,
        data={
            CONF_TRANSPORT: TRANSPORT_BLE,
            CONF_ADDRESS: address,
            CONF_VARIANT: "d2",
        },
        unique_id=address,
        **kwargs,
    )


# --- fixtures -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def serial_ports() -> Iterator[AsyncMock]:
    """The serial ports the host lists: none, unless a test says otherwise."""
    with patch(
        SERIAL_PORT_SOURCE,
        return_value=[],
    ) as ports:
        yield ports


@pytest.fixture
def timings() -> Timings:
    """Bluetooth gives up quickly too: the fake client answers at once."""
    return dataclasses.replace(FAST_TIMINGS, ble_timeout=0.05, byte_time=1e-4)


@pytest.fixture
def connector(enable_bluetooth: None, ble_connector: FakeConnector) -> FakeConnector:
    """Bluetooth on, and every BLE connection reaches the virtual balancer."""
    return ble_connector


@pytest.fixture
async def pty(balancer: VirtualBalancer) -> AsyncIterator[VirtualServer]:
    """The virtual balancer behind a pseudo-terminal."""
    async with await serve_pty(balancer) as server:
        yield server


# --- user step ----------------------------------------------------------------


async def test_user_shows_menu(hass: HomeAssistant) -> None:
    """The user step asks how the balancer is connected."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "user"
    assert result["menu_options"] == ["pick_bluetooth", "serial"]


# --- serial: success ----------------------------------------------------------


async def test_serial_manual_url_creates_entry(
    hass: HomeAssistant, server: VirtualServer
) -> None:
    """Serial -> enter a URL -> the balancer answers -> entry created."""
    result = await start_serial(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial"
    assert result["errors"] == {}
    assert port_options(result) == [{"value": "manual", "label": "manual"}]
    # No USB adapter: "enter a path or URL" is preselected.
    assert field(result, CONF_PORT).default() == "manual"
    assert field(result, CONF_BAUDRATE).default() == "9600"
    assert field(result, CONF_PROTOCOL).default() == "auto"
    assert field(result, CONF_RS485_ADDRESS).default() == 1

    result = await submit(hass, result, port="manual", **LINE)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial_manual"
    assert result["errors"] == {}
    assert suggested(result, CONF_PORT) is None
    # The line settings were chosen on the first form: not asked again.
    assert [str(key) for key in result["data_schema"].schema] == [CONF_PORT]

    result = await submit(hass, result, port=f"  {server.url} ")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"Balancer 16S on {server.url}"
    # One protocol key: the variant "automatic" found.
    assert result["data"] == {
        CONF_TRANSPORT: TRANSPORT_SERIAL,
        CONF_PORT: server.url,
        CONF_BAUDRATE: 9600,
        CONF_RS485_ADDRESS: 1,
        CONF_VARIANT: "d2",
    }
    assert type(result["data"][CONF_BAUDRATE]) is int
    assert type(result["data"][CONF_RS485_ADDRESS]) is int
    entry = result["result"]
    # No serial number: no unique id (a URL is not a device's identity).
    assert entry.unique_id is None
    await hass.async_block_till_done()
    # The entry works and holds the only connection; the probe's is closed.
    assert entry.state is ConfigEntryState.LOADED
    assert server.connections == 1
    assert len(hass.data[BUSES]) == 1


async def test_serial_listed_port_creates_entry(
    hass: HomeAssistant, pty: VirtualServer, serial_ports: AsyncMock
) -> None:
    """A listed port (a real pty here) is probed straight from the first form."""
    assert pty.path is not None
    serial_ports.return_value = [
        listed_port(
            pty.path,
            vid=0x1A86,
            pid=0x7523,
            serial_number="A1B2",
            manufacturer="QinHeng",
            product="USB Serial",
        )
    ]
    result = await start_serial(hass)
    assert port_options(result) == [
        {
            "value": pty.path,
            "label": f"USB Serial - {pty.path}, s/n: A1B2 - QinHeng - 6790:29987",
        },
        {"value": "manual", "label": "manual"},
    ]
    # The USB adapter is preselected.
    assert field(result, CONF_PORT).default() == pty.path
    result = await submit(hass, result, port=pty.path, **LINE | {"protocol": "d2"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"Balancer 16S on {pty.path}"
    assert result["data"][CONF_PORT] == pty.path
    assert result["data"][CONF_VARIANT] == "d2"
    assert CONF_PROTOCOL not in result["data"]
    assert result["result"].unique_id is None


async def test_serial_a5_balancer_shows_its_cells(hass: HomeAssistant) -> None:
    """An A5-only balancer is named after its real cell count."""
    balancer = VirtualBalancer(12, variants=(Variant.A5,))
    async with await serve_tcp(balancer) as server:
        result = await start_manual(hass, protocol="a5")
        result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["title"] == f"Balancer 12S on {server.url}"
        assert result["data"][CONF_VARIANT] == "a5"
        await hass.async_block_till_done()
        assert await hass.config_entries.async_unload(result["result"].entry_id)


# --- serial: errors and recovery -----------------------------------------------


@pytest.mark.parametrize(
    "port",
    ["socket://nohost", "bad scheme://x", "/dev/tty USB0", "   ", "socket://h:0"],
)
async def test_serial_invalid_port(
    hass: HomeAssistant, server: VirtualServer, port: str
) -> None:
    """A malformed path or URL is refused before anything is opened."""
    result = await start_manual(hass)
    result = await submit(hass, result, port=port)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial_manual"
    assert result["errors"] == {CONF_PORT: "invalid_port"}
    assert suggested(result, CONF_PORT) == port
    assert server.connects == 0
    assert hass.config_entries.async_entries(DOMAIN) == []
    # Correcting the input creates the entry.
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_PORT] == server.url


@pytest.mark.parametrize(
    "port",
    [pytest.param(None, id="closed-tcp-port"), "/dev/ttyNoSuchBalancer0"],
)
async def test_serial_cannot_connect(
    hass: HomeAssistant, server: VirtualServer, port: str | None
) -> None:
    """A port that cannot be opened is reported as cannot_connect."""
    port = port or closed_url()
    result = await start_manual(hass)
    result = await submit(hass, result, port=port)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial_manual"
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result, CONF_PORT) == port
    assert hass.config_entries.async_entries(DOMAIN) == []
    assert not hass.data[BUSES]
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_serial_no_response(
    hass: HomeAssistant, server: VirtualServer, balancer: VirtualBalancer
) -> None:
    """A port that opens but where nothing answers (any protocol)."""
    balancer.faults = Faults(silent=True)
    result = await start_manual(hass, baudrate="115200")
    with quick_serial_timeout():
        result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial_manual"
    assert result["errors"] == {"base": "no_response"}
    # Now the line settings may be wrong: shown, with what was chosen.
    assert [str(key) for key in result["data_schema"].schema] == [
        CONF_PORT,
        CONF_BAUDRATE,
        CONF_PROTOCOL,
        CONF_RS485_ADDRESS,
    ]
    assert suggested(result, CONF_BAUDRATE) == "115200"
    assert suggested(result, CONF_PORT) == server.url
    assert hass.config_entries.async_entries(DOMAIN) == []
    # D2, p81 and A5 were all tried.
    assert balancer.requests >= 3
    # The balancer wakes up; the same input now works.
    balancer.faults.clear()
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_BAUDRATE] == 115200


@pytest.mark.parametrize(
    ("fault", "protocol"),
    [
        ("zero_cells", "d2"),
        ("corrupt_everything", "d2"),
    ],
)
async def test_serial_not_a_balancer(
    hass: HomeAssistant, fault: str, protocol: str
) -> None:
    """Something answers, but not like a balancer."""
    device = Misbehaving(16, variants=(Variant.D2,))
    if fault == "corrupt_everything":
        device.faults = Faults(corrupt=1.0)
    else:
        device.fault = fault
    async with await serve_tcp(device) as server:
        result = await start_manual(hass, protocol=protocol)
        with quick_serial_timeout():
            result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.FORM
        assert result["step_id"] == "serial_manual"
        assert result["errors"] == {"base": "not_a_balancer"}
        assert hass.config_entries.async_entries(DOMAIN) == []
        assert not hass.data[BUSES]
        # A real balancer on that port now.
        device.fault = None
        device.faults.clear()
        result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        await hass.async_block_till_done()
        assert await hass.config_entries.async_unload(result["result"].entry_id)


@pytest.mark.parametrize("fault", ["refuse_settings", "corrupt_settings"])
async def test_serial_settings_unanswered_still_adds_the_balancer(
    hass: HomeAssistant, fault: str
) -> None:
    """Settings are optional: a balancer whose settings reads fail is added."""
    device = Misbehaving(16, variants=(Variant.D2,))
    device.fault = fault
    async with await serve_tcp(device) as server:
        result = await start_manual(hass)
        with quick_serial_timeout():
            result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["data"][CONF_VARIANT] == "d2"
        await hass.async_block_till_done()
        coordinator = result["result"].runtime_data
        assert "settings" in coordinator.client.snapshot.unanswered
        assert coordinator.data.settings.balance_delta_voltage is None
        assert await hass.config_entries.async_unload(result["result"].entry_id)


async def test_serial_line_fails_after_detection(hass: HomeAssistant) -> None:
    """A balancer is detected, then its replies arrive corrupt: cannot_connect."""
    device = Misbehaving(16, variants=(Variant.A5,))
    device.fault = "corrupt_later"
    async with await serve_tcp(device) as server:
        result = await start_manual(hass)
        with quick_serial_timeout():
            result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"base": "cannot_connect"}
        assert hass.config_entries.async_entries(DOMAIN) == []


async def test_serial_p81_wrong_address(hass: HomeAssistant) -> None:
    """p81 with a board number nobody has: nothing answers."""
    balancer = VirtualBalancer(16, variants=(Variant.P81,), address=1)
    async with await serve_tcp(balancer) as server:
        result = await start_manual(
            hass, protocol="p81", rs485_address=3, baudrate="115200"
        )
        with quick_serial_timeout():
            result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"base": "no_response"}
        assert balancer.requests == 0
    assert hass.config_entries.async_entries(DOMAIN) == []


async def test_serial_proxy_url_is_listed_as_it_is(
    hass: HomeAssistant, serial_ports: AsyncMock
) -> None:
    """A port named by a URL (an ESPHome serial proxy) is offered unchanged."""
    url = "esphome://proxy.local:6053/?port_name=uart"
    serial_ports.return_value = [listed_port(url)]
    result = await start_serial(hass)
    assert port_options(result) == [
        {"value": url, "label": f"{url}, s/n: n/a"},
        {"value": "manual", "label": "manual"},
    ]
    # Not a USB adapter: "enter a path or URL" stays preselected.
    assert field(result, CONF_PORT).default() == "manual"


async def test_serial_listed_port_error_keeps_form(
    hass: HomeAssistant, pty: VirtualServer, serial_ports: AsyncMock
) -> None:
    """A listed adapter that is gone by now: the first form again, filled in."""
    assert pty.path is not None
    serial_ports.return_value = [
        listed_port("/dev/ttyUSB-unplugged"),
        listed_port(pty.path),
    ]
    result = await start_serial(hass)
    line = LINE | {CONF_PROTOCOL: "d2", CONF_BAUDRATE: "115200"}
    result = await submit(hass, result, port="/dev/ttyUSB-unplugged", **line)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial"
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result, CONF_PORT) == "/dev/ttyUSB-unplugged"
    assert suggested(result, CONF_PROTOCOL) == "d2"
    assert suggested(result, CONF_BAUDRATE) == "115200"
    assert port_options(result) == [
        {"value": "/dev/ttyUSB-unplugged", "label": "/dev/ttyUSB-unplugged, s/n: n/a"},
        {"value": pty.path, "label": f"{pty.path}, s/n: n/a"},
        {"value": "manual", "label": "manual"},
    ]
    assert hass.config_entries.async_entries(DOMAIN) == []
    # The other adapter is the right one.
    result = await submit(hass, result, port=pty.path, **line)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_PORT] == pty.path
    assert result["data"][CONF_BAUDRATE] == 115200


# --- serial: already configured ---------------------------------------------------


async def test_serial_same_url_and_address_twice(
    hass: HomeAssistant, server: VirtualServer
) -> None:
    """The same port and RS485 address cannot be added twice."""
    result = await start_manual(hass)
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    title = result["title"]
    await hass.async_block_till_done()

    result = await start_manual(hass)
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "port_in_use"
    assert result["description_placeholders"] == {
        "title": title,
        "port": server.url,
        "protocol": "D2",
    }
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


@pytest.mark.parametrize("protocol", ["auto", "d2"])
async def test_d2_same_balancer_with_another_address(
    hass: HomeAssistant, server: VirtualServer, protocol: str
) -> None:
    """D2 ignores the address: another address on the port is the same balancer."""
    result = await start_manual(hass)
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()

    result = await start_manual(hass, rs485_address=2, protocol=protocol)
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "port_in_use"
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


async def test_serial_port_used_by_other_entry(
    hass: HomeAssistant, server: VirtualServer, entry: MockConfigEntry
) -> None:
    """An entry made by an earlier version (port-based unique id) counts too."""
    result = await start_manual(hass)
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "port_in_use"
    assert result["description_placeholders"]["title"] == entry.title
    assert hass.config_entries.async_entries(DOMAIN) == [entry]


async def test_p81_on_the_port_of_a_d2_entry(
    hass: HomeAssistant, server: VirtualServer, entry: MockConfigEntry
) -> None:
    """The D2 balancer on a port also answers p81: still the same balancer."""
    result = await start_manual(hass, protocol="p81", rs485_address=1)
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "port_in_use"
    assert result["description_placeholders"]["protocol"] == "D2"
    assert hass.config_entries.async_entries(DOMAIN) == [entry]


async def test_d2_on_the_port_of_a_p81_entry(
    hass: HomeAssistant, server: VirtualServer
) -> None:
    """A port with p81 boards has no room for a balancer without an address."""
    MockConfigEntry(
        domain=DOMAIN,
        title="Balancer 16S #3 on the bus",
        data=serial_entry_data(server.url, "p81", 3),
    ).add_to_hass(hass)
    result = await start_manual(hass, protocol="d2")
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "port_in_use"
    assert result["description_placeholders"]["protocol"] == "D2"
    assert result["description_placeholders"]["title"] == "Balancer 16S #3 on the bus"


async def test_serial_number_is_unique_id(hass: HomeAssistant) -> None:
    """A balancer with a machine code is known by it, on whatever port."""
    balancer = WithSerialNumber(8)
    async with (
        await serve_tcp(balancer) as first,
        await serve_tcp(balancer) as second,
    ):
        result = await start_manual(hass)
        result = await submit(hass, result, port=first.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["title"] == f"Balancer 8S on {first.url}"
        assert result["result"].unique_id == "DL2024SN0001"
        await hass.async_block_till_done()

        # The same balancer, moved to another gateway.
        result = await start_manual(hass)
        result = await submit(hass, result, port=second.url)
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_configured"
        assert len(hass.config_entries.async_entries(DOMAIN)) == 1
        assert await hass.config_entries.async_unload(
            hass.config_entries.async_entries(DOMAIN)[0].entry_id
        )


async def test_p81_two_balancers_on_one_bus(hass: HomeAssistant) -> None:
    """Boards 1 and 2 on one RS485 line: both added, sharing one connection."""
    first = VirtualBalancer(16, variants=(Variant.P81,), address=1)
    second = VirtualBalancer(8, Chemistry.NMC, variants=(Variant.P81,), address=2)
    async with await serve_tcp([first, second]) as server:
        result = await start_manual(hass, protocol="p81", rs485_address=1)
        result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["title"] == f"Balancer 16S #1 on {server.url}"
        first_entry = result["result"]
        assert first_entry.unique_id is None
        await hass.async_block_till_done()
        assert first_entry.state is ConfigEntryState.LOADED

        result = await start_manual(hass, protocol="p81", rs485_address=2)
        result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["title"] == f"Balancer 8S #2 on {server.url}"
        assert result["data"][CONF_RS485_ADDRESS] == 2
        assert result["data"][CONF_VARIANT] == "p81"
        second_entry = result["result"]
        assert second_entry.unique_id is None
        await hass.async_block_till_done()
        assert second_entry.state is ConfigEntryState.LOADED

        # One bus, one connection, both entries on it; the first still polls.
        # Connections ever opened: the first probe's and the first entry's;
        # the second probe and the second entry used the first entry's bus.
        assert len(hass.data[BUSES]) == 1
        assert server.connections == 1
        assert server.connects == 2
        coordinator = first_entry.runtime_data
        assert coordinator.client.bus is second_entry.runtime_data.client.bus
        await coordinator.async_refresh()
        assert coordinator.last_update_success
        assert coordinator.data.reading.cell_count == 16

        # Board 1 again is refused.
        result = await start_manual(hass, protocol="p81", rs485_address=1)
        result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_configured"
        assert server.connections == 1

        for entry in (first_entry, second_entry):
            assert await hass.config_entries.async_unload(entry.entry_id)
        assert not hass.data[BUSES]


# --- Bluetooth discovery ------------------------------------------------------------


def identified(
    address: str = BLE_ADDRESS, name: str = BLE_NAME
) -> BluetoothServiceInfoBleak:
    """A dongle's advertisement with our name and the UART-bridge service."""
    return ble_service_info(address, name, service_uuids=[SERVICE_UUID])


def test_manifest_matchers_are_the_advertisement_rules() -> None:
    """manifest.json matches exactly what protocol.advertisement says."""
    manifest = json.loads(
        (Path(config_flow.__file__).parent / "manifest.json").read_text("utf-8")
    )
    assert manifest["bluetooth"] == MANIFEST_MATCHERS
    assert not any("manufacturer_id" in matcher for matcher in MANIFEST_MATCHERS)


@pytest.mark.parametrize("language", ["en", "de", "zh-Hans"])
def test_discovery_texts_are_translated(language: str) -> None:
    """The confirm dialogs say what was and was not probed, in every language."""
    folder = Path(config_flow.__file__).parent
    strings = json.loads((folder / "strings.json").read_text("utf-8"))["config"]
    texts = json.loads(
        (folder / "translations" / f"{language}.json").read_text("utf-8")
    )["config"]
    for step in ("bluetooth_confirm", "bluetooth_unprobed"):
        for key in ("title", "description"):
            source, text = strings["step"][step][key], texts["step"][step][key]
            placeholders = set(re.findall(r"{(\w+)}", source))
            assert set(re.findall(r"{(\w+)}", text)) == placeholders, step
    assert texts["abort"]["not_supported"]
    if language != "en":
        assert (
            texts["step"]["bluetooth_unprobed"]["description"]
            != (strings["step"]["bluetooth_unprobed"]["description"])
        )


@pytest.mark.parametrize(
    ("name", "uuids", "data", "identity"),
    [
        ("DL-40D63C3223A2", [SERVICE_UUID], {}, Identity.IDENTIFIED),
        ("jhb-501901019e89", [SERVICE_UUID.upper()], {}, Identity.IDENTIFIED),
        ("DL-D018050114B6", [], {}, Identity.POSSIBLE),
        ("Akku-2", [SERVICE_UUID], {}, Identity.POSSIBLE),
        (
            "Randomname",
            [],
            {0x0104: bytes.fromhex("0150181201a3b34a4842")},
            Identity.POSSIBLE,
        ),
        (None, [], {258: b"\x01\x02\x03"}, Identity.FOREIGN),
        ("Keiser M3", [], {258: b"\x04"}, Identity.FOREIGN),
        ("Thermometer", ["0000180f-0000-1000-8000-00805f9b34fb"], {}, Identity.FOREIGN),
    ],
)
def test_advertisement_rules(
    name: str | None, uuids: list[str], data: dict[int, bytes], identity: Identity
) -> None:
    assert classify(name, uuids, data) is identity


async def test_bluetooth_foreign_manufacturer_id_starts_no_flow(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """Manufacturer ID 258 (Keiser) and no DL-/JHB- name: no flow, no connection."""
    keiser = ble_service_info(
        "C0:FF:EE:00:01:02", "", manufacturer_data={258: b"\x06\x00\x10\x20"}
    )
    await inject(hass, keiser)
    assert hass.config_entries.flow.async_progress_by_handler(DOMAIN) == []
    assert connector.attempts == 0
    # Even when a flow is started for it, nothing connects to it.
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=keiser
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "not_supported"
    assert connector.attempts == 0
    # The same scanner does start a flow for a dongle's name (control).
    await inject(hass, ble_service_info())
    assert len(hass.config_entries.flow.async_progress_by_handler(DOMAIN)) == 1
    assert connector.attempts == 0


async def test_bluetooth_name_only_asks_before_connecting(
    hass: HomeAssistant, connector: FakeConnector, balancer: VirtualBalancer
) -> None:
    """A DL- name without the service: asked first, probed only on submit."""
    await inject(hass, ble_service_info())
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert len(flows) == 1
    assert flows[0]["step_id"] == "bluetooth_unprobed"
    assert connector.attempts == 0
    assert balancer.requests == 0

    balancer.faults = Faults(silent=True)
    result = await hass.config_entries.flow.async_configure(flows[0]["flow_id"], {})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "bluetooth_unprobed"
    assert result["errors"] == {"base": "no_response"}
    assert result["description_placeholders"] == {
        "name": BLE_NAME,
        "address": BLE_ADDRESS,
    }
    balancer.faults.clear()
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_VARIANT] == "d2"
    assert result["title"] == BLE_NAME


async def test_bluetooth_service_only_asks_before_connecting(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """The fff0 service under another name: asked first as well."""
    info = ble_service_info(name="Akku-2", service_uuids=[SERVICE_UUID])
    await inject(hass, info, discover=False)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "bluetooth_unprobed"
    assert connector.attempts == 0


async def test_bluetooth_discovery_creates_entry(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """A DL- name with the fff0 service: the flow probes, asks, and creates."""
    await inject(hass, identified())
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert len(flows) == 1
    flow = flows[0]
    assert flow["step_id"] == "bluetooth_confirm"
    assert flow["context"]["source"] == SOURCE_BLUETOOTH
    assert flow["context"]["unique_id"] == BLE_ADDRESS
    assert flow["context"]["title_placeholders"] == {"name": BLE_NAME}
    assert connector.connects == 1

    result = await hass.config_entries.flow.async_configure(flow["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == BLE_NAME
    assert result["data"] == {
        CONF_TRANSPORT: TRANSPORT_BLE,
        CONF_ADDRESS: BLE_ADDRESS,
        CONF_VARIANT: "d2",
    }
    assert result["result"].unique_id == BLE_ADDRESS
    await hass.async_block_till_done()
    assert result["result"].state is ConfigEntryState.LOADED
    # One connection for the probe, one for the entry: confirming did not probe.
    assert connector.connects == 2


async def test_bluetooth_confirm_form(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """The confirmation shows what the probe found."""
    info = identified()
    await inject(hass, info, discover=False)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "bluetooth_confirm"
    assert result["description_placeholders"] == {
        "name": BLE_NAME,
        "protocol": "D2",
        "cells": "16",
        "firmware": "B002_111132_03",
    }
    assert result["errors"] is None
    result = await submit(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_ADDRESS] == BLE_ADDRESS


async def test_bluetooth_discovery_not_a_balancer(
    hass: HomeAssistant, connector: FakeConnector, balancer: VirtualBalancer
) -> None:
    """A dongle whose balancer does not answer: the discovery is dropped."""
    balancer.faults = Faults(silent=True)
    info = identified()
    await inject(hass, info, discover=False)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "not_a_balancer"
    assert hass.config_entries.async_entries(DOMAIN) == []


async def test_bluetooth_discovery_connect_fails(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """The dongle is seen but refuses every connection."""
    connector.fail = 1000
    info = identified()
    await inject(hass, info, discover=False)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "cannot_connect"
    assert connector.attempts >= 1
    assert connector.connects == 0


async def test_bluetooth_discovery_out_of_range(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """No adapter or proxy can reach the device any more."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=identified()
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "cannot_connect"
    assert connector.attempts == 0


async def test_bluetooth_discovery_already_configured(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """A configured dongle is not offered again."""
    ble_config_entry().add_to_hass(hass)
    info = identified()
    await inject(hass, info, discover=False)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert connector.attempts == 0
    # Nor does a new advertisement start a flow.
    await inject(hass, ble_service_info(name="DL-RENAMED"))
    assert hass.config_entries.flow.async_progress_by_handler(DOMAIN) == []


# --- Bluetooth pick list ------------------------------------------------------------


def listed() -> dict[str, BluetoothServiceInfoBleak]:
    """Advertisements the pick list shows, by address."""
    return {
        "AA:00:00:00:00:01": ble_service_info("AA:00:00:00:00:01", "DL-0001"),
        "AA:00:00:00:00:02": ble_service_info("AA:00:00:00:00:02", "jhb-0002"),
        "AA:00:00:00:00:03": ble_service_info(
            "AA:00:00:00:00:03", "Renamed", manufacturer_data={0x0102: b"\x01DL"}
        ),
        "AA:00:00:00:00:04": ble_service_info(
            "AA:00:00:00:00:04", "Tagged", manufacturer_data={0x0A0B: b"\x10\x20DL"}
        ),
        "AA:00:00:00:00:05": ble_service_info(
            "AA:00:00:00:00:05", "TaggedJ", manufacturer_data={0x0C0D: b"\x10JHB\x00"}
        ),
        "AA:00:00:00:00:06": ble_service_info(
            "AA:00:00:00:00:06", "Bridge", service_uuids=[SERVICE_UUID]
        ),
        "AA:00:00:00:00:07": ble_service_info("AA:00:00:00:00:07", "DL-IGNORED"),
    }


def not_listed() -> list[BluetoothServiceInfoBleak]:
    """Advertisements the pick list leaves out (with the entry set up below)."""
    return [
        ble_service_info(
            "BB:00:00:00:00:01",
            "Thermometer",
            manufacturer_data={0x0059: b"\x01\x02"},
            service_uuids=["0000180f-0000-1000-8000-00805f9b34fb"],
        ),
        # A foreign company ID the old matchers took for a dongle.
        ble_service_info(
            "BB:00:00:00:00:04", "Keiser", manufacturer_data={0x0102: b"\x01\x02"}
        ),
        ble_service_info("BB:00:00:00:00:02", "DL-PASSIVE", connectable=False),
        ble_service_info("BB:00:00:00:00:03", "DL-CONFIGURED"),
    ]


async def test_pick_bluetooth_lists_only_balancers(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """Only connectable, unconfigured devices that look like dongles are listed."""
    ble_config_entry("BB:00:00:00:00:03").add_to_hass(hass)
    ignored = ble_config_entry("AA:00:00:00:00:07", source=SOURCE_IGNORE)
    ignored.add_to_hass(hass)
    shown = listed()
    await inject(hass, *shown.values(), *not_listed(), discover=False)

    result = await start_pick(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "pick_bluetooth"
    assert result["errors"] == {}
    choices = result["data_schema"].schema[field(result, CONF_ADDRESS)].container
    assert choices == {
        address: f"{info.name} ({address})" for address, info in shown.items()
    }
    assert connector.attempts == 0

    result = await submit(hass, result, address="AA:00:00:00:00:03")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Renamed"
    assert result["data"] == {
        CONF_TRANSPORT: TRANSPORT_BLE,
        CONF_ADDRESS: "AA:00:00:00:00:03",
        CONF_VARIANT: "d2",
    }
    assert result["result"].unique_id == "AA:00:00:00:00:03"


async def test_pick_bluetooth_ignored_device(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """A device the user ignored can still be added by hand."""
    ignored = ble_config_entry(source=SOURCE_IGNORE)
    ignored.add_to_hass(hass)
    await inject(hass, ble_service_info(), discover=False)
    result = await start_pick(hass)
    result = await submit(hass, result, address=BLE_ADDRESS)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == BLE_ADDRESS
    assert result["result"].source == SOURCE_USER


async def test_pick_bluetooth_no_devices(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """Nothing that looks like a balancer around: the flow ends."""
    await inject(hass, *not_listed(), discover=False)
    ble_config_entry("BB:00:00:00:00:03").add_to_hass(hass)
    result = await start_pick(hass)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_devices_found"


@pytest.mark.parametrize(
    ("fault", "error"),
    [("connect", "cannot_connect"), ("silent", "no_response")],
)
async def test_pick_bluetooth_probe_fails(
    hass: HomeAssistant,
    connector: FakeConnector,
    balancer: VirtualBalancer,
    fault: str,
    error: str,
) -> None:
    """A failed probe shows the list again with the error; a retry works."""
    if fault == "connect":
        connector.fail = 1000
    else:
        balancer.faults = Faults(silent=True)
    await inject(hass, ble_service_info(), discover=False)
    result = await start_pick(hass)
    result = await submit(hass, result, address=BLE_ADDRESS)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "pick_bluetooth"
    assert result["errors"] == {"base": error}
    assert list(
        result["data_schema"].schema[field(result, CONF_ADDRESS)].container
    ) == [BLE_ADDRESS]
    assert hass.config_entries.async_entries(DOMAIN) == []

    connector.fail = 0
    balancer.faults.clear()
    result = await submit(hass, result, address=BLE_ADDRESS)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == BLE_NAME


async def test_pick_bluetooth_configured_meanwhile(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """The device was added (by discovery) while the list was open."""
    await inject(hass, ble_service_info(), discover=False)
    result = await start_pick(hass)
    ble_config_entry().add_to_hass(hass)
    result = await submit(hass, result, address=BLE_ADDRESS)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert connector.attempts == 0


# --- reconfigure ----------------------------------------------------------------


async def test_reconfigure_to_new_url(
    hass: HomeAssistant, server: VirtualServer, entry: MockConfigEntry
) -> None:
    """The balancer moved to another gateway: same entry, new URL, reloaded."""
    await setup_entry(hass, entry)
    old = entry.runtime_data
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["errors"] == {}
    assert suggested(result, CONF_PORT) == server.url
    assert suggested(result, CONF_BAUDRATE) == "9600"
    # The protocol the entry was detected with.
    assert suggested(result, CONF_PROTOCOL) == "d2"
    assert suggested(result, CONF_RS485_ADDRESS) == 1

    async with await serve_tcp(VirtualBalancer(16)) as other:
        result = await submit(hass, result, port=other.url, **LINE)
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "reconfigure_successful"
        await hass.async_block_till_done()
        assert entry.data == serial_entry_data(other.url)
        assert entry.unique_id == "virtual-1"
        assert hass.config_entries.async_entries(DOMAIN) == [entry]
        assert entry.state is ConfigEntryState.LOADED
        assert entry.runtime_data is not old
        assert other.connections == 1
        assert server.connections == 0
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_reconfigure_same_port_other_settings(
    hass: HomeAssistant, server: VirtualServer, entry: MockConfigEntry
) -> None:
    """The entry's own port does not count as taken."""
    await setup_entry(hass, entry)
    result = await entry.start_reconfigure_flow(hass)
    line = LINE | {CONF_PROTOCOL: "d2", CONF_BAUDRATE: "19200"}
    result = await submit(hass, result, port=server.url, **line)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == serial_entry_data(server.url) | {CONF_BAUDRATE: 19200}
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED


async def test_reconfigure_errors_then_success(
    hass: HomeAssistant, server: VirtualServer, entry: MockConfigEntry
) -> None:
    """A bad port shows the form again with what was typed."""
    result = await entry.start_reconfigure_flow(hass)
    line = LINE | {CONF_BAUDRATE: "19200"}
    result = await submit(hass, result, port="socket://nohost", **line)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["errors"] == {CONF_PORT: "invalid_port"}
    assert suggested(result, CONF_PORT) == "socket://nohost"
    assert suggested(result, CONF_BAUDRATE) == "19200"

    result = await submit(hass, result, port=closed_url(), **line)
    assert result["errors"] == {"base": "cannot_connect"}
    assert entry.data == serial_entry_data(server.url)

    result = await submit(hass, result, port=server.url, **line)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_BAUDRATE] == 19200


async def test_reconfigure_to_port_of_other_entry(
    hass: HomeAssistant, server: VirtualServer, entry: MockConfigEntry
) -> None:
    """Moving onto a port and address another entry uses is refused."""
    async with await serve_tcp(VirtualBalancer(8)) as other:
        MockConfigEntry(
            domain=DOMAIN,
            title="Balancer 8S",
            data=serial_entry_data(other.url),
            unique_id="virtual-2",
        ).add_to_hass(hass)
        result = await entry.start_reconfigure_flow(hass)
        result = await submit(hass, result, port=other.url, **LINE)
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "port_in_use"
        assert result["description_placeholders"]["title"] == "Balancer 8S"
    assert entry.data == serial_entry_data(server.url)


async def test_reconfigure_ble(hass: HomeAssistant) -> None:
    """A Bluetooth entry has nothing to reconfigure."""
    entry = ble_config_entry()
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_ble"


# --- options ------------------------------------------------------------------------


async def test_options(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Defaults shown, numbers stored as ints, the entry reloads with them."""
    await setup_entry(hass, entry)
    old = entry.runtime_data
    assert old.update_interval == timedelta(seconds=30)

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    # A serial port always stays open: no Bluetooth option.
    assert [str(key) for key in result["data_schema"].schema] == [
        CONF_POLL_INTERVAL,
        CONF_SETTINGS_EVERY,
    ]
    assert field(result, CONF_POLL_INTERVAL).default() == 30
    assert field(result, CONF_SETTINGS_EVERY).default() == 10
    units = {
        str(key): selector.config["unit_of_measurement"]
        for key, selector in result["data_schema"].schema.items()
    }
    assert units == {CONF_POLL_INTERVAL: "s", CONF_SETTINGS_EVERY: "polls"}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_POLL_INTERVAL: 7, CONF_SETTINGS_EVERY: 3}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_POLL_INTERVAL: 7, CONF_SETTINGS_EVERY: 3}
    assert type(entry.options[CONF_POLL_INTERVAL]) is int
    assert type(entry.options[CONF_SETTINGS_EVERY]) is int
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    coordinator = entry.runtime_data
    assert coordinator is not old
    assert coordinator.update_interval == timedelta(seconds=7)
    assert coordinator.client.diagnostics()["read_plan"]["settings_every"] == 3

    # The form shows the stored options next time.
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert field(result, CONF_POLL_INTERVAL).default() == 7
    assert field(result, CONF_SETTINGS_EVERY).default() == 3
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize(
    ("options", "errors"),
    [
        ({CONF_POLL_INTERVAL: 2, CONF_SETTINGS_EVERY: 10}, "poll_interval_range"),
        ({CONF_POLL_INTERVAL: 3601, CONF_SETTINGS_EVERY: 10}, "poll_interval_range"),
        ({CONF_POLL_INTERVAL: 30, CONF_SETTINGS_EVERY: 0}, "settings_every_range"),
        ({CONF_POLL_INTERVAL: 30, CONF_SETTINGS_EVERY: 1001}, "settings_every_range"),
    ],
)
async def test_options_out_of_range(
    hass: HomeAssistant, options: dict[str, int], errors: str
) -> None:
    """A too small or too large value gets a message with the allowed range."""
    entry = MockConfigEntry(domain=DOMAIN, data=serial_entry_data("socket://h:1"))
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options
    )
    assert result["type"] is FlowResultType.FORM
    key = CONF_POLL_INTERVAL if errors.startswith("poll") else CONF_SETTINGS_EVERY
    assert result["errors"] == {key: errors}
    assert result["description_placeholders"] == {
        "poll_min": "5",
        "poll_max": "3600",
        "every_min": "1",
        "every_max": "1000",
    }
    # What was typed stays in the form; nothing was stored.
    assert suggested(result, key) == options[key]
    assert entry.options == {}


async def test_options_ble(hass: HomeAssistant) -> None:
    """A Bluetooth entry can keep its link open between polls."""
    entry = ble_config_entry()
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert [str(key) for key in result["data_schema"].schema] == [
        CONF_POLL_INTERVAL,
        CONF_SETTINGS_EVERY,
        CONF_KEEP_CONNECTED,
    ]
    assert field(result, CONF_KEEP_CONNECTED).default() is True
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {CONF_POLL_INTERVAL: 60, CONF_SETTINGS_EVERY: 5, CONF_KEEP_CONNECTED: False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {
        CONF_POLL_INTERVAL: 60,
        CONF_SETTINGS_EVERY: 5,
        CONF_KEEP_CONNECTED: False,
    }


async def test_new_balancer_on_a_port_an_entry_moved_away_from(
    hass: HomeAssistant, server: VirtualServer
) -> None:
    """After a reconfigure, the old port can host a new balancer (new unique id)."""
    result = await start_manual(hass)
    result = await submit(hass, result, port=server.url)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    first = result["result"]
    assert first.unique_id is None
    async with await serve_tcp(VirtualBalancer(16)) as other:
        result = await hass.config_entries.flow.async_init(
            DOMAIN,
            context={"source": SOURCE_RECONFIGURE, "entry_id": first.entry_id},
        )
        result = await submit(hass, result, port=other.url, **LINE)
        assert result["reason"] == "reconfigure_successful"
        await hass.async_block_till_done()

        result = await start_manual(hass)
        result = await submit(hass, result, port=server.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        second = result["result"]
        assert second.unique_id is None
        assert second.data[CONF_PORT] == server.url
        assert second.title == first.title.replace(other.url, server.url)
        for entry in (first, second):
            assert await hass.config_entries.async_unload(entry.entry_id)
