"""Headless Chromium for the browser tests.

Debian's ``chromium`` (``scripts/setup-browser`` installs it), driven by
Playwright, which never downloads a browser of its own here. The flags keep
Chromium off the network: this machine reaches no host but the package
registries, and Chromium would otherwise try Google's services at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import os
from pathlib import Path
import re
from typing import TYPE_CHECKING, Any

import pytest

from .hass import OWNER_PASSWORD, OWNER_USERNAME

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

    from balancer_tools.simulator import VirtualBalancer

    from .hass import HassProcess
    from .virtual import BalancerThread

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
UI_TIMEOUT_MS = 30_000


def open_page(context: BrowserContext) -> tuple[Page, list[str]]:
    """A new page, with what its console and its uncaught errors print.

    Also waits up to :data:`UI_TIMEOUT_MS` in every ``expect`` (Home
    Assistant's frontend loads slowly the first time).
    """
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    page = context.new_page()
    console: list[str] = []
    page.on(
        "console", lambda message: console.append(f"{message.type}: {message.text}")
    )
    page.on(
        "pageerror",
        lambda error: console.append(f"pageerror: {error.message}\n{error.stack}"),
    )
    return page, console


def chromium_context(profile: Path, **options: Any) -> Iterator[BrowserContext]:
    """A fresh headless Chromium profile in *profile* (for a module fixture).

    Skips the test, with the reason, where Chromium is not installed.
    """
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's chromium "
            "(scripts/setup-browser does, as root with apt-get)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,  # type: ignore[arg-type]
            locale="en-US",
            timezone_id="UTC",
            **options,
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


class Shots:
    """Numbered screenshots of a page into a folder."""

    def __init__(self, page: Page, folder: Path) -> None:
        """Take screenshots of *page* into *folder*."""
        self.page = page
        self.folder = folder
        self.count = 0

    def __call__(self, name: str, target: Locator | None = None) -> Path:
        """Save the page (or *target*) as NN-name.png."""
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        (target or self.page).screenshot(path=path)
        return path


def entity_row(card: Locator, name: str) -> Locator:
    """The entity row of *card* (a device page card) whose name is *name*."""
    return card.locator(
        "hui-sensor-entity-row, hui-simple-entity-row, hui-toggle-entity-row, "
        "hui-number-entity-row",
        has=card.page.get_by_text(name, exact=True),
    )


@dataclass
class Ui:
    """What the steps of a browser test work with."""

    hass: HassProcess
    thread: BalancerThread
    balancer: VirtualBalancer
    page: Page
    shot: Shots


def log_in(ui: Ui, *, shot: str | None = None) -> None:
    """Log in as the owner and wait for the dashboard and its sidebar.

    *shot* names a screenshot of the filled-in login form.
    """
    from playwright.sync_api import expect

    page = ui.page
    page.goto(ui.hass.url)
    page.locator("input[name=username]").fill(OWNER_USERNAME)
    page.locator("input[name=password]").fill(OWNER_PASSWORD)
    if shot is not None:
        ui.shot(shot)
    page.get_by_role("button", name="Log in").click()
    # 2025.4 opens /lovelace/0, 2026.x the new /home dashboard.
    page.wait_for_url(re.compile(r"/(lovelace|home)(/|$)"))
    expect(
        page.locator("ha-sidebar").get_by_text("Settings", exact=True)
    ).to_be_visible()
    page.wait_for_load_state("networkidle")
