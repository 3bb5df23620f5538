"""Real-browser test of the cell view card on a live Home Assistant.

The balancer is added over REST (the config flow has its own browser test);
then, in headless Chromium, the card is added to a fresh dashboard through
the card picker and the card editor, like a new user does: no resource, no
YAML. The test checks one bar per cell, the lowest and highest cells marked,
a cell voltage changed in the virtual balancer moving its bar within one poll,
the tooltip, the more-info dialog on a tap, an alarm label, light and dark
theme, a phone width and the "unavailable" state while the balancer is off. Screenshots go
to ``artifacts/e2e/card/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import re
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from balancer_tools.simulator import VirtualBalancer
from custom_components.active_balancer.const import DOMAIN

from .browser import UI_TIMEOUT_MS, VIEWPORT, Shots, Ui, chromium_context, log_in
from .hass import ARTIFACTS, REPO, HassProcess, wait_for
from .virtual import BalancerThread

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

pytestmark = pytest.mark.timeout(300)

FINISH_ONBOARDING = True
"""The browser must land on the login page, not on the onboarding wizard."""

PHONE = {"width": 390, "height": 844}
POLL_INTERVAL = 5
ONE_POLL_MS = (POLL_INTERVAL + 5) * 1000
"""One poll interval plus the time the poll and the page update take."""
CELLS = 16
DASHBOARD = "balancer-cells"
CARD_NAME = "Active balancer cells"
TITLE = "Battery cells"
CARD_PATH = f"/{DOMAIN}/active-balancer-cells.js"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """A fresh headless Chromium profile."""
    yield from chromium_context(
        tmp_path_factory.mktemp("chromium-card"), color_scheme="light"
    )


@pytest.fixture(scope="module")
def shots_folder() -> Path:
    """A clean artifacts/e2e/card/ folder."""
    folder = ARTIFACTS / "card"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _add_balancer(hass: HassProcess, url: str) -> str:
    """Add the balancer over REST, polled every 5 s; return the entry id."""
    flow = hass.post(
        "/api/config/config_entries/flow",
        {"handler": DOMAIN, "show_advanced_options": False},
    )
    path = f"/api/config/config_entries/flow/{flow['flow_id']}"
    hass.post(path, {"next_step_id": "serial"})
    hass.post(
        path,
        {"port": "manual", "baudrate": "9600", "protocol": "auto", "rs485_address": 1},
    )
    flow = hass.post(path, {"port": url})
    assert flow["type"] == "create_entry", flow
    entry_id: str = flow["result"]["entry_id"]
    options = hass.post(
        "/api/config/config_entries/options/flow", {"handler": entry_id}
    )
    result = hass.post(
        f"/api/config/config_entries/options/flow/{options['flow_id']}",
        {"poll_interval": POLL_INTERVAL, "settings_every": 10},
    )
    assert result["type"] == "create_entry", result

    def loaded() -> bool:
        entries = hass.get(f"/api/config/config_entries/entry?domain={DOMAIN}")
        return [e["state"] for e in entries] == ["loaded"]

    wait_for(loaded, "the entry to be loaded", 45)
    return entry_id


def _ws(hass: HassProcess, command: str, **payload: Any) -> Any:
    """A WebSocket command from a thread: Playwright's loop runs in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(hass.ws, command, **payload).result()


def _new_dashboard(hass: HassProcess) -> None:
    """An empty dashboard with one masonry view (what "Add dashboard" makes)."""
    _ws(
        hass,
        "lovelace/dashboards/create",
        url_path=DASHBOARD,
        title="Balancer cells",
        mode="storage",
    )
    _ws(
        hass,
        "lovelace/config/save",
        url_path=DASHBOARD,
        config={"views": [{"title": "Cells", "path": "cells", "cards": []}]},
    )


def test_cell_card_in_the_browser(
    context: BrowserContext,  # first: skips before Home Assistant starts
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
    shots_folder: Path,
) -> None:
    """Add the card with the picker and editor; read, change, theme, phone."""
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    entry_id = _add_balancer(hass, balancer_thread.url)
    with ThreadPoolExecutor(1) as pool:
        entities = pool.submit(hass.entities_of, entry_id).result()
    totals = Totals(hass, entities, balancer_thread, balancer)
    _new_dashboard(hass)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    served: list[int] = []
    page.on(
        "response",
        lambda r: served.append(r.status) if CARD_PATH in r.url else None,
    )
    shot = Shots(page, shots_folder)
    try:
        _use_the_card(hass, balancer_thread, balancer, page, shot, totals=totals)
    except BaseException:
        shot("FAILED")
        raise
    # The frontend loaded the card from the integration, without a resource.
    assert served, f"{CARD_PATH} was never requested"
    assert set(served) <= {200, 304}, served
    assert not errors, errors
    assert not hass.integration_problems()
    try:
        _check_readme_graphs(hass, page, shot, totals)
    except BaseException:
        shot("FAILED")
        raise


class Totals:
    """The statistics sensors against the simulator's own integral.

    Read twice, some polls apart: between the readings, Home Assistant's
    balancing time and charge moved grow as much as the simulator says it
    balanced (the e2e balancer balances all the time at 1 A), give or take the
    poll each reading may lag behind.
    """

    def __init__(
        self,
        hass: HassProcess,
        entities: dict[str, str],
        balancer_thread: BalancerThread,
        balancer: VirtualBalancer,
    ) -> None:
        """Take the first reading."""
        self.hass = hass
        self.time_id = entities["balancing_time"]
        self.charge_id = entities["charge_moved"]
        self.thread = balancer_thread
        self.balancer = balancer
        self.first = self._read()
        self._entities = entities

    def entity_ids(self) -> list[str]:
        """The entity ids of the statistics sensors."""
        return [
            self._entities[key]
            for key in ("balancing_time", "charge_moved", "top_of_charge_spread")
        ]

    def _read(self) -> tuple[float, float, float, float]:
        time_state = self.hass.state(self.time_id)
        charge_state = self.hass.state(self.charge_id)
        assert time_state is not None
        assert charge_state is not None
        assert time_state["attributes"]["unit_of_measurement"] == "h"
        assert charge_state["attributes"]["unit_of_measurement"] == "Ah"
        seconds, charge = self.thread.call(
            lambda: (self.balancer.balanced_seconds, self.balancer.balanced_charge)
        )
        return (
            float(time_state["state"]) * 3600,
            float(charge_state["state"]),
            seconds,
            charge,
        )

    def check(self) -> None:
        """The second reading: both totals grew like the simulator's."""
        wait_for(
            lambda: self._read()[2] - self.first[2] >= 6 * POLL_INTERVAL,
            "six polls of balancing since the first reading",
            60,
            interval=1.0,
        )
        last = self._read()
        shown_seconds = last[0] - self.first[0]
        true_seconds = last[2] - self.first[2]
        assert abs(shown_seconds - true_seconds) <= 2 * POLL_INTERVAL, (
            shown_seconds,
            true_seconds,
        )
        shown_charge = last[1] - self.first[1]
        true_charge = last[3] - self.first[3]
        (ARTIFACTS / "card" / "totals.txt").write_text(
            f"balancing time: shown {shown_seconds:.1f} s, "
            f"simulator {true_seconds:.1f} s\n"
            f"charge moved: shown {shown_charge:.5f} Ah, "
            f"simulator {true_charge:.5f} Ah\n",
            encoding="utf-8",
        )
        assert abs(shown_charge - true_charge) <= 2 * POLL_INTERVAL / 3600, (
            shown_charge,
            true_charge,
        )


def _check_readme_graphs(
    hass: HassProcess, page: Page, shot: Shots, totals: Totals
) -> None:
    """The README's statistics-graph cards are valid on this release.

    The e2e configuration has no recorder, so they show "History integration
    disabled" (and the frontend logs the recorder's missing commands); what is
    checked is that Home Assistant accepts the cards and their entities.
    """
    from playwright.sync_api import expect

    graphs = _readme_graphs()
    used = {entity for graph in graphs for entity in graph["entities"]}
    assert used <= set(totals.entity_ids()), (used, totals.entity_ids())
    _ws(
        hass,
        "lovelace/config/save",
        url_path=DASHBOARD,
        config={"views": [{"title": "Graphs", "path": "graphs", "cards": graphs}]},
    )
    page.goto(f"{hass.url}/{DASHBOARD}/graphs")
    page.wait_for_load_state("networkidle")
    expect(page.locator("hui-statistics-graph-card")).to_have_count(len(graphs))
    expect(page.locator("hui-error-card")).to_have_count(0)
    shot("readme-graphs")


def _readme_graphs() -> list[dict[str, Any]]:
    """The statistics-graph cards the README shows."""
    import yaml

    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(type: statistics-graph\n.*?)```", text, re.S)
    assert len(blocks) == 2, blocks
    return [yaml.safe_load(block) for block in blocks]


def _bars(card: Locator) -> Locator:
    return card.locator(".bar")


def _voltages(balancer_thread: BalancerThread, balancer: VirtualBalancer) -> list[Any]:
    return balancer_thread.call(lambda: list(balancer.cell_voltages))


def _use_the_card(
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
    page: Page,
    shot: Shots,
    *,
    totals: Totals,
) -> None:
    ui = Ui(hass, balancer_thread, balancer, page, shot)
    log_in(ui)
    card = _add_the_card(ui)
    lowest, light = _bars_and_marks(ui, card)
    cell = _change_a_cell(ui, card, lowest)
    _tap_and_alarm(ui, card, cell)
    _themes_and_phone(ui, card)
    # The statistics sensors followed the balancer meanwhile.
    totals.check()
    _unavailable_while_off(ui, card)
    shutil.copyfile(light, ARTIFACTS / "card" / "card.png")


def _add_the_card(ui: Ui) -> Locator:
    from playwright.sync_api import expect

    # --- add the card: edit mode, card picker, editor -------------------------
    ui.page.goto(f"{ui.hass.url}/{DASHBOARD}/cells?edit=1")
    ui.page.wait_for_load_state("networkidle")
    ui.shot("edit-mode")
    ui.page.get_by_role("button", name="Add card").first.click()
    picker = ui.page.locator("hui-dialog-create-card")
    picker.get_by_role("tab", name="By card").click()
    search = picker.get_by_role("textbox").first
    expect(search).to_be_visible()
    search.fill(CARD_NAME)
    preview = picker.locator("active-balancer-cells")
    expect(preview.first).to_be_attached()
    ui.shot("card-picker")
    # The picker lays a transparent overlay over each preview: click through it.
    picker.get_by_text(CARD_NAME, exact=True).first.click(force=True)

    editor = ui.page.locator("hui-dialog-edit-card")
    expect(editor.locator("active-balancer-cells-editor")).to_be_visible()
    expect(_bars(editor.locator("active-balancer-cells"))).to_have_count(CELLS)
    # The device picker (filtered to this integration) holds the stub's choice.
    expect(
        editor.locator("active-balancer-cells-editor").get_by_role(
            "button", name=re.compile("Balancer 16S")
        )
    ).to_be_visible()
    # The editor's title field reaches the preview and the saved config.
    form = editor.locator("active-balancer-cells-editor")
    form.get_by_role("textbox", name="Title").fill(TITLE)
    expect(editor.locator("active-balancer-cells .title")).to_have_text(TITLE)
    ui.shot("card-editor")
    editor.get_by_role("button", name="Save").click()
    expect(editor.locator("active-balancer-cells-editor")).to_have_count(0)
    ui.page.get_by_role("button", name="Done").click()
    ui.page.wait_for_load_state("networkidle")

    card = ui.page.locator(
        "hui-card active-balancer-cells, active-balancer-cells"
    ).first
    config = _ws(ui.hass, "lovelace/config", url_path=DASHBOARD)
    cards = config["views"][0]["cards"]
    assert [c["type"] for c in cards] == ["custom:active-balancer-cells"], cards
    assert cards[0]["device_id"], cards
    assert cards[0]["title"] == TITLE, cards
    return card


def _bars_and_marks(ui: Ui, card: Locator) -> tuple[int, Path]:
    from playwright.sync_api import expect

    # --- one bar per cell, lowest and highest marked ---------------------------
    bars = _bars(card)
    expect(bars).to_have_count(CELLS)
    volts = _voltages(ui.thread, ui.balancer)
    lowest = volts.index(min(volts)) + 1
    highest = volts.index(max(volts)) + 1
    expect(card.locator(".bar.lowest")).to_have_attribute("data-cell", str(lowest))
    expect(card.locator(".bar.highest")).to_have_attribute("data-cell", str(highest))
    for number, value in enumerate(volts, start=1):
        expect(bars.nth(number - 1)).to_have_attribute(
            "data-mv", str(round(value * 1000))
        )
    expect(card).to_contain_text(f"{CELLS}")
    expect(card.locator(".bar.balancing")).to_have_count(2)
    light = ui.shot("card-light", card)
    return lowest, light


def _change_a_cell(ui: Ui, card: Locator, lowest: int) -> int:
    from playwright.sync_api import expect

    # --- a changed cell moves its bar within one poll -------------------------
    cell = 7 if lowest != 7 else 8
    bar = card.locator(f".bar[data-cell='{cell}']")
    before = bar.locator(".fill").evaluate("e => e.style.height")
    ui.thread.call(lambda: ui.balancer.set_cell_voltage(cell, 3.05))
    expect(bar).to_have_attribute("data-mv", "3050", timeout=ONE_POLL_MS)
    expect(card.locator(".bar.lowest")).to_have_attribute("data-cell", str(cell))
    after = bar.locator(".fill").evaluate("e => e.style.height")
    assert float(after.rstrip("%")) < float(before.rstrip("%")), (before, after)
    expect(bar).to_have_attribute("title", re.compile(rf"^Cell {cell}: 3050 mV"))
    # The figures, whatever unit Home Assistant shows them in (the difference
    # is shown in mV, the others in V).
    volts = _voltages(ui.thread, ui.balancer)
    delta = round((max(volts) - min(volts)) * 1000)
    figures = card.locator(".figure .value")
    expect(figures.nth(0)).to_have_text(str(CELLS))
    expect(figures.nth(1)).to_have_text(f"{delta} mV")
    expect(figures.nth(2)).to_have_text(f"{sum(volts) / CELLS:.3f} V")
    return cell


def _tap_and_alarm(ui: Ui, card: Locator, cell: int) -> None:
    from playwright.sync_api import expect

    bar = card.locator(f".bar[data-cell='{cell}']")
    # --- a tap opens the cell's more-info dialog --------------------------------
    bar.click()
    dialog = ui.page.locator("ha-more-info-dialog")
    # 16 cells: the names are zero-padded ("Cell 07 voltage").
    expect(dialog.get_by_text(f"Cell {cell:02d} voltage").first).to_be_visible()
    ui.page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # --- an alarm shows while it is raised ----------------------------------------
    ui.thread.call(lambda: ui.balancer.set_cell_voltage(cell, 2.25))
    alarm = card.locator(".alarm[data-alarm='cell_undervoltage']")
    expect(alarm).to_have_text("Cell under-voltage", timeout=ONE_POLL_MS)
    expect(card.locator(".alarm")).to_have_count(1)
    ui.shot("alarm", card)
    ui.thread.call(lambda: ui.balancer.set_cell_voltage(cell, 3.05))
    expect(alarm).to_have_count(0, timeout=ONE_POLL_MS)


def _themes_and_phone(ui: Ui, card: Locator) -> None:
    from playwright.sync_api import expect

    bars = _bars(card)
    # --- dark theme -------------------------------------------------------------
    light_background = card.locator("ha-card").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    ui.page.emulate_media(color_scheme="dark")
    ui.page.wait_for_timeout(500)
    dark_background = card.locator("ha-card").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert dark_background != light_background, dark_background
    expect(bars).to_have_count(CELLS)
    ui.shot("card-dark", card)
    ui.shot("dashboard-dark")
    ui.page.emulate_media(color_scheme="light")

    # --- phone width ----------------------------------------------------------
    ui.page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    ui.page.wait_for_timeout(500)
    expect(bars).to_have_count(CELLS)
    box = card.bounding_box()
    assert box is not None
    assert box["width"] <= PHONE["width"], box
    last = bars.nth(CELLS - 1).bounding_box()
    assert last is not None
    assert last["x"] + last["width"] <= box["x"] + box["width"], (last, box)
    ui.shot("phone")
    ui.page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]


def _unavailable_while_off(ui: Ui, card: Locator) -> None:
    from playwright.sync_api import expect

    bars = _bars(card)
    # --- unavailable while the balancer is off ---------------------------------
    ui.thread.stop()
    expect(card.locator(".message.unavailable")).to_be_visible(timeout=45_000)
    expect(bars).to_have_count(0)
    ui.shot("unavailable", card)
    ui.thread.serve()
    expect(bars).to_have_count(CELLS, timeout=45_000)
