"""Prepare the Home Assistant that scripts/develop started, like a user would.

    develop_setup.py --url http://127.0.0.1:8123 --balancer socket://127.0.0.1:4001
        --login FILE

1. Onboarding: creates the owner account (the frontend's own REST calls),
   finishes the other onboarding steps, and deletes the entries onboarding
   makes for integrations that cannot work here (offline, --skip-pip:
   google_translate, shopping_list; met and radio_browser fail and make none).
   The login is written to FILE (mode 600) and read back from it next time.
2. Adds the virtual balancer through the config flow (Serial > Enter a path or
   network URL > the socket:// URL), unless an entry for it exists.
3. Prints where to log in, with the user name and password.

It reuses the end-to-end tests' client (tests/e2e/hass.py). Runs with the
Python of .venv-hass (scripts/in-root .venv-hass/bin/python ...).
"""

from __future__ import annotations

import argparse
from http import HTTPStatus
import json
from pathlib import Path
import secrets
from typing import Any

from tests.e2e.hass import HTTP_TIMEOUT, HassProcess

DOMAIN = "active_balancer"
OWNER_NAME = "Developer"
OWNER_USERNAME = "dev"
DEVELOP_ISSUES = (
    ("homeassistant", "deprecated_method"),
    ("homeassistant", "country_not_configured"),
)


def _login(path: Path) -> dict[str, str]:
    """The owner's login: read back, or made up and stored (mode 600)."""
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return stored
    login = {"username": OWNER_USERNAME, "password": secrets.token_urlsafe(12)}
    path.touch(mode=0o600)
    path.write_text(json.dumps(login), encoding="utf-8")
    return login


def onboard(hass: HassProcess, login: dict[str, str]) -> None:
    """Create the owner and finish onboarding; leave an access token in *hass*.

    Finishing also deletes the entries onboarding makes for integrations that
    cannot work offline (a red "Failed to set up" card would be the first
    thing a newcomer sees).
    """
    hass.onboard(
        finish=True,
        name=OWNER_NAME,
        username=login["username"],
        password=login["password"],
    )


def log_in(hass: HassProcess, login: dict[str, str]) -> None:
    """Log in like the login page does (a kept configuration)."""
    response = hass.session.post(
        f"{hass.url}/auth/login_flow",
        json={
            "client_id": hass.client_id,
            "handler": ["homeassistant", None],
            "redirect_uri": f"{hass.url}/?auth_callback=1",
        },
        timeout=HTTP_TIMEOUT,
    )
    response.raise_for_status()
    flow_id = response.json()["flow_id"]
    response = hass.session.post(
        f"{hass.url}/auth/login_flow/{flow_id}",
        json={"client_id": hass.client_id, **login},
        timeout=HTTP_TIMEOUT,
    )
    response.raise_for_status()
    result = response.json()
    if result.get("type") != "create_entry":
        msg = f"could not log in as {login['username']}: {result}"
        raise SystemExit(msg)
    hass.token = hass.token_from_code(result["result"])


def hide_setup_notes(hass: HassProcess) -> None:
    """Hide the repairs about this development set-up, not about the balancer.

    The "Core" installation method and no country chosen. (The HTTP
    settings need no note: scripts/develop writes them as a confirmed
    configuration into .storage/http before every start.)
    """
    for domain, issue in DEVELOP_ISSUES:
        hass.ws_message(
            "repairs/ignore_issue", domain=domain, issue_id=issue, ignore=True
        )


def add_balancer(hass: HassProcess, url: str) -> dict[str, Any]:
    """Add the balancer at *url* through the config flow, as the dialog does."""
    flow = hass.post("/api/config/config_entries/flow", {"handler": DOMAIN})
    path = f"/api/config/config_entries/flow/{flow['flow_id']}"
    steps: list[dict[str, Any]] = [
        {"next_step_id": "serial"},
        {"port": "manual", "baudrate": "9600", "protocol": "auto", "rs485_address": 1},
        {"port": url},
    ]
    result: dict[str, Any] = flow
    for answer in steps:
        result = hass.post(path, answer)
        if result["type"] in ("abort", "create_entry"):
            break
    if result["type"] != "create_entry":
        msg = f"the config flow did not add the balancer: {json.dumps(result)}"
        raise SystemExit(msg)
    return result


def main() -> None:
    """Onboard, add the balancer, print the login."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Home Assistant's URL")
    parser.add_argument("--balancer", required=True, help="socket:// URL")
    parser.add_argument("--login", required=True, type=Path, help="login file")
    args = parser.parse_args()

    hass = HassProcess(args.login.parent, "develop")
    hass.url = args.url.rstrip("/")
    hass.client_id = f"{hass.url}/"
    login = _login(args.login)
    steps = hass.session.get(f"{hass.url}/api/onboarding", timeout=HTTP_TIMEOUT)
    # Once onboarding is done (a kept configuration) the view is gone: 404.
    if steps.status_code != HTTPStatus.NOT_FOUND:
        steps.raise_for_status()
    if steps.ok and any(s["step"] == "user" and not s["done"] for s in steps.json()):
        onboard(hass, login)
    else:
        log_in(hass, login)
    hide_setup_notes(hass)
    entries = hass.get(f"/api/config/config_entries/entry?domain={DOMAIN}")
    # A kept configuration has its balancer already (on the same port).
    if entries:
        title = entries[0]["title"]
    else:
        title = add_balancer(hass, args.balancer)["title"]
    rows = (
        ("Log in as", login["username"]),
        ("Password", login["password"]),
        ("Balancer entry", title),
    )
    print("\n".join(f"  {label:<18}{value}" for label, value in rows))


if __name__ == "__main__":
    main()
