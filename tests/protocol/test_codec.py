"""Request builders and decoders, against the captured frames."""

from __future__ import annotations

from hypothesis import given, strategies as st
import pytest

from custom_components.active_balancer.protocol import codec
from custom_components.active_balancer.protocol.errors import UnexpectedReply
from custom_components.active_balancer.protocol.frames import (
    A5Frame,
    FrameReassembler,
    ModbusFrame,
)
from custom_components.active_balancer.protocol.model import (
    NEVER_SLEEP,
    Chemistry,
    Setting,
    Settings,
    Variant,
)
from custom_components.active_balancer.protocol.registers import (
    A5_TABLE,
    D2_TABLE,
    MODBUS_TABLES,
    P81_TABLE,
    Block,
    ModbusTable,
    SettingRegister,
)
from custom_components.active_balancer.protocol.rules import RULES, check_value

from . import captured as cap


def _modbus(hex_frame: str, variant: Variant = Variant.D2) -> ModbusFrame:
    (frame,) = FrameReassembler(variant).feed(bytes.fromhex(hex_frame))
    assert isinstance(frame, ModbusFrame)
    return frame


def _a5(hex_frame: str) -> A5Frame:
    (frame,) = FrameReassembler(Variant.A5).feed(bytes.fromhex(hex_frame))
    assert isinstance(frame, A5Frame)
    return frame


def _regs(*pairs: tuple[Block, str]) -> dict[int, int]:
    regs: dict[int, int] = {}
    for block, hex_frame in pairs:
        regs.update(codec.registers_of(block, _modbus(hex_frame)))
    return regs


STATUS_62 = Block(0x00, 0x3E)
BLOCK_3E = Block(0x3E, 0x09)
SETTINGS = Block(0x80, 0x29)
CONTROL = Block(0xCC, 0x05)


# --- request builders ---------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (Block(0x00, 0x3E), cap.D2_REQUESTS["status"]),
        (Block(0x80, 0x29), cap.D2_REQUESTS["settings"]),
        (Block(0xA9, 0x20), cap.D2_REQUESTS["versions"]),
        (Block(0xC9, 0x03), cap.D2_REQUESTS["password"]),
        (Block(0xCC, 0x05), cap.D2_REQUESTS["control"]),
        (Block(0x3E, 0x09), cap.D2_REQUESTS["block_3e"]),
    ],
)
def test_d2_read_requests(block: Block, expected: str) -> None:
    """D2 read requests reproduce the official app's bytes."""
    request = codec.read_request(Variant.D2, 1, block)
    assert request.frame.hex() == expected
    assert request.reply_address == 0xD2
    assert request.reply_bytes == 2 * block.count


def test_d2_settings_and_info_blocks_match_the_app() -> None:
    """The table's settings and info blocks are the ones the app reads."""
    assert (
        codec.read_request(Variant.D2, 1, D2_TABLE.settings_blocks[0]).frame.hex()
        == cap.D2_REQUESTS["settings"]
    )
    assert (
        codec.read_request(Variant.D2, 1, D2_TABLE.info_block).frame.hex()
        == cap.D2_REQUESTS["versions"]
    )


@pytest.mark.parametrize(("value", "key"), [(0, "balancer_off"), (1, "balancer_on")])
def test_d2_balancer_switch_write(value: int, key: str) -> None:
    """FC06 to 0xCF reproduces the captured on/off writes and accepts the echo."""
    register = D2_TABLE.settings[Setting.BALANCER_ENABLED]
    request = codec.write_request(Variant.D2, 1, register, value)
    assert request.frame.hex() == cap.D2_REQUESTS[key]
    echo = cap.D2_ECHO_ON if value else cap.D2_ECHO_OFF
    assert request.matches(_modbus(echo))
    other = cap.D2_ECHO_OFF if value else cap.D2_ECHO_ON
    assert not request.matches(_modbus(other))


@pytest.mark.parametrize(
    ("block", "key"),
    [
        (Block(0x00, 0x40), "rt1"),
        (Block(0x41, 0x3E), "rt2"),
        (Block(0xCF, 0x01), "cf"),
    ],
)
def test_p81_read_requests(block: Block, key: str) -> None:
    """p81 requests for board 1 reproduce the captured bytes."""
    request = codec.read_request(Variant.P81, 1, block)
    assert request.frame.hex() == cap.P81_REQUESTS[key]
    assert request.reply_address == 0x51


def test_p81_other_board_addresses() -> None:
    """Board N is requested at 0x80+N and answers from 0x50+N."""
    request = codec.read_request(Variant.P81, 3, Block(0xCF, 1))
    assert request.frame[0] == 0x83
    assert request.reply_address == 0x53
    assert codec.modbus_addresses(Variant.D2, 3) == (0xD2, 0xD2)


def test_p81_unsupported_register_reads_as_unavailable() -> None:
    """The 0xFFFF reply matches its request and decodes to "no value"."""
    request = codec.read_request(Variant.P81, 1, Block(0xCF, 1))
    frame = _modbus(cap.P81_CF_REPLY, Variant.P81)
    assert request.matches(frame)
    regs = codec.registers_of(Block(0xCF, 1), frame)
    assert regs == {0xCF: 0xFFFF}
    assert codec.decode_modbus_settings(D2_TABLE, regs).balancer_enabled is None


@pytest.mark.parametrize(
    ("command", "checksum"),
    [
        (0x90, 0x7D),
        (0x91, 0x7E),
        (0x92, 0x7F),
        (0x93, 0x80),
        (0x94, 0x81),
        (0x95, 0x82),
        (0x96, 0x83),
        (0x97, 0x84),
        (0x98, 0x85),
    ],
)
def test_a5_read_requests(command: int, checksum: int) -> None:
    """A5 requests from host 0x40 carry the computed checksums."""
    request = codec.a5_request(command, 0x40)
    assert request.frame == bytes((0xA5, 0x40, command, 0x08)) + bytes(8) + bytes(
        (checksum,)
    )


def test_a5_captured_requests() -> None:
    """The captured 0x90 request, its 0x80 host variant and the app's probe."""
    assert codec.a5_request(0x90, 0x40).frame.hex() == cap.A5_REQUEST_90
    assert codec.a5_request(0x90, 0x80).frame.hex() == (
        "a580900800000000000000" + "00bd"
    )
    assert codec.a5_request(0x02, 0x40).frame.hex() == cap.A5_PROBE_REQUEST


def test_a5_request_matches_reply() -> None:
    """An A5 reply matches the request for its command only."""
    reply = _a5(cap.A5_REPLIES[0x90])
    assert codec.a5_request(0x90, 0x40).matches(reply)
    assert not codec.a5_request(0x91, 0x40).matches(reply)
    assert not codec.read_request(Variant.D2, 1, Block(0, 1)).matches(reply)


def test_write_request_refuses_read_only_register() -> None:
    """A register that is not writable never becomes a write frame."""
    with pytest.raises(UnexpectedReply):
        codec.write_request(Variant.D2, 1, D2_TABLE.settings[Setting.CELL_COUNT], 16)
    with pytest.raises(UnexpectedReply):
        codec.write_request(
            Variant.D2, 1, D2_TABLE.settings[Setting.SLEEP_TIME], 0x10000
        )


# --- D2 balancer decoding -----------------------------------------------------


def test_d2_balancer_status() -> None:
    """Captured 62-register status + 0x3E..0x46 block decode to the annotations."""
    regs = _regs((STATUS_62, cap.D2_STATUS), (BLOCK_3E, cap.D2_BLOCK_3E))
    reading = codec.decode_modbus_live(D2_TABLE, regs)
    assert reading.cell_voltages == tuple(mv / 1000 for mv in cap.D2_STATUS_CELLS_MV)
    assert reading.cell_count == 16
    assert reading.temperatures == (28.0,)  # 0x26 / 0x27 are not temperatures
    assert reading.pack_voltage == 53.3
    assert reading.balancing is False
    assert reading.balancing_cells == frozenset()
    assert reading.balance_current == 0.0
    assert reading.alarms.raw == 0
    assert reading.alarms.names == []
    assert reading.max_cell_voltage == 3.338
    assert reading.max_cell == 11
    assert reading.min_cell_voltage == 3.333
    assert reading.min_cell == 4
    assert reading.average_cell_voltage == 3.336
    assert reading.delta_cell_voltage == 0.005


def test_d2_status_raw_registers() -> None:
    """Register-level annotations of the status capture."""
    regs = _regs((STATUS_62, cap.D2_STATUS), (BLOCK_3E, cap.D2_BLOCK_3E))
    assert regs[0x26] == 533
    assert regs[0x27] == 3335
    assert regs[0x29] == 30000  # 0.0 A
    assert regs[0x2A] == 0  # SOC
    assert (regs[0x2B], regs[0x2C]) == (3338, 3332)
    assert (regs[0x31], regs[0x32]) == (16, 1)
    assert regs[0x37] == 3335
    assert regs[0x38] == 6
    assert regs[0x40] == 30000
    assert regs[0x42] == 0xFFFF  # MOS temperature not fitted


def test_d2_status_needs_cell_count() -> None:
    """A register map without cells, or with an impossible count, is refused."""
    regs = _regs((STATUS_62, cap.D2_STATUS), (BLOCK_3E, cap.D2_BLOCK_3E))
    regs[0x31] = 0
    with pytest.raises(UnexpectedReply):
        codec.decode_modbus_live(D2_TABLE, regs)


def test_registers_of_checks_count() -> None:
    """A reply with another register count than requested is refused."""
    with pytest.raises(UnexpectedReply):
        codec.registers_of(Block(0x00, 0x41), _modbus(cap.D2_STATUS))
    with pytest.raises(UnexpectedReply):
        codec.registers_of(Block(0x90, 1), _a5(cap.A5_REPLIES[0x90]))


@pytest.mark.parametrize(
    ("control", "enabled"), [(cap.D2_CONTROL_ON, True), (cap.D2_CONTROL_OFF, False)]
)
def test_d2_balancer_settings(control: str, enabled: bool) -> None:
    """Captured settings decode to 3200 mV / 20 mV / 65535 / 3550 / 2300 / 85 / -40."""
    regs = _regs((SETTINGS, cap.D2_SETTINGS), (CONTROL, control))
    settings = codec.decode_modbus_settings(D2_TABLE, regs)
    assert settings == Settings(
        balance_start_voltage=3.2,
        balance_delta_voltage=0.02,
        sleep_time=NEVER_SLEEP,
        balancer_enabled=enabled,
        cell_overvoltage_alarm=3.55,
        cell_undervoltage_alarm=2.3,
        discharge_overtemperature_alarm=85.0,
        discharge_undertemperature_alarm=-40.0,
        cell_count=16,
        chemistry=Chemistry.LFP,
        balance_current_limit=1.0,
    )


def test_d2_settings_raw_registers() -> None:
    """Register-level annotations of the settings capture."""
    regs = _regs((SETTINGS, cap.D2_SETTINGS), (CONTROL, cap.D2_CONTROL_ON))
    assert regs[0x80] == 500
    assert regs[0x81] == 3200
    assert regs[0x89] == 0  # LiFePO4
    assert regs[0x8A] == 65535
    assert (regs[0x8B], regs[0x8C], regs[0x8D], regs[0x8E]) == (3550, 3650, 2300, 2200)
    assert (regs[0x9B], regs[0x9C], regs[0x9D], regs[0x9E]) == (40, 125, 40, 0)
    assert (regs[0xA3], regs[0xA4]) == (3200, 20)
    assert regs[0xA8] == 87
    assert (regs[0xCC], regs[0xCD], regs[0xCE], regs[0xCF], regs[0xD0]) == (
        0x0001,
        0x0100,
        16,
        1,
        10,
    )


def test_d2_setting_read_back() -> None:
    """One setting decodes from a register map (used for write read-backs)."""
    regs = _regs((CONTROL, cap.D2_CONTROL_OFF))
    assert (
        codec.setting_register_value(D2_TABLE, Setting.BALANCER_ENABLED, regs) is False
    )
    regs = _regs((SETTINGS, cap.D2_SETTINGS))
    assert codec.setting_register_value(D2_TABLE, Setting.SLEEP_TIME, regs) == 65535
    assert (
        codec.setting_register_value(D2_TABLE, Setting.CHEMISTRY, regs) is Chemistry.LFP
    )


def test_d2_balancer_versions() -> None:
    """The balancer's version strings."""
    regs = _regs((Block(0xA9, 0x20), cap.D2_VERSIONS))
    info = codec.decode_modbus_info(D2_TABLE, None, regs)
    assert info.variant is Variant.D2
    assert info.address is None
    assert info.software_version == "B002_111132_03"
    assert info.hardware_version == "E303-032DG-SMB"
    assert info.serial_number is None


# --- D2 BMS decoding (8.3) ----------------------------------------------------


def test_d2_bms_status() -> None:
    """The DALY BMS status frame: 4 cells, 4 temperatures, 14.0 V, balancing."""
    regs = _regs((STATUS_62, cap.D2_BMS_STATUS), (BLOCK_3E, cap.D2_BMS_BLOCK_3E))
    reading = codec.decode_modbus_live(D2_TABLE, regs)
    assert reading.cell_voltages == (4.127, 4.137, 4.147, 4.157)
    assert reading.temperatures == (20.0, 21.0, 22.0, 23.0)
    assert reading.pack_voltage == 14.0
    assert reading.balancing is True
    assert reading.balancing_cells == frozenset()
    assert reading.balance_current == 0.0
    assert reading.alarms.raw == 0
    assert reading.delta_cell_voltage == 0.03
    assert regs[0x29] == 30030  # +3.0 A
    assert regs[0x2A] == 900  # 90.0 %
    assert regs[0x30] == 3456  # 345.6 Ah
    assert regs[0x33] == 57  # cycles
    assert (regs[0x35], regs[0x36]) == (0, 1)  # charge / discharge MOS
    assert regs[0x38] == 321  # the device's own delta
    assert regs[0x42] - 40 == 38  # MOS temperature


def test_d2_bms_versions() -> None:
    """The BMS's version strings (16 + 16 bytes, then a date-like serial)."""
    regs = _regs((Block(0xA9, 0x20), cap.D2_BMS_VERSIONS))
    info = codec.decode_modbus_info(D2_TABLE, None, regs)
    assert info.software_version == "T00K_321042_11"
    assert info.hardware_version == "H2.0_103R_309F9F"


# --- A5 decoding (8.4) --------------------------------------------------------


def _a5_replies() -> dict[int, list[A5Frame]]:
    return {command: [_a5(h)] for command, h in cap.A5_REPLIES.items()}


def test_a5_counts() -> None:
    """0x94: 14 cells, 1 temperature sensor."""
    assert codec.decode_a5_counts(_a5_replies()[0x94]) == (14, 1)


def test_a5_live() -> None:
    """The A5 poll: 52.8 V, cells 3776/3778/3783, 21 degC, no balancing, no faults."""
    reading = codec.decode_a5_live(_a5_replies(), 3, 1)
    assert reading.pack_voltage == 52.8
    assert reading.cell_voltages == (3.776, 3.778, 3.783)
    assert reading.temperatures == (21.0,)
    assert reading.balancing is False
    assert reading.balancing_cells == frozenset()
    assert reading.balance_current is None
    assert reading.alarms.raw == 0


def test_a5_live_needs_every_cell_frame() -> None:
    """14 cells need five 0x95 frames; the capture holds only the first."""
    with pytest.raises(UnexpectedReply, match="missing"):
        codec.decode_a5_live(_a5_replies(), 14, 1)


def test_a5_multi_frame_order() -> None:
    """0x95 frames are ordered by their 1-based number, whatever the arrival."""
    frames = [
        _a5_frame(0x95, bytes((2, 0x0E, 0xC4, 0x0E, 0xC5, 0x0E, 0xC6, 0))),
        _a5(cap.A5_REPLIES[0x95]),
    ]
    replies = _a5_replies() | {0x95: frames}
    reading = codec.decode_a5_live(replies, 5, 1)
    assert reading.cell_voltages == (3.776, 3.778, 3.783, 3.780, 3.781)


def test_a5_balancing_bitmap() -> None:
    """0x97: bit 0 of byte 0 is cell 1 (vendor sheet)."""
    replies = _a5_replies() | {
        0x97: [_a5_frame(0x97, bytes((0b101, 0, 0, 0, 0, 0, 0, 0)))]
    }
    reading = codec.decode_a5_live(replies, 3, 1)
    assert reading.balancing is True
    assert reading.balancing_cells == frozenset({1, 3})


def _a5_frame(command: int, data: bytes) -> A5Frame:
    body = bytes((0xA5, 0x01, command, 0x08)) + data
    raw = body + bytes((sum(body) & 0xFF,))
    return _a5(raw.hex())


# --- setting registers: encode / decode properties ----------------------------


def _writable(table: ModbusTable) -> list[tuple[Setting, SettingRegister]]:
    return sorted(table.writable().items())


@pytest.mark.parametrize(
    ("setting", "register"),
    _writable(D2_TABLE),
    ids=[s.value for s, _ in _writable(D2_TABLE)],
)
@given(data=st.data())
def test_d2_setting_round_trip(
    setting: Setting, register: SettingRegister, data: st.DataObject
) -> None:
    """Every value the rules accept survives encode -> register -> decode."""
    rule = RULES[setting]
    steps = round((rule.maximum - rule.minimum) / rule.step)
    value = rule.minimum + data.draw(st.integers(0, steps)) * rule.step
    number = check_value(setting, value)
    raw = register.encode(number)
    assert 0 <= raw <= 0xFFFF
    request = codec.write_request(Variant.D2, 1, register, raw)
    assert int.from_bytes(request.frame[4:6], "big") == raw
    decoded = codec.setting_register_value(D2_TABLE, setting, {register.register: raw})
    if setting is Setting.BALANCER_ENABLED:
        assert decoded is bool(number)
    else:
        assert isinstance(decoded, int | float)
        assert abs(decoded - number) < rule.step / 2


@pytest.mark.parametrize(
    ("variant", "setting"),
    [(t.variant, s) for t in MODBUS_TABLES.values() for s, _ in _writable(t)],
)
@given(raw=st.integers(0, 0xFFFE))
def test_raw_round_trip(variant: Variant, setting: Setting, raw: int) -> None:
    """Every raw register value survives decode -> encode."""
    register = MODBUS_TABLES[variant].settings[setting]
    assert register.encode(register.decode(raw)) == raw


@given(tenths=st.integers(0, 6553))
def test_p81_sleep_time_in_tens_of_seconds(tenths: int) -> None:
    """p81 keeps the sleep time in 10 s steps; 65535 passes through as "never"."""
    register = P81_TABLE.settings[Setting.SLEEP_TIME]
    assert register.encode(tenths * 10) == tenths
    assert register.decode(tenths) == tenths * 10
    assert register.encode(NEVER_SLEEP) == NEVER_SLEEP
    assert register.decode(NEVER_SLEEP) == NEVER_SLEEP


def test_temperature_alarm_offsets() -> None:
    """Temperatures are stored +40: 85 degC -> 125, -40 degC -> 0."""
    over = D2_TABLE.settings[Setting.DISCHARGE_OVERTEMPERATURE_ALARM]
    under = D2_TABLE.settings[Setting.DISCHARGE_UNDERTEMPERATURE_ALARM]
    assert over.encode(85) == 125
    assert under.encode(-40) == 0
    assert over.decode(125) == 85
    assert under.decode(0) == -40


def test_a5_table_reads_are_known() -> None:
    """The A5 poll uses the documented commands; 0x93 is never asked."""
    assert (A5_TABLE.pack, A5_TABLE.counts, A5_TABLE.cells) == (0x90, 0x94, 0x95)
    assert 0x93 in A5_TABLE.not_answered
