"""The cell view card: served from the integration's folder, added once per run."""

from __future__ import annotations

from collections.abc import Iterator
from unittest.mock import patch

from homeassistant.components.frontend import DATA_EXTRA_MODULE_URL, UrlManager
from homeassistant.components.http import HomeAssistantHTTP
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from balancer_tools.simulator import (
    VirtualBalancer,
    serve_tcp,
)
from custom_components.active_balancer import card
from custom_components.active_balancer.card import CARD_PATH, CARD_URL
from custom_components.active_balancer.const import DOMAIN
from custom_components.active_balancer.protocol import Chemistry

from .conftest import serial_entry_data, setup_entry


@pytest.fixture
def loaded_frontend(hass: HomeAssistant) -> UrlManager:
    """The frontend's list of extra modules, as the frontend sets it up.

    The test harness has no frontend build (hass_frontend), so the frontend
    component itself cannot be set up; its own UrlManager stands in for it.
    The browser test (tests/e2e/test_card.py) runs the real one.
    """
    modules = UrlManager(lambda *_: None, [])
    hass.data[DATA_EXTRA_MODULE_URL] = modules
    hass.config.components.add("frontend")
    return modules


@pytest.fixture
def registrations() -> Iterator[list[str]]:
    """Every static path the integration registers, in order."""
    calls: list[str] = []
    original = HomeAssistantHTTP.async_register_static_paths

    async def record(
        self: HomeAssistantHTTP, configs: list[card.StaticPathConfig]
    ) -> None:
        calls.extend(config.url_path for config in configs)
        await original(self, configs)

    with patch.object(HomeAssistantHTTP, "async_register_static_paths", record):
        yield calls


def _ours(modules: UrlManager) -> list[str]:
    return [url for url in modules.urls if url.startswith(CARD_URL)]


async def test_registered_once_per_run_and_kept(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    loaded_frontend: UrlManager,
    hass_client: ClientSessionGenerator,
) -> None:
    """Two entries add the card once; removing one of them keeps it."""
    added: list[str] = []

    def add(_hass: HomeAssistant, url: str) -> None:
        added.append(url)
        loaded_frontend.add(url)

    with patch.object(card, "add_extra_js_url", side_effect=add):
        async with await serve_tcp(VirtualBalancer(8, Chemistry.LFP)) as second:
            await setup_entry(hass, entry)
            other = MockConfigEntry(
                domain=DOMAIN,
                title="Balancer 8S",
                data=serial_entry_data(second.url),
                unique_id="virtual-2",
            )
            other.add_to_hass(hass)
            await setup_entry(hass, other)
            assert len(hass.config_entries.async_entries(DOMAIN)) == 2

            assert len(added) == 1
            assert _ours(loaded_frontend) == added

            assert await hass.config_entries.async_remove(entry.entry_id)
            await hass.async_block_till_done()
            assert _ours(loaded_frontend) == added

            client = await hass_client()
            response = await client.get(added[0])
            assert response.status == 200
            assert "javascript" in response.headers["Content-Type"]
            assert await response.read() == CARD_PATH.read_bytes()
            await hass.config_entries.async_unload(other.entry_id)


async def test_static_path_registered_once(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    loaded_frontend: UrlManager,
    registrations: list[str],
) -> None:
    """Reloading the entry registers no second route (aiohttp would refuse)."""
    await setup_entry(hass, entry)
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    await card.async_register_card(hass)
    assert registrations == [CARD_URL]
    assert len(_ours(loaded_frontend)) == 1


async def test_url_changes_with_the_file(
    hass: HomeAssistant, entry: MockConfigEntry, loaded_frontend: UrlManager
) -> None:
    """The module URL carries the file's hash: an updated card is not cached."""
    await setup_entry(hass, entry)
    (url,) = _ours(loaded_frontend)
    assert url == f"{CARD_URL}?v={card._version(CARD_PATH)}"
    assert card._version(CARD_PATH) != card._version(
        CARD_PATH.parent.parent / "manifest.json"
    )


async def test_served_without_frontend(
    hass: HomeAssistant, entry: MockConfigEntry, hass_client: ClientSessionGenerator
) -> None:
    """Without the frontend the card is still served; nothing fails."""
    await setup_entry(hass, entry)
    assert DATA_EXTRA_MODULE_URL not in hass.data
    client = await hass_client()
    response = await client.get(CARD_URL)
    assert response.status == 200
    body = await response.text()
    assert "customElements.define(CARD" in body
    assert "window.customCards" in body
