"""Port names in messages never carry credentials."""

from __future__ import annotations

import pytest

from custom_components.active_balancer.protocol.serial import redact_port


@pytest.mark.parametrize(
    ("port", "shown"),
    [
        ("/dev/ttyUSB0", "/dev/ttyUSB0"),
        ("COM3", "COM3"),
        ("socket://192.168.1.50:4001", "socket://192.168.1.50:4001"),
        ("rfc2217://user:secret@gateway.lan:4001", "rfc2217://gateway.lan:4001"),
        ("esphome://proxy.local:6053/?key=c2VjcmV0", "esphome://proxy.local:6053/"),
        ("socket://[::1]:4001", "socket://[::1]:4001"),
    ],
)
def test_redact_port(port: str, shown: str) -> None:
    """Passwords and query strings (noise keys) are dropped, the rest kept."""
    assert redact_port(port) == shown
