"""Transport faults, each on a real transport: the client must come back.

The serial device file disappears and comes back, the TCP gateway drops and
refuses connections for a while, Bluetooth drops in the middle of a frame,
the balancer sleeps and wakes, two frames arrive in one chunk, and a reply
arrives after its timeout (it must not be taken as the answer to the next
request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import dataclasses
from pathlib import Path
import threading
import time

import pytest

from balancer_tools.simulator import (
    Faults,
    Reply,
    VirtualBalancer,
    VirtualServer,
    fake_connector,
    fake_device,
    serve_pty,
    serve_tcp,
)
from custom_components.active_balancer.protocol import (
    BalancerClient,
    BalancerTimeout,
    Bus,
    Chemistry,
    ConnectionFailed,
    Setting,
    Variant,
)
from custom_components.active_balancer.protocol.ble import BleLink
from custom_components.active_balancer.protocol.codec import read_request
from custom_components.active_balancer.protocol.crc import append_crc
from custom_components.active_balancer.protocol.frames import FrameReassembler
from custom_components.active_balancer.protocol.registers import D2_TABLE, Block
from custom_components.active_balancer.protocol.serial import SerialLink

from .conftest import open_fds

SPREAD = [round(3.30 + 0.04 * i / 15, 3) for i in range(16)]
"""16 LFP cells 40 mV apart: the balancer balances."""


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted(VirtualBalancer):
    """Holds back chosen replies: ``delays[request frame]`` is used up in order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delays: dict[bytes, list[float]] = {}
        self.extra: bytes = b""
        """Sent glued in front of the next reply, in the same chunk."""

    def answer(self, request: bytes | bytearray) -> Reply | None:
        reply = super().answer(request)
        if reply is None:
            return None
        waits = self.delays.get(bytes(request))
        if waits:
            reply = dataclasses.replace(reply, delay=waits.pop(0))
        if self.extra:
            reply = dataclasses.replace(reply, data=self.extra + reply.data)
            self.extra = b""
        return reply


def same_cells(reading_cells: tuple[float, ...], balancer: VirtualBalancer) -> bool:
    """The reading shows the balancer's cells (which move while balancing)."""
    return len(reading_cells) == balancer.cell_count and all(
        abs(shown - real) < 0.002
        for shown, real in zip(reading_cells, balancer.cell_voltages, strict=True)
    )


def client_for(url: str, **bus: float) -> BalancerClient:
    """A D2 client at 9600 baud with short, explicit timings."""
    link = SerialLink(url, base_timeout=bus.pop("base_timeout", 0.1))
    if "byte_time" in bus:
        link.byte_time = bus.pop("byte_time")
    return BalancerClient(
        Bus(
            link,
            settle=bus.pop("settle", 0.01),
            late_window=bus.pop("late_window", 0.2),
        ),
        variant=Variant.D2,
    )


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, VirtualServer]]:
    balancer = Scripted(16, Chemistry.LFP, cell_voltages=SPREAD)
    async with await serve_tcp(balancer) as server:
        yield balancer, server


# --- the serial device file disappears and comes back -------------------------


async def test_serial_device_disappears_and_returns(tmp_path: Path) -> None:
    """Unplugged: clear errors, no descriptor lost; plugged in: polls again."""
    balancer = VirtualBalancer(16)
    path = tmp_path / "usb-balancer-if00"  # like /dev/serial/by-id/...
    first = await serve_pty(balancer)
    assert first.path is not None
    path.symlink_to(first.path)
    client = client_for(str(path))
    await client.connect()
    fds = open_fds()

    await first.close()  # the adapter is pulled out: the pty and its path go
    path.unlink()
    for _ in range(3):
        with pytest.raises(ConnectionFailed, match="usb-balancer-if00"):
            await client.poll()
    assert open_fds() <= fds

    second = await serve_pty(balancer)  # plugged in again: same path
    try:
        assert second.path is not None
        path.symlink_to(second.path)
        reading = (await client.poll()).reading
        assert reading.cell_count == 16
        assert client.bus.stats.connects == 2
        assert open_fds() == fds  # the old descriptor was closed, one is open
    finally:
        await client.close()
        await second.close()
    assert open_fds() < fds


# --- the TCP gateway drops, refuses for a while, comes back --------------------


async def test_tcp_gateway_drops_and_refuses() -> None:
    """Dropped and refused connections are errors until the gateway is back."""
    balancer = VirtualBalancer(16)
    server = await serve_tcp(balancer)
    port = server.port
    client = client_for(server.url)
    await client.connect()
    fds = open_fds()

    await server.close()  # drops the connection and stops listening
    for _ in range(3):
        with pytest.raises(ConnectionFailed):
            await client.poll()
    assert open_fds() <= fds

    server = await serve_tcp(balancer, port=port)
    try:
        reading = (await client.poll()).reading
        assert reading.cell_count == 16
        assert open_fds() == fds
        # The gateway drops an open connection: the next poll reconnects.
        assert isinstance(server, VirtualServer)
        server.disconnect_clients()  # type: ignore[attr-defined]
        assert (await client.poll()).reading.cell_count == 16
        assert client.bus.stats.connects == 3
    finally:
        await client.close()
        await server.close()


# --- Bluetooth drops in the middle of a frame ----------------------------------


async def test_ble_disconnect_mid_frame() -> None:
    """Half a frame, then the link drops: reconnect, ask again, right answer."""
    balancer = VirtualBalancer(16, ble=True, faults=Faults(disconnect_mid_frame=True))
    connector = fake_connector(balancer)
    link = BleLink(fake_device(), base_timeout=0.2, connector=connector)
    link.byte_time = 1e-4
    client = BalancerClient(Bus(link, settle=0.01, late_window=0.2), variant=Variant.D2)
    try:
        await client.connect()
        balancer.faults.once("disconnect")
        reading = (await client.poll()).reading
        assert same_cells(reading.cell_voltages, balancer)
        assert connector.connects == 2
        # The first bridge sent half a frame before the link went down.
        dropped = connector.clients[0]
        assert dropped.notifications
        assert not dropped.is_connected
        # It drops on every try: a clear error, then it works again.
        balancer.faults.disconnect = 1.0
        with pytest.raises(ConnectionFailed, match="lost"):
            await client.poll()
        balancer.faults.clear()
        assert (await client.poll()).reading.cell_count == 16
    finally:
        await client.close()
        await connector.close()


# --- the balancer sleeps and wakes --------------------------------------------


async def test_silent_device_then_awake(
    scripted: tuple[Scripted, VirtualServer],
) -> None:
    """Nothing answers: a timeout that says what to check; then it answers."""
    balancer, server = scripted
    client = client_for(server.url, base_timeout=0.03, byte_time=1e-4)
    try:
        await client.connect()
        balancer.faults.silent = True
        with pytest.raises(BalancerTimeout, match="No answer within"):
            await client.poll()
        balancer.faults.silent = False
        assert (await client.poll()).reading.cell_count == 16
    finally:
        await client.close()


@pytest.mark.parametrize(("link", "wakes"), [("uart", True), ("rs485", False)])
async def test_sleeping_balancer(link: str, wakes: bool) -> None:
    """Asleep after its sleep time: UART traffic wakes it, RS485 cannot."""
    clock = Clock()
    balancer = VirtualBalancer(16, link=link, clock=clock)
    async with await serve_tcp(balancer) as server:
        client = client_for(server.url, base_timeout=0.03, byte_time=1e-4)
        try:
            await client.connect()
            balancer.sleep_time = 60
            clock.now += 61
            assert balancer.asleep
            if wakes:
                # The first request wakes it and is lost; the retry is answered.
                assert (await client.poll()).reading.cell_count == 16
            else:
                with pytest.raises(BalancerTimeout):
                    await client.poll()
                balancer.wake()  # the button
                assert (await client.poll()).reading.cell_count == 16
        finally:
            await client.close()


# --- two frames in one chunk ---------------------------------------------------


async def test_two_frames_in_one_chunk(
    scripted: tuple[Scripted, VirtualServer],
) -> None:
    """A stray valid frame glued to the reply: the reply is still found."""
    balancer, server = scripted
    client = client_for(server.url)
    try:
        await client.connect()
        stray = append_crc(bytes((0xD2, 0x03, 0x02, 0x00, 0x2A)))
        balancer.extra = stray
        reading = (await client.poll()).reading
        assert same_cells(reading.cell_voltages, balancer)
        assert client.bus.stats.unexpected_frames == 1
    finally:
        await client.close()


def test_reassembler_two_frames_one_chunk() -> None:
    """Two whole frames in one chunk come out as two frames, in order."""
    first = append_crc(bytes((0xD2, 0x03, 0x02, 0x0D, 0x05)))
    second = append_crc(bytes((0xD2, 0x06, 0x00, 0xCF, 0x00, 0x01)))
    frames = FrameReassembler(Variant.D2).feed(first + second)
    assert [frame.raw for frame in frames] == [first, second]


async def test_a5_reply_frames_in_one_chunk() -> None:
    """A5 answers with several frames at once (cells): all are used."""
    balancer = VirtualBalancer(16, variants=(Variant.A5,))
    async with await serve_tcp(balancer) as server:
        link = SerialLink(server.url, base_timeout=0.1)
        client = BalancerClient(Bus(link, settle=0.01), variant=Variant.A5)
        try:
            reading = (await client.poll()).reading
            assert same_cells(reading.cell_voltages, balancer)
        finally:
            await client.close()


# --- a reply after its timeout ------------------------------------------------


def planned_live_request(
    client: BalancerClient, register: int = D2_TABLE.live.balancing
) -> bytes:
    """The steady-state live read that carries *register* (the balancing flag)."""
    block = next(b for b in client.live_plan if register in b)
    return read_request(Variant.D2, 1, block).frame


async def test_late_live_reply_not_taken_after_a_write(
    scripted: tuple[Scripted, VirtualServer],
) -> None:
    """A live reply that comes late is not the answer to the next live read.

    Poll 1 times out and is answered on its retry; the late reply to its first
    try is still on its way when balancing is switched off and poll 2 asks the
    same question. Taking the late reply would show balancing still running.
    """
    balancer, server = scripted
    client = client_for(server.url, base_timeout=0.4, late_window=2.0)
    try:
        await client.connect()
        assert client.snapshot.reading is not None
        assert client.snapshot.reading.balancing
        live = planned_live_request(client)
        # try 1 arrives 1.0 s late; the retry at once; poll 2 after 0.47 s.
        balancer.delays[live] = [1.0, 0.0, 0.47]
        started = time.monotonic()
        assert (await client.poll()).reading.balancing
        await client.write(Setting.BALANCER_ENABLED, False)
        assert not balancer.balancing
        reading = (await client.poll()).reading
        assert not reading.balancing
        assert time.monotonic() - started < 2.5
        assert client.bus.stats.unexpected_frames == 1  # the late one, dropped
    finally:
        await client.close()


async def test_late_read_back_not_taken_for_another_setting(
    scripted: tuple[Scripted, VirtualServer],
) -> None:
    """A late read-back of one setting is not the read-back of the next one."""
    balancer, server = scripted
    client = client_for(server.url, base_timeout=0.4, late_window=2.0)
    try:
        await client.connect()
        delta = D2_TABLE.settings[Setting.BALANCE_DELTA_VOLTAGE].register
        start = D2_TABLE.settings[Setting.BALANCE_START_VOLTAGE].register
        balancer.delays[read_request(Variant.D2, 1, Block(delta, 1)).frame] = [0.5]
        balancer.delays[read_request(Variant.D2, 1, Block(start, 1)).frame] = [0.2]
        assert await client.write(Setting.BALANCE_DELTA_VOLTAGE, 0.03) == 0.03
        # Its late first read-back (0.030 V) arrives while the start voltage
        # is being read back: it must not be taken for 3.45 V's answer.
        assert await client.write(Setting.BALANCE_START_VOLTAGE, 3.45) == 3.45
        assert client.snapshot.settings.balance_start_voltage == 3.45
        assert client.snapshot.settings.balance_delta_voltage == 0.03
        assert balancer.balance_start_voltage == 3.45
    finally:
        await client.close()


async def test_late_reply_while_idle_is_dropped(
    scripted: tuple[Scripted, VirtualServer],
) -> None:
    """Replies that arrive between polls are dropped; the next poll is right."""
    balancer, server = scripted
    client = client_for(server.url, base_timeout=0.1, late_window=0.5)
    try:
        await client.connect()
        # The read of the cells (required registers only: the poll fails).
        live = planned_live_request(client, D2_TABLE.live.cells)
        balancer.delays[live] = [0.9, 0.9, 0.9]  # after all three tries
        with pytest.raises(BalancerTimeout):
            await client.poll()
        await asyncio.sleep(1.0)  # the three late replies arrive meanwhile
        assert client.bus.stats.unexpected_frames == 3
        balancer.set_cell_voltage(1, 3.0)
        reading = (await client.poll()).reading
        assert reading.cell_voltages[0] == 3.0
    finally:
        await client.close()


# --- an answer that came in while the event loop was busy -----------------------


async def test_answer_counts_when_the_event_loop_was_busy() -> None:
    """The device answered in time, but the loop noticed only after the timeout.

    Home Assistant's event loop can be blocked for longer than an answer
    timeout (a slow integration, start-up). The answer then waits in the
    socket; it must not be thrown away as a timeout.
    """
    started = threading.Event()
    device: dict[str, object] = {}

    def run_device() -> None:  # a device outside this event loop
        async def serve() -> None:
            stop = asyncio.Event()
            device["loop"], device["stop"] = asyncio.get_running_loop(), stop
            async with await serve_tcp(VirtualBalancer(16)) as server:
                device["url"] = server.url
                started.set()
                await stop.wait()

        asyncio.run(serve())

    thread = threading.Thread(target=run_device, name="virtual-device")
    thread.start()
    try:
        assert started.wait(5)
        link = SerialLink(str(device["url"]), base_timeout=0.05)
        link.byte_time = 1e-5
        client = BalancerClient(
            Bus(link, retries=0, settle=0.01, late_window=0.2), variant=Variant.D2
        )
        await client.connect()
        loop = asyncio.get_running_loop()
        try:
            for _ in range(5):
                # Busy for 0.3 s right after the request went out.
                loop.call_later(0.001, time.sleep, 0.3)
                assert (await client.poll()).reading.cell_count == 16
            assert client.bus.stats.timeouts == 0
        finally:
            await client.close()
    finally:
        device_loop = device.get("loop")
        stop = device.get("stop")
        if isinstance(device_loop, asyncio.AbstractEventLoop) and isinstance(
            stop, asyncio.Event
        ):
            device_loop.call_soon_threadsafe(stop.set)
        thread.join(5)
