"""Bluetooth advertisement rules: which advertisements may be our dongles.

The one place that says what a DALY / 100balance dongle advertises
(shared/protocol.md section 2.2). Home Assistant's ``manifest.json`` matchers
are :data:`MANIFEST_MATCHERS` (a test keeps them equal) and the config flow
uses :func:`classify`.

* ``DL-<MAC>`` / ``JHB-<MAC>`` local names (DALY and 100balance HLK dongles);
* the ``fff0`` UART-bridge service;
* manufacturer data whose payload ends in the ASCII tag ``DL`` or ``JHB``
  (maybe followed by 0x00). Its company IDs (0x0102, 0x0302, ...) are not
  DALY's: they belong to unrelated companies, and the payload starts with
  the MAC, so no ``manufacturer_data_start`` can select these dongles. There
  is therefore no manufacturer matcher: such a dongle is found by its name or
  service, or picked from the list by hand.

Only an advertisement with our name *and* our service identifies a dongle
well enough to be probed before the user confirms it (:data:`IDENTIFIED`);
anything else that may be ours is shown first and probed after confirmation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

NAME_PREFIXES = ("DL-", "JHB-")
SERVICE_UUID = "0000fff0-0000-1000-8000-00805f9b34fb"
MANUFACTURER_TAGS = (b"DL", b"JHB", b"DL\x00", b"JHB\x00")

MANIFEST_MATCHERS: list[dict[str, Any]] = [
    {"local_name": f"{prefix}*", "connectable": True} for prefix in NAME_PREFIXES
] + [{"service_uuid": SERVICE_UUID, "connectable": True}]
"""The ``bluetooth`` matchers of manifest.json, in order."""


class Identity(StrEnum):
    """How well an advertisement identifies one of our dongles."""

    IDENTIFIED = "identified"
    """Our name and our service: may be probed before the user confirms."""
    POSSIBLE = "possible"
    """Our name, service or manufacturer tag alone: ask first, probe after."""
    FOREIGN = "foreign"
    """Nothing of ours: never offered, never connected to."""


def has_our_name(name: str | None) -> bool:
    """Whether *name* is a DL- / JHB- dongle name."""
    return (name or "").upper().startswith(NAME_PREFIXES)


def classify(
    name: str | None,
    service_uuids: Iterable[str],
    manufacturer_data: Mapping[int, bytes],
) -> Identity:
    """How well an advertisement with these fields identifies our dongle."""
    named = has_our_name(name)
    service = SERVICE_UUID in {uuid.lower() for uuid in service_uuids}
    if named and service:
        return Identity.IDENTIFIED
    tagged = any(
        payload.endswith(MANUFACTURER_TAGS) for payload in manufacturer_data.values()
    )
    if named or service or tagged:
        return Identity.POSSIBLE
    return Identity.FOREIGN
