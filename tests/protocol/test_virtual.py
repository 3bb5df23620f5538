"""The virtual balancer behaves like the device in the captures and manuals."""

from __future__ import annotations

import asyncio
import contextlib
import os

from bleak.exc import BleakError
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from balancer_tools.simulator import (
    FAULT_KINDS,
    FakeBleakClient,
    Faults,
    RecordedWrite,
    RequestParser,
    VirtualBalancer,
    fake_device,
    loopback_host,
    serve_pty,
    serve_tcp,
)
from balancer_tools.simulator.faults import JUNK_BYTES
from custom_components.active_balancer.protocol import Bus, codec
from custom_components.active_balancer.protocol.ble import NOTIFY_UUID, WRITE_UUID
from custom_components.active_balancer.protocol.crc import append_crc, crc_ok
from custom_components.active_balancer.protocol.frames import (
    A5Frame,
    FrameReassembler,
    ModbusFrame,
)
from custom_components.active_balancer.protocol.model import (
    NEVER_SLEEP,
    Alarm,
    Alarms,
    Chemistry,
    Setting,
    Variant,
)
from custom_components.active_balancer.protocol.registers import (
    A5_TABLE,
    D2_TABLE,
    MODBUS_TABLES,
    P81_TABLE,
    Block,
)
from custom_components.active_balancer.protocol.serial import SerialLink

from . import captured
from .pieces import on_chunk_boundaries, pty_pieces, tcp_pieces


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def eventually(condition, seconds: float = 2.0) -> None:
    """Wait until *condition()* holds (fails the test after *seconds*)."""
    for _ in range(int(seconds / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


def captured_balancer(**kwargs) -> VirtualBalancer:
    """The balancer of the S1 capture: 16 LFP cells, one sensor at 28 degC."""
    return VirtualBalancer(
        cell_voltages=[mv / 1000 for mv in captured.D2_STATUS_CELLS_MV],
        temperatures=[28.0],
        **kwargs,
    )


def d2(hexstring: str) -> bytes:
    return bytes.fromhex(hexstring)


def reply_frames(variant: Variant, data: bytes | list[bytes] | None) -> list:
    """Frames in *data*, checked by the client's own reassembler."""
    assert data is not None
    raw = b"".join(data) if isinstance(data, list) else data
    reassembler = FrameReassembler(variant)
    frames = reassembler.feed(raw)
    assert reassembler.pending == 0
    assert reassembler.rejected == 0
    return frames


def read(vb: VirtualBalancer, variant: Variant, block: Block) -> dict[int, int]:
    request = codec.read_request(variant, vb.address, block)
    frames = reply_frames(variant, vb.handle(request.frame))
    assert len(frames) == 1
    assert request.matches(frames[0])
    return codec.registers_of(block, frames[0])


def a5(vb: VirtualBalancer, command: int, host: int = 0x40) -> list[A5Frame]:
    frames = reply_frames(Variant.A5, vb.handle(codec.a5_request(command, host).frame))
    assert all(isinstance(frame, A5Frame) for frame in frames)
    return frames


def write(vb: VirtualBalancer, variant: Variant, register: int, raw: int) -> bytes:
    request_address = 0xD2 if variant is Variant.D2 else 0x80 + vb.address
    frame = append_crc(
        bytes((request_address, 0x06))
        + register.to_bytes(2, "big")
        + raw.to_bytes(2, "big")
    )
    reply = vb.handle(frame)
    assert isinstance(reply, bytes)
    return reply


def live(vb: VirtualBalancer, variant: Variant):
    table = MODBUS_TABLES[variant]
    return codec.decode_modbus_live(table, read(vb, variant, table.live.block))


def a5_live(vb: VirtualBalancer):
    replies = {
        command: a5(vb, command)
        for command in (
            A5_TABLE.pack,
            A5_TABLE.cells,
            A5_TABLE.temperatures,
            A5_TABLE.balancing,
            A5_TABLE.alarms,
        )
    }
    return codec.decode_a5_live(replies, vb.cell_count, len(vb.temperatures))


# --- the captured session (shared/protocol.md section 8.1) ---------------------


@pytest.mark.parametrize(
    ("request_hex", "reply_hex"),
    [
        (captured.D2_REQUESTS["settings"], captured.D2_SETTINGS),
        (captured.D2_REQUESTS["versions"], captured.D2_VERSIONS),
        (captured.D2_REQUESTS["password"], captured.D2_PASSWORD),
        (captured.D2_REQUESTS["control"], captured.D2_CONTROL_ON),
        (captured.D2_REQUESTS["block_3e"], captured.D2_BLOCK_3E),
        (captured.D2_REQUESTS["balancer_on"], captured.D2_ECHO_ON),
        (captured.D2_REQUESTS["balancer_off"], captured.D2_ECHO_OFF),
        ("d20300d70001", captured.D2_D7),
        ("d2030057000c", captured.D2_BLOCK_57),
        (captured.P81_PROBE_REQUEST, captured.P81_PROBE_REPLY),
    ],
)
def test_captured_requests_get_the_captured_replies(request_hex, reply_hex) -> None:
    vb = captured_balancer()
    request = d2(request_hex)
    if len(request) == 6:  # a body without its CRC
        request = append_crc(request)
    assert vb.handle(request).hex() == reply_hex


def test_captured_status_matches_except_the_lagging_minimum() -> None:
    vb = captured_balancer()
    reply = vb.handle(d2(captured.D2_REQUESTS["status"]))
    ours = ModbusFrame(0xD2, 3, reply[2:-2], reply).registers()
    theirs = ModbusFrame(0xD2, 3, d2(captured.D2_STATUS)[2:-2], b"").registers()
    assert crc_ok(reply)
    assert len(reply) == len(d2(captured.D2_STATUS))
    # The device's own min cell (0x2C) and delta (0x38) lag behind its cells:
    # the capture shows 3332 / 6 mV while the lowest cell is 3333 mV.
    different = {
        reg for reg, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b
    }
    assert different == {0x2C, 0x38}
    assert ours[0x2C] == min(captured.D2_STATUS_CELLS_MV)
    assert ours[0x38] == max(captured.D2_STATUS_CELLS_MV) - min(
        captured.D2_STATUS_CELLS_MV
    )


def test_captured_switch_and_rtc_writes() -> None:
    vb = captured_balancer()
    control = d2(captured.D2_REQUESTS["control"])
    assert (
        vb.handle(d2(captured.D2_REQUESTS["balancer_off"])).hex()
        == captured.D2_ECHO_OFF
    )
    assert not vb.balancer_enabled
    assert vb.handle(control).hex() == captured.D2_CONTROL_OFF
    assert (
        vb.handle(d2(captured.D2_REQUESTS["balancer_on"])).hex() == captured.D2_ECHO_ON
    )
    assert vb.balancer_enabled
    assert vb.handle(control).hex() == captured.D2_CONTROL_ON
    # FC10 without a byte count: the reply is address, fc, register, count.
    before = vb.registers(Variant.D2, 0, 0x100)
    reply = vb.handle(d2(captured.D2_REQUESTS["set_rtc"]))
    assert reply == append_crc(d2("d21000d40003"))
    assert vb.registers(Variant.D2, 0, 0x100) == before
    assert [(w.register, w.value) for w in vb.writes] == [
        (0xCF, 0),
        (0xCF, 1),
        (0xD4, 0x180B),
        (0xD5, 0x0709),
        (0xD6, 0x341C),
    ]


def test_unsupported_ranges_read_like_the_device() -> None:
    vb = captured_balancer()
    assert set(read(vb, Variant.D2, Block(0xDF, 0x11)).values()) == {0xFFFF}
    assert set(read(vb, Variant.D2, Block(0x63, 0x1C)).values()) == {0xFFFF}
    assert set(read(vb, Variant.D2, Block(0x47, 0x1C)).values()) == {0}
    assert read(vb, Variant.D2, Block(0x42, 1)) == {0x42: 0xFFFF}
    assert set(read(vb, Variant.D2, Block(0x100, 4)).values()) == {0xFFFF}
    assert vb.handle(d2(captured.P81_REQUESTS["cf"])).hex() == captured.P81_CF_REPLY


def test_captured_p81_reads_are_answered() -> None:
    vb = captured_balancer()
    for name, block in (("rt1", Block(0, 0x40)), ("rt2", Block(0x41, 0x3E))):
        frames = reply_frames(Variant.P81, vb.handle(d2(captured.P81_REQUESTS[name])))
        assert frames[0].address == 0x51
        assert len(frames[0].registers()) == block.count


def test_a5_probe_of_the_app_is_not_answered() -> None:
    vb = captured_balancer()
    assert vb.handle(d2(captured.A5_PROBE_REQUEST)) is None
    assert vb.requests == 1


def test_a5_replies_have_the_captured_layout() -> None:
    vb = captured_balancer()
    (frame,) = a5(vb, 0x90)
    assert frame.raw.hex() == "a50190080215000075300000fa"  # 53.3 V
    assert a5(vb, 0x97)[0].raw.hex() == captured.A5_REPLIES[0x97]
    assert a5(vb, 0x98)[0].raw.hex() == captured.A5_REPLIES[0x98]
    (counts,) = a5(vb, 0x94)
    assert codec.decode_a5_counts([counts]) == (16, 1)
    (high,) = a5(vb, 0x91)
    assert high.data[:6] == bytes.fromhex("0d0a0b0d0504")  # 3338 #11, 3333 #4
    (temps,) = a5(vb, 0x92)
    assert temps.data[:4] == bytes((68, 1, 68, 1))


# --- every variant shows the same state ------------------------------------------


@pytest.mark.parametrize("variant", [Variant.D2, Variant.P81])
def test_modbus_views_decode_to_the_state(variant: Variant) -> None:
    vb = VirtualBalancer(
        cell_voltages=[3.401, 3.3, 3.35, 3.36, 3.299], temperatures=[21.0, -5.0]
    )
    reading = live(vb, variant)
    assert reading.cell_voltages == (3.401, 3.3, 3.35, 3.36, 3.299)
    assert reading.temperatures == (21.0, -5.0)
    assert reading.pack_voltage == 16.7
    assert reading.balancing is True
    assert reading.balancing_cells == vb.balancing_cells == {1, 5}
    assert reading.balance_current == vb.balance_current == 1.0
    assert reading.alarms == vb.alarms == Alarms()
    table = MODBUS_TABLES[variant]
    regs: dict[int, int] = {}
    for block in table.settings_blocks:
        regs.update(read(vb, variant, block))
    got = codec.decode_modbus_settings(table, regs)
    for setting in table.settings:
        expected = getattr(vb, setting.value)
        assert getattr(got, setting.value) == expected, setting
    info = codec.decode_modbus_info(table, 1, read(vb, variant, table.info_block))
    assert info.software_version == "B002_111132_03"
    assert info.hardware_version == "E303-032DG-SMB"


def test_d2_with_eight_sensors_shows_temperatures_7_and_8() -> None:
    temperatures = [20.0 + i for i in range(8)]
    few = read(VirtualBalancer(cells=4), Variant.D2, Block(0x20, 8))
    assert (few[0x26], few[0x27]) == (133, 3334)  # pack 13.3 V, average mV
    vb = VirtualBalancer(cells=4, temperatures=temperatures)
    assert live(vb, Variant.D2).temperatures == tuple(temperatures)


def test_p81_view_specifics() -> None:
    vb = VirtualBalancer(
        cell_voltages=[3.40, 3.30, 3.35], temperatures=[25.0], address=3
    )
    regs = read(vb, Variant.P81, P81_TABLE.live.block)
    assert regs[0x4D] == 2  # active balancing
    assert regs[0x4E] == 31000
    assert regs[0x4F] == 0b011
    assert regs[0x31] == 0xFF  # no second sensor
    assert (regs[0x3E], regs[0x3F], regs[0x40], regs[0x41], regs[0x42]) == (
        3400,
        1,
        3300,
        2,
        100,
    )
    assert read(vb, Variant.P81, Block(0x100, 4)) == {
        0x100: 3,
        0x101: 3,
        0x102: 0,
        0x103: 3,
    }


def test_a5_view_decodes_to_the_state() -> None:
    vb = VirtualBalancer(cell_voltages=[3.40, 3.30, 3.35, 3.36], temperatures=[30.0])
    reading = a5_live(vb)
    assert reading.cell_voltages == (3.40, 3.30, 3.35, 3.36)
    assert reading.temperatures == (30.0,)
    assert reading.balancing_cells == {1, 2}
    replies = {
        command: a5(vb, command)
        for command in (
            A5_TABLE.balance_settings,
            A5_TABLE.cell_thresholds,
            A5_TABLE.temperature_thresholds,
        )
    }
    got = codec.decode_a5_settings(replies, 4)
    assert got.balance_start_voltage == vb.balance_start_voltage
    assert got.balance_delta_voltage == vb.balance_delta_voltage
    assert got.cell_overvoltage_alarm == vb.cell_overvoltage_alarm
    assert got.cell_undervoltage_alarm == vb.cell_undervoltage_alarm
    assert got.discharge_overtemperature_alarm == 85.0
    assert got.discharge_undertemperature_alarm == -40.0
    cells = a5(vb, A5_TABLE.cell_thresholds)[0].data
    assert cells[:8] == bytes.fromhex("0dde0e4208fc0898")  # L1/L2 as in D2
    for command, text in ((0x62, "B002_111132_03"), (0x63, "E303-032DG-SMB")):
        assert codec.decode_a5_version(a5(vb, command)) == text


@pytest.mark.parametrize("host", [0x40, 0x80])
def test_a5_answers_both_hosts_but_not_0x93(host: int) -> None:
    vb = VirtualBalancer()
    assert a5(vb, 0x94, host)[0].data[0] == 16
    assert vb.handle(codec.a5_request(0x93, host).frame) is None
    assert vb.handle(codec.a5_request(0x54, host).frame) is None  # unknown
    assert vb.requests == 3


@pytest.mark.parametrize(
    ("ble", "cells", "sensors", "cell_frames", "temperature_frames"),
    [
        (False, 16, 1, 6, 1),
        (False, 5, 8, 2, 2),
        (True, 16, 1, 16, 3),
        (True, 4, 0, 16, 3),
    ],
)
def test_a5_multi_frame_counts(
    ble, cells, sensors, cell_frames, temperature_frames
) -> None:
    vb = VirtualBalancer(cells, ble=ble, temperatures=[20.0] * sensors)
    frames = a5(vb, A5_TABLE.cells)
    assert [f.data[0] for f in frames] == list(range(1, cell_frames + 1))
    temps = a5(vb, A5_TABLE.temperatures)
    assert [f.data[0] for f in temps] == list(range(1, temperature_frames + 1))
    volts = [
        int.from_bytes(f.data[i : i + 2], "big") / 1000
        for f in frames
        for i in range(1, 7, 2)
    ]
    assert volts[:cells] == vb.cell_voltages
    assert set(volts[cells:]) <= {0.0}


def test_read_of_too_many_registers_is_refused() -> None:
    vb = VirtualBalancer()
    reply = vb.handle(append_crc(bytes.fromhex("d2030000007e")))
    assert reply == append_crc(bytes.fromhex("d28303"))
    (frame,) = FrameReassembler(Variant.D2).feed(reply)
    assert frame.is_exception


# --- balancing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "enabled", "expected"),
    [
        ([3.30, 3.35], True, True),
        ([3.30, 3.35], False, False),
        ([3.10, 3.15], True, False),  # highest cell below the start voltage
        ([3.33, 3.34], True, False),  # spread below the delta
        ([3.18, 3.20], True, True),  # exactly at both thresholds
        ([3.30], True, False),  # one cell has nobody to balance with
    ],
)
def test_balancing_follows_the_rule(cells, enabled, expected, clock) -> None:
    vb = VirtualBalancer(cell_voltages=cells, clock=clock)
    vb.balancer_enabled = enabled
    assert vb.balancing is expected
    assert vb.balance_current == (1.0 if expected else 0.0)
    assert bool(vb.balancing_cells) is expected
    reading = live(vb, Variant.D2)
    assert reading.balancing is expected
    assert read(vb, Variant.D2, Block(0x34, 1))[0x34] == int(expected)


def test_spread_shrinks_and_balancing_stops(clock) -> None:
    start = [3.40, 3.30, 3.35, 3.32, 3.38]
    vb = VirtualBalancer(cell_voltages=start, clock=clock, volts_per_amp_second=0.001)
    spreads = []
    for _ in range(5):
        spreads.append(max(vb.cell_voltages) - min(vb.cell_voltages))
        vb.advance(10)
    assert spreads == sorted(spreads, reverse=True)
    assert spreads[-1] < spreads[0]
    vb.advance(3600)
    spread = max(vb.cell_voltages) - min(vb.cell_voltages)
    assert not vb.balancing
    assert vb.balance_delta_voltage - 0.001 <= spread < vb.balance_delta_voltage
    # Never overshoot: no cell leaves the original range, charge is kept.
    assert min(start) <= min(vb.cell_voltages) <= max(vb.cell_voltages) <= max(start)
    assert sum(vb.cell_voltages) == pytest.approx(sum(start))


def test_balance_current_limit_slows_balancing(clock) -> None:
    fast = VirtualBalancer(cell_voltages=[3.40, 3.30], clock=clock)
    slow = VirtualBalancer(cell_voltages=[3.40, 3.30], clock=clock)
    slow.balance_current_limit = 0.5
    assert slow.balance_current == 0.5
    assert read(slow, Variant.D2, Block(0x40, 1))[0x40] == 30500
    fast.advance(20)
    slow.advance(20)
    assert fast.cell_voltages == pytest.approx([3.39, 3.31])
    assert slow.cell_voltages == pytest.approx([3.395, 3.305])
    slow.balance_current_limit = 0.0
    slow.advance(20)
    assert slow.cell_voltages == pytest.approx([3.395, 3.305])


def test_physics_advance_lazily_with_the_clock_on_requests(clock) -> None:
    vb = VirtualBalancer(cell_voltages=[3.40, 3.30], clock=clock)
    clock.now += 10
    assert vb.cell_voltages == [3.40, 3.30]  # nothing asked yet
    reading = live(vb, Variant.D2)
    assert vb.cell_voltages == pytest.approx([3.395, 3.305])
    assert reading.cell_voltages == (3.395, 3.305)
    clock.now += 1000
    vb.step()
    assert 0.019 <= max(vb.cell_voltages) - min(vb.cell_voltages) < 0.02


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cells=st.lists(st.integers(2500, 3600), min_size=2, max_size=8),
    seconds=st.floats(0, 5000),
    delta=st.integers(20, 100),
)
def test_balancing_never_overshoots(cells, seconds, delta) -> None:
    volts = [mv / 1000 for mv in cells]
    vb = VirtualBalancer(
        cell_voltages=volts, clock=lambda: 0.0, volts_per_amp_second=0.002
    )
    vb.balance_delta_voltage = delta / 1000
    vb.advance(seconds)
    after = vb.cell_voltages
    assert sum(after) == pytest.approx(sum(volts))
    assert min(volts) - 1e-9 <= min(after) <= max(after) <= max(volts) + 1e-9
    if not vb.balancing:
        spread = max(after) - min(after)
        assert spread < delta / 1000 or max(after) < vb.balance_start_voltage


# --- alarms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "temperature", "expected"),
    [
        (3.33, 25.0, set()),
        (3.56, 25.0, {Alarm.CELL_OVERVOLTAGE_L1}),
        (3.66, 25.0, {Alarm.CELL_OVERVOLTAGE_L1, Alarm.CELL_OVERVOLTAGE_L2}),
        (2.25, 25.0, {Alarm.CELL_UNDERVOLTAGE_L1}),
        (2.10, 25.0, {Alarm.CELL_UNDERVOLTAGE_L1, Alarm.CELL_UNDERVOLTAGE_L2}),
        (3.33, 85.0, {Alarm.DISCHARGE_OVERTEMP_L2}),
        (3.33, -41.0, {Alarm.DISCHARGE_UNDERTEMP_L2}),
    ],
)
def test_alarms_follow_thresholds(cell, temperature, expected) -> None:
    vb = VirtualBalancer(cells=4, temperatures=[temperature])
    vb.balancer_enabled = False
    vb.set_cell_voltage(2, cell)
    assert vb.alarms.flags == expected
    raw = vb.alarms.raw.to_bytes(8, "little")
    # D2 0x3A..0x3D and p81 0x66..0x69 carry vendor byte 0 first on the wire.
    d2_words = read(vb, Variant.D2, Block(0x3A, 4))
    assert b"".join(v.to_bytes(2, "big") for v in d2_words.values()) == raw
    p81_words = read(vb, Variant.P81, Block(0x66, 4))
    assert b"".join(v.to_bytes(2, "big") for v in p81_words.values()) == raw
    assert a5(vb, A5_TABLE.alarms)[0].data == raw
    for variant in (Variant.D2, Variant.P81):
        assert live(vb, variant).alarms.flags == expected
    assert a5_live(vb).alarms.flags == expected


def test_alarm_thresholds_written_over_the_wire_take_effect() -> None:
    vb = VirtualBalancer(cell_voltages=[3.50, 3.49])
    assert not vb.alarms.flags
    write(vb, Variant.D2, 0x8B, 3450)
    assert vb.cell_overvoltage_alarm == 3.45
    assert vb.alarms.flags == {Alarm.CELL_OVERVOLTAGE_L1}
    write(vb, Variant.D2, 0x9C, 0 + 40)  # discharge over-temperature 0 degC
    assert Alarm.DISCHARGE_OVERTEMP_L2 in vb.alarms.flags
    vb.cell_overvoltage_alarm = 0  # zero: not set
    assert Alarm.CELL_OVERVOLTAGE_L1 not in vb.alarms.flags


# --- sleep ------------------------------------------------------------------------


def test_rs485_sleeper_answers_nothing_until_woken(clock) -> None:
    vb = VirtualBalancer(link="rs485", clock=clock)
    request = codec.read_request(Variant.D2, 1, Block(0, 1)).frame
    write(vb, Variant.D2, 0x8A, 60)
    assert vb.sleep_time == 60
    clock.now += 59
    assert vb.handle(request) is not None
    clock.now += 60
    assert vb.asleep
    for _ in range(3):
        assert vb.handle(request) is None
    assert vb.asleep
    vb.wake()
    assert not vb.asleep
    assert vb.handle(request) is not None
    assert vb.requests == 6


def test_uart_sleeper_wakes_on_a_request_but_drops_it(clock) -> None:
    vb = VirtualBalancer(link="uart", clock=clock)
    vb.sleep_time = 60
    request = codec.a5_request(0x94, 0x40).frame
    clock.now += 61
    assert vb.asleep
    assert vb.handle(request) is None
    assert not vb.asleep
    assert vb.handle(request) is not None


def test_balancing_stops_while_asleep(clock) -> None:
    vb = VirtualBalancer(cell_voltages=[3.40, 3.30], clock=clock)
    vb.sleep_time = 10
    clock.now += 1000
    vb.step()
    assert vb.asleep
    assert not vb.balancing
    assert vb.balancing_cells == frozenset()
    assert vb.cell_voltages == pytest.approx([3.395, 3.305])  # 10 s at 1 A


def test_never_sleeps_with_65535(clock) -> None:
    vb = VirtualBalancer(clock=clock, link="rs485")
    assert vb.sleep_time == NEVER_SLEEP
    clock.now += 1e6
    assert not vb.asleep


# --- writes -----------------------------------------------------------------------


WRITE_CASES = {
    Variant.D2: {
        Setting.BALANCE_START_VOLTAGE: (3300, 3.3),
        Setting.BALANCE_DELTA_VOLTAGE: (30, 0.03),
        Setting.SLEEP_TIME: (3600, 3600),
        Setting.BALANCER_ENABLED: (0, False),
        Setting.CELL_OVERVOLTAGE_ALARM: (3500, 3.5),
        Setting.CELL_UNDERVOLTAGE_ALARM: (2500, 2.5),
        Setting.DISCHARGE_OVERTEMPERATURE_ALARM: (110, 70.0),
        Setting.DISCHARGE_UNDERTEMPERATURE_ALARM: (20, -20.0),
        Setting.BALANCE_CURRENT_LIMIT: (5, 0.5),
        Setting.CELL_COUNT: (8, 8),
        Setting.CHEMISTRY: (1, Chemistry.NMC),
    },
    Variant.P81: {
        Setting.BALANCER_ENABLED: (0, False),
        Setting.SLEEP_TIME: (360, 3600),
        Setting.BALANCE_START_VOLTAGE: (3300, 3.3),
        Setting.BALANCE_DELTA_VOLTAGE: (30, 0.03),
        Setting.CELL_COUNT: (8, 8),
    },
}


@pytest.mark.parametrize(
    ("variant", "setting"),
    [(variant, setting) for variant, cases in WRITE_CASES.items() for setting in cases],
)
def test_write_to_a_table_setting_changes_the_model(variant, setting, clock) -> None:
    assert set(WRITE_CASES[variant]) == set(MODBUS_TABLES[variant].settings)
    vb = VirtualBalancer(clock=clock)
    register = MODBUS_TABLES[variant].settings[setting].register
    raw, value = WRITE_CASES[variant][setting]
    reply = write(vb, variant, register, raw)
    assert reply[2:6] == register.to_bytes(2, "big") + raw.to_bytes(2, "big")
    assert reply[0] == (0xD2 if variant is Variant.D2 else 0x51)
    assert getattr(vb, setting.value) == value
    assert vb.writes == [RecordedWrite(variant, register, raw, clock.now)]
    assert read(vb, variant, Block(register, 1)) == {register: raw}


def test_writes_elsewhere_are_recorded_echoed_and_change_nothing() -> None:
    vb = VirtualBalancer()
    for variant, register in (
        (Variant.D2, 0x0C),  # "host command" example of the vendor sheet
        (Variant.D2, 0x8C),  # over-voltage level 2: not in the table
        (Variant.D2, 0x100),
        (Variant.P81, 0x100),  # board number
        (Variant.P81, 0xCF),
    ):
        before = {v: vb.registers(v, 0, 0x200) for v in (Variant.D2, Variant.P81)}
        frame_address = 0xD2 if variant is Variant.D2 else 0x81
        request = append_crc(
            bytes((frame_address, 6)) + register.to_bytes(2, "big") + b"\x12\x34"
        )
        reply = vb.handle(request)
        assert reply[1:] == request[1:6] + reply[-2:]
        assert vb.writes[-1] == RecordedWrite(
            variant, register, 0x1234, vb.writes[-1].time
        )
        after = {v: vb.registers(v, 0, 0x200) for v in (Variant.D2, Variant.P81)}
        assert after == before
    assert len(vb.writes) == 5


def test_meaningless_values_of_table_settings_change_nothing() -> None:
    vb = VirtualBalancer()
    write(vb, Variant.D2, 0x89, 9)  # no such chemistry
    write(vb, Variant.D2, 0x83, 0)  # no cells
    write(vb, Variant.D2, 0x83, 49)
    assert vb.chemistry is Chemistry.LFP
    assert vb.cell_count == 16
    assert len(vb.writes) == 3


def test_a5_write_commands_are_recorded_not_answered() -> None:
    vb = VirtualBalancer()
    body = bytes((0xA5, 0x40, 0xD9, 8, 1, 0, 0, 0, 0, 0, 0, 0))
    frame = body + bytes((sum(body) & 0xFF,))
    assert vb.handle(frame) is None
    assert [(w.variant, w.register, w.value) for w in vb.writes] == [
        (Variant.A5, 0xD9, 1 << 56)
    ]


def test_cell_count_grows_at_the_mean_and_shrinks() -> None:
    vb = VirtualBalancer(cell_voltages=[3.3, 3.4])
    vb.cell_count = 4
    assert vb.cell_voltages == [3.3, 3.4, 3.35, 3.35]
    vb.cell_count = 1
    assert vb.cell_voltages == [3.3]
    with pytest.raises(ValueError, match=r"1\.\.48"):
        vb.cell_count = 0


# --- who answers ------------------------------------------------------------------


def test_only_the_configured_variants_answer() -> None:
    vb = VirtualBalancer(variants=[Variant.P81])
    assert vb.handle(codec.read_request(Variant.D2, 1, Block(0, 1)).frame) is None
    assert vb.handle(codec.a5_request(0x94, 0x40).frame) is None
    assert vb.handle(codec.read_request(Variant.P81, 1, Block(0, 1)).frame)
    assert vb.requests == 1


def test_p81_answers_only_its_board_number() -> None:
    vb = VirtualBalancer(address=2)
    assert vb.handle(codec.read_request(Variant.P81, 1, Block(0, 1)).frame) is None
    reply = vb.handle(codec.read_request(Variant.P81, 2, Block(0, 1)).frame)
    assert reply[0] == 0x52
    assert vb.requests == 1


def test_corrupt_or_incomplete_requests_are_ignored() -> None:
    vb = VirtualBalancer()
    good = codec.read_request(Variant.D2, 1, Block(0, 1)).frame
    assert vb.handle(good[:-1] + bytes((good[-1] ^ 1,))) is None
    assert vb.handle(good[:-1]) is None
    assert vb.handle(b"\x00" * 8) is None
    assert vb.requests == 0


# --- byte stream and faults -------------------------------------------------------


REQUEST = codec.read_request(Variant.D2, 1, Block(0xA3, 2)).frame


def clean_reply() -> bytes:
    return VirtualBalancer().handle(REQUEST)


def test_feed_accepts_any_chunking() -> None:
    vb = VirtualBalancer()
    stream = b"\x00\xff" + REQUEST + codec.a5_request(0x94, 0x80).frame + REQUEST
    out: list[bytes] = []
    for byte in stream:
        out += vb.feed(bytes((byte,)))
    assert out == [
        clean_reply(),
        vb.handle(codec.a5_request(0x94, 0x80).frame),
        clean_reply(),
    ]
    assert vb.feed(REQUEST + REQUEST) == [clean_reply(), clean_reply()]


def test_parser_resynchronises_after_a_corrupt_request() -> None:
    parser = RequestParser()
    bad = REQUEST[:-1] + bytes((REQUEST[-1] ^ 0xFF,))
    assert parser.feed(bad + b"\x81\x07" + REQUEST) == [REQUEST]
    assert parser.rejected >= 1
    assert parser.feed(b"\xd2\x10\x00\x00\x00\x00") == []  # FC10 with 0 registers
    assert parser.feed(b"\xa5\x01\x90\x08") == []  # an A5 reply, not a request
    assert parser.feed(b"\xd2\x10\x00\xd4\x00\x7d") == []  # waits for 258 bytes
    parser.clear()
    assert parser.feed(b"\xd2\x10\x00") == []  # FC10 header incomplete
    parser.clear()
    assert parser.feed(REQUEST[:1]) == []
    assert parser.feed(REQUEST[1:]) == [REQUEST]
    assert parser.discarded > 0


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_one_shot_faults_do_what_they_say(kind: str) -> None:
    faults = Faults(delay_seconds=0.25)
    vb = VirtualBalancer(faults=faults)
    faults.once(kind)
    assert faults.pending == (kind,)
    (reply,) = vb.respond(REQUEST)
    clean = clean_reply()
    assert reply.frames == (clean,)
    assert reply.faults == {kind}
    if kind == "drop":
        assert reply.data == b""
    elif kind == "corrupt":
        assert reply.data == clean[:-1] + bytes((clean[-1] ^ 0xFF,))
        assert not crc_ok(reply.data)
    elif kind == "truncate":
        assert 0 < len(reply.data) < len(clean)
        assert clean.startswith(reply.data)
    elif kind == "garbage":
        junk = reply.data[: -len(clean)]
        assert reply.data.endswith(clean)
        assert 3 <= len(junk) <= 8
        assert set(junk) <= set(JUNK_BYTES)
        assert [f.raw for f in FrameReassembler(Variant.D2).feed(reply.data)] == [clean]
    elif kind == "delay":
        assert reply.data == clean
        assert reply.delay == 0.25
    else:
        assert reply.disconnect
        assert reply.data == b""
    # One shot only: the next reply is clean.
    assert vb.feed(REQUEST) == [clean]


def test_disconnect_mid_frame_sends_half_a_frame() -> None:
    vb = VirtualBalancer(faults=Faults(disconnect=1.0, disconnect_mid_frame=True))
    (reply,) = vb.respond(REQUEST)
    assert reply.disconnect
    assert reply.data == clean_reply()[: len(clean_reply()) // 2]
    assert vb.feed(REQUEST) == [reply.data]


def test_once_queue_is_applied_in_order() -> None:
    vb = VirtualBalancer(faults=Faults())
    vb.faults.once("drop", "corrupt")
    first = vb.feed(REQUEST)
    second = vb.feed(REQUEST)
    third = vb.feed(REQUEST)
    assert first == []
    assert not crc_ok(second[0])
    assert third == [clean_reply()]
    with pytest.raises(ValueError, match="unknown fault"):
        vb.faults.once("explode")


def test_fault_rates_are_seeded_and_repeatable() -> None:
    def pattern(seed: int) -> list[bool]:
        vb = VirtualBalancer(faults=Faults(drop=0.5, seed=seed))
        return [bool(vb.feed(REQUEST)) for _ in range(40)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 5 < sum(pattern(7)) < 35
    always = VirtualBalancer(faults=Faults(corrupt=1.0, seed=1))
    assert all(not crc_ok(always.feed(REQUEST)[0]) for _ in range(10))
    always.faults.clear()
    assert always.feed(REQUEST) == [clean_reply()]


def test_corrupt_multi_frame_reply_breaks_every_frame() -> None:
    vb = VirtualBalancer(faults=Faults(corrupt=1.0))
    (reply,) = vb.respond(codec.a5_request(A5_TABLE.cells, 0x40).frame)
    reassembler = FrameReassembler(Variant.A5)
    assert reassembler.feed(reply.data) == []
    assert reassembler.rejected == 6


def test_silent_balancer_still_acts_on_requests() -> None:
    vb = VirtualBalancer(faults=Faults(silent=True))
    request = append_crc(bytes.fromhex("d20600cf0000"))
    assert vb.feed(request) == []
    assert vb.answer(request) is None
    assert not vb.balancer_enabled
    assert len(vb.writes) == 2


# --- construction -----------------------------------------------------------------


@pytest.mark.parametrize("chemistry", list(Chemistry))
def test_defaults_are_plausible_for_the_chemistry(chemistry: Chemistry) -> None:
    vb = VirtualBalancer(8, chemistry)
    low, high = chemistry.voltage_range
    assert all(low <= v <= high for v in vb.cell_voltages)
    assert low <= vb.balance_start_voltage <= high
    assert 0 < max(vb.cell_voltages) - min(vb.cell_voltages) < vb.balance_delta_voltage
    assert vb.cell_undervoltage_alarm_l2 < vb.cell_undervoltage_alarm
    assert vb.cell_overvoltage_alarm < vb.cell_overvoltage_alarm_l2
    assert not vb.balancing
    assert not vb.alarms.flags
    regs = read(vb, Variant.D2, Block(0x89, 1))
    assert D2_TABLE.chemistry_codes[regs[0x89]] is chemistry
    assert "8S" in repr(vb)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"cells": 0}, ValueError),
        ({"cell_voltages": [3.3] * 49}, ValueError),
        ({"address": 16}, ValueError),
        ({"link": "can"}, ValueError),
        ({"variants": ()}, ValueError),
    ],
)
def test_invalid_construction(kwargs, error) -> None:
    with pytest.raises(error):
        VirtualBalancer(**kwargs)


def test_invalid_use() -> None:
    vb = VirtualBalancer(cells=4)
    with pytest.raises(IndexError):
        vb.set_cell_voltage(5, 3.3)
    with pytest.raises(ValueError, match="forward"):
        vb.advance(-1)
    with pytest.raises(ValueError, match="A5"):
        vb.registers(Variant.A5, 0, 1)


# --- servers ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])  # noqa: S104
async def test_tcp_server_binds_loopback_only(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await serve_tcp(VirtualBalancer(), host=host)


def test_loopback_names() -> None:
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"
    assert loopback_host("::1") == "::1"


async def exchange(reader, writer, request: bytes, size: int) -> bytes:
    writer.write(request)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(size), 2)


async def test_tcp_server_reconnect_and_disconnect_fault() -> None:
    vb = VirtualBalancer()
    async with await serve_tcp(vb) as server:
        assert server.url == f"socket://127.0.0.1:{server.port}"
        clean = clean_reply()
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await exchange(reader, writer, REQUEST, len(clean)) == clean
            writer.close()
            await writer.wait_closed()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        vb.faults.once("disconnect")
        writer.write(REQUEST)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
        writer.close()
        await writer.wait_closed()
        assert server.connects == 3
    assert server.connections == 0
    await server.close()  # closing twice is fine


async def test_tcp_server_forgets_closed_connections() -> None:
    """A long run lets the gateway forget the connections the host closed."""
    vb = VirtualBalancer()
    async with await serve_tcp(vb) as server:
        clean = clean_reply()
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await exchange(reader, writer, REQUEST, len(clean)) == clean
            writer.close()
            await writer.wait_closed()
        await eventually(lambda: server.connections == 0)
        assert await server.forget_closed() == 3
        assert await server.forget_closed() == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await exchange(reader, writer, REQUEST, len(clean)) == clean
        assert await server.forget_closed() == 0  # an open one stays
        writer.close()
        await writer.wait_closed()
    pty = await serve_pty(vb)
    assert await pty.forget_closed() == 0  # one line, never closed by the host
    await pty.close()


async def test_tcp_server_close_drops_clients_and_pending_replies() -> None:
    vb = VirtualBalancer(faults=Faults(delay=1.0, delay_seconds=30))
    server = await serve_tcp([vb], baudrate=9600, turnaround=0.01)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(REQUEST)
    await writer.drain()
    await eventually(lambda: vb.replies > 0)
    assert server.connections == 1
    await server.close()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    await writer.wait_closed()


async def test_tcp_server_shares_the_line_between_boards() -> None:
    boards = [VirtualBalancer(address=n, variants=[Variant.P81]) for n in (1, 2, 3)]
    async with await serve_tcp(boards, baudrate=115200) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for board in (3, 1, 2):
            request = codec.read_request(Variant.P81, board, Block(0x100, 1)).frame
            reply = await exchange(reader, writer, request, 7)
            assert reply[0] == 0x50 + board
            assert reply[3:5] == board.to_bytes(2, "big")
        writer.close()
        await writer.wait_closed()
    assert [b.requests for b in boards] == [1, 1, 1]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_pty_server_answers_and_releases_its_fds() -> None:
    before = open_fds()
    vb = VirtualBalancer(faults=Faults())
    server = await serve_pty(vb, turnaround=0.001)
    assert server.url == server.path
    assert server.path.startswith("/dev/")
    fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:

        async def ask(request: bytes, size: int) -> bytes:
            os.write(fd, request)
            data = b""
            async with asyncio.timeout(2):
                while len(data) < size:
                    try:
                        data += os.read(fd, 256)
                    except BlockingIOError:
                        await asyncio.sleep(0.005)
            return data

        clean = clean_reply()
        assert await ask(REQUEST, len(clean)) == clean
        # A pty cannot be unplugged: a disconnect fault only loses the reply.
        vb.faults.once("disconnect")
        os.write(fd, REQUEST)
        await eventually(lambda: vb.replies >= 2)
        assert await ask(REQUEST, len(clean)) == clean
    finally:
        os.close(fd)
        await server.close()
    await server.close()
    assert open_fds() <= before


@pytest.mark.parametrize("transport", ["tcp", "pty"])
async def test_chunk_size_splits_replies_on_serial_lines(transport: str) -> None:
    """``chunk_size`` (``simulate --fault-chunk-size``) holds on TCP and a pty.

    A reader sees the reply arrive read by read, never across a chunk
    boundary (at 9600 baud each piece leaves when its bytes are through, so
    even a pty, which may gather quick writes into one read, shows pieces);
    the bus reassembles the reply and it decodes all the same.
    """
    vb = VirtualBalancer(faults=Faults(chunk_size=5))
    live = Block(0, 0x41)
    request = codec.read_request(Variant.D2, 1, live)
    reply = VirtualBalancer().handle(request.frame)
    assert isinstance(reply, bytes)
    assert len(reply) == 135  # 27 chunks
    serve = serve_tcp if transport == "tcp" else serve_pty
    async with await serve(vb, baudrate=9600) as server:
        if transport == "tcp":
            assert server.port is not None
            pieces = await tcp_pieces(server.port, request.frame, len(reply))
        else:
            assert server.path is not None
            pieces = await pty_pieces(server.path, request.frame, len(reply))
        assert b"".join(pieces) == reply
        assert len(pieces) > 1
        assert on_chunk_boundaries(pieces, 5)
        bus = Bus(SerialLink(server.url, 9600, base_timeout=0.5), retries=0)
        try:
            (frame,) = await bus.exchange(request)
        finally:
            await bus.close()
    reading = codec.decode_modbus_live(D2_TABLE, codec.registers_of(live, frame))
    assert list(reading.cell_voltages) == pytest.approx(vb.cell_voltages, abs=5e-4)
    assert bus.stats.checksum_errors == bus.stats.timeouts == 0


async def test_line_survives_a_broken_balancer(caplog) -> None:
    good = VirtualBalancer(address=2, variants=[Variant.P81])
    broken = VirtualBalancer(address=1, variants=[Variant.P81])

    def boom(_request: bytes) -> None:
        raise RuntimeError("bug")

    broken.answer = boom  # type: ignore[method-assign]
    async with await serve_tcp([broken, good]) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = codec.read_request(Variant.P81, 2, Block(0x100, 1)).frame
        assert (await exchange(reader, writer, request, 7))[0] == 0x52
        writer.close()
        await writer.wait_closed()
    assert "failed on" in caplog.text


def test_server_arguments_are_checked() -> None:
    from balancer_tools.simulator import TcpServer

    with pytest.raises(ValueError, match="at least one"):
        TcpServer([])
    with pytest.raises(ValueError, match="baudrate"):
        TcpServer(VirtualBalancer(), baudrate=0)


# --- fake BLE client --------------------------------------------------------------


async def test_fake_bleak_client_behaves_like_the_bridge() -> None:
    vb = VirtualBalancer()
    dropped: list[object] = []
    client = FakeBleakClient(vb, disconnected_callback=dropped.append)
    received: list[bytes] = []
    with pytest.raises(BleakError):
        await client.start_notify(WRITE_UUID, lambda _c, d: None)
    await client.start_notify("FFF1", lambda _c, data: received.append(bytes(data)))
    with pytest.raises(BleakError):
        await client.write_gatt_char("0000fff3-0000-1000-8000-00805f9b34fb", REQUEST)
    await client.write_gatt_char("0xfff2", REQUEST, response=False)
    clean = clean_reply()
    await eventually(lambda: b"".join(received) == clean)
    assert [len(chunk) for chunk in received] == [9]
    big = codec.read_request(Variant.D2, 1, Block(0, 0x41)).frame
    received.clear()
    await client.write_gatt_char(WRITE_UUID, big)
    await eventually(lambda: len(b"".join(received)) >= 135)
    assert max(len(chunk) for chunk in received) == 20
    assert client.written == [REQUEST, big]
    await client.stop_notify(NOTIFY_UUID)
    assert client.is_connected
    assert await client.disconnect()
    assert not client.is_connected
    assert dropped == [client]
    with pytest.raises(BleakError):
        await client.write_gatt_char(WRITE_UUID, REQUEST)
    with pytest.raises(BleakError):
        await client.start_notify(NOTIFY_UUID, lambda _c, d: None)
    await client.disconnect()
    assert dropped == [client]


async def test_fake_bleak_client_disconnect_fault() -> None:
    vb = VirtualBalancer(faults=Faults(disconnect_mid_frame=True, chunk_size=4))
    dropped: list[object] = []
    client = FakeBleakClient(vb, disconnected_callback=dropped.append)
    received: list[bytes] = []
    await client.start_notify(
        NOTIFY_UUID, lambda _c, data: received.append(bytes(data))
    )
    vb.faults.once("disconnect")
    await client.write_gatt_char(WRITE_UUID, REQUEST)
    await eventually(lambda: not client.is_connected)
    assert dropped == [client]
    assert b"".join(received) == clean_reply()[:4]  # dropped after the first chunk
    with contextlib.suppress(BleakError):
        await client.disconnect()


def test_fake_device() -> None:
    device = fake_device()
    assert device.name.startswith("DL-")


async def test_fake_bleak_client_without_subscription_loses_replies() -> None:
    vb = VirtualBalancer()
    client = FakeBleakClient(vb)
    await client.write_gatt_char(WRITE_UUID, REQUEST)
    await eventually(lambda: client.notifications)
    assert client.notifications == [clean_reply()]
    await client.disconnect()


async def test_stopped_line_ignores_input() -> None:
    from balancer_tools.simulator import Line

    vb = VirtualBalancer()
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    line = Line([vb], send=send, hangup=lambda: True)
    line.received(REQUEST)
    await eventually(lambda: sent)
    await line.close()
    line.received(REQUEST)
    await asyncio.sleep(0.01)
    assert sent == [clean_reply()]
    assert vb.requests == 1
