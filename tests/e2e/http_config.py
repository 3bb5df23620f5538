"""Loopback-only HTTP settings for a Home Assistant started by a test or develop.

In older releases the ``http:`` block of configuration.yaml holds them.
From 2026.10 on, Home Assistant keeps them in ``.storage/http``: it
migrates a YAML block once, as a *trial* that reverts to the defaults (every
interface, port 8123) after five minutes unless someone confirms it in the
UI. A test instance must never do that, so there the settings are written
straight into the store as the confirmed ("stable") configuration, the way
Home Assistant itself stores a confirmed one, and configuration.yaml has no
``http:`` block.
"""

from __future__ import annotations

from datetime import UTC, datetime
import json
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def _http_store() -> Any:
    """Home Assistant's HTTP settings store module, or None where YAML is used."""
    try:
        from homeassistant.components.http import config as http_config
    except ImportError:
        return None
    return http_config if hasattr(http_config, "HTTP_STORAGE_SCHEMA") else None


def http_yaml(port: int) -> str:
    """The configuration.yaml block for *port* (empty where the store is used)."""
    if _http_store() is not None:
        return ""
    return f"http:\n  server_host: {HOST}\n  server_port: {port}\n"


def write_http_store(config_dir: Path, port: int) -> None:
    """Write ``.storage/http`` with loopback-only, confirmed settings."""
    http_config = _http_store()
    if http_config is None:
        return
    schema = http_config.HTTP_STORAGE_SCHEMA
    stable = dict(schema({"server_host": [HOST], "server_port": port}))
    for key, value in stable.items():  # enums (the SSL profile) as stored
        stable[key] = getattr(value, "value", value)
    stable.update(
        created_at=datetime.now(UTC).isoformat(), error=None, error_message=None
    )
    document = {
        "version": http_config.STORAGE_VERSION,
        "minor_version": http_config.STORAGE_MINOR_VERSION,
        "key": http_config.STORAGE_KEY,
        "data": {"stable": stable, "pending": None, "yaml_migration_done": True},
    }
    storage = config_dir / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "http").write_text(json.dumps(document, indent=2), encoding="utf-8")


if __name__ == "__main__":
    import sys

    # python -m tests.e2e.http_config CONFIG-DIR PORT  (used by scripts/develop)
    write_http_store(Path(sys.argv[1]), int(sys.argv[2]))
