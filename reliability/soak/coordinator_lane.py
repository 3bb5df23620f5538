"""The coordinator lane: Home Assistant's coordinator and entities, soaked.

It runs inside the Home Assistant test harness: ``scripts/soak`` starts
``reliability/coordinator_lane.py`` (the pytest file) in a subprocess, which
sets an entry up and calls :func:`run_coordinator_soak`. The lane polls with
the coordinator's refresh and writes through the entities' actions, like a
home does, over a loopback ``socket://`` gateway.
"""

# The lane's seed feeds `random` on purpose: repeatable, not secret.
# ruff: noqa: S311

from __future__ import annotations

from collections.abc import Mapping, Sequence
import contextvars
import logging
import random
from typing import TYPE_CHECKING

from balancer_tools.simulator import TcpServer, VirtualServer
from custom_components.active_balancer.protocol import (
    Bus,
    PreparedWrite,
    Setting,
    Settings,
    Variant,
)

from .client_lanes import build_client_lanes
from .config import (
    ENV_POLLS,
    ENV_RATE,
    ENV_SEED,
    LOGGER,
    LaneStats,
    ProcessStats,
    SoakConfig,
)
from .faults import SoakBalancer, soak_balancer
from .lanes import Lane, link_stats, tap_bus
from .process import ProcessWatch
from .run import run_lanes

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

    from custom_components.active_balancer.coordinator import BalancerCoordinator

_WRITE_CONTEXT: contextvars.ContextVar[dict[str, bool]] = contextvars.ContextVar(
    "soak_write"
)


class CoordinatorLane(Lane):
    """The coordinator and the entities, polled and written like in a home."""

    def __init__(
        self,
        *,
        hass: HomeAssistant,
        coordinator: BalancerCoordinator,
        balancer: SoakBalancer,
        polls: int,
        config: SoakConfig,
        rng: random.Random,
        entities: Mapping[str, str],
        server: VirtualServer | None = None,
    ) -> None:
        """Drive *coordinator*; *entities* maps entity keys to entity ids."""
        client = coordinator.client
        assert client.variant is not None
        super().__init__(
            name="coordinator",
            transport="socket",
            balancer=balancer,
            variant=client.variant,
            polls=polls,
            config=config,
            rng=rng,
        )
        self.hass = hass
        self.coordinator = coordinator
        self.entities = dict(entities)
        self.server = server
        tap_bus(client.bus, self)
        self._wrap_client_write()

    def _wrap_client_write(self) -> None:
        client = self.coordinator.client
        send = client.send

        async def checked(write: PreparedWrite) -> float:
            number = self.register_request(write.setting, write.value)
            since = len(self.balancer.writes)
            result = await send(write)
            self.verify_confirmed(write.setting, write.value, number, since)
            context = _WRITE_CONTEXT.get(None)
            if context is not None:
                context["confirmed"] = True
            return result

        setattr(client, "send", checked)  # noqa: B010 - an instance-level tap

    async def poll_once(self) -> str | None:
        """One refresh of the coordinator."""
        from homeassistant.helpers.update_coordinator import (  # noqa: PLC0415
            UpdateFailed,
        )

        coordinator = self.coordinator
        if self.server is not None:
            await self.server.forget_closed()
        await coordinator.async_refresh()
        if coordinator.last_update_success:
            return None
        err = coordinator.last_exception
        if not isinstance(err, UpdateFailed):
            self.unhandled(err or RuntimeError("refresh failed without an error"))
            return "unhandled"
        cause = err.__cause__
        return type(cause).__name__ if cause is not None else "UpdateFailed"

    def writable(self) -> Sequence[Setting]:
        """Every setting the client can write on this variant."""
        return sorted(self.coordinator.client.writable_settings())

    def settings(self) -> Settings:
        """The settings the coordinator's client holds (last read or confirmed)."""
        snapshot = self.coordinator.client.snapshot
        return snapshot.settings if snapshot is not None else Settings()

    async def write_once(self, setting: Setting, value: float | bool) -> None:
        """Write through the entity's action when it can, else the helper.

        Home Assistant skips an action on an unavailable entity without an
        error (the UI disables its controls), so while the balancer is
        unavailable the write goes to the coordinator's helper, the one an
        entity calls: it must refuse with a clear error.
        """
        hass = self.hass
        key = "balancer" if setting is Setting.BALANCER_ENABLED else setting.value
        entity_id = self.entities.get(key)
        context = {"confirmed": False}
        token = _WRITE_CONTEXT.set(context)
        try:
            if entity_id is None or not self._available(entity_id):
                await self.coordinator.async_write(setting, value)
            elif setting is Setting.BALANCER_ENABLED:
                await hass.services.async_call(
                    "switch",
                    "turn_on" if value else "turn_off",
                    {"entity_id": entity_id},
                    blocking=True,
                )
            else:
                # In the unit the entity shows (the delta in mV), as a user
                # would enter it.
                shown = round(float(value) * _number_scale(setting), 6)
                await hass.services.async_call(
                    "number",
                    "set_value",
                    {"entity_id": entity_id, "value": shown},
                    blocking=True,
                )
        finally:
            _WRITE_CONTEXT.reset(token)
        if context["confirmed"]:
            return
        if entity_id is not None and not self._available(entity_id):
            # It became unavailable on the way: Home Assistant skipped it.
            self.stats.writes_skipped_unavailable += 1
            return
        # The action succeeded although the balancer did not confirm.
        self.stats.writes_silently_lost += 1
        LOGGER.error(
            "%s: %s=%r succeeded without a confirmed write",
            self.stats.lane,
            setting.value,
            value,
        )

    def _available(self, entity_id: str) -> bool:
        state = self.hass.states.get(entity_id)
        return state is not None and state.state != "unavailable"

    @property
    def bus(self) -> Bus:
        """The coordinator's client's bus."""
        return self.coordinator.client.bus

    def classify(self, err: Exception) -> str | None:
        """Validation errors are refusals, other HA errors are reports."""
        from homeassistant.exceptions import (  # noqa: PLC0415
            HomeAssistantError,
            ServiceValidationError,
        )

        if isinstance(err, ServiceValidationError):
            return "refused"
        if isinstance(err, HomeAssistantError):
            return "failed"
        return None

    async def close(self) -> None:
        """Nothing to close: the test unloads the entry."""
        self.stats.link = link_stats(self.coordinator.client.bus)


async def serve_coordinator_balancer(seed: int) -> tuple[SoakBalancer, VirtualServer]:
    """The virtual balancer of the coordinator lane, on a loopback gateway."""
    balancer = soak_balancer(Variant.D2, seed)
    server = TcpServer(balancer)
    await server.start()
    return balancer, server


async def run_coordinator_soak(
    *,
    hass: HomeAssistant,
    coordinator: BalancerCoordinator,
    balancer: SoakBalancer,
    config: SoakConfig,
    polls: int,
    entities: Mapping[str, str],
    server: VirtualServer | None = None,
    with_client_lanes: bool = False,
) -> tuple[list[LaneStats], ProcessStats]:
    """Run the coordinator lane (inside the test harness, entry set up).

    With *with_client_lanes*, the client lanes of *config* run beside it in
    the same event loop (the CI run: one process, all four lanes at once).
    """
    watch = ProcessWatch("coordinator" if not with_client_lanes else "all lanes")
    watch.start()
    lanes: list[Lane] = [
        CoordinatorLane(
            hass=hass,
            coordinator=coordinator,
            balancer=balancer,
            polls=polls,
            config=config,
            rng=random.Random(config.seed + 100),
            entities=entities,
            server=server,
        )
    ]
    if with_client_lanes:
        lanes.extend(await build_client_lanes(config))
    # Every failed refresh is logged with the exception as an argument, and
    # the test harness keeps every log record (with the exception and its
    # frames) until the test ends: the harness's memory, not the
    # integration's. An exception that is not UpdateFailed is still counted
    # (see CoordinatorLane.poll_once).
    coordinator_logger = logging.getLogger(coordinator.logger.name)
    level = coordinator_logger.level
    coordinator_logger.setLevel(logging.CRITICAL)
    try:
        stats = await run_lanes(lanes, watch)
    finally:
        coordinator_logger.setLevel(level)
    await hass.async_block_till_done()
    return stats, await watch.finish()


def _number_scale(setting: Setting) -> int:
    """Shown units per unit of the rules for *setting*'s number entity."""
    from custom_components.active_balancer.number import NUMBERS  # noqa: PLC0415

    return next(item.scale for item in NUMBERS if item.setting is setting)


def writable_entities(hass: HomeAssistant, entry_id: str) -> dict[str, str]:
    """Entity keys -> entity ids of the enabled number and switch entities."""
    from homeassistant.helpers import entity_registry as er  # noqa: PLC0415

    registry = er.async_get(hass)
    entities: dict[str, str] = {}
    for entity in er.async_entries_for_config_entry(registry, entry_id):
        if entity.disabled_by is None and entity.domain in ("number", "switch"):
            key = (entity.unique_id or "").rsplit("-", 1)[-1]
            entities[key] = entity.entity_id
    return entities


def config_from_env(environ: Mapping[str, str]) -> tuple[SoakConfig, int]:
    """The coordinator lane's configuration and polls, from ``SOAK_*``.

    Without them: the coordinator's share of the CI run.
    """
    config = SoakConfig()
    config.fault_rate = float(environ.get(ENV_RATE, config.fault_rate))
    config.seed = int(environ.get(ENV_SEED, config.seed))
    polls = int(environ.get(ENV_POLLS, config.lane_polls()["coordinator"]))
    return config, polls
