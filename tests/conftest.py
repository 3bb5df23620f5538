"""Shared test set-up.

The Home Assistant test harness blocks sockets in every test. The virtual
balancer's servers and the clients under test use real loopback TCP sockets,
so sockets are allowed again; every server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _allow_loopback_sockets(socket_enabled: None) -> None:
    """Allow real sockets (the servers under test listen on loopback only)."""
