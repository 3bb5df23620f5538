"""Every field of every form has a label and a description, in every language.

The forms are the real ones: each flow is driven to each of its steps (the
serial step with and without a USB adapter, the manual port step before and
after a failed probe, reconfigure, the Bluetooth pick list, the options of a
serial and of a Bluetooth entry), and every schema key found is looked up in
strings.json and in translations/en.json, de.json and zh-Hans.json.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
import re
from typing import Any
from unittest.mock import AsyncMock, patch

from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import serialx

from balancer_tools.ha_helpers import BLE_ADDRESS
from balancer_tools.simulator import (
    Faults,
    VirtualBalancer,
    VirtualServer,
)
from custom_components.active_balancer.const import (
    CONF_PORT,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DOMAIN,
    TRANSPORT_BLE,
)
from custom_components.active_balancer.coordinator import REFUSALS
from custom_components.active_balancer.protocol import RefusalReason

from .conftest import SERIAL_PORT_SOURCE, serial_entry_data

INTEGRATION = Path(__file__).parents[2] / "custom_components" / DOMAIN
LANGUAGES = ("strings", "en", "de", "zh-Hans")


def load(language: str) -> dict[str, Any]:
    """strings.json or one translation."""
    path = (
        INTEGRATION / "strings.json"
        if language == "strings"
        else INTEGRATION / "translations" / f"{language}.json"
    )
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


class Forms:
    """The forms seen: (section, step id) -> the form's result."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.seen: dict[tuple[str, str], list[FlowResult]] = {}

    def add(self, section: str, result: FlowResult) -> FlowResult:
        """Record *result* when it is a form; return it."""
        if result["type"] is FlowResultType.FORM:
            self.seen.setdefault((section, result["step_id"]), []).append(result)
        return result

    def __iter__(self) -> Iterator[tuple[str, str, FlowResult]]:
        """Every form seen."""
        for (section, step), results in self.seen.items():
            for result in results:
                yield section, step, result


@pytest.fixture
def serial_ports() -> Iterator[AsyncMock]:
    """One USB adapter, so that the serial step lists a real port."""
    port = serialx.SerialPortInfo(
        device="/dev/ttyUSB7",
        resolved_device="/dev/ttyUSB7",
        vid=0x1A86,
        pid=0x7523,
        serial_number="A1",
        manufacturer="QinHeng",
        product="USB Serial",
        bcd_device=None,
        interface_description=None,
        interface_num=None,
    )
    with patch(
        SERIAL_PORT_SOURCE,
        return_value=[port],
    ) as ports:
        yield ports


async def _all_forms(
    hass: HomeAssistant, server: VirtualServer, balancer: VirtualBalancer
) -> Forms:
    forms = Forms()
    flow = hass.config_entries.flow
    # Serial: the first form, the manual port, and the manual port after a
    # probe that found nothing (now with the line settings).
    result = await flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = forms.add(
        "config",
        await flow.async_configure(result["flow_id"], {"next_step_id": "serial"}),
    )
    assert result["step_id"] == "serial"
    result = forms.add(
        "config",
        await flow.async_configure(
            result["flow_id"],
            {CONF_PORT: "manual", "baudrate": "9600", "protocol": "d2"},
        ),
    )
    assert result["step_id"] == "serial_manual"
    balancer.faults = Faults(silent=True)
    result = forms.add(
        "config", await flow.async_configure(result["flow_id"], {CONF_PORT: server.url})
    )
    assert result["errors"] == {"base": "no_response"}
    balancer.faults.clear()
    flow.async_abort(result["flow_id"])

    # Reconfigure and options of a serial entry.
    entry = MockConfigEntry(domain=DOMAIN, data=serial_entry_data(server.url))
    entry.add_to_hass(hass)
    forms.add("config", await entry.start_reconfigure_flow(hass))
    forms.add("options", await hass.config_entries.options.async_init(entry.entry_id))

    # Options of a Bluetooth entry.
    ble = MockConfigEntry(
        domain=DOMAIN,
        data={
            CONF_TRANSPORT: TRANSPORT_BLE,
            "address": BLE_ADDRESS,
            CONF_VARIANT: "d2",
        },
        unique_id=BLE_ADDRESS,
    )
    ble.add_to_hass(hass)
    forms.add("options", await hass.config_entries.options.async_init(ble.entry_id))
    return forms


async def test_every_field_has_a_label_and_a_description(
    hass: HomeAssistant,
    server: VirtualServer,
    balancer: VirtualBalancer,
    serial_ports: AsyncMock,
) -> None:
    """No raw keys (``baudrate*``) on any form, in any language."""
    forms = await _all_forms(hass, server, balancer)
    steps = {step for _, step, _ in forms}
    assert steps == {"serial", "serial_manual", "reconfigure", "init"}
    missing: list[str] = []
    checked = 0
    for language in LANGUAGES:
        strings = load(language)
        for section, step, result in forms:
            texts = strings[section]["step"][step]
            for key in result["data_schema"].schema:
                name = str(key)
                checked += 1
                missing.extend(
                    f"{language}: {section}.step.{step}.{part}.{name}"
                    for part in ("data", "data_description")
                    if not texts.get(part, {}).get(name, "").strip()
                )
            if not texts.get("title", "").strip():
                missing.append(f"{language}: {section}.step.{step}.title")
    assert not missing, missing
    # serial 4 + manual 1 + manual after an error 4 + reconfigure 4 + options
    # 2 (serial) and 3 (Bluetooth) fields, in four files.
    assert checked == 4 * (4 + 1 + 4 + 4 + 2 + 3)


async def test_every_selector_option_and_unit_is_translated(
    hass: HomeAssistant,
    server: VirtualServer,
    balancer: VirtualBalancer,
    serial_ports: AsyncMock,
) -> None:
    """Drop-down choices and units with a translation key, in every language."""
    forms = await _all_forms(hass, server, balancer)
    missing: list[str] = []
    for language in LANGUAGES:
        selectors = load(language)["selector"]
        for _, _, result in forms:
            for selector in result["data_schema"].schema.values():
                config = getattr(selector, "config", {})
                key = config.get("translation_key")
                if key is None:
                    continue
                texts = selectors.get(key, {})
                for option in config.get("options", []):
                    value = option if isinstance(option, str) else option["value"]
                    if value.startswith("/dev/"):
                        continue  # a port: its label comes from the adapter
                    if not texts.get("options", {}).get(value):
                        missing.append(f"{language}: selector.{key}.options.{value}")
                unit = config.get("unit_of_measurement")
                if unit and not texts.get("unit_of_measurement", {}).get(unit):
                    missing.append(f"{language}: selector.{key}.unit {unit}")
    assert not missing, missing


def test_translations_have_the_same_keys_as_strings() -> None:
    """en, de and zh-Hans translate every string, and nothing that is gone."""

    def keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
        found: set[str] = set()
        for key, value in tree.items():
            if isinstance(value, dict):
                found |= keys(value, f"{prefix}{key}.")
            else:
                found.add(f"{prefix}{key}")
        return found

    expected = keys(load("strings"))
    for language in LANGUAGES[1:]:
        assert keys(load(language)) == expected, language
    assert load("en") == load("strings")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_refusal_has_a_message_with_its_figures(language: str) -> None:
    """Each reason the library refuses a value has a message, whose
    placeholders are exactly the figures the integration fills in."""
    messages = load(language)["exceptions"]
    assert set(REFUSALS) == set(RefusalReason)
    for reason, (key, figures) in REFUSALS.items():
        message = messages[key]["message"]
        assert set(re.findall(r"{(\w+)}", message)) == set(figures), (reason, key)
