"""Fixtures: a virtual balancer on a real TCP socket and a config entry for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.active_balancer.const import (
    CONF_BAUDRATE,
    CONF_PORT,
    CONF_PROTOCOL,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DOMAIN,
    TRANSPORT_SERIAL,
)
from custom_components.active_balancer.protocol import Chemistry
from custom_components.active_balancer.protocol.virtual import (
    VirtualBalancer,
    VirtualServer,
    serve_tcp,
)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Load the integration from custom_components/."""


@pytest.fixture(autouse=True)
def fast_links(monkeypatch: pytest.MonkeyPatch) -> Generator[None]:
    """Short timeouts so that a silent device fails fast in tests."""
    from custom_components.active_balancer.protocol import link, serial

    original_serial = serial.SerialLink.__init__

    def serial_init(self: serial.SerialLink, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("base_timeout", 0.2)
        original_serial(self, *args, **kwargs)

    monkeypatch.setattr(serial.SerialLink, "__init__", serial_init)
    original_bus = link.Bus.__init__

    def bus_init(self: link.Bus, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("settle", 0.02)
        original_bus(self, *args, **kwargs)

    monkeypatch.setattr(link.Bus, "__init__", bus_init)
    yield


@pytest.fixture
def cells() -> int:
    """Number of cells of the virtual balancer."""
    return 16


@pytest.fixture
def balancer(cells: int) -> VirtualBalancer:
    """A virtual LFP balancer with a slightly unbalanced pack."""
    voltages = [3.300 + 0.002 * (i % 4) for i in range(cells)]
    return VirtualBalancer(cells, Chemistry.LFP, cell_voltages=voltages)


@pytest.fixture
async def server(balancer: VirtualBalancer) -> AsyncIterator[VirtualServer]:
    """The virtual balancer served on a loopback TCP port."""
    async with await serve_tcp(balancer) as srv:
        yield srv


def serial_entry_data(url: str, variant: str = "d2", address: int = 1) -> dict[str, Any]:
    """Entry data for a serial balancer at *url*."""
    return {
        CONF_TRANSPORT: TRANSPORT_SERIAL,
        CONF_PORT: url,
        CONF_BAUDRATE: 9600,
        CONF_PROTOCOL: "auto",
        CONF_RS485_ADDRESS: address,
        CONF_VARIANT: variant,
    }


@pytest.fixture
def entry(hass: HomeAssistant, server: VirtualServer) -> MockConfigEntry:
    """A config entry for the served balancer."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Balancer 16S",
        data=serial_entry_data(server.url),
        unique_id="virtual-1",
    )
    entry.add_to_hass(hass)
    return entry


async def setup_entry(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Set up *entry* and wait until everything settled."""
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
