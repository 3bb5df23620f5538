"""Real-browser test: add and use a balancer through Home Assistant's own UI.

Headless Chromium from Debian's packages (``/usr/bin/chromium``; no browser
download) driven by Playwright for Python. The test logs in, adds the
integration with the config-flow dialog (Serial, then the ``socket://`` URL of
a virtual balancer), opens the device page, checks the cell voltages and the
balancing state, and changes the balance delta voltage in the number entity's
dialog. Screenshots go to ``artifacts/e2e/`` (not committed).
"""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
import re
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from balancer_tools.simulator import VirtualBalancer
from custom_components.active_balancer.const import DOMAIN
from custom_components.active_balancer.protocol import Variant

from .browser import (
    VIEWPORT,
    Shots,
    Ui,
    chromium_context,
    entity_row,
    log_in,
    open_page,
)
from .hass import ARTIFACTS, INTEGRATION, HassProcess
from .virtual import BalancerThread

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = pytest.mark.timeout(240)

FINISH_ONBOARDING = True
"""The browser must land on the login page, not on the onboarding wizard."""

TALL_VIEWPORT = {"width": 1280, "height": 2600}
D2_BALANCE_DELTA_REGISTER = 0xA4

# What the user reads in the dialogs: the integration's own English strings.
STRINGS: dict[str, Any] = json.loads(
    (INTEGRATION / "translations" / "en.json").read_text(encoding="utf-8")
)
SERIAL_CHOICE = STRINGS["config"]["step"]["user"]["menu_options"]["serial"]
MANUAL_CHOICE = STRINGS["selector"]["port"]["options"]["manual"]
PORT_LABEL = STRINGS["config"]["step"]["serial"]["data"]["port"]
URL_LABEL = STRINGS["config"]["step"]["serial_manual"]["data"]["port"]
DELTA_NAME = STRINGS["entity"]["number"]["balance_delta_voltage"]["name"]
CELL_NAME = STRINGS["entity"]["sensor"]["cell_voltage"]["name"]
BALANCING_NAME = STRINGS["entity"]["binary_sensor"]["balancing"]["name"]


@pytest.fixture(scope="module")
def context(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BrowserContext]:
    """A fresh headless Chromium profile."""
    yield from chromium_context(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """A clean artifacts/e2e/browser/ folder."""
    folder = ARTIFACTS / "browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def test_add_and_use_a_balancer_in_the_browser(
    context: BrowserContext,  # first: skips before Home Assistant starts
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
    screenshots: Path,
) -> None:
    """Log in, add the balancer, read it on its device page, change a setting."""
    page, console = open_page(context)
    ui = Ui(hass, balancer_thread, balancer, page, Shots(page, screenshots))
    try:
        log_in(ui, shot="login")
        _add_the_balancer(ui)
        _read_the_device_page(ui)
        _change_the_balance_delta(ui)
    except BaseException:
        ui.shot("FAILED")
        raise
    finally:
        (screenshots / "console.log").write_text("\n".join(console), encoding="utf-8")
    assert not hass.integration_problems()


def _add_the_balancer(ui: Ui) -> None:
    """Add integration > Serial > enter a URL > the URL of the virtual balancer."""
    from playwright.sync_api import expect

    page, shot = ui.page, ui.shot
    page.goto(f"{ui.hass.url}/config/integrations/dashboard")
    page.get_by_role("button", name="Add integration").click()
    expect(page.get_by_text("Select brand")).to_be_visible()
    page.get_by_placeholder("Search for a brand name").fill("Smart Active Balancer")
    page.get_by_text("Smart Active Balancer", exact=True).click()
    menu = page.get_by_text(SERIAL_CHOICE, exact=True)
    expect(menu).to_be_visible()
    shot("flow-menu")
    menu.click()

    page.get_by_label(PORT_LABEL).first.click()
    # The open list's entry: the last element with the text (the field shows
    # the selected value too). Its role differs between frontend releases.
    page.get_by_text(MANUAL_CHOICE, exact=True).last.click()
    shot("flow-serial")
    page.get_by_role("button", name="Submit").click()

    # The dialog's only text box (older frontends tie the label to it, newer
    # ones only name it).
    url_field = (
        page.get_by_label(URL_LABEL)
        .or_(page.get_by_role("textbox", name=re.compile(URL_LABEL)))
        .first
    )
    url_field.fill(ui.thread.url)
    shot("flow-url")
    page.get_by_role("button", name="Submit").click()

    # 2025.4 says "Success!", 2026.x asks to name the device and its area.
    expect(
        page.get_by_text("Success!").or_(page.get_by_text("Name and assign"))
    ).to_be_visible()
    expect(
        page.get_by_text("Balancer 16S")
        .or_(page.get_by_role("textbox", name="Device name"))
        .first
    ).to_be_visible()
    shot("flow-success")
    page.get_by_role("button", name=re.compile(r"^(Skip and finish|Finish)$")).click()

    entries = ui.hass.get(f"/api/config/config_entries/entry?domain={DOMAIN}")
    assert [e["state"] for e in entries] == ["loaded"], entries


def _read_the_device_page(ui: Ui) -> None:
    """The device page shows every cell's voltage and that balancing runs."""
    from playwright.sync_api import expect

    page = ui.page
    # 2025.4 opens the integration's page after the flow, 2026.x stays put.
    if "/config/integrations/integration/" not in page.url:
        page.goto(f"{ui.hass.url}/config/integrations/integration/{DOMAIN}")
    page.wait_for_url(re.compile(r"/config/integrations/integration/active_balancer"))
    page.locator("a[href^='/config/devices/device/']").first.click()
    page.wait_for_url(re.compile(r"/config/devices/device/"))
    expect(page.get_by_text("DALY / 100balance")).to_be_visible()

    voltages = ui.thread.call(lambda: list(ui.balancer.cell_voltages))
    sensors = page.locator("ha-card").filter(has_text="Sensors").first
    for number, volts in enumerate(voltages, start=1):
        row = entity_row(sensors, CELL_NAME.format(cell=f"{number:02d}"))
        expect(row).to_contain_text(f"{volts:.3f} V")
    expect(entity_row(sensors, BALANCING_NAME)).to_contain_text("Running")
    page.set_viewport_size(TALL_VIEWPORT)  # type: ignore[arg-type]
    ui.shot("device-page")
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]


def _change_the_balance_delta(ui: Ui) -> None:
    """20 -> 30 mV in the number's dialog: written once, shown on the page."""
    from playwright.sync_api import expect

    page, shot = ui.page, ui.shot
    configuration = page.locator("ha-card").filter(has_text="Configuration").first
    delta_row = configuration.locator("hui-number-entity-row").filter(
        has=page.get_by_text(DELTA_NAME, exact=True)
    )
    expect(delta_row.get_by_role("spinbutton")).to_have_value("20")  # mV
    before = ui.thread.call(lambda: len(ui.balancer.writes))

    page.get_by_text(DELTA_NAME).first.click()
    dialog = page.locator("ha-more-info-dialog")
    expect(dialog.get_by_text(DELTA_NAME).first).to_be_visible()
    box = dialog.get_by_role("spinbutton")
    expect(box).to_have_value("20")
    box.fill("30")
    box.press("Enter")
    expect(box).to_have_value("30")
    shot("number-dialog")

    writes = ui.thread.call(lambda: ui.balancer.writes[before:])
    assert [(w.variant, w.register, w.value) for w in writes] == [
        (Variant.D2, D2_BALANCE_DELTA_REGISTER, 30)
    ]
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.wait_for_timeout(500)  # let the closing animation end (screenshot only)
    expect(delta_row.get_by_role("spinbutton")).to_have_value("30")
    shot("device-page-after-change")

    states = {
        s["entity_id"]: s["state"]
        for s in ui.hass.get("/api/states")
        if s["entity_id"].endswith("_start_delta")
    }
    assert list(states.values()) == ["30"], states
