"""Timings: one object sets how long a bus and its link wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
import contextlib

import pytest

from balancer_tools.simulator import (
    Faults,
    VirtualBalancer,
    fake_connector,
    fake_device,
    serve_tcp,
)
from custom_components.active_balancer.protocol import (
    BalancerTimeout,
    Bus,
    Timings,
    Variant,
    codec,
)
from custom_components.active_balancer.protocol.ble import BleLink
from custom_components.active_balancer.protocol.registers import Block
from custom_components.active_balancer.protocol.serial import SerialLink

REQUEST = codec.read_request(Variant.D2, 1, Block(0xA3, 1))


@contextlib.asynccontextmanager
async def silent_bus(
    transport: str, timings: Timings, **link_args: float
) -> AsyncIterator[Bus]:
    """A bus to a virtual balancer that answers nothing."""
    vb = VirtualBalancer(4, variants=[Variant.D2], ble=transport == "ble")
    vb.faults = Faults(silent=True)
    if transport == "ble":
        connector = fake_connector(vb)
        link = BleLink(fake_device(), connector=connector, timings=timings, **link_args)
        bus = Bus(link, retries=0, timings=timings)
        try:
            yield bus
        finally:
            await bus.close()
            await connector.close()
        return
    async with await serve_tcp(vb) as server:
        bus = Bus(
            SerialLink(server.url, timings=timings, **link_args),
            retries=0,
            timings=timings,
        )
        try:
            yield bus
        finally:
            await bus.close()


@pytest.mark.parametrize(
    ("transport", "seconds"), [("serial", "0.05"), ("ble", "0.07")]
)
async def test_a_silent_balancer_is_given_up_on_after_its_timeout(
    transport: str, seconds: str
) -> None:
    """Each line waits for its own timeout from the timings, no longer."""
    timings = Timings(
        serial_timeout=0.05, ble_timeout=0.07, settle=0.01, late_window=0.3, byte_time=0
    )
    async with silent_bus(transport, timings) as bus:
        with pytest.raises(BalancerTimeout, match=f"No answer within {seconds} s"):
            await bus.exchange(REQUEST)
        assert (bus.settle, bus.late_window) == (0.01, 0.3)


@pytest.mark.parametrize("transport", ["serial", "ble"])
async def test_an_explicit_timeout_wins_over_the_timings(transport: str) -> None:
    """``base_timeout`` given to a link overrides the timings' one."""
    timings = Timings(serial_timeout=9.0, ble_timeout=9.0, byte_time=0)
    async with silent_bus(transport, timings, base_timeout=0.03) as bus:
        with pytest.raises(BalancerTimeout, match=r"No answer within 0\.03 s"):
            await bus.exchange(REQUEST)


def test_the_defaults_are_those_of_real_balancers() -> None:
    """Without timings a bus waits as it always did (the figures rely on it)."""
    serial = SerialLink("socket://127.0.0.1:1", 9600)
    assert (serial.base_timeout, serial.byte_time) == (0.5, 10 / 9600)
    ble = BleLink(fake_device())
    assert (ble.base_timeout, ble.byte_time) == (1.0, 10 / 9600)
    bus = Bus(serial)
    assert (bus.retries, bus.settle, bus.late_window) == (2, 0.1, 2.0)
