"""The composition root: builds everything from the validated config and runs
it in one TaskGroup. Nothing else creates long-lived tasks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import structlog

from megapodd.api.server import ApiError, ApiServer, Command, Role
from megapodd.config import Config
from megapodd.control_tick import ControlTick, HeartbeatDue
from megapodd.devices import build_devices
from megapodd.events import EventBus, Severity
from megapodd.mqtt.publisher import MqttPublisher
from megapodd.sdnotify import Notifier
from megapodd.store import PointStore

log = structlog.get_logger("megapodd.app")

# SIGTERM to exit must fit in 5 s (invariant 7); the offline publish gets most.
_STOP_PUBLISH_TIMEOUT_S = 3.0


def daemon_version() -> str:
    try:
        return version("megapodd")
    except PackageNotFoundError:
        return "0+unknown"


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.version = daemon_version()
        self.boot_id = uuid.uuid4().hex
        self.notifier = notifier or Notifier()
        self.store = PointStore()
        self.events = EventBus()
        config.state.dir.mkdir(parents=True, exist_ok=True)
        self.publisher = MqttPublisher(
            config.mqtt, config.pod.id, self.store, config.state.dir, self.version, self.boot_id
        )
        self.events.add_sink(self.publisher.on_event)
        self.devices = build_devices(config, self.store, self.events)
        duties = [
            HeartbeatDue(max(1.0, cdu.config.watchdog_timeout_s / 3), cdu.heartbeat)
            for cdu in self.devices.cdus
        ]
        self.tick = ControlTick(config.control.tick_s, self.notifier, duties)
        self.api = ApiServer(
            config.api.socket,
            self._commands(),
            reader_group=config.api.reader_group,
            admin_group=config.api.admin_group,
        )
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.events.emit(
            "daemon_started",
            Severity.INFO,
            "megapodd",
            f"megapodd {self.version} started",
            {"boot_id": self.boot_id},
        )
        async with asyncio.TaskGroup() as group:
            publisher = group.create_task(self.publisher.run(), name="mqtt-publisher")
            others = [
                group.create_task(sup.run(), name=f"supervisor:{sup.device_id}")
                for sup in self.devices.supervisors
            ]
            others.append(group.create_task(self.api.run(), name="api"))
            others.append(group.create_task(self.tick.run(), name="control-tick"))
            self.notifier.ready(f"supervising {len(self.devices.supervisors)} devices")
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
            # Pumps stay at their setpoint: stopping writes nothing to devices.
            await self.publisher.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_PUBLISH_TIMEOUT_S):
                    await asyncio.shield(publisher)
            publisher.cancel()
            for task in others:
                task.cancel()
        self.notifier.close()

    # -- local API ---------------------------------------------------------

    def _commands(self) -> dict[str, Command]:
        return {
            "status": Command(self._status, Role.READER, "pod and device status"),
            "events": Command(self._recent_events, Role.READER, "recent events"),
        }

    async def _status(self, args: Mapping[str, object], _role: Role) -> object:
        device = args.get("device")
        devices = [d.as_json() for d in self.store.devices()]
        if device is not None:
            devices = [d for d in devices if d["id"] == device]
            if not devices:
                raise ApiError(f"no device {device!r}")
        return {
            "pod": {
                "id": self.config.pod.id,
                "version": self.version,
                "boot_id": self.boot_id,
                "mqtt": {
                    "connected": self.publisher.connected,
                    "pending_events": self.publisher.pending_events,
                },
            },
            "devices": devices,
        }

    async def _recent_events(self, args: Mapping[str, object], _role: Role) -> object:
        count = args.get("count", 20)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 500:
            raise ApiError("count must be an integer from 1 to 500")
        return [e.as_json() for e in list(self.events.recent)[-count:]]
