"""The cell view card: served from this folder, added to the frontend once.

The card's file ships inside the integration (``frontend/``), so HACS installs
it with the integration and the user never adds a dashboard resource. The
static route and the frontend's extra module are registered once per Home
Assistant run (an aiohttp route cannot be registered twice, nor removed): the
first entry to be set up registers them, later entries and unloads leave them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from homeassistant.components.frontend import add_extra_js_url

# Re-exported since 2024.7; listed in __all__ only from 2026.11 on.
from homeassistant.components.http import (  # type: ignore[attr-defined,unused-ignore]
    StaticPathConfig,
)
from homeassistant.core import HomeAssistant
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN

CARD_FILE: Final = "active-balancer-cells.js"
CARD_PATH: Final = Path(__file__).parent / "frontend" / CARD_FILE
CARD_URL: Final = f"/{DOMAIN}/{CARD_FILE}"
"""Where Home Assistant serves the card (no authentication, like all modules)."""

DATA_CARD_URL: HassKey[str] = HassKey(f"{DOMAIN}_card_url")
"""The module URL (with its cache-busting version) once registered."""


def _version(path: Path) -> str:
    """A short hash of the file: a new card is fetched anew, not from cache."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


async def async_register_card(hass: HomeAssistant) -> None:
    """Serve the card and add it to the frontend, unless done in this run."""
    if DATA_CARD_URL in hass.data:
        return
    # Claimed before the first await: two entries set up at once register once.
    hass.data[DATA_CARD_URL] = CARD_URL
    version = await hass.async_add_executor_job(_version, CARD_PATH)
    url = f"{CARD_URL}?v={version}"
    hass.data[DATA_CARD_URL] = url
    await hass.http.async_register_static_paths(
        [StaticPathConfig(CARD_URL, str(CARD_PATH), cache_headers=True)]
    )
    if "frontend" in hass.config.components:
        # An after-dependency: set up first when it is set up at all.
        add_extra_js_url(hass, url)
