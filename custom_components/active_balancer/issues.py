"""Repair issues: the manuals' warnings, raised and cleared from the readings.

One table holds every issue: its key (the translation key), its severity,
when it is active, and the figures its message shows. Each is raised while
its condition holds and goes away by itself when it no longer does.
(Not ``repairs.py``: that name is Home Assistant's platform for issues a user
can fix through a flow, and these are fixed at the battery.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .const import DOMAIN, MISWIRED_POLLS
from .protocol import Chemistry, Snapshot
from .protocol.model import MIN_PACK_VOLTAGE
from .protocol.rules import ALL_CHEMISTRIES_RANGE


@dataclass(frozen=True, slots=True)
class Observed:
    """What the conditions look at: the last poll and the run before it."""

    snapshot: Snapshot
    implausible: list[int]
    """Numbers of this poll's cells outside the chemistry's range."""
    implausible_polls: int
    """Polls in a row with a cell outside the chemistry's range."""

    @property
    def pack_voltage(self) -> float:
        """The pack voltage, or the cells' sum where the device reports none."""
        reading = self.snapshot.reading
        pack = reading.pack_voltage
        return reading.cell_voltage_sum if pack is None else pack


@dataclass(frozen=True, slots=True)
class Repair:
    """One repair issue of the table."""

    key: str
    severity: ir.IssueSeverity
    active: Callable[[Observed], bool]
    placeholders: Callable[[Observed], dict[str, str]]
    """The message's figures (the entry's title is added as ``name``)."""


def cell_range(chemistry: Chemistry | None) -> tuple[float, float]:
    """The plausible cell voltages of *chemistry*, or of any if not known."""
    return chemistry.voltage_range if chemistry else ALL_CHEMISTRIES_RANGE


def implausible_cells(snapshot: Snapshot) -> list[int]:
    """Numbers of the cells outside the range of the configured chemistry.

    A cell the device cannot report (None) counts as implausible too.
    """
    low, high = cell_range(snapshot.settings.chemistry)
    return [
        number
        for number, volts in enumerate(snapshot.reading.cell_voltages, start=1)
        if volts is None or not low <= volts <= high
    ]


def _chemistry_name(chemistry: Chemistry | None) -> str:
    return chemistry.name if chemistry is not None else "any"


def _miswired(observed: Observed) -> dict[str, str]:
    low, high = cell_range(observed.snapshot.settings.chemistry)
    return {
        "cells": ", ".join(map(str, observed.implausible)),
        "chemistry": _chemistry_name(observed.snapshot.settings.chemistry),
        "low": f"{low:g}",
        "high": f"{high:g}",
    }


def _cell_count_differs(observed: Observed) -> bool:
    configured = observed.snapshot.settings.cell_count
    return configured is not None and configured != observed.snapshot.reading.cell_count


REPAIRS: tuple[Repair, ...] = (
    Repair(
        "miswired",
        ir.IssueSeverity.ERROR,
        lambda observed: observed.implausible_polls >= MISWIRED_POLLS,
        _miswired,
    ),
    Repair(
        "cell_count_mismatch",
        ir.IssueSeverity.WARNING,
        _cell_count_differs,
        lambda observed: {
            "configured": str(observed.snapshot.settings.cell_count),
            "measured": str(observed.snapshot.reading.cell_count),
        },
    ),
    Repair(
        "pack_voltage_low",
        ir.IssueSeverity.WARNING,
        lambda observed: observed.pack_voltage < MIN_PACK_VOLTAGE,
        lambda observed: {
            "voltage": f"{observed.pack_voltage:.1f}",
            "minimum": f"{MIN_PACK_VOLTAGE:g}",
        },
    ),
)
"""Every repair issue this integration raises."""


class BalancerIssues:
    """The repair issues of one balancer (one config entry)."""

    def __init__(self, hass: HomeAssistant, entry_id: str, title: str) -> None:
        """Create the issues of entry *entry_id*, named by its *title*."""
        self._hass = hass
        self._entry_id = entry_id
        self._title = title
        self._implausible_polls = 0

    def _issue_id(self, repair: Repair) -> str:
        return f"{repair.key}_{self._entry_id}"

    @callback
    def async_update(self, snapshot: Snapshot) -> None:
        """Raise or clear every issue after a successful poll."""
        implausible = implausible_cells(snapshot)
        if implausible:
            self._implausible_polls += 1
        else:
            self._implausible_polls = 0
        observed = Observed(snapshot, implausible, self._implausible_polls)
        for repair in REPAIRS:
            if not repair.active(observed):
                ir.async_delete_issue(self._hass, DOMAIN, self._issue_id(repair))
                continue
            ir.async_create_issue(
                self._hass,
                DOMAIN,
                self._issue_id(repair),
                is_fixable=False,
                severity=repair.severity,
                translation_key=repair.key,
                translation_placeholders={"name": self._title}
                | repair.placeholders(observed),
            )

    @callback
    def async_clear(self) -> None:
        """Remove every issue of this entry (on unload)."""
        for repair in REPAIRS:
            ir.async_delete_issue(self._hass, DOMAIN, self._issue_id(repair))
