"""Fixtures of the reliability tests.

Protocol-level tests need no Home Assistant; the tests that drive the
integration ask for ``integration`` (which loads custom_components/).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import os
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from balancer_tools.simulator import (
    VirtualBalancer,
    VirtualServer,
    serve_tcp,
)
from custom_components.active_balancer.const import (
    CONF_BAUDRATE,
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DOMAIN,
    TRANSPORT_SERIAL,
)
from custom_components.active_balancer.protocol import Chemistry, Timings


@pytest.fixture
def integration(enable_custom_integrations: None) -> None:
    """Load the integration from custom_components/."""


@pytest.fixture
def timings() -> Timings:
    """Short waits for the buses the integration creates (``short_timings``).

    A loopback line carries bytes at once, hence the short byte time; late
    answers are awaited a little longer than in the component tests.
    """
    return Timings(serial_timeout=0.1, settle=0.01, late_window=0.2, byte_time=1e-4)


@pytest.fixture
def balancer() -> VirtualBalancer:
    """A virtual 16-cell LFP balancer, 40 mV spread (balancing runs)."""
    voltages = [round(3.30 + 0.04 * i / 15, 3) for i in range(16)]
    return VirtualBalancer(16, Chemistry.LFP, cell_voltages=voltages)


@pytest.fixture
async def server(balancer: VirtualBalancer) -> AsyncIterator[VirtualServer]:
    """The balancer behind a loopback ``socket://`` gateway."""
    async with await serve_tcp(balancer) as srv:
        yield srv


def serial_data(url: str, variant: str = "d2", address: int = 1) -> dict[str, Any]:
    """Config entry data of a serial balancer at *url*."""
    return {
        CONF_TRANSPORT: TRANSPORT_SERIAL,
        CONF_PORT: url,
        CONF_BAUDRATE: 9600,
        CONF_RS485_ADDRESS: address,
        CONF_VARIANT: variant,
    }


@pytest.fixture
async def entry(
    hass: HomeAssistant, integration: None, short_timings: None, server: VirtualServer
) -> AsyncIterator[MockConfigEntry]:
    """A set-up config entry for the served balancer; unloaded at the end."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Balancer 16S",
        data=serial_data(server.url),
        unique_id="reliability-1",
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


def open_fds() -> int:
    """Descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))
