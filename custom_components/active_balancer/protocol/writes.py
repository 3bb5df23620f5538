"""Writing one setting: check and encode it, check it again the device's way, confirm it.

No I/O here: :class:`~.client.BalancerClient` sends what :func:`prepare_write`
returns, under its write lock, after :func:`check_under_lock`, and compares
the read-back with :func:`confirmed_value`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import codec
from .errors import NotSupported, OutOfRange, RefusalReason, WriteNotConfirmed
from .model import Setting, Settings, SettingValue, Variant
from .registers import MODBUS_TABLES, SettingRegister
from .rules import DEPENDS_ON, RULES, check_against, check_value


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A write that passed :meth:`~.client.BalancerClient.prepare`."""

    setting: Setting
    value: float
    """The value to write, snapped to the setting's step (1.0/0.0 for on/off)."""
    variant: Variant
    register: SettingRegister
    raw: int
    """What goes into the register."""


def writable_settings(variant: Variant | None) -> frozenset[Setting]:
    """Settings a balancer speaking *variant* can write (none over A5)."""
    if variant is None or variant is Variant.A5:
        return frozenset()
    return frozenset(MODBUS_TABLES[variant].writable())


def prepare_write(
    variant: Variant, settings: Settings, setting: Setting, value: float | bool
) -> PreparedWrite:
    """Check *value* for *setting* and encode it for *variant*.

    Applies the setting's rule (range, step, and the chemistry in
    *settings*), the variant's allow-list and what its register can hold.
    Raises :class:`OutOfRange` or :class:`NotSupported`.
    """
    number = check_value(setting, value, settings.chemistry)
    if variant is Variant.A5:
        msg = (
            "The A5 protocol is read-only: settings cannot be changed over it. "
            "Use the D2 protocol (Bluetooth dongle or UART) to change settings"
        )
        raise NotSupported(msg)
    register = MODBUS_TABLES[variant].writable().get(setting)
    if register is None:
        msg = f"{setting.value} cannot be written over the {variant.value} protocol"
        raise NotSupported(msg)
    raw = register.encode(number)
    if abs(register.decode(raw) - number) > 1e-6:  # noqa: PLR2004
        unit = RULES[setting].unit
        msg = (
            f"{setting.value} over {variant.value} is stored in steps of "
            f"{register.scale:g} {unit}; {number:g} was refused"
        )
        raise OutOfRange(
            msg,
            reason=RefusalReason.STEP,
            setting=setting,
            value=number,
            step=register.scale,
            unit=unit,
        )
    return PreparedWrite(setting, number, variant, register, raw)


def unknown_dependency(write: PreparedWrite, settings: Settings) -> Setting | None:
    """The setting *write* is checked against, if the device has it but it is
    not known now (its read went unanswered): the check would be blind."""
    other = DEPENDS_ON.get(write.setting)
    if other is None or settings.get(other) is not None:
        return None
    return other if other in MODBUS_TABLES[write.variant].settings else None


def check_under_lock(write: PreparedWrite, settings: Settings) -> None:
    """The checks that depend on what the device holds right before the write.

    The rules against the other settings (:func:`~.rules.check_against`), and,
    for a register no capture confirms, a plausible value in it now. Raises
    :class:`OutOfRange` or :class:`NotSupported`.
    """
    check_against(write.setting, write.value, settings)
    if not write.register.inferred:
        return
    rule = RULES[write.setting]
    current = settings.get(write.setting)
    if not isinstance(current, int | float) or not (
        rule.minimum <= current <= rule.maximum
    ):
        msg = (
            f"{write.setting.value} over {write.variant.value} uses a register "
            f"that is not confirmed on a balancer, and it holds {current!r}, "
            "which is not a plausible value; nothing was written"
        )
        raise NotSupported(msg)


def confirmed_value(write: PreparedWrite, registers: Mapping[int, int]) -> SettingValue:
    """The setting as read back after *write*; :class:`WriteNotConfirmed` if not it."""
    table = MODBUS_TABLES[write.variant]
    setting, number = write.setting, write.value
    confirmed = codec.setting_register_value(table, setting, registers)
    if setting is Setting.BALANCER_ENABLED:
        ok = confirmed == bool(number)
    else:
        ok = (
            isinstance(confirmed, int | float)
            and abs(float(confirmed) - number) <= RULES[setting].step / 2
        )
    if not ok:
        msg = (
            f"{setting.value}: wrote {number:g} but the balancer reports {confirmed!r}"
        )
        raise WriteNotConfirmed(msg)
    return confirmed
