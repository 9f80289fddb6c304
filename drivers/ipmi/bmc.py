"""Server BMC driver (kind "bmc"): sensors from the SDR repository, chassis, DCMI power, fans.

What is read when is the caller's policy, given as `BmcPollGroup`s: each group
reads the SDR sensors its filter picks (one Get Sensor Reading each, named from
the sensor's ID string: `GPU3 Temp` -> `gpu3_temp_c`, `Leak` -> `leak`) and, if
it says so, the status block: `chassis_power` ("on"/"off"), `power_w` (DCMI),
`power_limit_w`, `power_limit_active`, `fan_duty_pct` (zone 0;
`fan_zone<z>_duty_pct` for others), `fan_mode`; the status block also re-reads
the SDRs when the repository changed. Without groups: every sensor each
`poll_s`, the status block each `slow_poll_s`.

A reading flagged unavailable, with scanning disabled, or outside the SDR's
sensor min/max is BAD, never GOOD. A sensor that stays unreadable through the
retries is BAD; a BMC that does not answer at all raises IpmiTimeout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from drivers.base import DeviceKind, Plausible, Point, PollGroup, Quality
from drivers.errors import ConfigurationError, DeviceError, TransportError, ValueRejected
from drivers.ipmi.client import IpmiClient, IpmiCompletionError, IpmiCounters, IpmiTimeout
from drivers.ipmi.codec import CompletionCode, NetFn
from drivers.ipmi.commands import (
    DCMI_GROUP,
    SUPERMICRO_FAN_DUTY,
    ChassisAction,
    ChassisStatus,
    Cmd,
    DcmiPowerLimit,
    DcmiPowerReading,
    DeviceId,
    FanMode,
    SdrChunk,
    SdrRepositoryInfo,
    SensorReading,
    ThresholdsRaw,
    get_sdr_request,
)
from drivers.ipmi.framing import IpmiFrameError
from drivers.ipmi.sdr import SDR_HEADER_BYTES, SdrError, SensorRecord, parse_sensor_record
from drivers.ipmi.transport import SerialLine, open_line

_Fetch = Callable[[], Awaitable[dict[str, Point]]]

log = structlog.get_logger(__name__)

SDR_CHUNK_BYTES = 16  # 16 data bytes keep a Get SDR reply well under 122 characters
LAST_RECORD_ID = 0xFFFF
MAX_RESERVATION_RETRIES = 5
SDR_READ_ATTEMPTS = 5  # reads allowed to get two matching copies of one record in a row
# A corrupted header length leads the driver to ask for bytes past the record's end.
_SUSPECT_SDR_CODES = (CompletionCode.CANNOT_RETURN_BYTES, CompletionCode.PARAMETER_OUT_OF_RANGE,
                      CompletionCode.INVALID_DATA_FIELD)
MAX_SDR_RECORDS = 1024  # a repository with more is broken (or a next-record loop)
THRESHOLD_NAMES = ("lnc", "lc", "lnr", "unc", "uc", "unr")


@dataclass(frozen=True, slots=True)
class SensorKind:
    """What a kind of analog sensor can read (a physical band, inside which the
    SDR's own min/max applies too) and the largest change between two reads
    believed without reading again."""

    low: float
    high: float
    credible_step: float


# By the SDR's unit. Temperatures: silicon and air between -40 and 150 C; 1 K
# between two reads (polls 0.5-2 s apart; faster moves are re-read). Fans
# below 30,000 RPM, a server below 30 kW (DGX B200 peaks at 14.3 kW).
SENSOR_KINDS: dict[str, SensorKind] = {
    "C": SensorKind(-40.0, 150.0, 1.0),
    "RPM": SensorKind(0.0, 30_000.0, 500.0),
    "W": SensorKind(0.0, 30_000.0, 500.0),
    "V": SensorKind(0.0, 1_000.0, 1.0),
    "A": SensorKind(0.0, 1_000.0, 2.0),
    "%": SensorKind(0.0, 100.0, 5.0),
}
# Terminal Mode has no checksum: a reading that moves by more than its credible
# step is read again at once, and believed when CONFIRM_READS reads in a row
# show the same value (or a read shows it back within the step: the move was
# line noise). Two agreeing copies of a corrupted byte come from 1 in 30 pairs
# of corrupted answers (the same hex digit changed alike); three from 1 in 900.
CONFIRM_READS = 3
CONFIRM_ATTEMPTS = 6  # reads of one sensor in one poll, at most
_STATUS_PLAUSIBLE: dict[str, Plausible] = {
    "power_w": Plausible(0.0, SENSOR_KINDS["W"].high),
    "fan_duty_pct": Plausible(0.0, 100.0),
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A sensor's thresholds in its unit; None where the BMC does not make one readable."""

    lnc: float | None
    lc: float | None
    lnr: float | None
    unc: float | None
    uc: float | None
    unr: float | None


def every_sensor(_record: SensorRecord) -> bool:
    return True


def no_sensor(_record: SensorRecord) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class BmcPollGroup:
    """What one poll group reads: the sensors its filter picks, and the status
    block (chassis, DCMI power and limit, fan duty and mode) if `status`."""

    name: str
    period_s: float
    sensors: Callable[[SensorRecord], bool] = no_sensor
    status: bool = False


@dataclass(frozen=True, slots=True)
class _Polled:
    """A sensor with what the hot path needs worked out once."""

    record: SensorRecord
    name: str
    unit: str
    request: bytes  # Get Sensor Reading data: the sensor number


@dataclass(frozen=True, slots=True)
class SdrSnapshot:
    """The sensors of one SDR repository read, and the stamps it was read at."""

    addition_timestamp: int
    erase_timestamp: int
    sensors: tuple[SensorRecord, ...]
    polled: tuple[_Polled, ...]


class BmcDriver:
    """One BMC on one serial line (a `DeviceDriver`)."""

    def __init__(self, port: str, baud: int = 115200, poll_s: float = 2.0,
                 timeout_s: float = 1.0, retries: int = 2, *, slow_poll_s: float | None = None,
                 fan_zones: Sequence[int] = (0,),
                 power_limit_range_w: tuple[int, int] = (100, 30000),
                 name: str | None = None,
                 groups: Sequence[BmcPollGroup] | None = None) -> None:
        if not port:
            raise ConfigurationError("bmc: port is empty")
        if baud <= 0 or poll_s <= 0 or timeout_s <= 0 or retries < 0:
            raise ConfigurationError(f"bmc {port}: baud, poll_s and timeout_s must be positive, "
                                     "retries >= 0")
        self.port = port
        self.baud = baud
        self.poll_s = poll_s
        self.slow_poll_s = slow_poll_s if slow_poll_s is not None else poll_s
        self.fan_zones = tuple(fan_zones)
        self.power_limit_range_w = power_limit_range_w
        self.name = name or port
        if groups is None:
            groups = (BmcPollGroup("sensors", poll_s, every_sensor),
                      BmcPollGroup("slow", self.slow_poll_s, status=True))
        if not groups or len({g.name for g in groups}) != len(groups):
            raise ConfigurationError(f"bmc {self.name}: poll groups must be named uniquely")
        self.groups: dict[str, BmcPollGroup] = {g.name: g for g in groups}
        self._client = IpmiClient(self._write, timeout_s=timeout_s, retries=retries,
                                  name=self.name)
        self._line: SerialLine | None = None
        self._sdr: SdrSnapshot | None = None
        self._thresholds: dict[str, Thresholds] = {}
        self._plausible: dict[str, Plausible] = dict(_STATUS_PLAUSIBLE)
        self._steps: dict[str, float] = {}  # credible step per analog sensor's point
        self._believed: dict[str, float] = {}  # the last confirmed value per point
        self.device_id: DeviceId | None = None
        self.sdr_reads = 0
        self.confirm_reads = 0  # sensor reads made again to confirm a large move

    # -- DeviceDriver -----------------------------------------------------------------

    @property
    def kind(self) -> DeviceKind:
        return DeviceKind.BMC

    def link_stats(self) -> Mapping[str, int]:
        c = self._client.counters
        return {
            **dataclasses.asdict(c),
            "retries": max(0, c.attempts - c.requests),
            "frame_errors": c.frame_errors + c.stale_replies,
            "device_errors": c.completion_errors,
            "confirm_reads": self.confirm_reads,
        }

    def plausible(self, point: str) -> Plausible | None:
        """What the point can read: its sensor's SDR range within its kind's band."""
        return self._plausible.get(point)

    def poll_groups(self) -> Sequence[PollGroup]:
        return tuple(PollGroup(g.name, g.period_s) for g in self.groups.values())

    async def connect(self) -> None:
        if self._line is not None and self._line.is_open:
            return
        await self.close()  # a line the peer closed: release it before opening anew
        self._line = await open_line(self.port, self.baud, self._client.data_received,
                                     self._client.connection_lost)
        try:
            self.device_id = await self.get_device_id()
            if self._sdr is None:
                await self._load_sdr()
            else:
                await self._refresh_sdr_if_changed()
        except BaseException:
            await self.close()
            raise
        log.info("bmc_connected", bmc=self.name, sensors=len(self.sensors),
                 firmware=self.device_id.firmware)

    async def close(self) -> None:
        line, self._line = self._line, None
        self._client.close()
        if line is not None:
            await line.close()

    async def read_group(self, group: str) -> Mapping[str, Point]:
        spec = self.groups.get(group)
        if spec is None:
            raise ConfigurationError(f"bmc {self.name}: no group {group!r}")
        points = await self._read_slow() if spec.status else {}
        points.update(await self._read_sensors(spec.sensors))
        return points

    # -- what the daemon can look at ---------------------------------------------------

    @property
    def counters(self) -> IpmiCounters:
        return self._client.counters

    @property
    def sensors(self) -> tuple[SensorRecord, ...]:
        return self._sdr.sensors if self._sdr is not None else ()

    @property
    def thresholds(self) -> Mapping[str, Thresholds]:
        """Per point name, read with Get Sensor Thresholds when the SDRs were read."""
        return dict(self._thresholds)

    # -- commands ------------------------------------------------------------------------

    async def get_device_id(self) -> DeviceId:
        rsp = await self._client.call(NetFn.APP, Cmd.GET_DEVICE_ID)
        return DeviceId.from_bytes(rsp.data)

    async def get_chassis_status(self) -> ChassisStatus:
        rsp = await self._client.call(NetFn.CHASSIS, Cmd.GET_CHASSIS_STATUS)
        return ChassisStatus.from_bytes(rsp.data)

    async def chassis_control(self, action: ChassisAction | int | str) -> ChassisStatus:
        """Power on/off/cycle/hard reset/soft shutdown; returns the status read back.

        On and off are confirmed by the power state read back; cycle, reset and
        soft shutdown by the BMC's completion code (their end state comes later).
        Cycle and reset are sent once, never retried: a lost reply must not reset twice.
        """
        try:
            act = ChassisAction.parse(action)
        except ValueError as exc:
            raise ValueRejected(str(exc)) from None
        idempotent = act in (ChassisAction.ON, ChassisAction.OFF, ChassisAction.SOFT_SHUTDOWN)
        await self._client.call(NetFn.CHASSIS, Cmd.CHASSIS_CONTROL, bytes((act,)),
                                idempotent=idempotent)
        status = await self.get_chassis_status()
        if act in (ChassisAction.ON, ChassisAction.OFF) and \
                status.power_on != (act is ChassisAction.ON):
            raise DeviceError(f"bmc {self.name}: chassis {act.name.lower()} accepted but power "
                              f"reads {'on' if status.power_on else 'off'}")
        log.info("bmc_chassis_control", bmc=self.name, action=act.name.lower(),
                 power_on=status.power_on)
        return status

    async def get_power_reading(self) -> DcmiPowerReading:
        rsp = await self._client.call(NetFn.GROUP_EXTENSION, Cmd.DCMI_GET_POWER_READING,
                                      bytes((DCMI_GROUP, 0x01, 0x00, 0x00)))
        return DcmiPowerReading.from_bytes(rsp.data)

    async def get_power_limit(self) -> tuple[DcmiPowerLimit | None, bool]:
        """(limit, active). The BMC answers 80h when no limit is active."""
        rsp = await self._client.call(
            NetFn.GROUP_EXTENSION, Cmd.DCMI_GET_POWER_LIMIT, bytes((DCMI_GROUP, 0, 0)),
            length=(14, 14), accept_codes=(CompletionCode.OK,
                                           CompletionCode.DCMI_NO_ACTIVE_POWER_LIMIT))
        active = rsp.completion_code == CompletionCode.OK
        if not active and len(rsp.data) != 14:
            return None, False
        return DcmiPowerLimit.from_get_bytes(rsp.data), active

    async def set_power_limit_w(self, limit_w: int | None) -> None:
        """Set and activate a power cap, or deactivate it (None); verified by reading back."""
        if limit_w is not None:
            low, high = self.power_limit_range_w
            if isinstance(limit_w, bool) or not isinstance(limit_w, int) or \
                    not low <= limit_w <= high:
                raise ValueRejected(f"power limit {limit_w!r} W outside {low}..{high} W")
            params = DcmiPowerLimit(exception_action=0, limit_w=limit_w, correction_ms=2000,
                                    sampling_s=1)
            await self._client.call(NetFn.GROUP_EXTENSION, Cmd.DCMI_SET_POWER_LIMIT,
                                    params.to_set_bytes())
        activate = 1 if limit_w is not None else 0
        await self._client.call(NetFn.GROUP_EXTENSION, Cmd.DCMI_ACTIVATE_POWER_LIMIT,
                                bytes((DCMI_GROUP, activate, 0, 0)))
        read_back, active = await self.get_power_limit()
        if active != (limit_w is not None) or (
                limit_w is not None and (read_back is None or read_back.limit_w != limit_w)):
            got = read_back.limit_w if read_back else None
            raise DeviceError(f"bmc {self.name}: power limit {limit_w} W read back as "
                              f"{got} W, active={active}")
        log.info("bmc_power_limit_set", bmc=self.name, limit_w=limit_w)

    async def get_fan_duty_pct(self, zone: int) -> int:
        rsp = await self._client.call(NetFn.OEM_SUPERMICRO, Cmd.OEM_FAN_DUTY,
                                      bytes((SUPERMICRO_FAN_DUTY, 0x00, zone)), length=(1, 1))
        duty = rsp.data[0]
        if duty > 100:
            raise IpmiFrameError(f"fan duty {duty} % over 100")
        return duty

    async def set_fan_duty_pct(self, zone: int, pct: int) -> None:
        if isinstance(zone, bool) or not isinstance(zone, int) or not 0 <= zone <= 0x0F:
            raise ValueRejected(f"fan zone {zone!r} outside 0..15")
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise ValueRejected(f"fan duty {pct!r} % outside 0..100")
        await self._client.call(NetFn.OEM_SUPERMICRO, Cmd.OEM_FAN_DUTY,
                                bytes((SUPERMICRO_FAN_DUTY, 0x01, zone, pct)), length=(0, 0))
        got = await self.get_fan_duty_pct(zone)
        if got != pct:
            raise DeviceError(f"bmc {self.name}: fan zone {zone} duty {pct} % read back {got} %")
        log.info("bmc_fan_duty_set", bmc=self.name, zone=zone, pct=pct)

    async def get_fan_mode(self) -> FanMode:
        rsp = await self._client.call(NetFn.OEM_SUPERMICRO, Cmd.OEM_FAN_MODE, b"\x00",
                                      length=(1, 1))
        try:
            return FanMode(rsp.data[0])
        except ValueError:
            raise IpmiFrameError(f"unknown fan mode {rsp.data[0]}") from None

    async def set_fan_mode(self, mode: FanMode | int | str) -> None:
        try:
            fan_mode = FanMode.parse(mode)
        except ValueError as exc:
            raise ValueRejected(str(exc)) from None
        await self._client.call(NetFn.OEM_SUPERMICRO, Cmd.OEM_FAN_MODE,
                                bytes((0x01, fan_mode)), length=(0, 0))
        got = await self.get_fan_mode()
        if got is not fan_mode:
            raise DeviceError(f"bmc {self.name}: fan mode {fan_mode.name} read back {got.name}")
        log.info("bmc_fan_mode_set", bmc=self.name, mode=fan_mode.name.lower())

    # -- groups ---------------------------------------------------------------------------

    async def _read_sensors(self, wanted: Callable[[SensorRecord], bool]) -> dict[str, Point]:
        self._require_line()
        points: dict[str, Point] = {}
        polled = self._sdr.polled if self._sdr is not None else ()
        for sensor in polled:
            if not wanted(sensor.record):
                continue
            point = await self._read_sensor(sensor)
            step = self._steps.get(sensor.name)
            if step is not None and point.quality is Quality.GOOD:
                point = await self._confirmed(sensor, point, step)
            points[sensor.name] = point
        return points

    async def _read_sensor(self, sensor: _Polled) -> Point:
        try:
            rsp = await self._client.call(NetFn.SENSOR_EVENT, Cmd.GET_SENSOR_READING,
                                          sensor.request)
            reading = SensorReading.from_bytes(rsp.data)
        except IpmiTimeout:
            raise  # the BMC is silent: the whole poll failed
        except (IpmiFrameError, IpmiCompletionError) as exc:
            # Noise that outlasted the retries, or a refusal for this sensor only.
            log.debug("bmc_sensor_unreadable", bmc=self.name, sensor=sensor.name,
                      error=str(exc))
            return Point(None, sensor.unit, Quality.BAD)
        return sensor_point(sensor.record, reading, sensor.unit)

    async def _confirmed(self, sensor: _Polled, point: Point, step: float) -> Point:
        """`point` if it is within `step` of the last believed value; else read
        again until CONFIRM_READS agree, or one is back within the step. None
        does within CONFIRM_ATTEMPTS: unconfirmed (the daemon keeps the last
        good value and says so)."""
        believed = self._believed.get(sensor.name)

        def credible(value: float) -> bool:
            return believed is not None and abs(value - believed) <= step

        value = float(point.value)  # type: ignore[arg-type]  # analog: always a number
        run = [value]
        for _ in range(CONFIRM_ATTEMPTS - 1):
            if credible(value) or len(run) >= CONFIRM_READS:
                self._believed[sensor.name] = value
                return point
            self.confirm_reads += 1
            point = await self._read_sensor(sensor)
            if point.quality is not Quality.GOOD:
                run = []
                continue
            value = float(point.value)  # type: ignore[arg-type]
            run = [*run, value] if run and run[-1] == value else [value]
        if point.quality is Quality.GOOD and (credible(value) or len(run) >= CONFIRM_READS):
            self._believed[sensor.name] = value
            return point
        log.debug("bmc_reading_unconfirmed", bmc=self.name, sensor=sensor.name, value=value)
        return Point(point.value, sensor.unit, Quality.GOOD, unconfirmed=True)

    async def _read_slow(self) -> dict[str, Point]:
        self._require_line()
        await self._refresh_sdr_if_changed()
        points: dict[str, Point] = {}

        async def guarded(names: Sequence[tuple[str, str]], fetch: _Fetch) -> None:
            try:
                values = await fetch()
            except IpmiTimeout:
                raise
            except (IpmiFrameError, DeviceError) as exc:
                log.debug("bmc_slow_unreadable", bmc=self.name, points=[n for n, _ in names],
                          error=str(exc))
                for name, unit in names:
                    points[name] = Point(None, unit, Quality.BAD)
                return
            points.update(values)

        async def chassis() -> dict[str, Point]:
            status = await self.get_chassis_status()
            return {"chassis_power": Point("on" if status.power_on else "off")}

        async def power() -> dict[str, Point]:
            reading = await self.get_power_reading()
            quality = Quality.GOOD if reading.active else Quality.BAD
            return {"power_w": Point(reading.current_w, "W", quality)}

        async def limit() -> dict[str, Point]:
            params, active = await self.get_power_limit()
            return {"power_limit_w": Point(params.limit_w if params else None, "W"),
                    "power_limit_active": Point(active)}

        async def mode() -> dict[str, Point]:
            return {"fan_mode": Point((await self.get_fan_mode()).name.lower())}

        await guarded((("chassis_power", ""),), chassis)
        await guarded((("power_w", "W"),), power)
        await guarded((("power_limit_w", "W"), ("power_limit_active", "")), limit)
        for zone in self.fan_zones:
            name = "fan_duty_pct" if zone == 0 else f"fan_zone{zone}_duty_pct"

            async def duty(zone: int = zone, name: str = name) -> dict[str, Point]:
                return {name: Point(await self.get_fan_duty_pct(zone), "%")}

            await guarded(((name, "%"),), duty)
        await guarded((("fan_mode", ""),), mode)
        return points

    # -- SDR repository ---------------------------------------------------------------------

    async def _repository_info(self) -> SdrRepositoryInfo:
        rsp = await self._client.call(NetFn.STORAGE, Cmd.GET_SDR_REPOSITORY_INFO)
        return SdrRepositoryInfo.from_bytes(rsp.data)

    async def _refresh_sdr_if_changed(self) -> None:
        info = await self._repository_info()
        sdr = self._sdr
        if sdr is None or (info.addition_timestamp, info.erase_timestamp) != (
                sdr.addition_timestamp, sdr.erase_timestamp):
            log.info("bmc_sdr_changed", bmc=self.name)
            await self._load_sdr(info)

    async def _load_sdr(self, info: SdrRepositoryInfo | None = None) -> None:
        if info is None:
            info = await self._repository_info()
        reservation = await self._reserve()
        records: list[SensorRecord] = []
        record_id = 0x0000
        seen: set[int] = set()
        while record_id != LAST_RECORD_ID:
            if record_id in seen or len(seen) >= MAX_SDR_RECORDS:
                raise SdrError(f"bmc {self.name}: SDR walk loops at record {record_id}")
            seen.add(record_id)
            next_id, raw, reservation = await self._read_record_twice(record_id, reservation)
            try:
                record = parse_sensor_record(raw)
            except SdrError as exc:
                # Read twice alike, so not line noise: a record kind this driver cannot use.
                log.warning("bmc_sdr_record_skipped", bmc=self.name, record_id=record_id,
                            error=str(exc))
                record = None
            if record is not None:
                records.append(record)
            record_id = next_id
        names = _unique_point_names(records)
        if names != [r.point_name for r in records]:
            log.warning("bmc_sensor_names_clash", bmc=self.name, names=names)
        thresholds: dict[str, Thresholds] = {}
        for record, name in zip(records, names, strict=True):
            if record.is_analog:
                thresholds[name] = await self._read_thresholds(record)
        polled = tuple(_Polled(r, name, r.unit_symbol, bytes((r.sensor_number,)))
                       for r, name in zip(records, names, strict=True))
        self._sdr = SdrSnapshot(info.addition_timestamp, info.erase_timestamp, tuple(records),
                                polled)
        self._thresholds = thresholds
        self._plausible = dict(_STATUS_PLAUSIBLE)
        self._steps, self._believed = {}, {}
        for sensor in polled:
            if sensor.record.is_analog:
                plausible, step = sensor_plausible(sensor.record)
                self._plausible[sensor.name] = plausible
                if step is not None:
                    self._steps[sensor.name] = step
        self.sdr_reads += 1

    async def _reserve(self) -> int:
        rsp = await self._client.call(NetFn.STORAGE, Cmd.RESERVE_SDR_REPOSITORY)
        return int.from_bytes(rsp.data[:2], "little")

    async def _read_record_twice(self, record_id: int,
                                 reservation: int) -> tuple[int, bytes, int]:
        """A record read until two reads agree.

        Terminal Mode has no checksum and every reading is converted through these
        bytes for as long as they are cached, so one flipped hex digit in M or B
        must not slip through: a record is trusted only when two reads match. A
        refusal to return bytes is what a flipped length byte leads to: read again.
        """
        previous: tuple[int, bytes] | None = None
        for _ in range(SDR_READ_ATTEMPTS):
            try:
                next_id, raw, reservation = await self._read_record(record_id, reservation)
            except (IpmiCompletionError, SdrError) as exc:
                if isinstance(exc, IpmiCompletionError) and exc.code not in _SUSPECT_SDR_CODES:
                    raise
                log.warning("bmc_sdr_read_failed", bmc=self.name, record_id=record_id,
                            error=str(exc))
                previous = None
                continue
            if previous == (next_id, raw):
                return next_id, raw, reservation
            if previous is not None:
                log.warning("bmc_sdr_reads_differ", bmc=self.name, record_id=record_id)
            previous = (next_id, raw)
        raise SdrError(f"bmc {self.name}: SDR {record_id}: no two of {SDR_READ_ATTEMPTS} "
                       "reads agreed")

    async def _read_record(self, record_id: int, reservation: int) -> tuple[int, bytes, int]:
        """One whole record in chunks; re-reserve and resume when the reservation is lost."""
        data = bytearray()
        next_id = LAST_RECORD_ID
        total = SDR_HEADER_BYTES
        lost = 0
        while len(data) < total:
            offset = len(data)
            count = SDR_HEADER_BYTES if offset == 0 else min(SDR_CHUNK_BYTES, total - offset)
            try:
                rsp = await self._client.call(
                    NetFn.STORAGE, Cmd.GET_SDR,
                    get_sdr_request(reservation, record_id, offset, count),
                    length=(2 + count, 2 + count))
            except IpmiCompletionError as exc:
                if exc.code != CompletionCode.RESERVATION_CANCELLED:
                    raise
                lost += 1
                if lost > MAX_RESERVATION_RETRIES:
                    raise
                reservation = await self._reserve()
                continue
            chunk = SdrChunk.from_bytes(rsp.data, count)
            if offset == 0:
                total = SDR_HEADER_BYTES + chunk.data[4]
                if int.from_bytes(chunk.data[:2], "little") != record_id and record_id != 0:
                    raise SdrError(f"asked for SDR {record_id}, got "
                                   f"{int.from_bytes(chunk.data[:2], 'little')}")
                next_id = chunk.next_record_id
            elif chunk.next_record_id != next_id:
                raise SdrError(f"SDR {record_id}: next record id changed mid-read")
            data += chunk.data
        return next_id, bytes(data), reservation

    async def _read_thresholds(self, record: SensorRecord) -> Thresholds:
        try:
            rsp = await self._client.call(NetFn.SENSOR_EVENT, Cmd.GET_SENSOR_THRESHOLDS,
                                          bytes((record.sensor_number,)))
        except IpmiCompletionError:
            return Thresholds(None, None, None, None, None, None)
        raw = ThresholdsRaw.from_bytes(rsp.data)
        values = [record.convert(v) if raw.readable_mask & (1 << i) else None
                  for i, v in enumerate(raw.raw)]
        return Thresholds(*values)

    def _require_line(self) -> None:
        if self._line is None or not self._line.is_open:
            raise TransportError(f"bmc {self.name}: not connected")

    def _write(self, data: bytes) -> None:
        if self._line is None:
            raise TransportError(f"bmc {self.name}: not connected")
        self._line.write(data)


_UNIT_SUFFIXES = ("_c", "_rpm", "_w", "_v", "_a", "_pct")


def _unique_point_names(records: Sequence[SensorRecord]) -> list[str]:
    """Point names from the ID strings; a name two sensors share gets each one's
    sensor number before its unit suffix (`gpu_temp_c` -> `gpu_temp_s12_c`), so
    a BMC with clashing ID strings still comes online with every sensor."""
    names = [r.point_name for r in records]
    clashing = {n for n in names if names.count(n) > 1}
    unique: list[str] = []
    for record, name in zip(records, names, strict=True):
        if name not in clashing:
            unique.append(name)
            continue
        suffix = next((x for x in _UNIT_SUFFIXES if name.endswith(x)), "")
        unique.append(f"{name.removesuffix(suffix)}_s{record.sensor_number}{suffix}")
    return unique


def sensor_plausible(record: SensorRecord) -> tuple[Plausible, float | None]:
    """An analog sensor's plausible range (its SDR min/max within its kind's
    band) and its credible step between two reads (None: a unit without a kind)."""
    low, high = record.valid_min, record.valid_max
    kind = SENSOR_KINDS.get(record.unit_symbol)
    if kind is None:
        return Plausible(low, high), None
    resolution = abs(record.m) * 10.0**record.k2
    return Plausible(max(low, kind.low), min(high, kind.high)), max(
        kind.credible_step, 2 * resolution
    )


def sensor_point(record: SensorRecord, reading: SensorReading, unit: str | None = None) -> Point:
    """One Get Sensor Reading through the sensor's SDR; BAD unless it can be trusted."""
    if unit is None:
        unit = record.unit_symbol
    if reading.unavailable or not reading.scanning_enabled:
        return Point(None, unit, Quality.BAD)
    if not record.is_threshold:
        if record.reading_type == 0x03:  # digital discrete: offset 0 deasserted, 1 asserted
            bits = reading.states & 0x03
            if bits not in (0x01, 0x02):
                return Point(None, "", Quality.BAD)
            return Point(bits == 0x02)
        return Point(reading.states)
    if not record.is_analog:
        return Point(None, unit, Quality.BAD)
    value = record.convert(reading.raw)
    quality = Quality.GOOD if record.in_range(value) else Quality.BAD
    return Point(value, unit, quality)

