"""The A5 view: one command, one or more fixed-size reply frames.

Write commands (reset, RTC and SOC, MOSFETs) are recorded and never
answered; the version and multi-frame replies carry their frame number in
the first data byte.
"""

from __future__ import annotations

import math

from custom_components.active_balancer.protocol.crc import a5_checksum
from custom_components.active_balancer.protocol.frames import (
    A5_DATA_LENGTH,
    A5_REPLY_ADDRESS,
    A5_START,
)
from custom_components.active_balancer.protocol.model import Variant
from custom_components.active_balancer.protocol.registers import A5_TABLE

from .raw import CURRENT_OFFSET, TEMPERATURE_OFFSET, ascii_bytes, clip, u16
from .state import BalancerState, RecordedWrite

BLE_CELL_FRAMES = 16
BLE_TEMPERATURE_FRAMES = 3
"""Over the BLE dongle, A5 0x95 / 0x96 always return 16 / 3 frames (S12, S20)."""

A5_WRITE_COMMANDS = frozenset((0x00, 0x1F, 0x21, 0xD9, 0xDA))
"""A5 IDs that write something (reset, RTC+SOC, MOSFETs); never answered."""


def a5_frame(command: int, data: bytes) -> bytes:
    """One A5 reply frame for *command*, *data* padded to 8 bytes."""
    body = bytes((A5_START, A5_REPLY_ADDRESS, command, A5_DATA_LENGTH)) + data[
        :A5_DATA_LENGTH
    ].ljust(A5_DATA_LENGTH, b"\x00")
    return body + bytes((a5_checksum(body),))


class A5Views(BalancerState):
    """A balancer's answers to A5 commands."""

    def _handle_a5(self, frame: bytes) -> bytes | list[bytes] | None:
        command = frame[2]
        if command in A5_WRITE_COMMANDS:
            value = int.from_bytes(frame[4:12], "big")
            self.writes.append(RecordedWrite(Variant.A5, command, value, self.now()))
            return None
        table = A5_TABLE
        single = self._a5_single_frames()
        if command in single:
            return a5_frame(command, single[command])
        if command == table.cells:
            return self._a5_cells()
        if command == table.temperatures:
            return self._a5_temperatures()
        if command in (table.software_version, table.hardware_version):
            return self._a5_version(command)
        # 0x93 (MOSFETs, BMS only) and unknown commands get no answer.
        return None

    def _a5_single_frames(self) -> dict[int, bytes]:
        """Data of every one-frame reply, by command."""
        table = A5_TABLE
        stats = self._stats()
        return {
            table.pack: u16(stats["total_mv"] // 100)
            + u16(0)
            + u16(CURRENT_OFFSET)
            + u16(0),
            0x91: u16(stats["max_mv"])
            + bytes((stats["max_cell"],))
            + u16(stats["min_mv"])
            + bytes((stats["min_cell"],)),
            0x92: bytes(
                (
                    min(stats["max_temp"], 0xFF),
                    stats["max_sensor"],
                    min(stats["min_temp"], 0xFF),
                    stats["min_sensor"],
                )
            ),
            table.counts: bytes((stats["cells"], stats["sensors"])),
            table.balancing: stats["bits"].to_bytes(6, "little"),
            table.alarms: stats["alarms"].to_bytes(8, "little"),
            table.balance_settings: u16(round(self.balance_start_voltage * 1000))
            + u16(round(self.balance_delta_voltage * 1000)),
            table.cell_thresholds: b"".join(
                u16(round(v * 1000))
                for v in (
                    self.cell_overvoltage_alarm,
                    self.cell_overvoltage_alarm_l2,
                    self.cell_undervoltage_alarm,
                    self.cell_undervoltage_alarm_l2,
                )
            ),
            table.temperature_thresholds: bytes(
                min(clip(round(t) + TEMPERATURE_OFFSET), 0xFF)
                for t in (
                    0,
                    85,
                    0,
                    -40,
                    0,
                    self.discharge_overtemperature_alarm,
                    0,
                    self.discharge_undertemperature_alarm,
                )
            ),
        }

    def _a5_version(self, command: int) -> list[bytes]:
        """The software or hardware version, 7 characters a frame."""
        table = A5_TABLE
        text = (
            self.software_version
            if command == table.software_version
            else self.hardware_version
        )
        data = ascii_bytes(text, 7 * table.version_frames)
        return [
            a5_frame(command, bytes((n + 1,)) + data[7 * n : 7 * n + 7])
            for n in range(table.version_frames)
        ]

    def _a5_cells(self) -> list[bytes]:
        per = A5_TABLE.cells_per_frame
        mv = [round(v * 1000) for v in self.cell_voltages]
        frames = BLE_CELL_FRAMES if self.ble else max(1, math.ceil(len(mv) / per))
        mv += [0] * (frames * per - len(mv))
        return [
            a5_frame(
                A5_TABLE.cells,
                bytes((n + 1,)) + b"".join(u16(v) for v in mv[n * per : n * per + per]),
            )
            for n in range(frames)
        ]

    def _a5_temperatures(self) -> list[bytes]:
        per = A5_TABLE.temperatures_per_frame
        raw = [
            min(clip(round(t) + TEMPERATURE_OFFSET), 0xFF) for t in self.temperatures
        ]
        frames = (
            BLE_TEMPERATURE_FRAMES if self.ble else max(1, math.ceil(len(raw) / per))
        )
        raw += [0] * (frames * per - len(raw))
        return [
            a5_frame(
                A5_TABLE.temperatures, bytes((n + 1, *raw[n * per : n * per + per]))
            )
            for n in range(frames)
        ]
