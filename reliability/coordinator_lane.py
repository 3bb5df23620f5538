"""The soak's coordinator lane, run through the Home Assistant test harness.

``scripts/soak`` runs this module with pytest in a subprocess (it is not
under ``tests/``, so the normal test run does not collect it)::

    SOAK_COORDINATOR_POLLS=5000 SOAK_REPORT=out.json \\
        python -m pytest reliability/coordinator_lane.py

The Home Assistant coordinator and its entities poll a virtual balancer
behind a loopback ``socket://`` gateway while faults fire and writes run
through the entities' actions; the lane's report goes to ``SOAK_REPORT``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, flush_store

from balancer_tools.ha_helpers import bus_timings
from custom_components.active_balancer.const import (
    CONF_BAUDRATE,
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DOMAIN,
    TRANSPORT_SERIAL,
)

from . import soak


@pytest.fixture(autouse=True)
def _integration(enable_custom_integrations: None, socket_enabled: None) -> None:
    """Load custom_components/ and allow the loopback gateway's socket."""


@pytest.fixture
def report_path() -> Path:
    """Where the lane's report goes."""
    path = os.environ.get(soak.ENV_REPORT)
    if path is None:
        pytest.fail(f"run by scripts/soak, which sets {soak.ENV_REPORT}")
    return Path(path)


async def test_coordinator_lane(hass: HomeAssistant, report_path: Path) -> None:
    """Run the lane at the size asked for; write its report; meet the targets."""
    # The harness turns the event loop's debug mode on; it makes every step
    # several times slower, which the soak would see as a slow line.
    asyncio.get_running_loop().set_debug(False)
    config, polls = soak.config_from_env(os.environ)
    balancer, server = await soak.serve_coordinator_balancer(config.seed)
    try:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="Balancer 16S",
            data={
                CONF_TRANSPORT: TRANSPORT_SERIAL,
                CONF_PORT: server.url,
                CONF_BAUDRATE: 9600,
                CONF_RS485_ADDRESS: 1,
                CONF_VARIANT: "d2",
            },
            unique_id="soak-1",
        )
        entry.add_to_hass(hass)
        # The lane's waiting times, for the bus the integration creates.
        with bus_timings(config.timings):
            assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        # Registries save 10 s after a change: save now, not during the run.
        await flush_store(er.async_get(hass)._store)
        await flush_store(dr.async_get(hass)._store)
        entities = soak.writable_entities(hass, entry.entry_id)
        # The enabled write paths: three numbers and both switches.
        assert {"balancer", "sleep", "balance_delta_voltage"} <= set(entities)
        stats, process = await soak.run_coordinator_soak(
            hass=hass,
            coordinator=entry.runtime_data,
            balancer=balancer,
            config=config,
            polls=polls,
            entities=entities,
            server=server,
        )
        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.NOT_LOADED
    finally:
        await server.close()
    partial = soak.lanes_report(stats, process)
    await hass.async_add_executor_job(
        report_path.write_text, json.dumps(partial), "utf-8"
    )
    report = soak.summarise(config, partial["lanes"], partial["processes"], seconds=0)
    assert not soak.failed_targets(report)
