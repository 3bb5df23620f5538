"""Fixtures of the end-to-end tests: a Home Assistant process, a virtual balancer.

Both are module-scoped: each test module gets its own Home Assistant (its own
temporary configuration folder and port) and its own virtual balancer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .hass import HassProcess, port_open
from .virtual import BalancerThread

if TYPE_CHECKING:
    from balancer_tools.simulator import VirtualBalancer

CELLS = 16
SPREAD_MV = 40
"""16 LFP cells spread over 40 mV: above the 3.2 V start voltage and the 20 mV
delta of the defaults, so the balancer reports that it balances."""


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run inside the Home Assistant test harness."""
    if config.pluginmanager.has_plugin("homeassistant"):
        msg = (
            "tests/e2e start a real Home Assistant process and must run without "
            "the harness plugin: pytest -p no:homeassistant tests/e2e "
            "(scripts/test does this)"
        )
        raise pytest.UsageError(msg)
    # Importing the integration imports Home Assistant's http component, which
    # warns about its own aiohttp subclass (the harness hides it in run 1). So
    # this conftest and virtual.py import the integration only after this.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Inheritance class HomeAssistantApplication:DeprecationWarning",
    )


@pytest.fixture(scope="module")
def balancer() -> VirtualBalancer:
    """16 LFP cells, 40 mV apart at most: balancing runs.

    The charge transfer is switched off (``volts_per_amp_second=0``) so that
    the cell voltages stay exactly where the test puts them.
    """
    # Imported here, after pytest_configure: see the warning filter there.
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
def balancer_thread(balancer: VirtualBalancer) -> Iterator[BalancerThread]:
    """The virtual balancer on a loopback TCP port (served from a thread)."""
    thread = BalancerThread(balancer)
    thread.start()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="module")
def hass(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HassProcess]:
    """A running Home Assistant with an owner account (``hass.token``).

    A test module that sets ``FINISH_ONBOARDING = True`` gets an instance
    whose onboarding is finished (for the browser).
    """
    name = request.module.__name__.rsplit(".", 1)[-1]
    instance = HassProcess(tmp_path_factory.mktemp(f"hass-{name}"), name)
    try:
        instance.start()
        instance.onboard(finish=getattr(request.module, "FINISH_ONBOARDING", False))
        yield instance
    finally:
        code = instance.stop()
        instance.save_logs()
    assert instance.process is not None
    assert instance.process.poll() is not None, "hass is still running"
    assert not port_open(instance.port), f"port {instance.port} still open"
    assert code == 0, f"hass did not stop cleanly (exit code {code})"
