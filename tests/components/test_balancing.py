"""Balancing statistics: totals against the simulator's own integral.

Time is controlled: one fake clock drives both the virtual balancer's physics
and the sensors' integration (``balancing.monotonic``), and every poll is
fired with ``async_fire_time_changed``. (freezegun would also freeze the event
loop's clock, so the real socket time-outs of a failing poll would never end.)
The simulator counts the seconds it balanced and the charge it moved exactly;
the sensors only see the polls, so each start or stop of balancing between two
polls may put them off by half an interval at most.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import dataclasses

from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant, State
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    mock_restore_cache_with_extra_data,
)

from balancer_tools.simulator import (
    VirtualBalancer,
    VirtualServer,
    serve_tcp,
)
from custom_components.active_balancer import balancing
from custom_components.active_balancer.balancing import (
    Integral,
    TopOfChargeSpread,
)
from custom_components.active_balancer.const import DEFAULT_POLL_INTERVAL, DOMAIN
from custom_components.active_balancer.protocol import Chemistry

from .conftest import async_next_poll, serial_entry_data, setup_entry

TIME = "sensor.balancer_16s_balancing_time"
CHARGE = "sensor.balancer_16s_charge_moved"
SPREAD = "sensor.balancer_16s_cell_spread_at_top_of_charge"
POLL = DEFAULT_POLL_INTERVAL
TOLERANCE = POLL / 2
"""Balancing stops somewhere between two polls: the trapezoid is off by half
an interval at most."""
CURRENT = 1.0


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        """Start at 1000 s."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The time."""
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock of the balancer and of the sensors' integration."""
    fake = FakeClock()
    monkeypatch.setattr(balancing, "monotonic", fake)
    return fake


@pytest.fixture
def balancer(clock: FakeClock) -> VirtualBalancer:
    """16 LFP cells 50 mV apart: balancing runs for about 12 minutes, then stops."""
    voltages = [3.300 + 0.002 * (i % 4) for i in range(16)]
    voltages[1], voltages[15] = 3.280, 3.330
    return VirtualBalancer(
        16,
        Chemistry.LFP,
        cell_voltages=voltages,
        clock=clock,
        volts_per_amp_second=0.00002,
    )


@pytest.fixture
async def server(balancer: VirtualBalancer) -> AsyncIterator[VirtualServer]:
    """The balancer on a loopback port."""
    async with await serve_tcp(balancer) as srv:
        yield srv


async def poll(hass: HomeAssistant, clock: FakeClock) -> None:
    """One poll interval passes for the balancer, the sensors and the timer."""
    clock.now += POLL
    await async_next_poll(hass, POLL)


def seconds(hass: HomeAssistant) -> float:
    """The balancing time shown, in seconds (it is shown in hours)."""
    state = hass.states.get(TIME)
    assert state is not None
    assert state.attributes["unit_of_measurement"] == "h"
    return float(state.state) * 3600


def ampere_hours(hass: HomeAssistant) -> float:
    """The charge moved shown, in Ah."""
    state = hass.states.get(CHARGE)
    assert state is not None
    assert state.attributes["unit_of_measurement"] == "Ah"
    return float(state.state)


def assert_matches(
    hass: HomeAssistant, expected_seconds: float, transitions: int = 1
) -> None:
    """Time and charge agree with *expected_seconds* of balancing at 1 A.

    Each start or stop of balancing between two polls may be off by half an
    interval; a start at a poll is exact.
    """
    tolerance = transitions * TOLERANCE + 0.1
    assert seconds(hass) == pytest.approx(expected_seconds, abs=tolerance)
    assert ampere_hours(hass) == pytest.approx(
        expected_seconds * CURRENT / 3600, abs=tolerance * CURRENT / 3600
    )


async def test_totals_match_the_simulator(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    clock: FakeClock,
) -> None:
    """Until balancing stops by itself, the totals follow the true integral."""
    await setup_entry(hass, entry)
    assert balancer.balancing
    assert seconds(hass) == 0
    shown = []
    for _ in range(40):
        await poll(hass, clock)
        shown.append(seconds(hass))
    assert not balancer.balancing, "balancing should have ended by itself"
    assert 600 < balancer.balanced_seconds < 900
    assert balancer.balanced_charge == pytest.approx(
        balancer.balanced_seconds * CURRENT / 3600
    )
    assert_matches(hass, balancer.balanced_seconds)
    assert shown == sorted(shown), "a total never runs backwards"
    # After balancing stopped, the totals stand still.
    assert shown[-1] == shown[-10]


async def test_balancing_that_starts_after_quiet_polls(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    clock: FakeClock,
) -> None:
    """Polls that change nothing still count: the idle time is not smeared.

    Were such polls not passed to the entities, the first balancing poll would
    be joined to the last changed one, minutes before, by one trapezoid.
    """
    for cell in range(1, 17):
        balancer.set_cell_voltage(cell, 3.300)
    await setup_entry(hass, entry)
    for _ in range(10):
        await poll(hass, clock)
    assert not balancer.balancing
    assert seconds(hass) == 0
    balancer.set_cell_voltage(16, 3.330)
    assert balancer.balancing
    for _ in range(30):
        await poll(hass, clock)
    assert not balancer.balancing
    assert balancer.balanced_seconds > 5 * POLL
    # Started just after a poll (the worst case) and stopped between two.
    assert_matches(hass, balancer.balanced_seconds, transitions=2)


async def test_settings_update_adds_no_sample(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    clock: FakeClock,
) -> None:
    """New settings (after a write) carry the old reading: nothing is added."""
    await setup_entry(hass, entry)
    await poll(hass, clock)
    shown = seconds(hass)
    clock.now += 20
    coordinator = entry.runtime_data
    coordinator.async_set_updated_data(
        dataclasses.replace(
            coordinator.data,
            snapshot=dataclasses.replace(
                coordinator.data.snapshot, settings=coordinator.data.settings
            ),
        )
    )
    await hass.async_block_till_done()
    assert seconds(hass) == shown
    clock.now += POLL - 20
    await async_next_poll(hass, POLL)
    assert_matches(hass, balancer.balanced_seconds)


async def test_totals_continue_after_a_restart(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    clock: FakeClock,
) -> None:
    """Restored totals continue; the time Home Assistant was down is skipped."""
    await setup_entry(hass, entry)
    for _ in range(8):
        await poll(hass, clock)
    before = balancer.balanced_seconds
    assert_matches(hass, before)
    stored_seconds, stored_charge = seconds(hass), ampere_hours(hass)
    assert await hass.config_entries.async_unload(entry.entry_id)

    # Home Assistant is down for 3 minutes; the balancer keeps balancing.
    clock.now += 180
    balancer.step()
    down = balancer.balanced_seconds - before
    assert down == pytest.approx(180)
    mock_restore_cache_with_extra_data(
        hass,
        (
            (
                State(TIME, str(stored_seconds / 3600)),
                {"native_value": stored_seconds, "native_unit_of_measurement": "s"},
            ),
            (
                State(CHARGE, str(stored_charge)),
                {"native_value": stored_charge, "native_unit_of_measurement": "Ah"},
            ),
        ),
    )
    await setup_entry(hass, entry)
    assert seconds(hass) == pytest.approx(stored_seconds, abs=0.1)
    assert ampere_hours(hass) == pytest.approx(stored_charge, abs=1e-5)

    for _ in range(40):
        await poll(hass, clock)
    assert not balancer.balancing
    assert_matches(hass, balancer.balanced_seconds - down)


async def test_unavailable_gap_is_skipped(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    balancer: VirtualBalancer,
    clock: FakeClock,
) -> None:
    """While the balancer does not answer, no charge is invented."""
    await setup_entry(hass, entry)
    for _ in range(5):
        await poll(hass, clock)
    last_seen = balancer.balanced_seconds

    balancer.faults.silent = True
    for _ in range(4):
        await poll(hass, clock)
        assert hass.states.get(TIME).state == STATE_UNAVAILABLE
        assert hass.states.get(CHARGE).state == STATE_UNAVAILABLE
    balancer.faults.silent = False
    await poll(hass, clock)
    assert hass.states.get(TIME).state != STATE_UNAVAILABLE
    unseen = balancer.balanced_seconds - last_seen
    assert unseen == pytest.approx(5 * POLL)
    # Nothing was added for the gap.
    assert_matches(hass, last_seen)

    for _ in range(40):
        await poll(hass, clock)
    assert not balancer.balancing
    assert_matches(hass, balancer.balanced_seconds - unseen)


@pytest.mark.parametrize(
    ("stored_time", "stored_charge"),
    [
        ((-5.0, "s"), ("lots", "Ah")),  # negative; not a number
        ((5.0, "min"), (None, "Ah")),  # another unit; nothing stored
    ],
)
async def test_bad_restored_totals_start_from_zero(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    stored_time: tuple[object, str],
    stored_charge: tuple[object, str],
) -> None:
    """A restored value that is no total of this sensor is dropped."""
    mock_restore_cache_with_extra_data(
        hass,
        tuple(
            (
                State(entity_id, "x"),
                {"native_value": value, "native_unit_of_measurement": unit},
            )
            for entity_id, (value, unit) in (
                (TIME, stored_time),
                (CHARGE, stored_charge),
            )
        ),
    )
    await setup_entry(hass, entry)
    assert seconds(hass) == 0
    assert ampere_hours(hass) == 0


async def test_no_charge_total_without_a_current(hass: HomeAssistant) -> None:
    """The legacy A5 protocol reports no balance current: no charge total."""
    from custom_components.active_balancer.protocol import Variant

    device = VirtualBalancer(16, Chemistry.LFP, variants=(Variant.A5,))
    async with await serve_tcp(device) as srv:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="Balancer 16S",
            data=serial_entry_data(srv.url, variant="a5"),
            unique_id="virtual-a5",
        )
        entry.add_to_hass(hass)
        await setup_entry(hass, entry)
        assert hass.states.get(CHARGE) is None
        assert hass.states.get(SPREAD) is not None
        await hass.config_entries.async_unload(entry.entry_id)


async def test_no_charge_invented_without_the_current(
    hass: HomeAssistant, balancer: VirtualBalancer, clock: FakeClock
) -> None:
    """A device that leaves the balance current out: time grows, charge not."""
    from balancer_tools.simulator import Quirks
    from custom_components.active_balancer.protocol import Variant

    balancer.variants = frozenset({Variant.D2})
    balancer.quirks = Quirks(ignore_registers=[(0x40, 0x40)])
    async with await serve_tcp(balancer) as srv:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="Balancer 16S",
            data=serial_entry_data(srv.url),
            unique_id="virtual-no-current",
        )
        entry.add_to_hass(hass)
        await setup_entry(hass, entry)
        assert "balance_current" in entry.runtime_data.client.snapshot.unanswered
        for _ in range(10):
            await poll(hass, clock)
        assert balancer.balanced_charge > 0
        assert ampere_hours(hass) == 0
        assert seconds(hass) == pytest.approx(balancer.balanced_seconds, abs=0.1)
        await hass.config_entries.async_unload(entry.entry_id)


def test_rates() -> None:
    """What a total grows by; None where the reading does not say (a gap)."""
    from custom_components.active_balancer.balancing import (
        _charge_rate,
        _time_rate,
    )
    from custom_components.active_balancer.protocol import Reading

    cells = (3.3, 3.35)
    assert _time_rate(Reading(cells, balancing=None)) is None
    assert _time_rate(Reading(cells, balancing=False)) == 0
    assert _time_rate(Reading(cells, balancing=True)) == 1
    idle = Reading(cells, balancing=False, balance_current=None)
    assert _charge_rate(idle) == 0
    unknown = Reading(cells, balancing=True, balance_current=None)
    assert _charge_rate(unknown) is None
    # A current reported with a sign counts by its size.
    assert _charge_rate(Reading(cells, balancing=True, balance_current=-0.9)) == (
        pytest.approx(0.9 / 3600)
    )


def test_integral() -> None:
    """Trapezoids between polls; nothing over a gap or a negative reading."""
    integral = Integral()
    integral.add(0, 1.0)
    integral.add(30, 1.0)
    assert integral.total == 30
    integral.add(60, 0.0)  # stopped between the polls: half the interval
    assert integral.total == 45
    integral.add(60, 5.0)  # no time passed
    assert integral.total == 45
    integral.gap()
    integral.add(1000, 1.0)
    assert integral.total == 45
    integral.add(1030, -1.0)  # a negative reading counts as nothing
    assert integral.total == 45 + 15


def test_top_of_charge_spread() -> None:
    """The spread at the day's highest average, forgotten after 24 hours."""
    spread = TopOfChargeSpread()
    assert spread.value(0) is None
    spread.add(3600 * 10, 3.30, 0.010)
    spread.add(3600 * 10 + 60, 3.45, 0.060)  # the top of charge
    spread.add(3600 * 11, 3.35, 0.015)
    assert spread.value(3600 * 12) == 0.060
    restored = TopOfChargeSpread.from_dict({**spread.as_dict(), "junk": [1], "7": "xy"})
    assert restored.peaks == spread.peaks
    assert TopOfChargeSpread.from_dict(None).peaks == {}
    assert restored.value(3600 * 34 + 1) == 0.015
    assert restored.value(3600 * 36) is None


async def test_spread_sensor(
    hass: HomeAssistant, entry: MockConfigEntry, balancer: VirtualBalancer
) -> None:
    """Shows the spread of the highest average seen; restores older peaks."""
    hour = int(dt_util.utcnow().timestamp() // 3600)
    mock_restore_cache_with_extra_data(
        hass,
        (
            (
                State(SPREAD, "0.07"),
                {
                    "native_value": 0.07,
                    "native_unit_of_measurement": "V",
                    "peaks": {str(hour - 2): [3.5, 0.07], str(hour - 30): [3.6, 0.2]},
                },
            ),
        ),
    )
    await setup_entry(hass, entry)
    state = hass.states.get(SPREAD)
    assert state.attributes["unit_of_measurement"] == "mV"
    assert float(state.state) == pytest.approx(70)
    # A higher top of charge now: its spread is shown.
    for cell in range(1, 17):
        balancer.set_cell_voltage(cell, 3.55)
    balancer.set_cell_voltage(3, 3.52)
    await async_next_poll(hass)
    assert float(hass.states.get(SPREAD).state) == pytest.approx(30)
