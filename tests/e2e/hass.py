"""A real Home Assistant process for end-to-end tests, and a client for it.

:class:`HassProcess` writes a configuration folder (loopback HTTP on a free
port, ``custom_components`` linked to this repository's integration), starts
``hass`` in a subprocess, waits until its HTTP API answers, creates the owner
account through onboarding like the frontend does, and stops the process at
the end. :class:`HassProcess` also talks to the running instance: REST calls
with the owner's access token and one-shot WebSocket commands.

Every wait is bounded: :func:`wait_for` raises once its time is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
import json
import os
from pathlib import Path
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import aiohttp
import requests

from .http_config import http_yaml, write_http_store

REPO = Path(__file__).resolve().parents[2]
INTEGRATION = REPO / "custom_components" / "active_balancer"
ARTIFACTS = REPO / "artifacts" / "e2e"

STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
HTTP_TIMEOUT = 30.0

OWNER_NAME = "E2E Owner"
OWNER_USERNAME = "owner"
OWNER_PASSWORD = "e2e-password"

# Only the integrations the tests need; Home Assistant 2025.4 sets up its
# default ones (frontend, automation, person, backup, ...) by itself anyway.
BASE_CONFIGURATION = """\
homeassistant:
  name: Balancer e2e
  unit_system: metric
  time_zone: UTC
  country: DE
  currency: EUR
  language: en
  latitude: 52.52
  longitude: 13.40
  elevation: 34
{http}api:
config:
onboarding:
automation: !include automations.yaml
logger:
  default: info
  logs:
    custom_components.active_balancer: debug
"""


ONBOARDING_DOMAINS = frozenset(
    {"google_translate", "met", "radio_browser", "shopping_list"}
)
ONBOARDING_ENTRIES = frozenset({"google_translate", "shopping_list"})
LOG_RECORD = re.compile(
    # 2026.x adds the UTC offset to the time stamp.
    r"^\d{4}-\d\d-\d\d [\d:.]+(?:[+-]\d\d:\d\d)? (\w+) \([^)]*\) \[([^\]]+)\]"
)
PROBLEM_MARKERS = (
    "Traceback",
    "Task exception was never retrieved",
    "was never awaited",
    "Unclosed",
    "Detected blocking call",
    "Detected that custom integration",
    "Detected code that",
)


class StartupError(RuntimeError):
    """Home Assistant did not come up."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something listens on 127.0.0.1:*port*."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for[T](
    probe: Callable[[], T | None],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.25,
) -> T:
    """Call *probe* until it returns something truthy; fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except (AssertionError, requests.RequestException, OSError) as err:
            last_error = err
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            msg = f"timed out after {timeout:g} s waiting for {what}{detail}"
            raise TimeoutError(msg)
        time.sleep(interval)


def hass_command() -> list[str]:
    """The ``hass`` launcher of this virtualenv."""
    launcher = Path(sys.executable).with_name("hass")
    if launcher.exists():
        return [str(launcher)]
    return [sys.executable, "-m", "homeassistant"]


class HassProcess:
    """One Home Assistant instance in a subprocess, on 127.0.0.1."""

    def __init__(self, config_dir: Path, name: str) -> None:
        """Prepare a configuration folder in *config_dir* (created)."""
        self.config_dir = config_dir
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = f"{self.url}/"
        self.process: subprocess.Popen[bytes] | None = None
        self.token: str | None = None
        self.session = requests.Session()
        self._console: Any = None

    # --- process ----------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """Home Assistant's own log file."""
        return self.config_dir / "home-assistant.log"

    @property
    def automations_path(self) -> Path:
        """The automations.yaml that configuration.yaml includes."""
        return self.config_dir / "automations.yaml"

    def write_config(self) -> None:
        """Write configuration.yaml, an empty automations.yaml and the link."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            BASE_CONFIGURATION.format(http=http_yaml(self.port)), encoding="utf-8"
        )
        write_http_store(self.config_dir, self.port)
        self.automations_path.write_text("[]\n", encoding="utf-8")
        custom = self.config_dir / "custom_components"
        custom.mkdir(exist_ok=True)
        link = custom / "active_balancer"
        if not link.exists():
            link.symlink_to(INTEGRATION, target_is_directory=True)

    def start(self) -> None:
        """Start ``hass`` and wait until its HTTP API answers."""
        self.write_config()
        self._console = (self.config_dir / "console.log").open("wb")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self.process = subprocess.Popen(  # noqa: S603 - our own fixed command
            [
                *hass_command(),
                "--config",
                str(self.config_dir),
                "--skip-pip",
                "--log-no-color",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            cwd=self.config_dir,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for(self._api_answers, "Home Assistant's HTTP API", STARTUP_TIMEOUT)
        except TimeoutError as err:
            raise StartupError(f"{err}\n{self.log_tail()}") from err

    def _api_answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            msg = f"hass exited with {self.process.returncode}\n{self.log_tail()}"
            raise StartupError(msg)
        # Needs no token (a request without one would raise a "login attempt
        # failed" notification) and tells the onboarding views are up.
        response = self.session.get(f"{self.url}/api/onboarding", timeout=5)
        return bool(response.status_code == 200)

    def stop(self) -> int:
        """Stop ``hass`` (SIGTERM, then SIGKILL); return its exit code."""
        self.session.close()
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if self._console is not None:
            self._console.close()
        return process.returncode

    def save_logs(self) -> None:
        """Copy the logs to artifacts/e2e/ (for a failed CI run)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for source, suffix in (
            (self.log_path, "home-assistant.log"),
            (self.config_dir / "console.log", "console.log"),
        ):
            if source.exists():
                shutil.copyfile(source, ARTIFACTS / f"{self.name}-{suffix}")

    def log_text(self) -> str:
        """Home Assistant's log so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[str]:
        """The log, one string per record (a traceback stays with its record)."""
        records: list[str] = []
        for line in self.log_text().splitlines():
            if LOG_RECORD.match(line) or not records:
                records.append(line)
            else:
                records[-1] += "\n" + line
        return records

    def integration_problems(self) -> list[str]:
        """Log records that show a problem in this integration.

        Errors of the integration's own loggers, except the coordinator's
        "Error fetching" while the balancer is off on purpose (and the
        "Full error:" traceback that current Home Assistant adds to it
        at debug level), and any record naming the integration with a
        traceback or an asyncio/HA warning.
        """
        problems = []
        after_fetch_error = False
        for record in self.log_records():
            match = LOG_RECORD.match(record)
            level, logger = (match.group(1), match.group(2)) if match else ("", "")
            ours = logger.startswith("custom_components.active_balancer")
            fetch_error = ours and level == "ERROR" and "Error fetching" in record
            full_error = (
                after_fetch_error
                and ours
                and level == "DEBUG"
                and record.split("\n", 1)[0].endswith("Full error:")
            )
            after_fetch_error = fetch_error
            if fetch_error or full_error:
                continue
            if (ours and level in ("ERROR", "CRITICAL")) or (
                "active_balancer" in record
                and any(marker in record for marker in PROBLEM_MARKERS)
            ):
                problems.append(record)
        return problems

    def log_tail(self, lines: int = 60) -> str:
        """The end of the console output (startup errors land there first)."""
        path = self.config_dir / "console.log"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    # --- onboarding and auth ------------------------------------------------

    def onboard(
        self,
        *,
        finish: bool = False,
        name: str = OWNER_NAME,
        username: str = OWNER_USERNAME,
        password: str = OWNER_PASSWORD,
    ) -> str:
        """Create the owner like the onboarding UI does; return an access token.

        With *finish*, also finish the other onboarding steps, so that the
        frontend opens on the normal login page and dashboard. (Finishing
        makes Home Assistant start the flows of its onboarding integrations:
        met, radio_browser, google_translate fail for want of their
        requirements under --skip-pip and only log errors.)
        """
        response = self.session.post(
            f"{self.url}/api/onboarding/users",
            json={
                "client_id": self.client_id,
                "name": name,
                "username": username,
                "password": password,
                "language": "en",
            },
            timeout=HTTP_TIMEOUT,
        )
        response.raise_for_status()
        self.token = self.token_from_code(response.json()["auth_code"])
        if not finish:
            return self.token
        self.post("/api/onboarding/core_config", {})
        self.post("/api/onboarding/analytics", {})
        self.post(
            "/api/onboarding/integration",
            {
                "client_id": self.client_id,
                "redirect_uri": f"{self.url}/?auth_callback=1",
            },
        )
        steps = self.session.get(f"{self.url}/api/onboarding", timeout=HTTP_TIMEOUT)
        steps.raise_for_status()
        assert all(step["done"] for step in steps.json()), steps.json()
        self._remove_onboarding_entries()
        return self.token

    def token_from_code(self, code: str) -> str:
        """Trade an authorization code (onboarding, login flow) for a token."""
        response = self.session.post(
            f"{self.url}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": self.client_id,
            },
            timeout=HTTP_TIMEOUT,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def _remove_onboarding_entries(self) -> None:
        """Delete the entries onboarding created, so only ours are left.

        Finishing onboarding starts flows for met, radio_browser,
        google_translate and shopping_list; under --skip-pip only the last
        two get an entry (google_translate's fails to set up).
        """

        def created() -> list[dict[str, Any]] | None:
            entries = self.get("/api/config/config_entries/entry")
            domains = {entry["domain"] for entry in entries}
            return entries if domains >= ONBOARDING_ENTRIES else None

        try:
            entries = wait_for(created, "the onboarding entries", 15.0)
        except TimeoutError:
            entries = self.get("/api/config/config_entries/entry")
        for entry in entries:
            if entry["domain"] in ONBOARDING_DOMAINS:
                self.delete(f"/api/config/config_entries/entry/{entry['entry_id']}")

    # --- REST -------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        assert self.token is not None, "onboard() first"
        return {"Authorization": f"Bearer {self.token}"}

    def request(
        self, method: str, path: str, body: Any = None, *, expect: int = 200
    ) -> Any:
        """Call the REST API; check the status and return the JSON body."""
        response = self.session.request(
            method,
            f"{self.url}{path}",
            headers=self._headers(),
            json=body,
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == expect, (
            f"{method} {path} -> {response.status_code}: {response.text[:2000]}"
        )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str) -> Any:
        """GET *path*."""
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, *, expect: int = 200) -> Any:
        """POST *body* as JSON to *path*."""
        return self.request("POST", path, body, expect=expect)

    def delete(self, path: str) -> Any:
        """DELETE *path*."""
        return self.request("DELETE", path)

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The state object of *entity_id*, or None when it has none."""
        response = self.session.get(
            f"{self.url}/api/states/{entity_id}",
            headers=self._headers(),
            timeout=HTTP_TIMEOUT,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def value(self, entity_id: str) -> str:
        """The state of *entity_id* ("on", "3.280", "unavailable", ...)."""
        state = self.state(entity_id)
        assert state is not None, f"{entity_id} has no state"
        return str(state["state"])

    def attributes(self, entity_id: str) -> dict[str, Any]:
        """The attributes of *entity_id*."""
        state = self.state(entity_id)
        assert state is not None, f"{entity_id} has no state"
        return dict(state["attributes"])

    def states(self) -> dict[str, dict[str, Any]]:
        """Every state, by entity id."""
        return {state["entity_id"]: state for state in self.get("/api/states")}

    def call_service(self, domain: str, service: str, data: dict[str, Any]) -> Any:
        """Call a service (action) and wait until it has run."""
        return self.post(f"/api/services/{domain}/{service}", data)

    def wait_state(
        self,
        entity_id: str,
        predicate: Callable[[str], bool] | str,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until *entity_id*'s state matches; return the state object."""
        check = predicate if callable(predicate) else predicate.__eq__

        def probe() -> dict[str, Any] | None:
            state = self.state(entity_id)
            return state if state is not None and check(state["state"]) else None

        what = predicate if isinstance(predicate, str) else "the expected state"
        return wait_for(probe, f"{entity_id} to be {what}", timeout)

    # --- WebSocket ------------------------------------------------------------

    def ws(self, command: str, **payload: Any) -> Any:
        """Send one WebSocket command; check it succeeded and return its result."""
        message = self.ws_message(command, **payload)
        assert message["success"], json.dumps(message)
        return message["result"]

    def ws_message(self, command: str, **payload: Any) -> dict[str, Any]:
        """Send one WebSocket command and return the whole result message."""
        return asyncio.run(self._ws(command, payload))

    async def _ws(self, command: str, payload: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.ws_connect(f"{self.url}/api/websocket") as socket_,
        ):
            hello = await socket_.receive_json()
            assert hello["type"] == "auth_required", hello
            await socket_.send_json({"type": "auth", "access_token": self.token})
            auth = await socket_.receive_json()
            assert auth["type"] == "auth_ok", auth
            await socket_.send_json({"id": 1, "type": command, **payload})
            while True:
                message: dict[str, Any] = await socket_.receive_json()
                if message.get("id") == 1 and message["type"] == "result":
                    return message

    def entities_of(self, entry_id: str) -> dict[str, str]:
        """Entity ids of a config entry, by the key their unique id ends with.

        The unique id is ``<entry unique id>-<key>``, e.g. ``...-cell_1_voltage``.
        """
        entries = [
            entity
            for entity in self.ws("config/entity_registry/list")
            if entity["config_entry_id"] == entry_id
        ]
        return {
            entity["unique_id"].rsplit("-", 1)[-1]: entity["entity_id"]
            for entity in entries
        }


def config_yaml(text: str) -> str:
    """Dedent a YAML snippet."""
    return textwrap.dedent(text).lstrip()
