"""Live end-to-end test: a real ``hass`` process, a virtual balancer, REST/WS.

The tests run in file order and build on each other, like a user would: add
the balancer through the config flow, read it, change a setting, automate on
an alarm, lose and regain the device, reload and remove the entry.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from balancer_tools.simulator import VirtualBalancer
from custom_components.active_balancer.const import DOMAIN
from custom_components.active_balancer.protocol import Variant

from .hass import HassProcess, config_yaml, wait_for
from .virtual import BalancerThread

pytestmark = pytest.mark.timeout(180)

POLL_INTERVAL = 5
"""Seconds between polls, set through the options flow (the minimum)."""
WAIT = 45.0
"""Longest wait for a state that follows from a poll."""
D2_BALANCE_DELTA_REGISTER = 0xA4
"""D2 register of the balance delta voltage, in mV (vendor register sheet)."""
AUTOMATION_ID = "balancer_cell_under_voltage"
NOTIFICATION_ID = "balancer_cell_under_voltage"
DROPPED_CELL = 5
MDNS_PORT = 5353


class Live:
    """What the earlier tests of this module found out."""

    entry_id: str = ""
    entities: dict[str, str] = {}  # noqa: RUF012 - replaced, never mutated


@pytest.fixture(scope="module")
def live() -> Live:
    """Shared between the tests of this module."""
    return Live()


def _entry_state(hass: HassProcess, entry_id: str) -> str | None:
    """The state of a config entry ("loaded", ...), None when it is gone."""
    entries = hass.get(f"/api/config/config_entries/entry?domain={DOMAIN}")
    return next((e["state"] for e in entries if e["entry_id"] == entry_id), None)


def _number(state: dict[str, Any] | None) -> float | None:
    try:
        return float(state["state"]) if state else None
    except ValueError:
        return None


def _hass_connections(hass: HassProcess, port: int) -> list[Any]:
    """TCP connections the hass process has open to the balancer's port."""
    assert hass.process is not None
    process = psutil.Process(hass.process.pid)
    return [
        conn
        for conn in process.net_connections(kind="tcp")
        if conn.raddr
        and conn.raddr.port == port
        and conn.status != psutil.CONN_TIME_WAIT
    ]


def _ran(attributes: dict[str, Any]) -> bool:
    """Whether an automation has run and finished."""
    return bool(attributes["last_triggered"]) and attributes["current"] == 0


def _need(live: Live) -> None:
    if not live.entry_id:
        pytest.fail("the config flow test did not create the entry")


def test_config_flow_over_rest(
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
    live: Live,
) -> None:
    """Add the balancer like the UI does, then read every cell through REST."""
    flow = hass.post(
        "/api/config/config_entries/flow",
        {"handler": DOMAIN, "show_advanced_options": False},
    )
    assert flow["type"] == "menu", flow
    assert flow["menu_options"] == ["pick_bluetooth", "serial"]
    path = f"/api/config/config_entries/flow/{flow['flow_id']}"

    flow = hass.post(path, {"next_step_id": "serial"})
    assert (flow["type"], flow["step_id"]) == ("form", "serial"), flow
    port_field = next(f for f in flow["data_schema"] if f["name"] == "port")
    options = port_field["selector"]["select"]["options"]
    assert "manual" in [o["value"] if isinstance(o, dict) else o for o in options]

    flow = hass.post(
        path,
        {"port": "manual", "baudrate": "9600", "protocol": "auto", "rs485_address": 1},
    )
    assert (flow["type"], flow["step_id"]) == ("form", "serial_manual"), flow

    flow = hass.post(path, {"port": balancer_thread.url})
    assert flow["type"] == "create_entry", flow
    assert flow["title"].startswith("Balancer 16S"), flow["title"]
    entry_id = flow["result"]["entry_id"]
    live.entry_id = entry_id
    assert _entry_state(hass, entry_id) == "loaded"

    # Poll every 5 s (the options flow reloads the entry).
    options = hass.post(
        "/api/config/config_entries/options/flow", {"handler": entry_id}
    )
    assert (options["type"], options["step_id"]) == ("form", "init"), options
    options = hass.post(
        f"/api/config/config_entries/options/flow/{options['flow_id']}",
        {"poll_interval": POLL_INTERVAL, "settings_every": 10},
    )
    assert options["type"] == "create_entry", options
    wait_for(
        lambda: _entry_state(hass, entry_id) == "loaded",
        "the entry to be loaded again after the options changed",
        WAIT,
    )

    entities = hass.entities_of(entry_id)
    live.entities = entities
    cells = [entities[f"cell_{n}_voltage"] for n in range(1, 17)]
    assert cells[0].startswith("sensor.balancer_16s")

    def all_cells_read() -> dict[str, dict[str, Any]] | None:
        states = hass.states()
        return states if all(_number(states.get(c)) for c in cells) else None

    states = wait_for(all_cells_read, "the cell voltages", WAIT)
    voltages = balancer_thread.call(lambda: list(balancer.cell_voltages))
    for entity_id, volts in zip(cells, voltages, strict=True):
        state = states[entity_id]
        assert float(state["state"]) == pytest.approx(volts, abs=0.0005), entity_id
        assert state["attributes"]["unit_of_measurement"] == "V"
        assert state["attributes"]["device_class"] == "voltage"
    assert float(states[entities["delta_cell_voltage"]]["state"]) == pytest.approx(
        1000 * (max(voltages) - min(voltages)), abs=1.5
    )  # mV
    assert states[entities["min_cell"]]["state"] == "1"
    assert states[entities["max_cell"]]["state"] == "16"
    assert states[entities["balancing"]]["state"] == "on"
    assert states[entities["cell_undervoltage"]]["state"] == "off"
    assert states[entities["connectivity"]]["state"] == "on"
    assert float(states[entities["balance_delta_voltage"]]["state"]) == 20  # mV

    devices = [
        device
        for device in hass.ws("config/device_registry/list")
        if entry_id in device["config_entries"]
    ]
    assert len(devices) == 1
    assert devices[0]["manufacturer"] == "DALY / 100balance"
    assert devices[0]["model"] == "Smart Active Balancer 16S"
    assert devices[0]["sw_version"] == balancer.software_version


def test_set_balance_delta(
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
    live: Live,
) -> None:
    """number.set_value writes exactly one register and shows the new value."""
    _need(live)
    entity_id = live.entities["balance_delta_voltage"]
    assert hass.value(entity_id) == "20"  # mV
    before = balancer_thread.call(lambda: len(balancer.writes))

    hass.call_service("number", "set_value", {"entity_id": entity_id, "value": 30})

    writes = balancer_thread.call(lambda: balancer.writes[before:])
    assert [(w.variant, w.register, w.value) for w in writes] == [
        (Variant.D2, D2_BALANCE_DELTA_REGISTER, 30)
    ]
    assert balancer_thread.call(lambda: balancer.balance_delta_voltage) == 0.03
    assert hass.value(entity_id) == "30"

    # Below the manuals' 20 mV minimum: refused before anything is sent.
    # (Through the WebSocket API like the UI: Home Assistant 2025.4's REST API
    # answers a validation error with a bare 500.)
    refused = hass.ws_message(
        "call_service",
        domain="number",
        service="set_value",
        service_data={"value": 10},
        target={"entity_id": entity_id},
    )
    assert not refused["success"]
    assert refused["error"]["code"] == "service_validation_error", refused
    assert balancer_thread.call(lambda: len(balancer.writes)) == before + 1
    assert hass.value(entity_id) == "30"


def test_automation_fires_on_cell_under_voltage(
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
    live: Live,
) -> None:
    """An automation in automations.yaml runs when one cell drops too low."""
    _need(live)
    alarm = live.entities["cell_undervoltage"]
    hass.automations_path.write_text(
        config_yaml(f"""
        - id: {AUTOMATION_ID}
          alias: "Balancer: cell under-voltage"
          triggers:
            - trigger: state
              entity_id: {alarm}
              to: "on"
          actions:
            - action: persistent_notification.create
              data:
                notification_id: {NOTIFICATION_ID}
                title: Cell under-voltage
                message: >-
                  Lowest cell {{{{ states('{live.entities["min_cell"]}') }}}} at
                  {{{{ states('{live.entities["min_cell_voltage"]}') }}}} V
        """),
        encoding="utf-8",
    )
    hass.call_service("automation", "reload", {})
    automation = wait_for(
        lambda: next(
            (
                s
                for s in hass.states().values()
                if s["entity_id"].startswith("automation.")
                and s["attributes"].get("id") == AUTOMATION_ID
            ),
            None,
        ),
        "the automation to be loaded",
        WAIT,
    )
    assert automation["state"] == "on"
    assert automation["attributes"]["last_triggered"] is None
    assert hass.value(alarm) == "off"

    threshold = balancer_thread.call(lambda: balancer.cell_undervoltage_alarm)
    original = balancer_thread.call(lambda: balancer.cell_voltages[DROPPED_CELL - 1])
    low = round(threshold - 0.05, 3)
    balancer_thread.call(lambda: balancer.set_cell_voltage(DROPPED_CELL, low))

    hass.wait_state(alarm, "on", WAIT)
    triggered = hass.wait_state(
        automation["entity_id"],
        lambda _: _ran(hass.attributes(automation["entity_id"])),
        WAIT,
    )
    notifications = wait_for(
        lambda: [
            n
            for n in hass.ws("persistent_notification/get")
            if n["notification_id"] == NOTIFICATION_ID
        ],
        "the automation's notification",
        WAIT,
    )
    message = notifications[0]["message"]
    assert message == f"Lowest cell {DROPPED_CELL} at {low:g} V", message

    # Back to normal: the alarm clears and the automation does not run again.
    last = triggered["attributes"]["last_triggered"]
    balancer_thread.call(lambda: balancer.set_cell_voltage(DROPPED_CELL, original))
    hass.wait_state(alarm, "off", WAIT)
    assert hass.attributes(automation["entity_id"])["last_triggered"] == last


def test_unavailable_while_the_balancer_is_off(
    hass: HassProcess, balancer_thread: BalancerThread, live: Live
) -> None:
    """Entities go unavailable when the balancer stops and return on their own."""
    _need(live)
    cell = live.entities["cell_1_voltage"]
    connection = live.entities["connectivity"]
    assert _number(hass.state(cell)) is not None

    balancer_thread.stop()
    hass.wait_state(cell, "unavailable", WAIT)
    assert hass.value(live.entities["balancing"]) == "unavailable"
    assert hass.value(connection) == "off"
    assert _entry_state(hass, live.entry_id) == "loaded"

    balancer_thread.serve()
    hass.wait_state(cell, lambda s: _number({"state": s}) is not None, WAIT)
    hass.wait_state(connection, "on", WAIT)
    assert hass.value(live.entities["balancing"]) == "on"
    assert _entry_state(hass, live.entry_id) == "loaded"


def test_reload_and_remove_leave_nothing_running(
    hass: HassProcess,
    balancer_thread: BalancerThread,
    balancer: VirtualBalancer,
    live: Live,
) -> None:
    """Reload keeps one link; removal closes it and stops polling."""
    _need(live)
    port = balancer_thread.port
    cell = live.entities["cell_1_voltage"]

    assert hass.post(f"/api/config/config_entries/entry/{live.entry_id}/reload") == {
        "require_restart": False
    }
    assert _entry_state(hass, live.entry_id) == "loaded"
    hass.wait_state(cell, lambda s: _number({"state": s}) is not None, WAIT)
    wait_for(
        lambda: (
            balancer_thread.connections == 1 and len(_hass_connections(hass, port)) == 1
        ),
        "exactly one link to the balancer after the reload",
        WAIT,
    )

    assert hass.delete(f"/api/config/config_entries/entry/{live.entry_id}") == {
        "require_restart": False
    }
    assert _entry_state(hass, live.entry_id) is None
    wait_for(
        lambda: balancer_thread.connections == 0 and not _hass_connections(hass, port),
        "the link to the balancer to be closed",
        WAIT,
    )
    states = hass.states()
    assert not [e for e in live.entities.values() if e in states]
    assert hass.entities_of(live.entry_id) == {}

    # Nothing polls any more: no request, no new connection for two intervals.
    requests = balancer_thread.call(lambda: balancer.requests)
    connects = balancer_thread.connects
    time.sleep(POLL_INTERVAL + 2)
    assert balancer_thread.call(lambda: balancer.requests) == requests
    assert balancer_thread.connects == connects

    assert not hass.integration_problems()


def test_hass_serves_on_loopback_only(hass: HassProcess) -> None:
    """Every TCP port the hass process listens on is bound to loopback.

    UDP 5353 is left out: Home Assistant's own mDNS resolver (for its HTTP
    client, opened at startup whatever the configuration) binds it on every
    interface; it only sends when a .local name is resolved, which never
    happens here.
    """
    assert hass.process is not None
    sockets = psutil.Process(hass.process.pid).net_connections(kind="inet")
    tcp = [c.laddr for c in sockets if c.status == psutil.CONN_LISTEN]
    udp = [
        c.laddr
        for c in sockets
        if c.status == psutil.CONN_NONE and c.laddr and c.laddr.port != MDNS_PORT
    ]
    assert hass.port in [address.port for address in tcp]
    assert all(a.ip in ("127.0.0.1", "::1") for a in tcp + udp), (tcp, udp)
