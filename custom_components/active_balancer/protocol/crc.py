"""Checksums used on the wire: CRC-16/MODBUS and the A5 8-bit sum."""

from __future__ import annotations


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc16_modbus(data: bytes | bytearray | memoryview) -> int:
    """Return the CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) of *data*."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def append_crc(body: bytes) -> bytes:
    """Return *body* followed by its CRC-16/MODBUS, low byte first."""
    return body + crc16_modbus(body).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    """Whether the last two bytes of *frame* are the CRC of the rest."""
    if len(frame) < 3:  # noqa: PLR2004
        return False
    return crc16_modbus(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def a5_checksum(data: bytes | bytearray | memoryview) -> int:
    """Return the A5 checksum: the sum of *data* modulo 256."""
    return sum(data) & 0xFF
