"""The client lanes: the protocol client on its own, over a real transport.

``tcp`` talks to a virtual D2 balancer behind a loopback ``socket://``
gateway, ``pty`` to a p81 board 3 behind a pseudo-terminal, ``ble`` to a D2
through the fake Bluetooth bridge; all three in this process.
"""

# The lanes' seeds feed `random` on purpose: repeatable, not secret.
# ruff: noqa: S311

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
import random
from typing import Any

from balancer_tools.simulator import (
    FakeConnector,
    PtyServer,
    TcpServer,
    VirtualServer,
    fake_connector,
    fake_device,
)
from custom_components.active_balancer.protocol import (
    BalancerClient,
    BalancerError,
    Bus,
    OutOfRange,
    Setting,
    Settings,
    Variant,
)
from custom_components.active_balancer.protocol.ble import BleLink
from custom_components.active_balancer.protocol.serial import SerialLink

from .config import CLIENT_LANES, SoakConfig
from .faults import SoakBalancer, soak_balancer
from .lanes import Lane, link_stats, tap_bus


class ClientLane(Lane):
    """The protocol client on its own, over a real transport."""

    def __init__(
        self,
        *,
        name: str,
        transport: str,
        balancer: SoakBalancer,
        client: BalancerClient,
        polls: int,
        config: SoakConfig,
        rng: random.Random,
        closers: Sequence[Callable[[], Awaitable[Any]]],
        server: VirtualServer | None = None,
    ) -> None:
        """Drive *client*."""
        assert client.variant is not None
        super().__init__(
            name=name,
            transport=transport,
            balancer=balancer,
            variant=client.variant,
            polls=polls,
            config=config,
            rng=rng,
        )
        self.client = client
        self._closers = closers
        self.server = server
        tap_bus(client.bus, self)

    async def poll_once(self) -> str | None:
        """Poll with the client."""
        if self.server is not None:
            # The gateway's memory of closed connections, not the client's.
            await self.server.forget_closed()
        try:
            await self.client.poll()
        except BalancerError as err:
            return type(err).__name__
        return None

    def writable(self) -> Sequence[Setting]:
        """Every setting the client can write on this variant."""
        return sorted(self.client.writable_settings())

    def settings(self) -> Settings:
        """The client's settings (as last read or confirmed)."""
        snapshot = self.client.snapshot
        return snapshot.settings if snapshot is not None else Settings()

    async def write_once(self, setting: Setting, value: float | bool) -> None:
        """Write with the client and check the device at once."""
        number = self.register_request(setting, value)
        since = len(self.balancer.writes)
        await self.client.write(setting, value)
        self.verify_confirmed(setting, value, number, since)

    @property
    def bus(self) -> Bus:
        """The client's bus."""
        return self.client.bus

    def classify(self, err: Exception) -> str | None:
        """Rules refusals and protocol errors are reported; the rest is a bug."""
        if isinstance(err, OutOfRange):
            return "refused"
        if isinstance(err, BalancerError):
            return "failed"
        return None

    async def close(self) -> None:
        """Close the client and the line."""
        self.stats.link = link_stats(self.client.bus)
        await self.client.close()
        for closer in self._closers:
            await closer()


async def client_lane(
    name: str, polls: int, config: SoakConfig, seed: int
) -> ClientLane:
    """Build a connected client lane (faults are still off)."""
    rng = random.Random(seed)
    closers: list[Callable[[], Awaitable[Any]]] = []
    if name == "ble":
        balancer = soak_balancer(Variant.D2, seed)
        connector = fake_connector(balancer)
        ble = BleLink(fake_device(), connector=connector, timings=config.timings)
        closers.append(connector.close)
        bus = Bus(ble, timings=config.timings)
        client = BalancerClient(bus, variant=Variant.D2)
        ble_lane = _BleClientLane(
            name=name,
            transport="ble",
            balancer=balancer,
            client=client,
            polls=polls,
            config=config,
            rng=rng,
            closers=closers,
        )
        ble_lane.connector = connector
        lane: ClientLane = ble_lane
    else:
        variant = Variant.P81 if name == "pty" else Variant.D2
        balancer = soak_balancer(variant, seed)
        server: VirtualServer = (
            PtyServer(balancer) if name == "pty" else TcpServer(balancer)
        )
        await server.start()
        closers.append(server.close)
        link = SerialLink(server.url, config.baudrate, timings=config.timings)
        bus = Bus(link, timings=config.timings)
        client = BalancerClient(bus, variant=variant, address=balancer.address)
        lane = ClientLane(
            name=name,
            transport="pty" if name == "pty" else "socket",
            balancer=balancer,
            client=client,
            polls=polls,
            config=config,
            rng=rng,
            closers=closers,
            server=server,
        )
    try:
        await client.connect()
    except BaseException:
        await lane.close()
        raise
    return lane


class _BleClientLane(ClientLane):
    """Keeps the fake Bluetooth connector's bookkeeping bounded."""

    connector: FakeConnector

    async def poll_once(self) -> str | None:
        """Poll, then forget old fake connections and their logs."""
        result = await super().poll_once()
        clients = self.connector.clients
        if len(clients) > 1:
            del clients[:-1]
        for client in clients:
            client.written.clear()
            client.notifications.clear()
        return result


async def build_client_lanes(config: SoakConfig) -> list[Lane]:
    """Connect the client lanes of *config* (faults still off)."""
    polls = config.lane_polls()
    names = [name for name in config.lanes if name in CLIENT_LANES]
    lanes: list[Lane] = []
    try:
        for index, name in enumerate(names):
            lanes.append(
                await client_lane(name, polls[name], config, config.seed + index)
            )
    except BaseException:
        for lane in lanes:
            await lane.close()
        raise
    return lanes
