"""Simulated server BMCs speaking IPMI v2.0 Terminal Mode (DEVICES.md §3) on ptys.

All BMCs of a pod run in one event loop: `await serve_bmcs(specs, link_dir)`
returns a `BmcFarm`; each BMC answers on its own pseudo-terminal (a stable
symlink `<link_dir>/<name>.tty` points at the slave) and optionally on a TCP
port (as a console server would expose it). `await farm.close()` stops all.

The state object, `BmcState`, is plain and mutable; the pod orchestrator drives
it from the physics model:

- sensor inputs: `inlet_temp_c`, `outlet_temp_c`, `cpu_temp_c`,
  `gpu_temps_c` (8), `coolant_in_temp_c`, `fan_rpm` (4), `psu_power_w`, `leak`.
- `demand_power_w`: what the workload would draw uncapped.
- outputs the daemon sets through IPMI: `chassis_on`, `power_limit_w`,
  `power_limit_active`, `fan_duty_pct` (zones 0 and 1), `fan_mode` (0 standard,
  1 full: fans at 100 %).
- `power_cap_w(now)`: the cap in force (None before it takes effect, 1 s after
  activation, so "within 2 s" holds; a new limit set while one is active
  takes over 1 s later, the old one holding meanwhile) for the physics model.
- `advance(now)`: applies timed transitions (soft shutdown after
  `soft_shutdown_delay_s` = 30 s; power cycle: off, on again after 1 s) and, when
  `placeholder_physics` is True (the default, so it runs alone), sets fan rpm
  from duty and psu power from demand, cap and power state. An orchestrator
  that models these itself sets `placeholder_physics = False`.
- faults: `silent` (no answers), `garbage_rate` (fraction of replies corrupted:
  random bytes before the frame, and the frame cut short or carrying a non-hex
  character), `noise_rate` (fraction of intact replies preceded by random
  bytes), `stuck_raw` {sensor ID string: raw byte} (a stuck or out-of-range
  value: see `out_of_range_raw`), `unavailable` {sensor ID strings flagged
  reading-unavailable}, `cancel_reservation_every` (lose the SDR reservation
  every N partial Get SDRs, as when another client reserves),
  `corrupt_sdr_reads` (the next N Get SDR replies carry one flipped bit in
  otherwise valid hex: the corruption no framing check can see),
  `reading_corrupt_rate` (fraction of Get Sensor Reading answers with one hex
  digit of the reading byte changed to another: well formed, wrong value;
  counted in `readings_corrupted`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from drivers.ipmi.codec import CompletionCode, NetFn, Request, Response
from drivers.ipmi.commands import (
    DCMI_GROUP,
    SUPERMICRO_FAN_DUTY,
    ChassisAction,
    ChassisStatus,
    Cmd,
    DcmiPowerLimit,
    DcmiPowerReading,
    DeviceId,
    SdrRepositoryInfo,
    SensorReading,
    ThresholdsRaw,
)
from drivers.ipmi.framing import FrameReader, IpmiFrameError, encode_frame
from drivers.ipmi.sdr import (
    AnalogFormat,
    FullRecordSpec,
    SensorRecord,
    Unit,
    build_compact_discrete_record,
    build_full_record,
    parse_sensor_record,
)
from sim_devices.pty_line import PtyLine

log = structlog.get_logger(__name__)

SOFT_SHUTDOWN_DELAY_S = 30.0
POWER_CYCLE_OFF_S = 1.0
POWER_CAP_DELAY_S = 1.0  # the cap is in force this long after activation (spec: within 2 s)
MAX_SDR_CHUNK = 34  # 2 bytes of next-record id + 34 keeps a reply within 122 characters
FAN_ZONES = 2
LEAK_SENSOR_TYPE = 0xC0  # OEM: IPMI has no "liquid leak" sensor type
GARBAGE_BYTES_MAX = 8


@dataclass
class BmcState:
    """One server as the BMC sees it (see the module docstring)."""

    inlet_temp_c: float = 25.0
    outlet_temp_c: float = 38.0
    cpu_temp_c: float = 45.0
    gpu_temps_c: list[float] = field(default_factory=lambda: [45.0 + i for i in range(8)])
    coolant_in_temp_c: float = 30.0
    fan_rpm: list[float] = field(default_factory=lambda: [8500.0] * 4)
    psu_power_w: float = 6000.0
    demand_power_w: float = 6000.0
    leak: bool = False
    chassis_on: bool = True
    power_limit_w: int = 12000
    power_cap_min_w: int = 100  # Set Power Limit below this answers C9
    power_limit_active: bool = False
    power_limit_activated_at: float = 0.0
    # A new limit set while one is active takes over after the delay; the old
    # one holds until then (a real BMC does not run uncapped in between).
    power_limit_previous_w: int | None = None
    fan_duty_pct: list[int] = field(default_factory=lambda: [50] * FAN_ZONES)
    fan_mode: int = 0
    soft_shutdown_delay_s: float = SOFT_SHUTDOWN_DELAY_S
    shutdown_at: float | None = None
    power_on_at: float | None = None
    placeholder_physics: bool = True
    # faults
    silent: bool = False
    garbage_rate: float = 0.0
    noise_rate: float = 0.0
    stuck_raw: dict[str, int] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)
    cancel_reservation_every: int = 0
    corrupt_sdr_reads: int = 0
    reading_corrupt_rate: float = 0.0
    # what happened (for tests and the orchestrator)
    resets: int = 0  # hard resets received
    readings_corrupted: int = 0

    def power_cap_w(self, now: float) -> int | None:
        if not self.power_limit_active:
            return None
        if now >= self.power_limit_activated_at + POWER_CAP_DELAY_S:
            return self.power_limit_w
        return self.power_limit_previous_w

    def power_limit_target_w(self) -> int | None:
        """The limit set and active, at once: for a physical model whose own
        power lag is the BMC's response (0.4 s, within 2 s as DEVICES.md says)."""
        return self.power_limit_w if self.power_limit_active else None

    def advance(self, now: float) -> None:
        if self.shutdown_at is not None and now >= self.shutdown_at:
            self.shutdown_at = None
            self.chassis_on = False
        if self.power_on_at is not None and now >= self.power_on_at:
            self.power_on_at = None
            self.chassis_on = True
        if not self.placeholder_physics:
            return
        if not self.chassis_on:
            self.psu_power_w = 0.0
            self.fan_rpm = [0.0] * len(self.fan_rpm)
            return
        cap = self.power_cap_w(now)
        self.psu_power_w = self.demand_power_w if cap is None else min(self.demand_power_w, cap)
        duty = 100 if self.fan_mode == 1 else self.fan_duty_pct[0]
        self.fan_rpm = [1000.0 + 150.0 * duty] * len(self.fan_rpm)


@dataclass(frozen=True, slots=True)
class _SimSensor:
    record: SensorRecord
    raw_record: bytes
    value: Callable[[BmcState], float] | None  # None: the leak sensor
    readable_mask: int
    upper_thresholds: tuple[tuple[int, float], ...]  # (status bit, value) for UNC, UC, UNR


def _temp(record_id: int, name: str, fmt: AnalogFormat, m: int, b: int, k1: int, k2: int,
          min_raw: int, max_raw: int, thresholds_c: tuple[float, float, float]) -> FullRecordSpec:
    # Raw of each upper threshold through the record's own formula.
    probe = FullRecordSpec(record_id, record_id, name, 0x01, Unit.DEGREES_C, m, b, k1, k2, fmt)
    record = parse_sensor_record(build_full_record(probe))
    if record is None:  # pragma: no cover - a full record always decodes
        raise IpmiFrameError("full record did not decode")
    unc, uc, unr = (record.encode(t) for t in thresholds_c)
    return FullRecordSpec(record_id, record_id, name, 0x01, Unit.DEGREES_C, m, b, k1, k2, fmt,
                          sensor_min_raw=min_raw, sensor_max_raw=max_raw,
                          thresholds_raw=(0, 0, 0, unc, uc, unr), readable_mask=0x38)


def _gpu_temp(index: int) -> Callable[[BmcState], float]:
    return lambda s: s.gpu_temps_c[index]


def _fan_rpm(index: int) -> Callable[[BmcState], float]:
    return lambda s: s.fan_rpm[index]


def _sensor_table() -> list[tuple[FullRecordSpec | None, str, Callable[[BmcState], float] | None]]:
    two = AnalogFormat.TWOS_COMPLEMENT
    uns = AnalogFormat.UNSIGNED
    table: list[tuple[FullRecordSpec | None, str, Callable[[BmcState], float] | None]] = [
        # Air temperatures in whole degrees, signed (a cold aisle can be below 0 °C).
        (_temp(1, "Inlet Temp", two, 1, 0, 0, 0, 0xD8, 100, (40, 45, 50)), "Inlet Temp",
         lambda s: s.inlet_temp_c),
        (_temp(2, "Outlet Temp", two, 1, 0, 0, 0, 0xD8, 100, (60, 70, 80)), "Outlet Temp",
         lambda s: s.outlet_temp_c),
        (_temp(3, "CPU Temp", uns, 1, 0, 0, 0, 0, 125, (85, 95, 100)), "CPU Temp",
         lambda s: s.cpu_temp_c),
    ]
    for gpu in range(8):
        # 0.5 °C steps, 0..120 °C; Hopper: slowdown 89, max operating 87, shutdown 92.
        table.append((_temp(4 + gpu, f"GPU{gpu + 1} Temp", uns, 5, 0, 0, -1, 0, 240, (85, 87, 92)),
                      f"GPU{gpu + 1} Temp", _gpu_temp(gpu)))
    # y = 0.5·x − 20 °C: exercises a negative B with K1.
    table.append((_temp(12, "Coolant In Temp", uns, 5, -20, 1, -1, 0, 250, (45, 50, 60)),
                  "Coolant In Temp", lambda s: s.coolant_in_temp_c))
    for fan in range(4):
        table.append((FullRecordSpec(13 + fan, 13 + fan, f"Fan{fan + 1}", 0x04, Unit.RPM, 100,
                                     sensor_min_raw=0, sensor_max_raw=250,
                                     thresholds_raw=(0, 10, 5, 0, 0, 0), readable_mask=0x06),
                      f"Fan{fan + 1}", _fan_rpm(fan)))
    # 100 W steps up to 20 kW: a whole 8-GPU server (DGX B200 peaks at 14.3 kW).
    table.append((FullRecordSpec(17, 17, "PSU Power", 0x08, Unit.WATTS, 10, k2=1,
                                 sensor_min_raw=0, sensor_max_raw=200,
                                 thresholds_raw=(0, 0, 0, 150, 160, 0), readable_mask=0x18),
                  "PSU Power", lambda s: s.psu_power_w))
    table.append((None, "Leak", None))
    return table


def _build_sensors() -> list[_SimSensor]:
    sensors: list[_SimSensor] = []
    for spec, name, getter in _sensor_table():
        if spec is None:
            raw = build_compact_discrete_record(18, 18, name, LEAK_SENSOR_TYPE)
            mask = 0
        else:
            raw = build_full_record(spec)
            mask = spec.readable_mask
        record = parse_sensor_record(raw)
        if record is None:  # pragma: no cover
            raise IpmiFrameError(f"SDR for {name} did not decode")
        upper = tuple((bit, record.convert(t)) for bit, t in
                      zip((3, 4, 5), record.thresholds_raw[3:], strict=True) if mask & (1 << bit))
        sensors.append(_SimSensor(record, raw, getter, mask, upper))
    return sensors


class SimBmc:
    """One BMC: parses requests from any of its lines and answers on the same line."""

    def __init__(self, name: str, state: BmcState | None = None, *, seed: int | None = None,
                 device_id: int = 0x20) -> None:
        self.name = name
        self.state = state or BmcState()
        self.sensors = _build_sensors()
        self._by_number = {s.record.sensor_number: s for s in self.sensors}
        self._by_record_id = {s.record.record_id: s for s in self.sensors}
        self._record_ids = sorted(self._by_record_id)
        self._rng = random.Random(seed)
        self._loop = asyncio.get_running_loop()
        self.addition_timestamp = 0x60000000
        self.erase_timestamp = 0x60000000
        self._reservation = 0
        self._partial_reads = 0
        self.device_id = DeviceId(device_id, 1, 1, 23, 0x02, 0x83, 10876, 0x1B0E)
        self.requests = 0
        self.lines: list[PtyLine] = []

    def out_of_range_raw(self, id_string: str) -> int:
        """A raw byte just past the sensor's SDR maximum (still decodable)."""
        record = self._sensor(id_string).record
        return (record.sensor_max_raw + 1) & 0xFF

    def _sensor(self, id_string: str) -> _SimSensor:
        for sensor in self.sensors:
            if sensor.record.id_string == id_string:
                return sensor
        raise KeyError(id_string)

    def value_of(self, id_string: str) -> float | bool:
        """What the driver should read for a sensor now (after the SDR's rounding)."""
        sensor = self._sensor(id_string)
        if sensor.value is None:
            return self.state.leak
        return sensor.record.convert(sensor.record.encode(sensor.value(self.state)))

    def change_sdr(self) -> None:
        """Pretend a record was added: new timestamp, reservations cancelled."""
        self.addition_timestamp += 1
        self._reservation = (self._reservation + 1) & 0xFFFF

    # -- lines ------------------------------------------------------------------------

    def make_receiver(self, write: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """A data callback for one line: requests in, replies out through `write`."""
        reader = FrameReader()

        def on_data(data: bytes) -> None:
            for item in reader.feed(data):
                if item.payload is None:
                    continue  # a real BMC ignores a garbled line (or answers [ERR]); stay quiet
                try:
                    request = Request.from_bytes(item.payload)
                except IpmiFrameError:
                    continue
                reply = self.handle(request)
                if reply is not None:
                    write(self._maybe_corrupt(encode_frame(reply.to_bytes(), b"\r\n")))

        return on_data

    def _noise(self) -> bytes:
        rng = self._rng
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, GARBAGE_BYTES_MAX)))

    def _maybe_corrupt(self, frame: bytes) -> bytes:
        state = self.state
        rng = self._rng
        prefix = b""
        if state.noise_rate > 0 and rng.random() < state.noise_rate:
            prefix = self._noise()
        if state.garbage_rate <= 0 or rng.random() >= state.garbage_rate:
            return prefix + frame
        body_end = frame.index(b"]")
        if rng.random() < 0.5:
            # Cut short: lose the tail, sometimes with the line end surviving.
            cut = rng.randint(1, body_end)
            frame = frame[:cut] + (b"\r\n" if rng.random() < 0.5 else b"")
        else:
            pos = rng.randint(1, body_end - 1)
            frame = frame[:pos] + bytes((rng.choice(b"GHJKXZgz?!#"),)) + frame[pos + 1 :]
        return prefix + self._noise() + frame

    # -- commands ------------------------------------------------------------------------

    def handle(self, req: Request) -> Response | None:
        self.requests += 1
        state = self.state
        if state.silent:
            return None
        state.advance(self._loop.time())
        key = (req.netfn, req.cmd)
        handler = _HANDLERS.get(key)
        if handler is None:
            return Response.to(req, CompletionCode.INVALID_COMMAND)
        try:
            return handler(self, req)
        except _Refuse as refuse:
            return Response.to(req, refuse.code)

    def _device_id(self, req: Request) -> Response:
        return Response.to(req, 0, self.device_id.to_bytes())

    def _chassis_status(self, req: Request) -> Response:
        s = self.state
        status = ChassisStatus(s.chassis_on, False, False, False, False, 2, 0, 0)
        return Response.to(req, 0, status.to_bytes())

    def _chassis_control(self, req: Request) -> Response:
        _need(req, 1)
        try:
            action = ChassisAction(req.data[0])
        except ValueError:
            raise _Refuse(CompletionCode.INVALID_DATA_FIELD) from None
        s = self.state
        now = self._loop.time()
        s.shutdown_at = None
        if action is ChassisAction.OFF:
            s.chassis_on, s.power_on_at = False, None
        elif action is ChassisAction.ON:
            s.chassis_on, s.power_on_at = True, None
        elif action is ChassisAction.CYCLE:
            s.chassis_on, s.power_on_at = False, now + POWER_CYCLE_OFF_S
        elif action is ChassisAction.HARD_RESET:
            s.resets += 1
        elif s.chassis_on:
            s.shutdown_at = now + s.soft_shutdown_delay_s
        s.advance(now)
        return Response.to(req, 0)

    def _sensor_reading(self, req: Request) -> Response:
        _need(req, 1)
        sensor = self._by_number.get(req.data[0])
        if sensor is None:
            raise _Refuse(CompletionCode.NOT_PRESENT)
        s = self.state
        name = sensor.record.id_string
        unavailable = name in s.unavailable
        if sensor.value is None:
            states = 0x02 if s.leak else 0x01
            reading = SensorReading(0, True, True, unavailable, states)
            return Response.to(req, 0, reading.to_bytes())
        record = sensor.record
        value = sensor.value(s)
        raw = s.stuck_raw.get(name)
        if raw is None:
            raw = record.encode(value)
        else:
            value = record.convert(raw)
        states = 0
        for bit, threshold in sensor.upper_thresholds:
            if value >= threshold:
                states |= 1 << bit
        flags = 0xC0 | (0x20 if unavailable else 0)
        if s.reading_corrupt_rate > 0 and self._rng.random() < s.reading_corrupt_rate:
            # One hex digit of the byte becomes another; the states stay true.
            shift = self._rng.choice((0, 4))
            digit = (raw >> shift) & 0xF
            other = self._rng.choice([d for d in range(16) if d != digit])
            raw = (raw & ~(0xF << shift)) | (other << shift)
            s.readings_corrupted += 1
        return Response.to(req, 0, bytes((raw, flags, states)))

    def _thresholds(self, req: Request) -> Response:
        _need(req, 1)
        sensor = self._by_number.get(req.data[0])
        if sensor is None:
            raise _Refuse(CompletionCode.NOT_PRESENT)
        if sensor.value is None:
            raise _Refuse(CompletionCode.ILLEGAL_FOR_SENSOR)
        raw = ThresholdsRaw(sensor.readable_mask, sensor.record.thresholds_raw)
        return Response.to(req, 0, raw.to_bytes())

    def _sdr_info(self, req: Request) -> Response:
        info = SdrRepositoryInfo(0x51, len(self.sensors), 0x8000, self.addition_timestamp,
                                 self.erase_timestamp, 0x02)
        return Response.to(req, 0, info.to_bytes())

    def _reserve(self, req: Request) -> Response:
        self._reservation = (self._reservation + 1) & 0xFFFF or 1
        return Response.to(req, 0, self._reservation.to_bytes(2, "little"))

    def _get_sdr(self, req: Request) -> Response:
        _need(req, 6)
        reservation = int.from_bytes(req.data[0:2], "little")
        record_id = int.from_bytes(req.data[2:4], "little")
        offset, count = req.data[4], req.data[5]
        if offset:
            every = self.state.cancel_reservation_every
            self._partial_reads += 1
            if every and self._partial_reads % every == 0:
                self._reservation = (self._reservation + 1) & 0xFFFF or 1
            if reservation != self._reservation:
                raise _Refuse(CompletionCode.RESERVATION_CANCELLED)
        if record_id == 0:
            record_id = self._record_ids[0]
        sensor = self._by_record_id.get(record_id)
        if sensor is None:
            raise _Refuse(CompletionCode.NOT_PRESENT)
        raw = sensor.raw_record
        if count == 0xFF:
            count = len(raw) - offset
        if count > MAX_SDR_CHUNK or offset + count > len(raw):
            raise _Refuse(CompletionCode.CANNOT_RETURN_BYTES)
        index = self._record_ids.index(record_id)
        next_id = self._record_ids[index + 1] if index + 1 < len(self._record_ids) else 0xFFFF
        chunk = bytearray(raw[offset : offset + count])
        if self.state.corrupt_sdr_reads > 0 and chunk:
            self.state.corrupt_sdr_reads -= 1
            chunk[self._rng.randrange(len(chunk))] ^= 1 << self._rng.randrange(8)
        return Response.to(req, 0, next_id.to_bytes(2, "little") + bytes(chunk))

    def _dcmi(self, req: Request) -> Response:
        if not req.data or req.data[0] != DCMI_GROUP:
            raise _Refuse(CompletionCode.INVALID_COMMAND)  # PICMG and VSO probes land here
        s = self.state
        if req.cmd == Cmd.DCMI_GET_POWER_READING:
            _need(req, 4)
            if req.data[1] != 0x01:
                raise _Refuse(CompletionCode.INVALID_DATA_FIELD)
            watts = round(s.psu_power_w)
            reading = DcmiPowerReading(watts, watts, watts, watts,
                                       int(self._loop.time()) & 0xFFFFFFFF, 1000, True)
            return Response.to(req, 0, reading.to_bytes())
        if req.cmd == Cmd.DCMI_GET_POWER_LIMIT:
            params = DcmiPowerLimit(0, s.power_limit_w, 2000, 1)
            code = 0 if s.power_limit_active else CompletionCode.DCMI_NO_ACTIVE_POWER_LIMIT
            return Response.to(req, code, params.to_get_bytes())
        if req.cmd == Cmd.DCMI_SET_POWER_LIMIT:
            try:
                params = DcmiPowerLimit.from_set_bytes(req.data)
            except IpmiFrameError:
                raise _Refuse(CompletionCode.INVALID_LENGTH) from None
            if params.limit_w < s.power_cap_min_w:
                raise _Refuse(CompletionCode.PARAMETER_OUT_OF_RANGE)
            now = self._loop.time()
            if s.power_limit_active:
                s.power_limit_previous_w = s.power_cap_w(now)
                s.power_limit_activated_at = now
            s.power_limit_w = params.limit_w
            return Response.to(req, 0, bytes((DCMI_GROUP,)))
        if req.cmd == Cmd.DCMI_ACTIVATE_POWER_LIMIT:
            _need(req, 4)
            if req.data[1] not in (0, 1):
                raise _Refuse(CompletionCode.INVALID_DATA_FIELD)
            if req.data[1] and not s.power_limit_active:
                s.power_limit_activated_at = self._loop.time()
                s.power_limit_previous_w = None
            s.power_limit_active = bool(req.data[1])
            return Response.to(req, 0, bytes((DCMI_GROUP,)))
        raise _Refuse(CompletionCode.INVALID_COMMAND)

    def _fan_duty(self, req: Request) -> Response:
        _need(req, 3)
        if req.data[0] != SUPERMICRO_FAN_DUTY or req.data[2] >= FAN_ZONES:
            raise _Refuse(CompletionCode.INVALID_DATA_FIELD)
        zone = req.data[2]
        if req.data[1] == 0x00:
            return Response.to(req, 0, bytes((self.state.fan_duty_pct[zone],)))
        if req.data[1] == 0x01 and len(req.data) == 4 and req.data[3] <= 100:
            self.state.fan_duty_pct[zone] = req.data[3]
            self.state.advance(self._loop.time())
            return Response.to(req, 0)
        raise _Refuse(CompletionCode.INVALID_DATA_FIELD)

    def _fan_mode(self, req: Request) -> Response:
        _need(req, 1)
        if req.data[0] == 0x00:
            return Response.to(req, 0, bytes((self.state.fan_mode,)))
        if req.data[0] == 0x01 and len(req.data) == 2 and req.data[1] in (0, 1):
            self.state.fan_mode = req.data[1]
            self.state.advance(self._loop.time())
            return Response.to(req, 0)
        raise _Refuse(CompletionCode.INVALID_DATA_FIELD)


class _Refuse(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"completion code 0x{code:02x}")
        self.code = code


def _need(req: Request, length: int) -> None:
    if len(req.data) < length:
        raise _Refuse(CompletionCode.REQUEST_TRUNCATED)


_HANDLERS: dict[tuple[int, int], Callable[[SimBmc, Request], Response]] = {
    (NetFn.APP, Cmd.GET_DEVICE_ID): SimBmc._device_id,
    (NetFn.CHASSIS, Cmd.GET_CHASSIS_STATUS): SimBmc._chassis_status,
    (NetFn.CHASSIS, Cmd.CHASSIS_CONTROL): SimBmc._chassis_control,
    (NetFn.SENSOR_EVENT, Cmd.GET_SENSOR_READING): SimBmc._sensor_reading,
    (NetFn.SENSOR_EVENT, Cmd.GET_SENSOR_THRESHOLDS): SimBmc._thresholds,
    (NetFn.STORAGE, Cmd.GET_SDR_REPOSITORY_INFO): SimBmc._sdr_info,
    (NetFn.STORAGE, Cmd.RESERVE_SDR_REPOSITORY): SimBmc._reserve,
    (NetFn.STORAGE, Cmd.GET_SDR): SimBmc._get_sdr,
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_GET_POWER_READING): SimBmc._dcmi,
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_GET_POWER_LIMIT): SimBmc._dcmi,
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_SET_POWER_LIMIT): SimBmc._dcmi,
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_ACTIVATE_POWER_LIMIT): SimBmc._dcmi,
    (NetFn.OEM_SUPERMICRO, Cmd.OEM_FAN_DUTY): SimBmc._fan_duty,
    (NetFn.OEM_SUPERMICRO, Cmd.OEM_FAN_MODE): SimBmc._fan_mode,
}


@dataclass(frozen=True, slots=True)
class BmcSpec:
    """One BMC to serve: its name (link `<name>.tty`), state, optional TCP port."""

    name: str
    state: BmcState | None = None
    tcp_port: int | None = None
    seed: int | None = None


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, bmc: SimBmc) -> None:
        self._bmc = bmc
        self._on_data: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            self._on_data = self._bmc.make_receiver(transport.write)

    def data_received(self, data: bytes) -> None:
        if self._on_data is not None:
            self._on_data(data)


@dataclass
class ServedBmc:
    bmc: SimBmc
    line: PtyLine
    server: asyncio.Server | None = None

    @property
    def path(self) -> str:
        return self.line.path

    @property
    def state(self) -> BmcState:
        return self.bmc.state


class BmcFarm:
    """The BMCs served by one `serve_bmcs` call; `close()` stops every line."""

    def __init__(self) -> None:
        self.bmcs: dict[str, ServedBmc] = {}

    def __getitem__(self, name: str) -> ServedBmc:
        return self.bmcs[name]

    async def close(self) -> None:
        for served in self.bmcs.values():
            served.line.close()
            if served.server is not None:
                served.server.close()
                with contextlib.suppress(Exception):
                    await served.server.wait_closed()
        self.bmcs.clear()


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


async def serve_bmcs(specs: Sequence[BmcSpec], link_dir: Path) -> BmcFarm:
    """Start one simulated BMC per spec on its own pty (and TCP port if given)."""
    _make_dir(link_dir)
    farm = BmcFarm()
    loop = asyncio.get_running_loop()
    try:
        for spec in specs:
            bmc = SimBmc(spec.name, spec.state, seed=spec.seed)
            line = PtyLine(link_dir / f"{spec.name}.tty")
            line.on_data = bmc.make_receiver(line.write)
            served = ServedBmc(bmc, line)
            farm.bmcs[spec.name] = served
            if spec.tcp_port is not None:
                served.server = await loop.create_server(
                    functools.partial(_TcpProtocol, bmc), "127.0.0.1", spec.tcp_port)
    except BaseException:
        await farm.close()
        raise
    log.info("bmc_farm_started", count=len(specs), link_dir=str(link_dir))
    return farm


async def _run_standalone(count: int, link_dir: Path, tcp_base_port: int | None,
                          garbage_rate: float) -> None:
    specs = [BmcSpec(f"srv{i + 1:03d}", BmcState(garbage_rate=garbage_rate),
                     tcp_port=None if tcp_base_port is None else tcp_base_port + i, seed=i)
             for i in range(count)]
    farm = await serve_bmcs(specs, link_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    for name, served in farm.bmcs.items():
        print(f"{name} {served.path} -> {served.line.slave_name}", flush=True)
    try:
        await stop.wait()
    finally:
        await farm.close()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m sim_devices.bmc --count 4 --link-dir /tmp/bmcs`: BMCs until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Simulated IPMI Terminal Mode BMCs on ptys")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--link-dir", type=Path, default=Path("/tmp/megapod-bmcs"))  # noqa: S108
    parser.add_argument("--tcp-base-port", type=int, default=None)
    parser.add_argument("--garbage-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(_run_standalone(args.count, args.link_dir, args.tcp_base_port,
                                args.garbage_rate))


if __name__ == "__main__":
    main()
