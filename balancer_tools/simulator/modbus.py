"""The Modbus views (D2 and p81): registers built from the state, and requests.

Each variant places the state's values where its table in :mod:`..registers`
says, with that table's scaling, so one table per variant stays the single
source of truth; the rest of each map is what the captured balancer shows
(shared/protocol.md sections 5.2, 5.3 and 8).
"""

from __future__ import annotations

from collections.abc import Callable
import math

from custom_components.active_balancer.protocol.crc import append_crc
from custom_components.active_balancer.protocol.frames import (
    D2_ADDRESS,
    FC_ERROR_FLAG,
    FC_READ,
    FC_WRITE_MULTIPLE,
    FC_WRITE_SINGLE,
    MAX_READ_REGISTERS,
    P81_REPLY_BASE,
)
from custom_components.active_balancer.protocol.model import Setting, Variant
from custom_components.active_balancer.protocol.registers import (
    D2_TABLE,
    MODBUS_TABLES,
    P81_TABLE,
    UNAVAILABLE,
    ModbusTable,
    SettingRegister,
)

from .raw import CURRENT_OFFSET, TEMPERATURE_OFFSET, ascii_bytes, clip, u16, words
from .state import EPSILON, BalancerState, RecordedWrite

P81_ODD_WRITE_START = 0x0F00
"""p81 FC10 writes from here are answered with count 0xAAAA (S1, section 8.2)."""


class ModbusViews(BalancerState):
    """A balancer's D2 and p81 register maps, reads and writes."""

    # --- register views -----------------------------------------------------

    def registers(self, variant: Variant, start: int, count: int) -> list[int]:
        """Return what a read of *count* registers from *start* would show."""
        if variant is Variant.A5:
            msg = "A5 has commands, not registers"
            raise ValueError(msg)
        regs = self._register_map(variant)
        default = self._default_register(variant)
        return [regs.get(reg, default(reg)) for reg in range(start, start + count)]

    def _register_map(self, variant: Variant) -> dict[int, int]:
        return self._d2_registers() if variant is Variant.D2 else self._p81_registers()

    @staticmethod
    def _default_register(variant: Variant) -> Callable[[int], int]:
        if variant is Variant.D2:
            return lambda reg: 0 if reg <= 0xFF else UNAVAILABLE  # noqa: PLR2004
        return lambda _reg: 0

    def _live_registers(
        self, table: ModbusTable, stats: dict[str, int]
    ) -> dict[int, int]:
        """The live values every Modbus variant's table places."""
        live = table.live
        regs: dict[int, int] = {}
        for i in range(live.max_cells):
            cell = self.cell_voltages[i] if i < len(self.cell_voltages) else 0.0
            regs[live.cells + i] = round(cell * 1000)
        for i in range(live.max_temperatures):
            if i < len(self.temperatures):
                regs[live.temperatures + i] = clip(
                    round(self.temperatures[i]) + live.temperature_offset
                )
        regs[live.pack_voltage] = math.floor(
            stats["total_mv"] / 1000 / live.pack_voltage_scale + EPSILON
        )
        regs[live.cell_count] = stats["cells"]
        regs[live.temperature_count] = stats["sensors"]
        alarm_bytes = stats["alarms"].to_bytes(8, "little")
        for i, word in enumerate(words(alarm_bytes)):
            regs[live.alarms + i] = word
        regs[live.balance_current] = live.balance_current_offset + round(
            stats["current_ma"] / 1000 / live.balance_current_scale
        )
        if live.balance_bits is not None:
            for word in range(live.balance_bits_words):
                regs[live.balance_bits + word] = stats["bits"] >> (16 * word) & 0xFFFF
        return regs

    def _settings_registers(self, table: ModbusTable) -> dict[int, int]:
        regs: dict[int, int] = {}
        codes = {chem: code for code, chem in table.chemistry_codes.items()}
        for setting, register in table.settings.items():
            if setting is Setting.CHEMISTRY:
                regs[register.register] = codes.get(self.chemistry, 0)
                continue
            value = float(getattr(self, setting.value))
            regs[register.register] = clip(register.encode(value))
        return regs

    def _info_registers(self, table: ModbusTable) -> dict[int, int]:
        block = table.info_block
        data = bytearray(2 * block.count)
        layout = (table.software_version, table.hardware_version)
        if self.quirks.wide_versions and table.wide_versions is not None:
            layout = table.wide_versions
        for (offset, size), text in (
            (layout[0], self.software_version),
            (layout[1], self.hardware_version),
        ):
            data[offset : offset + size] = ascii_bytes(text, size)
        return {block.start + i: word for i, word in enumerate(words(bytes(data)))}

    def _d2_registers(self) -> dict[int, int]:
        stats = self._stats()
        regs: dict[int, int] = {}
        # Unsupported ranges of the captured balancer read 0xFFFF.
        regs.update(dict.fromkeys(range(0x63, 0x7F), UNAVAILABLE))
        regs.update(dict.fromkeys(range(0xDF, 0xF0), UNAVAILABLE))
        # Live block (section 5.2), then the table's positions on top.
        regs.update(
            {
                0x29: CURRENT_OFFSET,
                0x2B: stats["max_mv"],
                0x2C: stats["min_mv"],
                0x2D: stats["max_temp"],
                0x2E: stats["min_temp"],
                0x34: stats["balancing"],
                0x37: stats["average_mv"],
                0x38: stats["max_mv"] - stats["min_mv"],
                0x42: UNAVAILABLE,  # MOS temperature: not fitted
            }
        )
        live = self._live_registers(D2_TABLE, stats)
        # With fewer than 7 sensors the balancer shows the pack voltage and the
        # average cell voltage where temperatures 7 and 8 would be (S1).
        if stats["sensors"] <= 6:  # noqa: PLR2004
            regs[0x26] = live[D2_TABLE.live.pack_voltage]
            regs[0x27] = stats["average_mv"]
        regs.update(live)
        # Settings 0x80..0xA8 as captured (section 5.3), chemistry adapted.
        regs.update(
            {
                0x80: 500,
                0x81: round(self.cell_reference_voltage * 1000),
                0x82: 1,
                0x84: 6,
                0x85: 6,
                0x86: stats["sensors"],
                0x87: 1,
                0x88: 1,
                0x8C: round(self.cell_overvoltage_alarm_l2 * 1000),
                0x8E: round(self.cell_undervoltage_alarm_l2 * 1000),
                0x91: 5000,
                0x92: 5000,
                0x93: CURRENT_OFFSET,
                0x94: CURRENT_OFFSET,
                0x95: CURRENT_OFFSET,
                0x96: CURRENT_OFFSET,
                0x97: TEMPERATURE_OFFSET,
                0x98: 85 + TEMPERATURE_OFFSET,
                0x99: TEMPERATURE_OFFSET,
                0x9A: 0,
                0x9B: TEMPERATURE_OFFSET,
                0x9D: TEMPERATURE_OFFSET,
                0xA8: 47 + TEMPERATURE_OFFSET,
            }
        )
        regs.update(self._settings_registers(D2_TABLE))
        regs.update(self._info_registers(D2_TABLE))
        for i, word in enumerate(words(ascii_bytes(self.password, 6))):
            regs[0xC9 + i] = word
        regs.update({0xCC: 0x0001, 0xCD: 0x0100, 0xCE: stats["cells"]})
        return {reg: clip(value) for reg, value in regs.items()}

    def _p81_registers(self) -> dict[int, int]:
        stats = self._stats()
        live = P81_TABLE.live
        regs: dict[int, int] = {}
        # Temperature slots without a sensor read 0xFF (S14).
        regs.update(
            dict.fromkeys(
                range(live.temperatures, live.temperatures + live.max_temperatures),
                0xFF,
            )
        )
        regs.update(
            {
                0x39: CURRENT_OFFSET,
                0x3E: stats["max_mv"],
                0x3F: stats["max_cell"],
                0x40: stats["min_mv"],
                0x41: stats["min_cell"],
                0x42: stats["max_mv"] - stats["min_mv"],
                0x43: stats["max_temp"],
                0x44: stats["max_sensor"],
                0x45: stats["min_temp"],
                0x46: stats["min_sensor"],
                0x47: stats["max_temp"] - stats["min_temp"],
                0x57: stats["average_mv"],
                0x5A: UNAVAILABLE,  # MOS temperature: not fitted
                0xCF: UNAVAILABLE,  # the D2 switch does not exist on p81 (S5)
                0x100: self.address,
                0x103: stats["cells"],
            }
        )
        regs.update(self._live_registers(P81_TABLE, stats))
        # 0x4D: 0 off, 1 passive, 2 active balancing.
        regs[live.balancing] = 2 * stats["balancing"]
        regs.update(self._settings_registers(P81_TABLE))
        regs.update(self._info_registers(P81_TABLE))
        return {reg: clip(value) for reg, value in regs.items()}

    # --- requests ----------------------------------------------------------

    def _reply_address(self, variant: Variant) -> int:
        return D2_ADDRESS if variant is Variant.D2 else P81_REPLY_BASE + self.address

    def _refuse(self, variant: Variant, frame: bytes) -> bytes:
        """The exception a firmware quirk answers *frame* with (2, or 3 if too long)."""
        limit = self.quirks.max_read
        fits = limit is None or int.from_bytes(frame[4:6], "big") <= limit
        code = 0x02 if frame[1] == FC_READ and fits else 0x03
        return append_crc(
            bytes((self._reply_address(variant), FC_READ | FC_ERROR_FLAG, code))
        )

    def _handle_modbus(self, variant: Variant, frame: bytes) -> bytes | None:
        reply_address = self._reply_address(variant)
        function = frame[1]
        start = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        if function == FC_READ:
            if not 1 <= count <= MAX_READ_REGISTERS or start + count > 0x10000:  # noqa: PLR2004
                # Modbus exception 3: illegal data value.
                return append_crc(bytes((reply_address, FC_READ | FC_ERROR_FLAG, 0x03)))
            values = self.registers(variant, start, count)
            data = b"".join(u16(value) for value in values)
            return append_crc(bytes((reply_address, FC_READ, 2 * count)) + data)
        if function == FC_WRITE_SINGLE:
            self._write(variant, start, count)
            return append_crc(bytes((reply_address,)) + frame[1:6])
        # FC10 without a byte count (the vendor's variant of Modbus).
        for i in range(count):
            value = int.from_bytes(frame[6 + 2 * i : 8 + 2 * i], "big")
            self._write(variant, start + i, value)
        answered = count
        if variant is Variant.P81 and start >= P81_ODD_WRITE_START:
            answered = 0xAAAA
        return append_crc(
            bytes((reply_address, FC_WRITE_MULTIPLE)) + u16(start) + u16(answered)
        )

    def _write(self, variant: Variant, register: int, raw: int) -> None:
        self.writes.append(RecordedWrite(variant, register, raw, self.now()))
        table = MODBUS_TABLES[variant]
        for setting, setting_register in table.settings.items():
            if setting_register.register == register:
                self._apply(table, setting, setting_register, raw)
                return

    def _apply(
        self,
        table: ModbusTable,
        setting: Setting,
        register: SettingRegister,
        raw: int,
    ) -> None:
        if setting is Setting.BALANCER_ENABLED:
            self.balancer_enabled = raw != 0
        elif setting is Setting.CHEMISTRY:
            chemistry = table.chemistry_codes.get(raw)
            if chemistry is not None:
                self.chemistry = chemistry
        elif setting is Setting.CELL_COUNT:
            if 1 <= raw <= table.live.max_cells:
                self.cell_count = raw
        elif setting is Setting.SLEEP_TIME:
            self.sleep_time = round(register.decode(raw))
        else:
            setattr(self, setting.value, register.decode(raw))
