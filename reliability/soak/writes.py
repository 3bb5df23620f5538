"""What the soak writes, and the manuals' rules it checks on the device."""

from __future__ import annotations

import random

from balancer_tools.simulator import VirtualBalancer
from custom_components.active_balancer.protocol import Setting, Settings
from custom_components.active_balancer.protocol.model import NEVER_SLEEP, Chemistry
from custom_components.active_balancer.protocol.rules import RULES


def random_value(
    setting: Setting, settings: Settings, rng: random.Random
) -> float | bool:
    """A random value the rules allow for *setting*, given the *settings*."""
    if setting is Setting.BALANCER_ENABLED:
        return rng.random() < 0.5  # noqa: PLR2004
    if setting is Setting.SLEEP_TIME:
        # Long enough that the balancer never falls asleep between two polls.
        return NEVER_SLEEP if rng.random() < 0.3 else 10 * rng.randint(6, 720)  # noqa: PLR2004
    if setting is Setting.BALANCE_START_VOLTAGE:
        chemistry = settings.chemistry or Chemistry.LFP
        low, high = chemistry.voltage_range
        return rng.randint(round(low * 1000), round(high * 1000)) / 1000
    if setting is Setting.BALANCE_DELTA_VOLTAGE:
        return rng.randint(20, 100) / 1000
    if setting is Setting.CELL_OVERVOLTAGE_ALARM:
        under = settings.cell_undervoltage_alarm or 1.5
        return rng.randint(max(1800, round(under * 1000) + 10), 4500) / 1000
    if setting is Setting.CELL_UNDERVOLTAGE_ALARM:
        over = settings.cell_overvoltage_alarm or 4.2
        return rng.randint(1500, min(4200, round(over * 1000) - 10)) / 1000
    rule = RULES[setting]
    steps = round((rule.maximum - rule.minimum) / rule.step)
    return round(rule.minimum + rng.randint(0, steps) * rule.step, 6)


def device_rule_violations(balancer: VirtualBalancer) -> list[str]:
    """Rules of the manuals the device's settings break right now."""
    problems = []
    if balancer.cell_overvoltage_alarm <= balancer.cell_undervoltage_alarm:
        problems.append(
            f"over-voltage alarm {balancer.cell_overvoltage_alarm} V is not above "
            f"the under-voltage alarm {balancer.cell_undervoltage_alarm} V"
        )
    low, high = balancer.chemistry.voltage_range
    if not low - 1e-9 <= balancer.balance_start_voltage <= high + 1e-9:
        problems.append(f"start voltage {balancer.balance_start_voltage} V")
    if balancer.balance_delta_voltage < RULES[Setting.BALANCE_DELTA_VOLTAGE].minimum:
        problems.append(f"delta voltage {balancer.balance_delta_voltage} V")
    return problems
