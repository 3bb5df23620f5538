"""What a new user sees, in a real browser on a live Home Assistant.

Headless Chromium (Debian's, as in test_browser.py) on Home Assistant with
recorder and history. The test goes through what issue 12 found:

* the manual port step of the config flow is labelled (also with the line
  settings it shows after a failed probe), and the port list preselects
  "Enter a path or network URL" when there is no USB adapter;
* adding the same balancer again with another RS485 address is refused;
* the cells are listed in numeric order on the device page;
* the balance delta is set to 30 mV (above the pack's 25 mV spread): balancing
  stops and the current drops at once, not at the next poll (the poll interval
  is an hour here), and "Cells being balanced" reads "None", translated;
* the number names are not cut off;
* a cell's more-info dialog shows its history graph.

Screenshots go to artifacts/e2e/new-user/ (not committed).
"""

from __future__ import annotations

from collections.abc import Iterator
import json
import re
import shutil
import time
from typing import TYPE_CHECKING, Any

import pytest

from custom_components.active_balancer.const import DOMAIN

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
    from playwright.sync_api import BrowserContext, Locator, Page

    from balancer_tools.simulator import VirtualBalancer

pytestmark = pytest.mark.timeout(300)

TALL_VIEWPORT = {"width": 1280, "height": 2600}
CELLS = 16
SPREAD_MV = 25
"""Above the default 20 mV delta (balancing runs), below the 30 mV set later."""
FOLLOWS_WITHIN_S = 10.0
"""Balancing state and current must follow a write this fast; polls are 1 h apart."""

STRINGS: dict[str, Any] = json.loads(
    (INTEGRATION / "translations" / "en.json").read_text(encoding="utf-8")
)
CONFIG = STRINGS["config"]
SERIAL_CHOICE = CONFIG["step"]["user"]["menu_options"]["serial"]
MANUAL_CHOICE = STRINGS["selector"]["port"]["options"]["manual"]
SERIAL = CONFIG["step"]["serial"]
MANUAL = CONFIG["step"]["serial_manual"]
ENTITY = STRINGS["entity"]
DELTA_NAME = ENTITY["number"]["balance_delta_voltage"]["name"]
CELL_NAME = ENTITY["sensor"]["cell_voltage"]["name"]
BALANCING_NAME = ENTITY["binary_sensor"]["balancing"]["name"]
CURRENT_NAME = ENTITY["sensor"]["balance_current"]["name"]
CELLS_NAME = ENTITY["sensor"]["balancing_cells"]["name"]
NO_CELLS = ENTITY["sensor"]["balancing_cells"]["state"]["none"]
RAW_KEYS = ("baudrate", "rs485_address", "protocol*", "port*")

HISTORY_CONFIGURATION = """\
recorder:
  commit_interval: 1
history:
logbook:
"""


@pytest.fixture(autouse=True)
def _allow_loopback_sockets() -> None:
    """Nothing to allow: without the harness, no plugin blocks sockets."""


UTC_OFFSET = re.compile(r"^(\d{4}-\d\d-\d\d [\d:.]+)[+-]\d\d:\d\d ", re.MULTILINE)


class HistoryHass(HassProcess):
    """Home Assistant with recorder, history and logbook, as scripts/develop has."""

    def write_config(self) -> None:
        """The tests' configuration plus the history integrations."""
        super().write_config()
        path = self.config_dir / "configuration.yaml"
        text = path.read_text(encoding="utf-8")
        path.write_text(text + HISTORY_CONFIGURATION, encoding="utf-8")

    def log_text(self) -> str:
        """The log, without the UTC offset 2026.11 adds to each time stamp.

        hass.py's record pattern predates the offset; without it, the whole
        log would read as one record (and any traceback in it as ours).
        """
        return UTC_OFFSET.sub(r"\1 ", super().log_text())


@pytest.fixture(scope="module")
def balancer() -> VirtualBalancer:
    """16 LFP cells 25 mV apart that stay where they are (no charge moves)."""
    from balancer_tools.cli_simulate import unbalanced_voltages
    from balancer_tools.simulator import VirtualBalancer
    from custom_components.active_balancer.protocol import Chemistry

    return VirtualBalancer(
        CELLS,
        Chemistry.LFP,
        cell_voltages=unbalanced_voltages(CELLS, Chemistry.LFP, SPREAD_MV),
        volts_per_amp_second=0.0,
    )


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """A fresh headless Chromium profile."""
    yield from chromium_context(tmp_path_factory.mktemp("chromium-new-user"))


@pytest.fixture(scope="module")
def hass(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HassProcess]:
    """Home Assistant with history, onboarding finished (browser login page)."""
    instance = HistoryHass(tmp_path_factory.mktemp("hass-new-user"), "new-user")
    try:
        instance.start()
        instance.onboard(finish=True)
        yield instance
    finally:
        code = instance.stop()
        instance.save_logs()
    assert code == 0, f"hass did not stop cleanly (exit code {code})"


def _dialog(page: Page) -> Locator:
    return page.locator("dialog-data-entry-flow")


def _submit(page: Page) -> None:
    _dialog(page).get_by_role("button", name="Submit").click()


def _open_serial_flow(page: Page, hass: HassProcess) -> None:
    """Add integration > Smart Active Balancer > Serial."""
    from playwright.sync_api import expect

    page.goto(f"{hass.url}/config/integrations/dashboard")
    page.get_by_role("button", name="Add integration").click()
    page.get_by_placeholder("Search for a brand name").fill("Smart Active Balancer")
    page.get_by_role("button", name="Smart Active Balancer", exact=True).click()
    menu = page.get_by_text(SERIAL_CHOICE, exact=True)
    expect(menu).to_be_visible()
    menu.click()
    expect(_dialog(page).get_by_text(SERIAL["title"])).to_be_visible()


def _expect_labelled(page: Page, step: dict[str, Any], keys: list[str]) -> None:
    """Every field of the step shows its label and its description."""
    from playwright.sync_api import expect

    dialog = _dialog(page)
    for key in keys:
        expect(dialog.get_by_text(step["data"][key]).first).to_be_visible()
        expect(dialog.get_by_text(step["data_description"][key]).first).to_be_visible()
    text = dialog.inner_text()
    assert not [raw for raw in RAW_KEYS if raw in text], text


def test_new_user(
    context: BrowserContext,  # first: skips before Home Assistant starts
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
) -> None:
    """Add, refuse a duplicate, read the device page, change the delta, history."""
    page, console = open_page(context)
    folder = ARTIFACTS / "new-user"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ui = Ui(hass, balancer_thread, balancer, page, Shots(page, folder))
    try:
        log_in(ui)
        entry_id, title = _add_through_the_labelled_steps(ui)
        _refuse_the_same_balancer_again(ui, title)
        _poll_hourly(ui, entry_id)
        sensors = _cells_in_numeric_order(ui)
        configuration = _number_names_fit(ui)
        _delta_stops_balancing_at_once(ui, sensors, configuration)
        _cell_history(ui, sensors)
    except BaseException:
        ui.shot("FAILED")
        (folder / "console.log").write_text("\n".join(console), encoding="utf-8")
        raise
    assert not hass.integration_problems()


def _add_through_the_labelled_steps(ui: Ui) -> tuple[str, str]:
    """The serial step, then the manual port step, labelled; its entry and title.

    A URL where nothing listens first: the step then shows the line settings
    too, labelled as well.
    """
    from playwright.sync_api import expect

    page, shot = ui.page, ui.shot
    _open_serial_flow(page, ui.hass)
    dialog = _dialog(page)
    _expect_labelled(page, SERIAL, ["port", "baudrate", "protocol", "rs485_address"])
    # No USB adapter here: "enter a path or URL" is preselected.
    expect(dialog.get_by_text(MANUAL_CHOICE).first).to_be_visible()
    shot("serial-step")
    _submit(page)

    expect(dialog.get_by_text(MANUAL["title"])).to_be_visible()
    _expect_labelled(page, MANUAL, ["port"])
    # The line settings were chosen on the serial step: not asked again.
    baud_label = re.compile(rf"^{re.escape(MANUAL['data']['baudrate'])}\s*\*?$")
    expect(dialog.get_by_text(baud_label)).to_have_count(0)
    shot("manual-step")
    # Nothing listens there: the step shows the line settings too, labelled.
    dialog.get_by_role("textbox").first.fill("socket://127.0.0.1:9")
    _submit(page)
    expect(dialog.get_by_text(CONFIG["error"]["cannot_connect"])).to_be_visible()
    _expect_labelled(page, MANUAL, ["port", "baudrate", "protocol", "rs485_address"])
    shot("manual-step-after-an-error")
    dialog.get_by_role("textbox").first.fill(ui.thread.url)
    _submit(page)
    title = f"Balancer {CELLS}S on {ui.thread.url}"
    # 2026.11 ends with "Name and assign" (the device name), older ones with
    # "Success!" (the entry title).
    finish = page.get_by_role("button", name=re.compile(r"^(Skip and finish|Finish)$"))
    expect(finish).to_be_visible()
    expect(dialog.get_by_text(f"Balancer {CELLS}S").first).to_be_visible()
    shot("added")
    finish.click()
    entries = ui.hass.get(f"/api/config/config_entries/entry?domain={DOMAIN}")
    assert [(e["title"], e["state"]) for e in entries] == [(title, "loaded")]
    return entries[0]["entry_id"], title


def _refuse_the_same_balancer_again(ui: Ui, title: str) -> None:
    """The same balancer again, with another RS485 address: refused."""
    from playwright.sync_api import expect

    page = ui.page
    _open_serial_flow(page, ui.hass)
    dialog = _dialog(page)
    # The RS485 address is the serial step's only number box.
    dialog.get_by_role("spinbutton").fill("2")
    _submit(page)
    dialog.get_by_role("textbox").first.fill(ui.thread.url)
    _submit(page)
    refusal = CONFIG["abort"]["port_in_use"].format(
        title=title, port=ui.thread.url, protocol="D2"
    )
    expect(dialog.get_by_text(refusal)).to_be_visible()
    ui.shot("refused")
    page.keyboard.press("Escape")
    entries = ui.hass.get(f"/api/config/config_entries/entry?domain={DOMAIN}")
    assert len(entries) == 1


def _poll_hourly(ui: Ui, entry_id: str) -> None:
    """An hour between polls: what follows a write later comes from the write."""
    hass = ui.hass
    flow = hass.post("/api/config/config_entries/options/flow", {"handler": entry_id})
    hass.post(
        f"/api/config/config_entries/options/flow/{flow['flow_id']}",
        {"poll_interval": 3600, "settings_every": 10},
    )
    hass.wait_state(
        "binary_sensor.balancer_16s_balancing", "on", timeout=60
    )  # reloaded


def _cells_in_numeric_order(ui: Ui) -> Locator:
    """The device page lists the cells 01 to 16; its sensors card."""
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.hass.url}/config/integrations/integration/{DOMAIN}")
    page.locator("a[href^='/config/devices/device/']").first.click()
    page.wait_for_url(re.compile(r"/config/devices/device/"))
    sensors = page.locator("ha-card").filter(has_text="Sensors").first
    expect(entity_row(sensors, CELL_NAME.format(cell="16"))).to_be_visible()
    names = [
        name.strip()
        for name in sensors.locator(".info").all_inner_texts()
        if re.fullmatch(r"Cell \d+ voltage", name.strip().split("\n")[0])
    ]
    names = [name.split("\n")[0] for name in names]
    expected = [CELL_NAME.format(cell=f"{n:02d}") for n in range(1, CELLS + 1)]
    assert names == expected, names
    expect(entity_row(sensors, BALANCING_NAME)).to_contain_text("Running")
    expect(entity_row(sensors, CURRENT_NAME)).to_contain_text("1.00 A")
    page.set_viewport_size(TALL_VIEWPORT)  # type: ignore[arg-type]
    ui.shot("device-page")
    return sensors


def _number_names_fit(ui: Ui) -> Locator:
    """No number's name is cut off; the device page's configuration card."""
    configuration = ui.page.locator("ha-card").filter(has_text="Configuration").first
    rows = configuration.locator("hui-number-entity-row")
    assert rows.count() >= 3
    for index in range(rows.count()):
        info = rows.nth(index).locator(".info").first
        cut = info.evaluate(
            "el => [...el.querySelectorAll('*'), el].some("
            "e => e.scrollWidth > e.clientWidth + 1)"
        )
        assert not cut, info.inner_text()
    return configuration


def _delta_stops_balancing_at_once(
    ui: Ui, sensors: Locator, configuration: Locator
) -> None:
    """The delta to 30 mV: balancing and current follow at once, not next poll."""
    from playwright.sync_api import expect

    delta_row = configuration.locator("hui-number-entity-row").filter(
        has=ui.page.get_by_text(DELTA_NAME, exact=True)
    )
    box = delta_row.get_by_role("spinbutton")
    expect(box).to_have_value("20")
    expect(delta_row).to_contain_text("mV")
    started = time.monotonic()
    box.fill("30")
    box.press("Enter")
    expect(box).to_have_value("30")
    expect(entity_row(sensors, BALANCING_NAME)).to_contain_text(
        "Not running", timeout=FOLLOWS_WITHIN_S * 1000
    )
    expect(entity_row(sensors, CURRENT_NAME)).to_contain_text(
        "0.00 A", timeout=FOLLOWS_WITHIN_S * 1000
    )
    expect(entity_row(sensors, CELLS_NAME)).to_contain_text(NO_CELLS)
    assert time.monotonic() - started < FOLLOWS_WITHIN_S
    ui.shot("after-the-delta")
    ui.page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]


def _cell_history(ui: Ui, sensors: Locator) -> None:
    """A cell's more-info dialog leads to the history graph of its states."""
    from playwright.sync_api import expect

    page = ui.page
    entity_row(sensors, CELL_NAME.format(cell="01")).get_by_text(
        CELL_NAME.format(cell="01"), exact=True
    ).click()
    more_info = page.locator("ha-more-info-dialog")
    expect(more_info.get_by_text(CELL_NAME.format(cell="01")).first).to_be_visible()
    # The dialog graphs 5-minute statistics, which a new install has none of
    # yet; "Show more" opens the history of its recorded states.
    more_info.get_by_text("Show more").click()
    page.wait_for_url(re.compile(r"/history\?"))
    assert "sensor.balancer_16s_cell_01_voltage" in page.url
    chart = page.locator("state-history-chart-line")
    expect(chart.first).to_be_visible()
    expect(chart.first.locator("canvas, svg").first).to_be_visible()
    expect(page.get_by_text("No state history found")).to_have_count(0)
    page.wait_for_timeout(1000)  # let the chart draw (screenshot only)
    ui.shot("cell-history")
