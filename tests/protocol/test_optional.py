"""Optional commands and registers, the read-length fallback and the read plan.

Every rule runs against a virtual balancer with firmware quirks, on a
pseudo-terminal and over TCP: a device that never answers a command or a
register range, or refuses reads above N registers, still gives its live
reading; what it did not answer is remembered and not asked again each poll.
"""

from __future__ import annotations

import pytest

from balancer_tools.cli import build_parser
from balancer_tools.simulator import Quirks, VirtualBalancer
from balancer_tools.simulator.quirks import parse_range
from custom_components.active_balancer.protocol import codec
from custom_components.active_balancer.protocol.client import BalancerClient
from custom_components.active_balancer.protocol.errors import BalancerTimeout
from custom_components.active_balancer.protocol.link import Bus
from custom_components.active_balancer.protocol.model import Setting, Variant
from custom_components.active_balancer.protocol.plan import (
    Cost,
    best_plan,
    fallback_limit,
    live_registers,
    split,
)
from custom_components.active_balancer.protocol.registers import (
    D2_TABLE,
    P81_TABLE,
    Block,
)
from custom_components.active_balancer.protocol.serial import SerialLink

from .test_client import assert_reading_matches, balancer, rig

SERIAL = ("pty", "tcp")
A5_SETTINGS_COMMANDS = {0x59, 0x5C, 0x5F}
BYTE_9600 = 10 / 9600


def requests_by_command(vb_log: list[bytes]) -> list[int]:
    return [frame[2] for frame in vb_log]


class Logged:
    """Wraps a virtual balancer's ``handle`` to log every request it gets."""

    def __init__(self, vb) -> None:
        self.frames: list[bytes] = []
        original = vb.handle

        def handle(request: bytes | bytearray):
            self.frames.append(bytes(request))
            return original(request)

        vb.handle = handle


# --- A5: settings commands are optional ----------------------------------------


@pytest.mark.parametrize("transport", SERIAL)
async def test_a5_without_settings_commands_reads_live_values(transport: str) -> None:
    """A balancer that never answers 0x59/0x5C/0x5F still gives its reading."""
    vb = balancer(
        Variant.A5, transport, quirks=Quirks(ignore_commands=A5_SETTINGS_COMMANDS)
    )
    log = Logged(vb)
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.A5, settings_every=3)
        await client.connect()
        assert set(client.snapshot.unanswered) == {
            "balance_settings",
            "cell_thresholds",
            "temperature_thresholds",
        }
        assert client.snapshot.settings.balance_start_voltage is None
        assert client.snapshot.settings.cell_overvoltage_alarm is None
        assert client.snapshot.settings.cell_count == vb.cell_count
        assert (
            client.setting_part(Setting.BALANCE_DELTA_VOLTAGE)
            in client.snapshot.unanswered
        )
        reading = (await client.poll()).reading
        assert_reading_matches(reading, vb, Variant.A5)
        # Steady state: the unanswered commands are not sent, no timeout paid.
        log.frames.clear()
        timeouts = r.bus.stats.timeouts
        await client.poll()
        await client.poll()
        assert not A5_SETTINGS_COMMANDS & set(requests_by_command(log.frames))
        assert r.bus.stats.timeouts == timeouts
        # The settings re-read asks each of them again, once (no retries).
        log.frames.clear()
        await client.poll()
        sent = requests_by_command(log.frames)
        assert sorted(c for c in sent if c in A5_SETTINGS_COMMANDS) == [
            0x59,
            0x5C,
            0x5F,
        ]
        assert r.bus.stats.timeouts == timeouts + 3


@pytest.mark.parametrize("transport", SERIAL)
async def test_a5_settings_answered_later_are_taken(transport: str) -> None:
    """A first miss that was noise: the re-read fills the settings in."""
    vb = balancer(Variant.A5, transport, quirks=Quirks(ignore_commands={0x5F}))
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.A5, settings_every=1)
        await client.connect()
        assert client.snapshot.unanswered == {"balance_settings": "no answer"}
        assert (
            client.snapshot.settings.cell_overvoltage_alarm == vb.cell_overvoltage_alarm
        )
        vb.quirks.ignore_commands.clear()
        await client.poll()
        await client.poll()  # the settings re-read
        assert client.snapshot.unanswered == {}
        assert (
            client.snapshot.settings.balance_delta_voltage == vb.balance_delta_voltage
        )


@pytest.mark.parametrize("transport", SERIAL)
async def test_a5_without_balancing_bits_or_versions(transport: str) -> None:
    """0x97 and the version commands are optional too."""
    vb = balancer(
        Variant.A5, transport, quirks=Quirks(ignore_commands={0x97, 0x62, 0x63})
    )
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.A5)
        info = (await client.connect()).info
        assert info.software_version is None
        assert info.hardware_version is None
        reading = (await client.poll()).reading
        assert reading.balancing is None
        assert reading.balancing_cells is None
        assert reading.cell_voltages == tuple(
            round(v * 1000) / 1000 for v in vb.cell_voltages
        )
        assert set(client.snapshot.unanswered) == {
            "balancing_cells",
            "software_version",
            "hardware_version",
        }


# --- Modbus: the read-length fallback (one rule for D2 and p81) ----------------


@pytest.mark.parametrize("silent", [False, True], ids=["refused", "unanswered"])
@pytest.mark.parametrize("transport", SERIAL)
async def test_p81_refusing_long_reads_is_read_completely(
    transport: str, silent: bool
) -> None:
    """A p81 board that takes at most 81 registers a read gives everything."""
    vb = balancer(
        Variant.P81,
        transport,
        link="rs485",
        temperatures=(25.0, 26.0),
        quirks=Quirks(max_read=81, max_read_silent=silent),
    )
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.P81)
        await client.connect()
        assert client.max_read == P81_TABLE.fallback_max_read <= 81
        reading = (await client.poll()).reading
        assert_reading_matches(reading, vb, Variant.P81)
        assert reading.balancing_cells is not None
        assert reading.balance_current is not None
        assert all(block.count <= 81 for block in client.live_plan)
        assert client.snapshot.unanswered == {}


@pytest.mark.parametrize("transport", SERIAL)
async def test_d2_refusing_long_reads_uses_the_same_rule(transport: str) -> None:
    vb = balancer(Variant.D2, transport, quirks=Quirks(max_read=62))
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        assert client.max_read == D2_TABLE.fallback_max_read
        assert_reading_matches((await client.poll()).reading, vb, Variant.D2)


def test_fallback_rule() -> None:
    """Reads longer than the app's longest fall back to it; shorter ones do not."""
    assert fallback_limit(D2_TABLE, 125) == 62
    assert fallback_limit(P81_TABLE, 125) == 64
    assert fallback_limit(P81_TABLE, 64) is None
    assert split(P81_TABLE.live.block, 64) == (Block(0, 64), Block(64, 42))
    assert split(D2_TABLE.live.block, 62) == (Block(0, 62), Block(62, 3))


# --- Modbus: optional live registers ------------------------------------------------


@pytest.mark.parametrize("transport", SERIAL)
async def test_d2_without_balance_registers(transport: str) -> None:
    """0x3E-0x40 never answered: the rest of the reading arrives, those are None."""
    vb = balancer(Variant.D2, transport, quirks=Quirks(ignore_registers=[(0x3E, 0x40)]))
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2, settings_every=100)
        await client.connect()
        assert set(client.snapshot.unanswered) == {"balance_current", "balancing_cells"}
        reading = (await client.poll()).reading
        assert reading.balance_current is None
        assert reading.balancing_cells is None
        assert reading.cell_voltages == tuple(
            round(v * 1000) / 1000 for v in vb.cell_voltages
        )
        assert reading.balancing is vb.balancing
        timeouts = r.bus.stats.timeouts
        requests = r.bus.stats.requests
        await client.poll()
        assert r.bus.stats.timeouts == timeouts
        assert r.bus.stats.requests - requests == len(client.live_plan)
        assert all(
            0x3E not in block and 0x40 not in block for block in client.live_plan
        )


@pytest.mark.parametrize("transport", SERIAL)
async def test_d2_balance_current_fill_is_not_a_reading(transport: str) -> None:
    """0xFFFF in the balance current: unknown, and left out of the plan."""
    vb = balancer(Variant.D2, transport)
    original = vb.registers

    def registers(variant: Variant, start: int, count: int) -> list[int]:
        values = original(variant, start, count)
        if start <= 0x40 < start + count:
            values[0x40 - start] = 0xFFFF
        return values

    vb.registers = registers  # type: ignore[method-assign]
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        assert client.snapshot.unanswered == {"balance_current": "fill"}
        assert (await client.poll()).reading.balance_current is None
        assert all(0x40 not in block for block in client.live_plan)


@pytest.mark.parametrize("transport", SERIAL)
async def test_d2_settings_refused_live_reading_arrives(transport: str) -> None:
    vb = balancer(
        Variant.D2,
        transport,
        quirks=Quirks(refuse_registers=[(0x80, 0xA8), (0xCC, 0xD0)]),
    )
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        assert client.snapshot.unanswered == {
            "settings": "refused",
            "balancer_switch": "refused",
        }
        assert client.snapshot.settings.balance_delta_voltage is None
        assert client.setting_part(Setting.BALANCER_ENABLED) == "balancer_switch"
        assert client.setting_part(Setting.SLEEP_TIME) == "settings"
        assert_reading_matches((await client.poll()).reading, vb, Variant.D2)


# --- the read plan ------------------------------------------------------------------


def test_plan_d2_24s_stays_one_request() -> None:
    needed = live_registers(
        D2_TABLE.live, 24, 2, ("balance_current", "balancing_cells")
    )
    assert best_plan(needed, Cost(BYTE_9600, 0.010)) == (Block(0, 0x41),)


def test_plan_p81_4s_is_cheaper_than_one_read() -> None:
    cost = Cost(BYTE_9600, 0.010)
    needed = live_registers(
        P81_TABLE.live, 4, 2, ("balance_current", "balancing_cells")
    )
    plan = best_plan(needed, cost)
    assert len(plan) > 1
    assert cost.plan(plan) < 0.160 < cost.plan([P81_TABLE.live.block])
    assert all(reg in block for reg in needed for block in plan if reg in block)
    assert set(needed) <= {
        reg for block in plan for reg in range(block.start, block.start + block.count)
    }


def test_plan_respects_the_read_limit() -> None:
    cost = Cost(BYTE_9600, 1.0)  # a huge turnaround wants one read
    needed = live_registers(
        P81_TABLE.live, 48, 8, ("balance_current", "balancing_cells")
    )
    assert max(block.count for block in best_plan(needed, cost)) == 0x6A
    assert max(block.count for block in best_plan(needed, cost, 64)) <= 64


@pytest.mark.parametrize("transport", SERIAL)
async def test_plan_follows_a_new_cell_count(transport: str) -> None:
    """More cells than planned: the same poll reads and shows them."""
    vb = balancer(Variant.D2, transport, cells=4)
    async with rig(transport, vb) as r:
        client: BalancerClient = r.client(variant=Variant.D2)
        await client.connect()
        assert (await client.poll()).reading.cell_count == 4
        vb.cell_count = 20
        reading = (await client.poll()).reading
        assert reading.cell_count == 20
        assert_reading_matches(reading, vb, Variant.D2)


# --- plausibility and versions at the decoder ---------------------------------------


def d2_live(changes: dict[int, int] | None = None) -> dict[int, int]:
    regs = dict.fromkeys(range(0x41), 0)
    regs.update(dict.fromkeys(range(4), 3300))
    regs.update({0x20: 65, 0x28: 132, 0x31: 4, 0x32: 1, 0x40: 30000})
    regs.update(changes or {})
    return regs


def test_raw_zero_balance_current_is_not_minus_30_a() -> None:
    reading = codec.decode_modbus_live(D2_TABLE, d2_live({0x40: 0}))
    assert reading.balance_current is None
    assert ("balance_current", 0) in reading.implausible


def test_implausible_cells_and_temperatures_are_not_available() -> None:
    regs = d2_live()
    regs[1] = 312  # 0.312 V
    regs[2] = 5300  # 5.3 V
    regs[0x20] = 200  # 160 degC
    reading = codec.decode_modbus_live(D2_TABLE, regs)
    assert reading.cell_voltages == (3.3, None, None, 3.3)
    assert reading.temperatures == (None,)
    assert dict(reading.implausible) == {
        "cell_2_voltage": 312,
        "cell_3_voltage": 5300,
        "temperature_1": 200,
    }
    assert reading.min_cell_voltage == 3.3
    assert reading.delta_cell_voltage == 0.0
    ok = codec.decode_modbus_live(D2_TABLE, d2_live({0x40: 31000}))
    assert ok.balance_current == 1.0
    assert ok.implausible == ()


def test_d2_versions_32_plus_32_layout() -> None:
    """Bytes 16-31 empty and a second string at byte 32: the other layout."""
    data = b"B002_111132_03".ljust(32, b"\0") + b"E303-032DG-SMB".ljust(32, b"\0")
    block = D2_TABLE.info_block
    regs = {
        block.start + i: int.from_bytes(data[2 * i : 2 * i + 2], "big")
        for i in range(block.count)
    }
    info = codec.decode_modbus_info(D2_TABLE, None, regs)
    assert info.software_version == "B002_111132_03"
    assert info.hardware_version == "E303-032DG-SMB"
    assert info.serial_number is None


# --- fill, late misses and retries ---------------------------------------------------


class FillingBalancer(VirtualBalancer):
    """Answers the given Modbus registers and A5 commands with 0xFF fill."""

    fill_registers: tuple[range, ...] = ()
    fill_commands: frozenset[int] = frozenset()

    def registers(self, variant: Variant, start: int, count: int) -> list[int]:
        values = super().registers(variant, start, count)
        for i in range(count):
            if any(start + i in block for block in self.fill_registers):
                values[i] = 0xFFFF
        return values

    def _handle_a5(self, frame: bytes) -> bytes | list[bytes] | None:
        reply = super()._handle_a5(frame)
        if frame[2] in self.fill_commands and isinstance(reply, bytes):
            body = reply[:4] + b"\xff" * 8
            return body + bytes((sum(body) & 0xFF,))
        return reply


@pytest.mark.parametrize("transport", SERIAL)
async def test_fill_marks_parts_unknown(transport: str) -> None:
    """Settings, versions and balancing bits that read 0xFFFF are unknown."""
    vb = FillingBalancer(variants=[Variant.D2])
    vb.fill_registers = (range(0x80, 0xA9), range(0xA9, 0xC9), range(0x3E, 0x40))
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2)
        info = (await client.connect()).info
        assert info.software_version is None
        assert client.snapshot.unanswered == {
            "versions": "fill",
            "settings": "fill",
            "balancing_cells": "fill",
        }
        assert client.snapshot.settings.balance_delta_voltage is None
        assert client.snapshot.settings.balancer_enabled is vb.balancer_enabled
        reading = (await client.poll()).reading
        assert reading.balancing_cells is None
        assert reading.balance_current == vb.balance_current


@pytest.mark.parametrize("transport", SERIAL)
async def test_a5_fill_reply_is_unknown(transport: str) -> None:
    vb = FillingBalancer(variants=[Variant.A5])
    vb.fill_commands = frozenset({0x5F})
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.A5)
        await client.connect()
        assert client.snapshot.unanswered == {"balance_settings": "fill"}
        assert client.snapshot.settings.balance_start_voltage is None
        assert (
            client.snapshot.settings.cell_overvoltage_alarm == vb.cell_overvoltage_alarm
        )


@pytest.mark.parametrize("transport", SERIAL)
async def test_optional_register_stops_answering_later(transport: str) -> None:
    """A read mixing live and optional registers fails: retried without them."""
    vb = balancer(Variant.D2, transport, cells=4)
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2, settings_every=3)
        await client.connect()
        assert any(0x40 in block for block in client.live_plan)
        vb.quirks.ignore_registers.append((0x40, 0x40))
        # It answered before: the first failure is taken for the link's.
        with pytest.raises(BalancerTimeout):
            await client.poll()
        # Failing again, the read is tried without its optional registers.
        reading = (await client.poll()).reading
        assert reading.balance_current is None
        assert reading.cell_voltages == tuple(
            round(v * 1000) / 1000 for v in vb.cell_voltages
        )
        # Both optional parts of the failed read are left out until the re-read.
        assert client.snapshot.unanswered == {
            "balance_current": "no answer",
            "balancing_cells": "no answer",
        }
        # It answers again: the settings re-read plans it in again.
        vb.quirks.ignore_registers.clear()
        await client.poll()
        await client.poll()
        reading = (await client.poll()).reading  # the third poll re-reads the settings
        assert client.snapshot.unanswered == {}
        assert reading.balance_current == vb.balance_current


@pytest.mark.parametrize("transport", SERIAL)
async def test_required_registers_that_fail_fail_the_poll(transport: str) -> None:
    vb = balancer(Variant.D2, transport, cells=4)
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2)
        await client.connect()
        vb.quirks.ignore_registers.append((0x00, 0x03))
        with pytest.raises(BalancerTimeout):
            await client.poll()


def test_setting_part_needs_a_variant() -> None:
    client = BalancerClient(Bus(SerialLink("socket://127.0.0.1:1")))
    assert client.setting_part(Setting.BALANCER_ENABLED) is None
    p81 = BalancerClient(Bus(SerialLink("socket://127.0.0.1:1")), variant=Variant.P81)
    assert p81.setting_part(Setting.BALANCER_ENABLED) == "balancer_switch"
    assert p81.setting_part(Setting.CHEMISTRY) is None
    a5 = BalancerClient(Bus(SerialLink("socket://127.0.0.1:1")), variant=Variant.A5)
    assert a5.setting_part(Setting.CELL_OVERVOLTAGE_ALARM) == "cell_thresholds"


def test_register_ranges() -> None:
    assert parse_range("0x3E-0x40") == (0x3E, 0x40)
    assert parse_range("89") == (89, 89)
    with pytest.raises(ValueError, match="register range"):
        parse_range("0x40-0x3E")
    quirks = Quirks(ignore_registers=[(0x3E, 0x40)], max_read=10)
    assert quirks.decide(Variant.D2, bytes.fromhex("d2030000000a")) is None
    assert quirks.decide(Variant.D2, bytes.fromhex("d2030000000b")) == "refuse"
    assert quirks.decide(Variant.D2, bytes.fromhex("d2030040000a")) == "ignore"
    assert quirks.decide(Variant.D2, bytes.fromhex("d20600cf0001")) is None


def test_simulate_quirk_options() -> None:
    args = build_parser().parse_args(
        [
            "simulate",
            "--ignore-command",
            "0x59",
            "--ignore-registers",
            "0x3E-0x40",
            "--max-read",
            "81",
        ]
    )
    assert args.ignore_command == [0x59]
    assert args.ignore_registers == [(0x3E, 0x40)]
    assert args.max_read == 81
    for bad in (["--ignore-command", "0x100"], ["--ignore-registers", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["simulate", *bad])


@pytest.mark.parametrize("transport", SERIAL)
async def test_p81_without_balance_registers(transport: str) -> None:
    """p81 0x4E-0x51 never answered: no read spans them, the rest arrives."""
    vb = balancer(
        Variant.P81,
        transport,
        link="rs485",
        quirks=Quirks(ignore_registers=[(0x4E, 0x51)]),
    )
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.P81, settings_every=2)
        await client.connect()
        assert set(client.snapshot.unanswered) == {"balance_current", "balancing_cells"}
        for _ in range(4):  # the settings re-read tries them again, once
            reading = (await client.poll()).reading
            assert reading.balance_current is None
            assert reading.cell_voltages == tuple(
                round(v * 1000) / 1000 for v in vb.cell_voltages
            )
            assert reading.alarms == vb.alarms
        assert all(
            not any(reg in block for reg in range(0x4E, 0x52))
            for block in client.live_plan
        )


def test_plan_avoids_unanswered_registers() -> None:
    cost = Cost(BYTE_9600, 1.0)  # one read would be cheapest
    plan = best_plan([0x4D, 0x66], cost, avoid=range(0x4E, 0x52))
    assert plan == (Block(0x4D, 1), Block(0x66, 1))


@pytest.mark.parametrize("transport", SERIAL)
async def test_d2_versions_in_the_other_layout(transport: str) -> None:
    vb = balancer(Variant.D2, transport, quirks=Quirks(wide_versions=True))
    async with rig(transport, vb) as r:
        info = (await r.client(variant=Variant.D2).connect()).info
        assert info.software_version == vb.software_version
        assert info.hardware_version == vb.hardware_version
        assert info.serial_number is None


@pytest.mark.parametrize("transport", SERIAL)
async def test_versions_are_retried_at_the_settings_read(transport: str) -> None:
    vb = balancer(Variant.D2, transport, quirks=Quirks(ignore_registers=[(0xA9, 0xC8)]))
    async with rig(transport, vb) as r:
        client = r.client(variant=Variant.D2, settings_every=1)
        info = (await client.connect()).info
        assert info.software_version is None
        assert client.snapshot.unanswered == {"versions": "no answer"}
        vb.quirks.ignore_registers.clear()
        await client.poll()
        await client.poll()
        assert client.snapshot.unanswered == {}
        assert client.snapshot.info is not None
        assert client.snapshot.info.software_version == vb.software_version
