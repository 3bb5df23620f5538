"""Shared test set-up.

The Home Assistant test harness blocks sockets in every test. The virtual
balancer's servers and the clients under test use real loopback TCP sockets,
so sockets are allowed again; every server binds to 127.0.0.1 only.

The fixtures below wrap ``balancer_tools/ha_helpers.py``; they import it (and with it the
integration) only when asked for: tests/e2e must import the integration only
after their own conftest has configured pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from custom_components.active_balancer.protocol import Timings


@pytest.fixture(autouse=True)
def _allow_loopback_sockets(socket_enabled: None) -> None:
    """Allow real sockets (the servers under test listen on loopback only)."""


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Create every entity enabled, also those disabled by default."""
    from balancer_tools.ha_helpers import all_entities_enabled

    with all_entities_enabled():
        yield


@pytest.fixture
def timings() -> Timings:
    """The waiting times of the buses the integration creates in a test.

    Short ones, for a virtual balancer on loopback; a test module that needs
    others overrides this fixture.
    """
    from balancer_tools.ha_helpers import FAST_TIMINGS

    return FAST_TIMINGS


@pytest.fixture
def short_timings(timings: Timings) -> Iterator[None]:
    """The buses the integration creates wait for ``timings``, not the defaults."""
    from balancer_tools.ha_helpers import bus_timings

    with bus_timings(timings):
        yield
