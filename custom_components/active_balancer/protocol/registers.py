"""Register tables, one per variant: data, not code paths.

Every register the package reads or writes is named here, with the source
confidence from ``shared/protocol.md`` noted beside it. Only registers listed
in a table's ``settings`` with ``writable=True`` can ever be written; the
client has no other way to build a write frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import NEVER_SLEEP, Chemistry, Setting, Variant

UNAVAILABLE = 0xFFFF
"""Register value meaning "not fitted / not supported"."""

PART_BALANCE_CURRENT = "balance_current"
PART_BALANCING_CELLS = "balancing_cells"
"""Optional live parts (a device may not have them), by name."""


@dataclass(frozen=True, slots=True)
class Block:
    """A contiguous range of registers read with one request."""

    start: int
    count: int

    def __contains__(self, register: object) -> bool:
        """Whether *register* lies in this block."""
        return isinstance(register, int) and (
            self.start <= register < self.start + self.count
        )


@dataclass(frozen=True, slots=True)
class SettingRegister:
    """Where a setting lives and how its raw value maps to SI units.

    ``value = (raw - offset) * scale``; ``never_raw`` is a raw value that is
    passed through unchanged (the sleep time's 65535 = never).
    """

    register: int
    scale: float = 1.0
    offset: int = 0
    writable: bool = True
    never_raw: int | None = None
    inferred: bool = False
    """The register is inferred, not seen on a balancer: before it is written,
    the value read from it must be plausible for the setting."""

    def decode(self, raw: int) -> float:
        """Return the SI value of *raw*."""
        if self.never_raw is not None and raw == self.never_raw:
            return float(raw)
        return round((raw - self.offset) * self.scale, 6)

    def encode(self, value: float) -> int:
        """Return the raw register value for the SI *value*."""
        if self.never_raw is not None and round(value) == self.never_raw:
            return self.never_raw
        return round(value / self.scale) + self.offset


@dataclass(frozen=True, slots=True)
class LiveLayout:
    """Where the live values sit inside the live block of a Modbus variant."""

    block: Block
    cells: int
    max_cells: int
    temperatures: int
    max_temperatures: int
    pack_voltage: int
    pack_voltage_scale: float
    cell_count: int
    temperature_count: int
    balancing: int
    alarms: int
    """First of four fault-status words (8 bytes, vendor byte 0 first)."""
    balance_current: int
    balance_current_offset: int
    balance_current_scale: float
    balance_bits: int | None
    """First register of the per-cell balancing bitmask (16 cells a word)."""
    balance_bits_words: int
    temperature_offset: int = 40
    temperature_unavailable: tuple[int, ...] = (UNAVAILABLE,)


@dataclass(frozen=True, slots=True)
class ModbusTable:
    """Everything the client needs to talk one Modbus-like variant."""

    variant: Variant
    live: LiveLayout
    settings_blocks: tuple[Block, ...]
    settings_parts: tuple[str, ...]
    """Name of each settings block, for what a device did not answer."""
    settings: dict[Setting, SettingRegister]
    info_block: Block
    software_version: tuple[int, int]
    """Byte offset and length of the software version inside the info block."""
    hardware_version: tuple[int, int]
    serial_number: tuple[int, int] | None
    chemistry_codes: dict[int, Chemistry] = field(default_factory=dict)
    fallback_max_read: int = 0x3E
    """Longest read the vendor app sends: after a longer read fails, reads are
    no longer than this (``plan.fallback_limit``)."""
    wide_versions: tuple[tuple[int, int], tuple[int, int]] | None = None
    """Software and hardware version in the other layout, used when the
    documented hardware field is empty."""

    def writable(self) -> dict[Setting, SettingRegister]:
        """Return the allow-list: settings this variant may write."""
        return {key: reg for key, reg in self.settings.items() if reg.writable}


# D2: DALY balancer over its BLE dongle / UART (shared/protocol.md section 5).
D2_TABLE = ModbusTable(
    variant=Variant.D2,
    live=LiveLayout(
        # 0x00-0x40 in one request: cells .. alarms (0x3A-0x3D), the per-cell
        # balancing bitmask (0x3E/0x3F, [B]) and the balance current (0x40).
        block=Block(0x0000, 0x41),
        cells=0x00,
        max_cells=32,
        temperatures=0x20,
        max_temperatures=8,
        pack_voltage=0x28,
        pack_voltage_scale=0.1,
        cell_count=0x31,
        temperature_count=0x32,
        balancing=0x34,
        alarms=0x3A,
        balance_current=0x40,
        balance_current_offset=30000,
        balance_current_scale=0.001,  # S2/S14; S15 says 0.1 A (open question 4)
        balance_bits=0x3E,
        balance_bits_words=2,
    ),
    settings_blocks=(Block(0x80, 0x29), Block(0xCC, 0x05)),
    settings_parts=("settings", "balancer_switch"),
    settings={
        Setting.CELL_COUNT: SettingRegister(0x83, writable=False),
        Setting.CHEMISTRY: SettingRegister(0x89, writable=False),
        Setting.SLEEP_TIME: SettingRegister(0x8A, never_raw=NEVER_SLEEP),
        Setting.CELL_OVERVOLTAGE_ALARM: SettingRegister(0x8B, scale=0.001),
        Setting.CELL_UNDERVOLTAGE_ALARM: SettingRegister(0x8D, scale=0.001),
        # Level 2: the balancer holds 0 degC (unset) in level 1 and the real
        # 85 / -40 degC limits in level 2 (S1 capture).
        Setting.DISCHARGE_OVERTEMPERATURE_ALARM: SettingRegister(0x9C, offset=40),
        Setting.DISCHARGE_UNDERTEMPERATURE_ALARM: SettingRegister(0x9E, offset=40),
        Setting.BALANCE_START_VOLTAGE: SettingRegister(0xA3, scale=0.001),
        Setting.BALANCE_DELTA_VOLTAGE: SettingRegister(0xA4, scale=0.001),
        Setting.BALANCER_ENABLED: SettingRegister(0xCF),
        # EXPERIMENTAL: reads 10 on the balancer; 0.1 A steps is a guess [H].
        Setting.BALANCE_CURRENT_LIMIT: SettingRegister(0xD0, scale=0.1),
    },
    info_block=Block(0xA9, 0x20),
    software_version=(0, 16),
    hardware_version=(16, 16),
    serial_number=(32, 32),
    chemistry_codes={0: Chemistry.LFP, 1: Chemistry.NMC, 2: Chemistry.LTO},
    # The app's status read is 62 registers (S1).
    fallback_max_read=0x3E,
    # Two real firmwares put the hardware version at byte 32 (32 + 32, S2).
    wide_versions=((0, 32), (32, 32)),
)

# p81: RS485 / UART with board numbers 1..15 (shared/protocol.md section 6).
# Nothing here has been seen on a standalone balancer; the BMS map is used.
P81_TABLE = ModbusTable(
    variant=Variant.P81,
    live=LiveLayout(
        block=Block(0x0000, 0x6A),
        cells=0x00,
        max_cells=48,
        temperatures=0x30,
        max_temperatures=8,
        pack_voltage=0x38,
        pack_voltage_scale=0.1,
        cell_count=0x3C,
        temperature_count=0x3D,
        balancing=0x4D,
        alarms=0x66,
        balance_current=0x4E,
        balance_current_offset=30000,
        balance_current_scale=0.001,
        balance_bits=0x4F,
        balance_bits_words=3,
        temperature_unavailable=(UNAVAILABLE, 0xFF),
    ),
    settings_blocks=(Block(0xF6, 0x01), Block(0x100, 0x1C)),
    settings_parts=("balancer_switch", "settings"),
    settings={
        Setting.BALANCER_ENABLED: SettingRegister(0xF6),
        Setting.CELL_COUNT: SettingRegister(0x101, writable=False),
        Setting.SLEEP_TIME: SettingRegister(0x115, scale=10, never_raw=NEVER_SLEEP),
        Setting.BALANCE_START_VOLTAGE: SettingRegister(
            0x11A, scale=0.001, inferred=True
        ),
        Setting.BALANCE_DELTA_VOLTAGE: SettingRegister(
            0x11B, scale=0.001, inferred=True
        ),
    },
    info_block=Block(0x178, 0x4A),
    software_version=(0, 28),
    hardware_version=(28, 14),
    serial_number=None,
    # The largest p81 read in a public capture is 64 registers (RT1, S5).
    fallback_max_read=0x40,
)

MODBUS_TABLES: dict[Variant, ModbusTable] = {
    Variant.D2: D2_TABLE,
    Variant.P81: P81_TABLE,
}


@dataclass(frozen=True, slots=True)
class A5Table:
    """Commands of the read-only A5 variant (shared/protocol.md section 4)."""

    pack: int = 0x90
    counts: int = 0x94
    cells: int = 0x95
    cells_per_frame: int = 3
    temperatures: int = 0x96
    temperatures_per_frame: int = 7
    balancing: int = 0x97
    alarms: int = 0x98
    balance_settings: int = 0x5F
    cell_thresholds: int = 0x59
    temperature_thresholds: int = 0x5C
    software_version: int = 0x62
    hardware_version: int = 0x63
    version_frames: int = 2
    not_answered: tuple[int, ...] = (0x93,)
    """Balancers do not answer these (0x93 is the BMS MOSFET state)."""


A5_TABLE = A5Table()

A5_PARTS: dict[int, str] = {
    A5_TABLE.balance_settings: "balance_settings",
    A5_TABLE.cell_thresholds: "cell_thresholds",
    A5_TABLE.temperature_thresholds: "temperature_thresholds",
    A5_TABLE.software_version: "software_version",
    A5_TABLE.hardware_version: "hardware_version",
    A5_TABLE.balancing: PART_BALANCING_CELLS,
}
"""Optional A5 commands and the part of the reading each one fills."""

A5_SETTING_PARTS: dict[Setting, str] = {
    Setting.BALANCE_START_VOLTAGE: "balance_settings",
    Setting.BALANCE_DELTA_VOLTAGE: "balance_settings",
    Setting.CELL_OVERVOLTAGE_ALARM: "cell_thresholds",
    Setting.CELL_UNDERVOLTAGE_ALARM: "cell_thresholds",
    Setting.DISCHARGE_OVERTEMPERATURE_ALARM: "temperature_thresholds",
    Setting.DISCHARGE_UNDERTEMPERATURE_ALARM: "temperature_thresholds",
}


def setting_part(variant: Variant, setting: Setting) -> str | None:
    """The optional part of *variant*'s answers that holds *setting*, if any."""
    if variant is Variant.A5:
        return A5_SETTING_PARTS.get(setting)
    table = MODBUS_TABLES[variant]
    register = table.settings.get(setting)
    if register is None:
        return None
    for block, part in zip(table.settings_blocks, table.settings_parts, strict=True):
        if register.register in block:
            return part
    return None  # pragma: no cover - every setting lies in a block
