"""Coordinator: one per balancer, polls it and is the one place that writes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
import logging
from typing import TYPE_CHECKING, Any

from homeassistant.components import bluetooth
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_ADDRESS
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import (
    ConfigEntryNotReady,
    HomeAssistantError,
    ServiceValidationError,
)
from homeassistant.helpers.device_registry import (
    CONNECTION_BLUETOOTH,
    DeviceInfo as HaDeviceInfo,
)
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from .const import (
    CONF_POLL_INTERVAL,
    CONF_PORT,
    CONF_RS485_ADDRESS,
    CONF_TRANSPORT,
    CONF_VARIANT,
    DEFAULT_POLL_INTERVAL,
    DOMAIN,
    LINK_QUALITY_WINDOW,
    TRANSPORT_BLE,
    TRANSPORT_SERIAL,
)
from .issues import BalancerIssues
from .protocol import (
    BalancerClient,
    BalancerError,
    BalancerInfo,
    NotSupported,
    OutOfRange,
    Reading,
    RefusalReason,
    Setting,
    Settings,
    Snapshot,
    Variant,
    WriteNotConfirmed,
)

if TYPE_CHECKING:
    from .protocol.ble import BleLink

_LOGGER = logging.getLogger(__name__)

MANUFACTURER = "DALY / 100balance"


@dataclass(frozen=True, slots=True)
class BalancerData:
    """What the entities show: the client's last snapshot and the link state."""

    snapshot: Snapshot
    link_quality: float
    """Share of the last polls that succeeded, in percent."""
    rssi: int | None = None
    """Signal strength of the last advertisement (Bluetooth only)."""

    @property
    def info(self) -> BalancerInfo:
        """The balancer's identity."""
        return self.snapshot.info

    @property
    def reading(self) -> Reading:
        """The last live values."""
        return self.snapshot.reading

    @property
    def settings(self) -> Settings:
        """The settings as last read or confirmed."""
        return self.snapshot.settings

    @property
    def unanswered(self) -> Mapping[str, str]:
        """Optional parts the device did not answer (their entities are
        unavailable), with why."""
        return self.snapshot.unanswered


@dataclass(frozen=True, slots=True)
class ShownAs:
    """How the user sees a setting, for the messages about a refused value."""

    name: str
    unit: str | None = None
    """The unit shown; None: the unit of the rules (volts, seconds...)."""
    convert: Callable[[float], float] = float
    """A value in the unit of the rules, in the unit shown."""

    def figure(self, value: float | None) -> str:
        """*value* (in the rules' unit) as the user sees it."""
        return "" if value is None else f"{self.convert(value):g}"

    def step(self, step: float | None) -> str:
        """A step (a difference, not a value) as the user sees it."""
        return "" if step is None else f"{self.convert(step) - self.convert(0):g}"


REFUSALS: dict[RefusalReason, tuple[str, tuple[str, ...]]] = {
    RefusalReason.RANGE: (
        "invalid_range",
        ("setting", "value", "minimum", "maximum", "unit"),
    ),
    RefusalReason.STEP: ("invalid_step", ("setting", "value", "step", "unit")),
    RefusalReason.CHEMISTRY: (
        "invalid_chemistry",
        ("value", "minimum", "maximum", "chemistry"),
    ),
    RefusalReason.ALARM_ORDER: ("invalid_alarm_order", ("over", "under")),
}
"""The translation key of each reason a value is refused, and its placeholders."""


def refusal_message(err: OutOfRange, shown: ShownAs) -> ServiceValidationError:
    """The translated error for a value the library refused."""
    key, wanted = REFUSALS[err.reason]
    over: float | None = err.value
    under: float | None = err.minimum
    if err.setting is Setting.CELL_UNDERVOLTAGE_ALARM:
        over, under = err.maximum, err.value
    unit = err.unit if shown.unit is None else shown.unit
    figures = {
        "setting": shown.name,
        "value": shown.figure(err.value),
        "minimum": shown.figure(err.minimum),
        "maximum": shown.figure(err.maximum),
        "step": shown.step(err.step),
        "unit": unit,
        "chemistry": err.chemistry.name if err.chemistry else "",
        "over": shown.figure(over),
        "under": shown.figure(under),
    }
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders={name: figures[name] for name in wanted},
    )


class BalancerCoordinator(DataUpdateCoordinator[BalancerData]):
    """Polls one balancer and writes its settings."""

    config_entry: BalancerConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: BalancerConfigEntry,
        client: BalancerClient,
        *,
        ble_link: BleLink | None = None,
    ) -> None:
        """Create the coordinator for *entry*."""
        interval = entry.options.get(CONF_POLL_INTERVAL, DEFAULT_POLL_INTERVAL)
        super().__init__(
            hass,
            _LOGGER,
            config_entry=entry,
            name=entry.title,
            update_interval=timedelta(seconds=interval),
            # Every poll reaches the entities, also one that changed nothing:
            # the balancing totals integrate over every poll. The entities
            # still write a state only when what they show changed.
            always_update=True,
        )
        self.client = client
        self.ble_link = ble_link
        self.rssi: int | None = None
        self._results: deque[bool] = deque(maxlen=LINK_QUALITY_WINDOW)
        self.issues = BalancerIssues(hass, entry.entry_id, entry.title)
        self.last_error: str | None = None
        self._late_writes: list[CALLBACK_TYPE] | None = None

    @callback
    def async_update_listeners(self) -> None:
        """Let the entities show new data: every measurement first.

        Home Assistant starts a state trigger's actions while the triggering
        state is being written. So alarms, the balancing state, switches and
        numbers are written only after every measurement of the same poll:
        an automation triggered by an alarm reads that poll's cell voltages.
        """
        self._late_writes = []
        try:
            super().async_update_listeners()
        finally:
            late, self._late_writes = self._late_writes, None
        for write in late:
            write()

    def write_after_measurements(self, write: CALLBACK_TYPE) -> bool:
        """Queue *write* behind the measurements of the update in progress.

        Returns False outside an update (then the caller writes at once).
        """
        if self._late_writes is None:
            return False
        self._late_writes.append(write)
        return True

    @property
    def identity(self) -> str:
        """What the device and the entities' unique ids are built from.

        The entry's unique id (the serial number, the Bluetooth address, or the
        port of entries made by earlier versions); the entry id where a serial
        balancer reports no serial number.
        """
        entry = self.config_entry
        return entry.unique_id or entry.entry_id

    @cached_property
    def device_info(self) -> HaDeviceInfo:
        """The device all of this balancer's entities belong to."""
        entry = self.config_entry
        info = self.data.info
        connections = set()
        if entry.data[CONF_TRANSPORT] == TRANSPORT_BLE:
            connections.add((CONNECTION_BLUETOOTH, entry.data[CONF_ADDRESS]))
        name = entry.title
        if entry.data[CONF_TRANSPORT] == TRANSPORT_SERIAL:
            # Short (entity ids are made from it): the title without the port
            # the config flow added. A title the user gave stays as it is.
            name = name.removesuffix(port_suffix(entry.data))
        return HaDeviceInfo(
            identifiers={(DOMAIN, self.identity)},
            connections=connections,
            name=name,
            manufacturer=MANUFACTURER,
            model=f"Smart Active Balancer {self.data.reading.cell_count}S",
            sw_version=info.software_version,
            hw_version=info.hardware_version,
            serial_number=info.serial_number,
        )

    @property
    def link_quality(self) -> float:
        """Share of the recent polls that succeeded, in percent."""
        if not self._results:
            return 100.0
        return round(100 * sum(self._results) / len(self._results), 1)

    async def _async_setup(self) -> None:
        """Connect: detect the variant and read identity and settings."""
        try:
            await self.client.connect()
        except BalancerError as err:
            self.last_error = str(err)
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key="setup_failed",
                translation_placeholders={"error": str(err)},
            ) from err
        if self.ble_link is not None:
            self.config_entry.async_on_unload(
                bluetooth.async_register_callback(
                    self.hass,
                    self._async_advertisement,
                    bluetooth.BluetoothCallbackMatcher(
                        address=self.config_entry.data[CONF_ADDRESS], connectable=True
                    ),
                    bluetooth.BluetoothScanningMode.PASSIVE,
                )
            )
            self._async_follow_last_advertisement()

    @callback
    def _async_follow_last_advertisement(self) -> None:
        """Take the RSSI and the best path from the last advertisement seen.

        Home Assistant calls back only when an advertisement's content changes,
        not when only its signal strength or the adapter that saw it does.
        """
        last = bluetooth.async_last_service_info(
            self.hass, self.config_entry.data[CONF_ADDRESS], connectable=True
        )
        if last is not None:
            assert self.ble_link is not None
            self.ble_link.set_device(last.device)
            self.rssi = last.rssi

    @callback
    def _async_advertisement(
        self,
        service_info: bluetooth.BluetoothServiceInfoBleak,
        _change: bluetooth.BluetoothChange,
    ) -> None:
        """Follow the device's advertisements (best adapter or proxy, RSSI)."""
        assert self.ble_link is not None
        self.ble_link.set_device(service_info.device)
        self.rssi = service_info.rssi

    async def _async_update_data(self) -> BalancerData:
        """Poll the balancer."""
        try:
            snapshot = await self.client.poll()
        except BalancerError as err:
            self._results.append(False)
            self.last_error = str(err)
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="update_failed",
                translation_placeholders={"error": str(err)},
            ) from err
        self._results.append(True)
        if self.ble_link is not None:
            self._async_follow_last_advertisement()
        self.issues.async_update(snapshot)
        return BalancerData(snapshot, link_quality=self.link_quality, rssi=self.rssi)

    async def async_write(
        self, setting: Setting, value: float | bool, *, shown: ShownAs | None = None
    ) -> None:
        """The one write helper: check, write, read back, show at once.

        *shown* says how the user sees the setting, for the messages. After
        the confirmed write, one live read shows at once what the change
        affects (balancing state, current) instead of at the next poll.
        """
        shown = shown or ShownAs(setting.value)
        try:
            write = self.client.prepare(setting, value)
            if not self.last_update_success:
                raise HomeAssistantError(
                    translation_domain=DOMAIN, translation_key="unavailable"
                )
            await self.client.send(write)
        except OutOfRange as err:
            raise refusal_message(err, shown) from err
        except NotSupported as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="not_writable",
                translation_placeholders={"setting": shown.name},
            ) from err
        except WriteNotConfirmed as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="write_not_confirmed",
                translation_placeholders={"error": str(err)},
            ) from err
        except BalancerError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="write_failed",
                translation_placeholders={"error": str(err)},
            ) from err
        try:
            snapshot = await self.client.read_live()
        except BalancerError as err:
            # The write itself is confirmed; the next poll reads the rest.
            _LOGGER.debug("Live read after the write failed: %s", err)
            confirmed = self.client.snapshot  # with the setting just written
            assert confirmed is not None
            snapshot = confirmed
        self.async_set_updated_data(dataclasses.replace(self.data, snapshot=snapshot))


type BalancerConfigEntry = ConfigEntry[BalancerCoordinator]


def serial_title(data: Mapping[str, Any], cells: int) -> str:
    """The title of a serial entry: its size, and how it is reached.

    "Balancer 16S on /dev/ttyUSB0"; p81 boards add their RS485 address
    ("Balancer 16S #2 on ..."), so that boards on one bus differ. The device
    is named without the port part (entity ids are made from its name).
    """
    name = f"Balancer {cells}S"
    if data.get(CONF_VARIANT) == Variant.P81:
        name += f" #{data[CONF_RS485_ADDRESS]}"
    return name + port_suffix(data)


def port_suffix(data: Mapping[str, Any]) -> str:
    """The part of a serial entry's title that says where it is reached."""
    return f" on {data[CONF_PORT]}"
