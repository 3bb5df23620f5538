"""BalancerClient against the virtual balancer over real lines.

Every transport is real except the radio: a pseudo-terminal opened by serialx
(SerialLink with the pty path), a loopback TCP socket (``socket://`` URL) and
BleLink with a fake bleak client behind the real BleLink code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
import dataclasses
from dataclasses import dataclass, field
import json
import math

import pytest

from balancer_tools.simulator import (
    FakeConnector,
    Faults,
    Quirks,
    VirtualBalancer,
    VirtualServer,
    fake_connector,
    fake_device,
    serve_pty,
    serve_tcp,
)
from custom_components.active_balancer.protocol import codec
from custom_components.active_balancer.protocol.ble import BleLink
from custom_components.active_balancer.protocol.client import BalancerClient
from custom_components.active_balancer.protocol.errors import (
    BalancerTimeout,
    ChecksumError,
    ConnectionFailed,
    NotSupported,
    OutOfRange,
    RefusalReason,
)
from custom_components.active_balancer.protocol.link import Bus, BusRegistry
from custom_components.active_balancer.protocol.model import (
    Alarm,
    Chemistry,
    Reading,
    Setting,
    Settings,
    Variant,
)
from custom_components.active_balancer.protocol.registers import MODBUS_TABLES, Block
from custom_components.active_balancer.protocol.serial import SerialLink

TRANSPORTS = ("pty", "tcp", "ble")
FAST_BAUD = 115200
"""Serial links run at this speed so that a timeout costs little; the virtual
servers do not pace unless told to (see test_paced_9600_baud_line)."""


@dataclass
class Rig:
    """A bus to one or more virtual balancers over one transport."""

    bus: Bus
    balancers: list[VirtualBalancer]
    server: VirtualServer | None = None
    connector: FakeConnector | None = None
    clients: list[BalancerClient] = field(default_factory=list)

    @property
    def vb(self) -> VirtualBalancer:
        return self.balancers[0]

    def client(self, **kwargs) -> BalancerClient:
        client = BalancerClient(self.bus, **kwargs)
        self.clients.append(client)
        return client


@contextlib.asynccontextmanager
async def rig(
    transport: str,
    *balancers: VirtualBalancer,
    base_timeout: float = 0.05,
    retries: int = 2,
    settle: float = 0.05,
    baudrate: int | None = None,
    turnaround: float = 0.0,
) -> AsyncIterator[Rig]:
    """Yield a :class:`Rig`; close everything afterwards."""
    server: VirtualServer | None = None
    connector: FakeConnector | None = None
    if transport == "ble":
        (balancer,) = balancers
        connector = fake_connector(balancer, baudrate=baudrate, turnaround=turnaround)
        link: BleLink | SerialLink = BleLink(
            fake_device(), base_timeout=base_timeout, connector=connector
        )
    else:
        serve = serve_tcp if transport == "tcp" else serve_pty
        server = await serve(list(balancers), baudrate=baudrate, turnaround=turnaround)
        link = SerialLink(server.url, baudrate or FAST_BAUD, base_timeout=base_timeout)
    bus = Bus(link, retries=retries, settle=settle)
    try:
        yield Rig(bus, list(balancers), server, connector)
    finally:
        await bus.close()
        if connector is not None:
            await connector.close()
        if server is not None:
            await server.close()


def balancer(
    variant: Variant | None = None, transport: str = "tcp", **kwargs
) -> VirtualBalancer:
    """A virtual balancer speaking *variant* only (all when None)."""
    if variant is not None:
        kwargs.setdefault("variants", [variant])
    kwargs.setdefault("ble", transport == "ble")
    return VirtualBalancer(**kwargs)


def assert_reading_matches(
    reading: Reading, vb: VirtualBalancer, variant: Variant
) -> None:
    """The reading shows the virtual balancer's state."""
    millivolts = [round(v * 1000) for v in vb.cell_voltages]
    assert reading.cell_voltages == tuple(mv / 1000 for mv in millivolts)
    assert reading.temperatures == tuple(float(round(t)) for t in vb.temperatures)
    assert reading.pack_voltage == math.floor(sum(millivolts) / 100) / 10
    assert reading.balancing is vb.balancing
    assert reading.balancing_cells == vb.balancing_cells
    assert reading.alarms == vb.alarms
    if variant is Variant.A5:
        assert reading.balance_current is None
    else:
        assert reading.balance_current == vb.balance_current


def expected_settings(vb: VirtualBalancer, variant: Variant) -> Settings:
    if variant is Variant.D2:
        return Settings(
            balance_start_voltage=vb.balance_start_voltage,
            balance_delta_voltage=vb.balance_delta_voltage,
            sleep_time=vb.sleep_time,
            balancer_enabled=vb.balancer_enabled,
            cell_overvoltage_alarm=vb.cell_overvoltage_alarm,
            cell_undervoltage_alarm=vb.cell_undervoltage_alarm,
            discharge_overtemperature_alarm=vb.discharge_overtemperature_alarm,
            discharge_undertemperature_alarm=vb.discharge_undertemperature_alarm,
            cell_count=vb.cell_count,
            chemistry=vb.chemistry,
            balance_current_limit=vb.balance_current_limit,
        )
    if variant is Variant.P81:
        return Settings(
            balance_start_voltage=vb.balance_start_voltage,
            balance_delta_voltage=vb.balance_delta_voltage,
            sleep_time=vb.sleep_time,
            balancer_enabled=vb.balancer_enabled,
            cell_count=vb.cell_count,
        )
    return Settings(
        balance_start_voltage=vb.balance_start_voltage,
        balance_delta_voltage=vb.balance_delta_voltage,
        cell_overvoltage_alarm=vb.cell_overvoltage_alarm,
        cell_undervoltage_alarm=vb.cell_undervoltage_alarm,
        discharge_overtemperature_alarm=vb.discharge_overtemperature_alarm,
        discharge_undertemperature_alarm=vb.discharge_undertemperature_alarm,
        cell_count=vb.cell_count,
    )


# --- detection, polling, settings ----------------------------------------------


@pytest.mark.parametrize("variant", list(Variant))
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_detects_the_variant(transport: str, variant: Variant) -> None:
    vb = balancer(variant, transport)
    async with rig(transport, vb, retries=0) as r:
        info = (await r.client().connect()).info
    assert info.variant is variant
    assert info.software_version == "B002_111132_03"
    assert info.hardware_version == "E303-032DG-SMB"
    assert info.address == (1 if variant is Variant.P81 else None)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_balancer_speaking_everything_is_detected_as_d2(transport: str) -> None:
    async with rig(transport, balancer(None, transport)) as r:
        client = r.client()
        assert (await client.connect()).variant is Variant.D2
        assert client.bus.stats.timeouts == 0


@pytest.mark.parametrize("variant", list(Variant))
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_poll_values_equal_the_state(transport: str, variant: Variant) -> None:
    vb = balancer(
        variant,
        transport,
        cell_voltages=[3.561, 3.301, 3.402, 3.333, 3.334],
        temperatures=[25.0, 31.0],
        volts_per_amp_second=0.0,  # keep the cells still while comparing
    )
    async with rig(transport, vb) as r:
        client = r.client(variant=variant)
        reading = (await client.poll()).reading
        assert reading.alarms.flags == {Alarm.CELL_OVERVOLTAGE_L1}
        assert reading.balancing_cells == {1, 2}
        assert_reading_matches(reading, vb, variant)
        vb.set_cell_voltage(1, 3.35)
        vb.temperatures[0] = 90.0
        reading = (await client.poll()).reading
        assert reading.alarms.flags == {Alarm.DISCHARGE_OVERTEMP_L2}
        assert reading.balancing_cells == {2, 3}
        assert_reading_matches(reading, vb, variant)
        vb.balancer_enabled = False
        reading = (await client.poll()).reading
        assert not reading.balancing
        assert_reading_matches(reading, vb, variant)


@pytest.mark.parametrize("variant", list(Variant))
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_settings_read(transport: str, variant: Variant) -> None:
    vb = balancer(variant, transport, cells=12)
    vb.balance_start_voltage = 3.25
    vb.balance_delta_voltage = 0.025
    vb.sleep_time = 3600
    vb.balancer_enabled = False
    vb.cell_overvoltage_alarm = 3.6
    vb.cell_undervoltage_alarm = 2.5
    vb.discharge_overtemperature_alarm = 60.0
    vb.discharge_undertemperature_alarm = -10.0
    vb.balance_current_limit = 0.8
    async with rig(transport, vb) as r:
        client = r.client(variant=variant)
        await client.connect()
        assert client.snapshot.settings == expected_settings(vb, variant)
        vb.balance_delta_voltage = 0.05
        assert (await client.read_settings()).settings.balance_delta_voltage == 0.05


# --- writes ---------------------------------------------------------------------

WRITE_VALUES: dict[Setting, float | bool] = {
    Setting.BALANCE_START_VOLTAGE: 3.3,
    Setting.BALANCE_DELTA_VOLTAGE: 0.03,
    Setting.SLEEP_TIME: 3600,
    Setting.BALANCER_ENABLED: False,
    Setting.CELL_OVERVOLTAGE_ALARM: 3.5,
    Setting.CELL_UNDERVOLTAGE_ALARM: 2.5,
    Setting.DISCHARGE_OVERTEMPERATURE_ALARM: 70.0,
    Setting.DISCHARGE_UNDERTEMPERATURE_ALARM: -20.0,
    Setting.BALANCE_CURRENT_LIMIT: 0.5,
}

WRITE_CASES = [
    (variant, setting)
    for variant in (Variant.D2, Variant.P81)
    for setting in sorted(MODBUS_TABLES[variant].writable())
]


def test_every_allow_listed_setting_has_a_test_value() -> None:
    assert {setting for _, setting in WRITE_CASES} <= set(WRITE_VALUES)


@pytest.mark.parametrize(("variant", "setting"), WRITE_CASES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_allow_listed_write_is_confirmed_and_recorded(
    transport: str, variant: Variant, setting: Setting
) -> None:
    vb = balancer(variant, transport)
    value = WRITE_VALUES[setting]
    register = MODBUS_TABLES[variant].writable()[setting]
    async with rig(transport, vb) as r:
        client = r.client(variant=variant)
        await client.connect()
        assert vb.writes == []
        result = await client.write(setting, value)
    assert result == value
    assert getattr(client.snapshot.settings, setting.value) == value
    assert getattr(vb, setting.value) == value
    assert [(w.variant, w.register, w.value) for w in vb.writes] == [
        (variant, register.register, register.encode(float(value)))
    ]


OUT_OF_RANGE = {
    Variant.D2: [
        (Setting.BALANCE_DELTA_VOLTAGE, 0.019),
        (Setting.BALANCE_START_VOLTAGE, 3.7),  # inside NMC, outside LFP
        (Setting.BALANCE_START_VOLTAGE, 2.4),
        (Setting.SLEEP_TIME, 70000),
        (Setting.BALANCE_CURRENT_LIMIT, 1.5),
    ],
    Variant.P81: [
        (Setting.BALANCE_DELTA_VOLTAGE, 0.019),
        (Setting.BALANCE_START_VOLTAGE, 4.2),  # p81 has no chemistry: any cell
        (Setting.SLEEP_TIME, 70000),
    ],
}


@pytest.mark.parametrize(
    ("variant", "setting", "value"),
    [(variant, *case) for variant, cases in OUT_OF_RANGE.items() for case in cases],
)
async def test_out_of_range_values_are_refused_before_sending(
    variant: Variant, setting: Setting, value: float
) -> None:
    vb = balancer(variant)
    async with rig("tcp", vb) as r:
        client = r.client(variant=variant)
        await client.connect()
        requests = vb.requests
        with pytest.raises(OutOfRange):
            await client.write(setting, value)
    assert vb.writes == []
    assert vb.requests == requests


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a5_cannot_write(transport: str) -> None:
    vb = balancer(Variant.A5, transport)
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.A5)
        await client.connect()
        requests = vb.requests
        assert client.writable_settings() == frozenset()
        with pytest.raises(NotSupported):
            await client.write(Setting.BALANCE_START_VOLTAGE, 3.3)
        with pytest.raises(NotSupported):
            await client.write(Setting.BALANCER_ENABLED, False)
    assert vb.writes == []
    assert vb.requests == requests
    assert vb.balancer_enabled


async def test_setting_missing_from_a_variant_is_not_supported() -> None:
    vb = balancer(Variant.P81)
    async with rig("tcp", vb) as r:
        client = r.client(variant=Variant.P81)
        await client.connect()
        with pytest.raises(NotSupported):
            await client.write(Setting.BALANCE_CURRENT_LIMIT, 0.5)
    assert vb.writes == []


async def test_refusals_carry_typed_figures() -> None:
    """A refused value says which rule and the figures, in the rules' units."""
    vb = balancer(Variant.D2)
    async with rig("tcp", vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        requests = vb.requests
        with pytest.raises(OutOfRange) as low:
            client.prepare(Setting.BALANCE_DELTA_VOLTAGE, 0.005)
        with pytest.raises(OutOfRange) as lfp:
            client.prepare(Setting.BALANCE_START_VOLTAGE, 3.8)
        with pytest.raises(OutOfRange) as order:
            await client.write(Setting.CELL_UNDERVOLTAGE_ALARM, 3.7)
    assert (low.value.reason, low.value.setting) == (
        RefusalReason.RANGE,
        Setting.BALANCE_DELTA_VOLTAGE,
    )
    assert (low.value.value, low.value.minimum, low.value.unit) == (0.005, 0.02, "V")
    assert lfp.value.reason is RefusalReason.CHEMISTRY
    assert lfp.value.chemistry is Chemistry.LFP
    assert (lfp.value.minimum, lfp.value.maximum) == Chemistry.LFP.voltage_range
    assert order.value.reason is RefusalReason.ALARM_ORDER
    assert order.value.maximum == vb.cell_overvoltage_alarm  # the other alarm
    assert vb.requests == requests  # nothing sent for any of them
    assert vb.writes == []


@pytest.mark.parametrize("address", [0, 16])
def test_rs485_address_outside_the_switch_is_refused(address: int) -> None:
    """Boards are numbered 1 to 15; nothing is opened for another number."""
    link = SerialLink("socket://127.0.0.1:9")
    with pytest.raises(OutOfRange) as refused:
        BalancerClient(Bus(link), variant=Variant.P81, address=address)
    assert refused.value.reason is RefusalReason.RANGE
    assert (refused.value.minimum, refused.value.maximum) == (1, 15)
    assert not link.is_open


async def test_alarm_checked_against_what_the_device_holds_when_unread() -> None:
    """The other alarm went unread: it is read before the write is checked.

    The vendor app lowered the over-voltage alarm meanwhile; an under-voltage
    alarm above it is refused, not written blind.
    """
    vb = balancer(Variant.D2)
    settings_block = (0x80, 0x80 + 0x28)
    async with rig("tcp", vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        vb.cell_overvoltage_alarm = 3.0
        vb.quirks.refuse_registers.append(settings_block)
        unread = await client.read_settings()
        assert unread.settings.cell_overvoltage_alarm is None
        vb.quirks.refuse_registers.remove(settings_block)
        with pytest.raises(OutOfRange) as refused:
            await client.write(Setting.CELL_UNDERVOLTAGE_ALARM, 3.1)
    assert refused.value.reason is RefusalReason.ALARM_ORDER
    assert refused.value.maximum == 3.0
    assert vb.writes == []


async def test_alarm_not_written_while_the_other_cannot_be_read() -> None:
    """Nothing is written when the alarm to compare with stays unreadable."""
    vb = balancer(Variant.D2)
    async with rig("tcp", vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        vb.quirks.refuse_registers.append((0x80, 0x80 + 0x28))
        await client.read_settings()
        with pytest.raises(BalancerTimeout, match="cell_overvoltage_alarm could not"):
            await client.write(Setting.CELL_UNDERVOLTAGE_ALARM, 2.9)
    assert vb.writes == []


async def test_connect_and_poll_return_snapshots() -> None:
    """Each call returns what it left known; an older snapshot stays as it was."""
    vb = balancer(Variant.D2)
    async with rig("tcp", vb) as r:
        client = r.client()
        assert client.snapshot is None
        first = await client.connect()
        vb.cell_voltages[0] = 3.2
        second = await client.poll()
        await client.write(Setting.BALANCE_DELTA_VOLTAGE, 0.045)
        after_write = client.snapshot
    assert first.variant is Variant.D2
    assert first.reading.cell_voltages[0] != 3.2
    assert second.reading.cell_voltages[0] == 3.2
    assert first.settings.balance_delta_voltage == second.settings.balance_delta_voltage
    assert after_write is not None
    assert after_write.settings.balance_delta_voltage == 0.045
    with pytest.raises(TypeError):
        second.unanswered["settings"] = "no answer"  # type: ignore[index]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a5_detection_yields_a_reading(transport: str) -> None:
    """Detecting an A5-only balancer ends with its cell voltages too."""
    vb = balancer(Variant.A5, transport)
    async with rig(transport, vb) as r:
        snapshot = await r.client().connect()
    assert snapshot.variant is Variant.A5
    assert_reading_matches(snapshot.reading, vb, Variant.A5)


async def test_a_prepared_write_is_only_sent_by_its_client() -> None:
    """A write checked and encoded for D2 is not sent by a p81 client."""
    vb = balancer()  # speaks every variant
    async with rig("tcp", vb) as r:
        d2, p81 = r.client(variant=Variant.D2), r.client(variant=Variant.P81)
        with pytest.raises(NotSupported, match="not connected"):
            d2.prepare(Setting.BALANCE_DELTA_VOLTAGE, 0.03)
        await d2.connect()
        await p81.connect()
        write = d2.prepare(Setting.BALANCE_DELTA_VOLTAGE, 0.03)
        with pytest.raises(NotSupported, match="prepared for d2"):
            await p81.send(write)
    assert write.raw == 30
    assert vb.writes == []


async def test_diagnostics_are_plain_data() -> None:
    """What a maintainer gets: JSON-ready, with the plan, the link and frames."""
    vb = balancer(Variant.D2)
    async with rig("tcp", vb) as r:
        client = r.client(settings_every=4)
        await client.poll()
        diagnostics = client.diagnostics()
    assert json.loads(json.dumps(diagnostics)) == diagnostics
    assert diagnostics["protocol"] == "d2"
    assert diagnostics["read_plan"]["settings_every"] == 4
    assert diagnostics["read_plan"]["live_reads"] == [
        {"start": block.start, "count": block.count} for block in client.live_plan
    ]
    assert diagnostics["link"]["kind"] == "serial"
    assert diagnostics["link"]["statistics"]["requests"] == vb.requests
    assert {frame["direction"] for frame in diagnostics["link"]["last_frames"]} == {
        "tx",
        "rx",
    }


def test_settings_are_read_by_setting() -> None:
    """Every setting has its value in Settings, and a write replaces just it."""
    assert [item.name for item in dataclasses.fields(Settings)] == list(Setting)
    settings = Settings(balance_delta_voltage=0.03, chemistry=Chemistry.NMC)
    assert {setting: settings.get(setting) for setting in Setting} == dict.fromkeys(
        Setting
    ) | {Setting.BALANCE_DELTA_VOLTAGE: 0.03, Setting.CHEMISTRY: Chemistry.NMC}
    changed = settings.with_value(Setting.SLEEP_TIME, 600)
    assert changed.get(Setting.SLEEP_TIME) == 600
    assert changed.get(Setting.BALANCE_DELTA_VOLTAGE) == 0.03
    assert settings.get(Setting.SLEEP_TIME) is None


# --- several boards on one RS485 line -------------------------------------------


async def test_three_boards_share_one_bus() -> None:
    boards = [
        VirtualBalancer(
            variants=[Variant.P81],
            address=n,
            cell_voltages=[3.3 + n / 100] * (4 + n),
            temperatures=[20.0 + n],
        )
        for n in (1, 2, 3)
    ]
    registry = BusRegistry()
    async with await serve_tcp(boards) as server:

        def factory() -> Bus:
            return Bus(SerialLink(server.url, FAST_BAUD, base_timeout=0.1), settle=0.05)

        buses = [registry.acquire(server.url, factory) for _ in boards]
        assert buses[0] is buses[1] is buses[2]
        assert len(registry) == 1
        clients = [
            BalancerClient(buses[0], variant=Variant.P81, address=n) for n in (1, 2, 3)
        ]
        snapshots = await asyncio.gather(*(client.connect() for client in clients))
        assert [snapshot.info.address for snapshot in snapshots] == [1, 2, 3]
        for _ in range(3):
            snapshots = await asyncio.gather(*(client.poll() for client in clients))
            for snapshot, board in zip(snapshots, boards, strict=True):
                assert_reading_matches(snapshot.reading, board, Variant.P81)
        assert [s.reading.cell_count for s in snapshots] == [5, 6, 7]
        await clients[1].write(Setting.BALANCER_ENABLED, False)
        assert [board.balancer_enabled for board in boards] == [True, False, True]
        assert [len(board.writes) for board in boards] == [0, 1, 0]
        assert server.connects == 1
        for _ in boards:
            await registry.release(server.url)
        assert len(registry) == 0
        assert not buses[0].link.is_open


# --- faults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["drop", "corrupt", "truncate", "garbage", "delay", "disconnect"]
)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_one_shot_fault_is_retried(transport: str, kind: str) -> None:
    vb = balancer(Variant.D2, transport, faults=Faults(delay_seconds=0.3))
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        requests = vb.requests
        vb.faults.once(kind)
        reading = (await client.poll()).reading
        assert_reading_matches(reading, vb, Variant.D2)
        retried = kind != "garbage"
        # One request per planned read, and the one the fault hit once more.
        assert vb.requests - requests == len(client.live_plan) + (1 if retried else 0)
        assert (await client.poll()).reading == reading
        if kind == "disconnect" and transport == "tcp":
            assert r.server.connects == 2
        if kind == "disconnect" and transport == "ble":
            assert r.connector.connects == 2


PERSISTENT = {
    "drop": BalancerTimeout,
    "corrupt": ChecksumError,
    "truncate": BalancerTimeout,
    "delay": BalancerTimeout,
    "disconnect": ConnectionFailed,
    "silent": BalancerTimeout,
    "garbage": None,  # junk before each reply is skipped: no error
}


@pytest.mark.parametrize(("kind", "error"), PERSISTENT.items())
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_persistent_fault_raises_the_right_error(
    transport: str, kind: str, error: type[Exception] | None
) -> None:
    vb = balancer(Variant.D2, transport)
    if transport == "pty" and kind == "disconnect":
        error = BalancerTimeout  # a serial line cannot be unplugged: replies are lost
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        requests = vb.requests
        if kind == "silent":
            vb.faults.silent = True
        else:
            setattr(vb.faults, kind, 1.0)
        if error is None:
            assert_reading_matches((await client.poll()).reading, vb, Variant.D2)
            return
        with pytest.raises(error):
            await client.poll()
        assert vb.requests - requests == 3  # first try and two retries
        # The line recovers once the fault goes away.
        vb.faults.clear()
        assert_reading_matches((await client.poll()).reading, vb, Variant.D2)


async def test_late_reply_is_not_taken_for_the_next_request() -> None:
    """A reply delayed past its timeout must not answer the next request.

    Both reads ask for one register, so the late reply (3200 mV, register
    0xA3) has exactly the shape of the next one's (20 mV, 0xA4): only the bus
    throwing away what arrives after a timeout keeps them apart.
    """
    vb = balancer(Variant.D2, faults=Faults(delay_seconds=0.15))
    async with rig("tcp", vb, retries=0, settle=0.4) as r:
        first = codec.read_request(Variant.D2, 1, Block(0xA3, 1))
        second = codec.read_request(Variant.D2, 1, Block(0xA4, 1))
        vb.faults.once("delay")
        with pytest.raises(BalancerTimeout):
            await r.bus.exchange(first)
        (frame,) = await r.bus.exchange(second)
        assert codec.registers_of(Block(0xA4, 1), frame) == {0xA4: 20}
        assert r.bus.stats.timeouts == 1


async def test_frame_observer_sees_each_answer_handed_out() -> None:
    """Observers see the answers the bus returns; failed or refused ones not."""
    vb = balancer(Variant.D2, quirks=Quirks(refuse_registers=[(0xB0, 0xB0)]))
    async with rig("tcp", vb, retries=0) as r:
        seen: list[tuple[bytes, list[bytes]]] = []
        remove = r.bus.add_frame_observer(
            lambda request, frames: seen.append(
                (request.frame, [frame.raw for frame in frames])
            )
        )
        read = codec.read_request(Variant.D2, 1, Block(0xA3, 1))
        (frame,) = await r.bus.exchange(read)
        with pytest.raises(NotSupported):
            await r.bus.exchange(codec.read_request(Variant.D2, 1, Block(0xB0, 1)))
        vb.faults.once("drop")
        with pytest.raises(BalancerTimeout):
            await r.bus.exchange(read)
        (again,) = await r.bus.exchange(read)
        remove()
        await r.bus.exchange(read)
        remove()  # a second time does nothing
    assert seen == [(read.frame, [frame.raw]), (read.frame, [again.raw])]


async def test_stale_reply_of_another_shape_is_ignored() -> None:
    """A late reply that arrives while the next request waits is skipped."""
    vb = balancer(Variant.D2, faults=Faults(delay_seconds=0.3))
    async with rig(
        "tcp", vb, retries=0, settle=0.01, base_timeout=0.4, turnaround=0.3
    ) as r:
        first = codec.read_request(Variant.D2, 1, Block(0x80, 0x29))
        second = codec.read_request(Variant.D2, 1, Block(0xA3, 2))
        vb.faults.once("delay")
        with pytest.raises(BalancerTimeout):
            await r.bus.exchange(first)
        (frame,) = await r.bus.exchange(second)
        assert codec.registers_of(Block(0xA3, 2), frame) == {0xA3: 3200, 0xA4: 20}


@pytest.mark.parametrize("link", ["uart", "rs485"])
async def test_sleeping_balancer(link: str) -> None:
    now = [0.0]
    vb = balancer(Variant.D2, link=link, clock=lambda: now[0])
    async with rig("tcp", vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        vb.sleep_time = 60
        now[0] += 61
        if link == "rs485":
            with pytest.raises(BalancerTimeout):
                await client.poll()
            vb.wake()
        # Over the UART, the first request only wakes it up; the retry works.
        assert_reading_matches((await client.poll()).reading, vb, Variant.D2)


# --- TCP and BLE links --------------------------------------------------------------


async def test_tcp_client_reconnects_after_the_server_drops_it() -> None:
    vb = balancer(Variant.D2)
    async with rig("tcp", vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        r.server.disconnect_clients()
        await asyncio.sleep(0.05)
        assert_reading_matches((await client.poll()).reading, vb, Variant.D2)
        assert r.server.connects == 2
        assert r.bus.stats.disconnects == 1


@pytest.mark.parametrize(("fail", "ok"), [(2, True), (3, False)])
async def test_ble_connect_failures_are_retried(fail: int, ok: bool) -> None:
    vb = balancer(Variant.D2, "ble")
    async with rig("ble", vb) as r:
        r.connector.fail = fail
        client = r.client(variant=Variant.D2)
        if ok:
            await client.connect()
        else:
            with pytest.raises(ConnectionFailed):
                await client.connect()
        assert r.connector.attempts == 3


async def test_ble_disconnect_mid_frame_then_reconnect() -> None:
    vb = balancer(Variant.D2, "ble", faults=Faults(disconnect_mid_frame=True))
    async with rig("ble", vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        vb.faults.once("disconnect")
        sent = len(r.connector.clients[0].notifications)
        reading = (await client.poll()).reading
        assert_reading_matches(reading, vb, Variant.D2)
        first, second = r.connector.clients
        assert not first.is_connected
        assert second.is_connected
        # The first link carried half of the first planned reply before it dropped.
        half = (5 + 2 * client.live_plan[0].count) // 2
        chunks = [20] * (half // 20) + ([half % 20] if half % 20 else [])
        assert [len(n) for n in first.notifications[sent:]] == chunks
        assert r.bus.stats.disconnects == 1


@pytest.mark.parametrize("chunk_size", [26, 512])
async def test_ble_two_frames_in_one_notification(chunk_size: int) -> None:
    vb = balancer(
        Variant.A5, "ble", faults=Faults(chunk_size=chunk_size), temperatures=[20, 21]
    )
    async with rig("ble", vb) as r:
        client = r.client(variant=Variant.A5)
        await client.connect()
        assert_reading_matches((await client.poll()).reading, vb, Variant.A5)
        notifications = r.connector.clients[0].notifications
        assert any(len(n) >= 26 for n in notifications)


async def test_ble_default_notifications_are_20_bytes() -> None:
    vb = balancer(Variant.D2, "ble")
    async with rig("ble", vb) as r:
        await r.client(variant=Variant.D2).poll()
        notifications = r.connector.clients[0].notifications
        assert max(len(n) for n in notifications) == 20


@pytest.mark.parametrize("variant", list(Variant))
async def test_paced_9600_baud_line(variant: Variant) -> None:
    """With real wire time and a turnaround, the client's timeouts still fit."""
    vb = balancer(variant, cells=16)
    async with rig("tcp", vb, baudrate=9600, turnaround=0.02, base_timeout=0.1) as r:
        client = r.client(variant=variant)
        await client.connect()
        assert_reading_matches((await client.poll()).reading, vb, variant)
        assert r.bus.stats.timeouts == 0


async def test_nmc_balancer_chemistry_limits() -> None:
    vb = balancer(Variant.D2, cells=8, chemistry=Chemistry.NMC)
    async with rig("tcp", vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        assert client.snapshot.settings.chemistry is Chemistry.NMC
        assert await client.write(Setting.BALANCE_START_VOLTAGE, 3.7) == 3.7
        with pytest.raises(OutOfRange):
            await client.write(Setting.BALANCE_START_VOLTAGE, 2.9)
    assert [(w.register, w.value) for w in vb.writes] == [(0xA3, 3700)]
