"""Parts 4, 5b and 6, inside Home Assistant's pytest harness.

Not part of the test suite (``testpaths`` is ``tests``): the benchmark runs
this file in its own ``pytest`` process, so the harness (a real ``hass``
instance, registries, the Bluetooth manager with mocked adapters) is exactly
the one the tests use. The configuration comes in ``BENCH_HA_CONFIG`` (JSON);
each test writes ``<name>.json`` into the folder ``BENCH_HA_OUT``.
``BENCH_HA_GROUP=lineno`` lists the memory of part 5b by line, not by file.

Serial balancers are served by a virtual line running in a thread of its own
(own event loop), so that ``time.thread_time()`` in Home Assistant's event
loop thread counts the integration's CPU and not the simulated device's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
import gc
import json
import os
from pathlib import Path
import threading
import time
import tracemalloc
from types import TracebackType
from typing import Any, Self
from unittest.mock import patch

from bleak.backends.device import BLEDevice
from homeassistant.components import bluetooth
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_ADDRESS, EVENT_STATE_CHANGED
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity import Entity
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from balancer_tools.ha_helpers import all_entities_enabled, ble_service_info
from balancer_tools.simulator import (
    FakeBleakClient,
    FakeConnector,
    VirtualBalancer,
    VirtualServer,
    fake_connector,
    serve_tcp,
)
from custom_components.active_balancer.const import (
    CONF_BAUDRATE,
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DOMAIN,
    TRANSPORT_BLE,
    TRANSPORT_SERIAL,
)
from custom_components.active_balancer.coordinator import BalancerCoordinator
from custom_components.active_balancer.protocol import ble

from .common import BenchConfig, Traffic, median, mode, ms, snapshot

LOOP_CELLS = 24
TEMPERATURES = (25.0, 26.0, 24.0, 25.0)


def _config() -> BenchConfig:
    return BenchConfig.from_dict(json.loads(os.environ.get("BENCH_HA_CONFIG", "{}")))


def _write_result(name: str, result: dict[str, Any]) -> None:
    out = os.environ.get("BENCH_HA_OUT")
    if out:
        Path(out, f"{name}.json").write_text(json.dumps(result), encoding="utf-8")


@pytest.fixture(autouse=True)
def _harness(enable_custom_integrations: None, socket_enabled: None) -> Generator[None]:
    """Load the integration from custom_components/; allow loopback sockets.

    The harness runs the event loop in asyncio debug mode, which makes every
    callback several times slower than in Home Assistant: measure without it.
    """
    loop = asyncio.get_event_loop()
    debug = loop.get_debug()
    loop.set_debug(False)
    yield
    loop.set_debug(debug)


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Every entity enabled, also those disabled by default (as in the tests)."""
    with all_entities_enabled():
        yield


class ThreadedLine:
    """Virtual balancers on a loopback TCP line served from another thread."""

    def __init__(
        self,
        balancers: Iterable[VirtualBalancer],
        *,
        baudrate: int | None,
        turnaround: float,
    ) -> None:
        """Remember what to serve."""
        self.balancers = tuple(balancers)
        self.baudrate = baudrate
        self.turnaround = turnaround
        self.url = ""
        self._loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(target=self._run, name="bench-line")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: VirtualServer | None = None

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                serve_tcp(
                    self.balancers,
                    baudrate=self.baudrate,
                    turnaround=self.turnaround,
                )
            )
            self.url = self._server.url
        except BaseException as err:
            self._error = err
            return
        finally:
            self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._server.close())
        loop.close()

    def __enter__(self) -> Self:
        """Start serving; return when the URL is known."""
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop serving and join the thread."""
        if self._error is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


class WriteCounter:
    """Counts ``async_write_ha_state`` calls and ``state_changed`` events."""

    def __init__(self, hass: HomeAssistant, entity_ids: set[str]) -> None:
        """Start counting."""
        self.writes = 0
        self.changes = 0
        self._entity_ids = entity_ids
        original = Entity.async_write_ha_state
        counter = self

        @callback
        def counting(entity: Entity) -> None:
            counter.writes += 1
            original(entity)

        self._patch = patch.object(Entity, "async_write_ha_state", counting)
        self._unsub = hass.bus.async_listen(EVENT_STATE_CHANGED, self._changed)

    @callback
    def _changed(self, event: Event[EventStateChangedData]) -> None:
        if event.data["entity_id"] in self._entity_ids:
            self.changes += 1

    def __enter__(self) -> Self:
        """Patch the entity base class."""
        self._patch.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Undo the patch and stop listening."""
        self._patch.stop()
        self._unsub()

    def take(self) -> tuple[int, int]:
        """Writes and changes since the last call."""
        result = (self.writes, self.changes)
        self.writes = self.changes = 0
        return result


def _serial_entry(
    hass: HomeAssistant, url: str, title: str, unique_id: str, baudrate: int
) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=title,
        data={
            CONF_TRANSPORT: TRANSPORT_SERIAL,
            CONF_PORT: url,
            CONF_BAUDRATE: baudrate,
            CONF_RS485_ADDRESS: 1,
            CONF_VARIANT: "d2",
        },
        unique_id=unique_id,
    )
    entry.add_to_hass(hass)
    return entry


async def _setup(hass: HomeAssistant, entry: MockConfigEntry) -> BalancerCoordinator:
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    coordinator = entry.runtime_data
    assert isinstance(coordinator, BalancerCoordinator)
    return coordinator


def _entity_ids(hass: HomeAssistant, entry: MockConfigEntry) -> set[str]:
    registry = er.async_get(hass)
    return {
        item.entity_id
        for item in er.async_entries_for_config_entry(registry, entry.entry_id)
        if item.disabled_by is None
    }


async def _cpu(
    hass: HomeAssistant, refresh: Callable[[], Coroutine[Any, Any, Any]]
) -> float:
    """CPU seconds the event loop thread spends on *refresh* and what it queued."""
    start = time.thread_time()
    await refresh()
    await hass.async_block_till_done()
    return time.thread_time() - start


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_event_loop_cost(hass: HomeAssistant) -> None:
    """Part 4: CPU per poll in the event loop, and state writes per poll."""
    config = _config()
    base = [3.300 + 0.002 * (i % 4) for i in range(LOOP_CELLS)]
    balancer = VirtualBalancer(
        LOOP_CELLS, cell_voltages=base, temperatures=TEMPERATURES
    )
    with ThreadedLine([balancer], baudrate=None, turnaround=0.0) as line:
        entry = _serial_entry(hass, line.url, "Balancer 24S", "bench-24s", 9600)
        coordinator = await _setup(hass, entry)
        entity_ids = _entity_ids(hass, entry)
        for _ in range(3):  # warm up
            await coordinator.async_refresh()
        await hass.async_block_till_done()

        unchanged_cpu = [
            await _cpu(hass, coordinator.async_refresh) for _ in range(config.ha_rounds)
        ]
        changed_cpu = []
        for index in range(config.ha_rounds):
            offset = 0.001 * (index % 2 + 1)
            balancer.cell_voltages = [v + offset for v in base]
            changed_cpu.append(await _cpu(hass, coordinator.async_refresh))
        balancer.cell_voltages = list(base)
        await coordinator.async_refresh()
        await hass.async_block_till_done()

        with WriteCounter(hass, entity_ids) as counter:
            unchanged_writes = []
            for _ in range(config.ha_rounds):
                await coordinator.async_refresh()
                await hass.async_block_till_done()
                unchanged_writes.append(counter.take())
            changed_writes = []
            for index in range(config.ha_rounds):
                balancer.cell_voltages = [v + 0.001 * (index % 2 + 1) for v in base]
                await coordinator.async_refresh()
                await hass.async_block_till_done()
                changed_writes.append(counter.take())
        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
    _write_result(
        "event_loop",
        {
            "cells": LOOP_CELLS,
            "entities_enabled": len(entity_ids),
            "polls": config.ha_rounds,
            "unchanged": {
                "cpu_ms_median": ms(median(unchanged_cpu)),
                "cpu_ms_max": ms(max(unchanged_cpu)),
                "state_writes_per_poll": max(w for w, _ in unchanged_writes),
                "state_changes_per_poll": max(c for _, c in unchanged_writes),
            },
            "changed": {
                "what": f"all {LOOP_CELLS} cell voltages change by 1 mV",
                "cpu_ms_median": ms(median(changed_cpu)),
                "cpu_ms_max": ms(max(changed_cpu)),
                "state_writes_per_poll": mode([w for w, _ in changed_writes]),
                "state_changes_per_poll": mode([c for _, c in changed_writes]),
            },
        },
    )


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_write_latency(hass: HomeAssistant) -> None:
    """Part 6: number.set_value until the confirmed value is in the state."""
    config = _config()
    balancer = VirtualBalancer(16, temperatures=TEMPERATURES)
    with ThreadedLine(
        [balancer], baudrate=config.baudrate, turnaround=config.turnaround
    ) as line:
        entry = _serial_entry(
            hass, line.url, "Balancer 16S", "bench-write", config.baudrate
        )
        coordinator = await _setup(hass, entry)
        entity_id = er.async_get(hass).async_get_entity_id(
            "number", DOMAIN, "bench-write-balance_delta_voltage"
        )
        assert entity_id is not None
        seen: dict[float, float] = {}

        @callback
        def changed(event: Event[EventStateChangedData]) -> None:
            state = event.data["new_state"]
            if event.data["entity_id"] != entity_id or state is None:
                return
            try:
                shown = round(float(state.state), 3)
            except ValueError:  # unavailable while it unloads
                return
            seen.setdefault(shown, time.perf_counter())

        unsub = hass.bus.async_listen(EVENT_STATE_CHANGED, changed)
        latencies: list[float] = []
        calls: list[float] = []
        traffic: list[Traffic] = []
        for index in range(config.write_rounds):
            value = 31.0 + index % 2  # mV, as the number shows the delta
            seen.clear()
            before = snapshot(coordinator.client.bus.stats)
            start = time.perf_counter()
            await hass.services.async_call(
                "number",
                "set_value",
                {"entity_id": entity_id, "value": value},
                blocking=True,
            )
            calls.append(time.perf_counter() - start)
            traffic.append(Traffic.between(before, coordinator.client.bus.stats))
            assert value in seen, f"{entity_id} never showed {value}"
            latencies.append(seen[value] - start)
            assert round(balancer.balance_delta_voltage * 1000) == value
        unsub()
        live_reads = len(coordinator.client.live_plan)
        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
    limits = [t.wire_limit(config) for t in traffic]
    _write_result(
        "write",
        {
            "setting": "balance_delta_voltage",
            "writes": config.write_rounds,
            "round_trips": mode([t.requests for t in traffic]),
            "live_reads_after_write": live_reads,
            "bytes_per_write": traffic[0].bytes_out + traffic[0].bytes_in,
            "latency_ms": ms(median(latencies)),
            "service_call_ms": ms(median(calls)),
            "wire_limit_ms": ms(median(limits)),
            "ratio": round(
                median([lat / lim for lat, lim in zip(latencies, limits, strict=True)]),
                3,
            ),
        },
    )


def _short(filename: str) -> str:
    """*filename* from its package folder on (site-packages or the repo)."""
    for marker in ("site-packages/", "/lib/python3", str(Path.cwd()) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _where(frame: tracemalloc.Frame) -> str:
    """``file`` (grouped by file) or ``file:line`` (BENCH_HA_GROUP=lineno)."""
    where = _short(frame.filename)
    return f"{where}:{frame.lineno}" if frame.lineno else where


def _address(index: int) -> str:
    return f"DA:17:BA:00:{index // 256:02X}:{index % 256:02X}"


class VirtualCpu:
    """Adds up the CPU the virtual balancers spend answering (to subtract it)."""

    def __init__(self, balancers: Iterable[VirtualBalancer]) -> None:
        """Wrap every balancer's ``answer``."""
        self.seconds = 0.0
        for balancer in balancers:
            original = balancer.answer

            def answer(request: bytes | bytearray, _original: Any = original) -> Any:
                start = time.thread_time()
                try:
                    return _original(request)
                finally:
                    self.seconds += time.thread_time() - start

            balancer.answer = answer  # type: ignore[method-assign]


def _ble_entries(addresses: Sequence[str]) -> list[MockConfigEntry]:
    return [
        MockConfigEntry(
            domain=DOMAIN,
            title=f"Balancer {index}",
            data={
                CONF_TRANSPORT: TRANSPORT_BLE,
                CONF_ADDRESS: address,
                CONF_VARIANT: "d2",
            },
            unique_id=address,
        )
        for index, address in enumerate(addresses, start=1)
    ]


async def _measure_setups(
    hass: HomeAssistant, entries: Sequence[MockConfigEntry]
) -> tuple[int, dict[str, float], float]:
    """Set *entries* up; their memory, its largest files (KiB/device), seconds.

    The first entry is set up already: it loaded the integration and its
    platforms (imports, translations), a one-time cost, not a per-device one.
    """
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    setup_start = time.perf_counter()
    for entry in entries[1:]:
        assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    setup_seconds = time.perf_counter() - setup_start
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert all(entry.state is ConfigEntryState.LOADED for entry in entries)
    ignore = [
        tracemalloc.Filter(False, "*/balancer_tools/simulator/*"),
        tracemalloc.Filter(False, tracemalloc.__file__),
    ]
    diff = after.filter_traces(ignore).compare_to(
        before.filter_traces(ignore), os.environ.get("BENCH_HA_GROUP", "filename")
    )
    grown = sum(stat.size_diff for stat in diff)
    measured = max(1, len(entries) - 1)
    top = {
        _where(stat.traceback[0]): round(stat.size_diff / measured / 1024, 1)
        for stat in sorted(diff, key=lambda stat: -stat.size_diff)[:12]
    }
    return grown, top, setup_seconds


async def _polling_rounds(
    hass: HomeAssistant,
    coordinators: Sequence[BalancerCoordinator],
    virtual_cpu: VirtualCpu,
    rounds: int,
) -> tuple[list[float], list[int]]:
    """CPU (without the virtual balancers') and requests of each polling round."""
    stats = [coordinator.client.bus.stats for coordinator in coordinators]

    async def refresh_all() -> None:
        await asyncio.gather(*(c.async_refresh() for c in coordinators))

    await refresh_all()  # warm up
    await hass.async_block_till_done()
    rounds_cpu: list[float] = []
    requests: list[int] = []
    for _ in range(rounds):
        before_stats = [snapshot(s) for s in stats]
        virtual_before = virtual_cpu.seconds
        cpu = await _cpu(hass, refresh_all)
        rounds_cpu.append(cpu - (virtual_cpu.seconds - virtual_before))
        requests.append(
            sum(
                Traffic.between(b, s).requests
                for b, s in zip(before_stats, stats, strict=True)
            )
        )
    return rounds_cpu, requests


@pytest.mark.usefixtures("entity_registry_enabled_by_default", "enable_bluetooth")
async def test_ble_scale(hass: HomeAssistant, monkeypatch: pytest.MonkeyPatch) -> None:
    """Part 5b: many BLE balancers: memory per device, CPU per polling round."""
    config = _config()
    count = config.ble_devices
    addresses = [_address(index) for index in range(1, count + 1)]
    balancers = {
        address: VirtualBalancer(16, temperatures=TEMPERATURES[:2], ble=True)
        for address in addresses
    }
    connectors: dict[str, FakeConnector] = {
        address: fake_connector(balancer) for address, balancer in balancers.items()
    }

    async def establish(
        client_class: Any, device: BLEDevice, name: str, **kwargs: Any
    ) -> FakeBleakClient:
        return await connectors[device.address](client_class, device, name, **kwargs)

    monkeypatch.setattr(ble, "establish_connection", establish)
    virtual_cpu = VirtualCpu(balancers.values())
    callback_adv = bluetooth.async_get_advertisement_callback(hass)
    for address in addresses:
        callback_adv(ble_service_info(address, f"DL-{address.replace(':', '')}"))
    entries = _ble_entries(addresses)
    # The first device loads the integration and its platforms (imports,
    # translations): a one-time cost, not a per-device one.
    entries[0].add_to_hass(hass)
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    for entry in entries[1:]:
        entry.add_to_hass(hass)
    await hass.async_block_till_done()

    grown, top, setup_seconds = await _measure_setups(hass, entries)
    measured = max(1, count - 1)
    coordinators = [entry.runtime_data for entry in entries]
    entities = sum(len(_entity_ids(hass, entry)) for entry in entries)
    rounds_cpu, requests = await _polling_rounds(
        hass, coordinators, virtual_cpu, config.ble_rounds
    )
    planned = sum(len(c.client.live_plan) for c in coordinators)
    for entry in entries:
        assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    for connector in connectors.values():
        await connector.close()
    round_cpu = median(rounds_cpu)
    _write_result(
        "ble_scale",
        {
            "devices": count,
            "cells": 16,
            "entities_per_device": round(entities / count, 1),
            "memory_kib_per_device": round(grown / measured / 1024, 1),
            "memory_measured_devices": measured,
            "memory_kib_per_device_by_file": top,
            "setup_s_per_device": round(setup_seconds / measured, 3),
            "round_cpu_ms": ms(round_cpu),
            "cpu_us_per_device": round(round_cpu / count * 1e6, 1),
            "requests_per_round": mode(requests),
            "planned_reads_per_round": planned,
            "rounds": config.ble_rounds,
        },
    )
