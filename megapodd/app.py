"""The composition root: builds everything from the validated config and runs
it in one TaskGroup. Nothing else creates long-lived tasks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from megapodd.api.server import ApiServer
from megapodd.backoff import Backoff
from megapodd.commands.service import CommandService
from megapodd.config import Config, ConfigError
from megapodd.control.arbiter import OutputArbiter
from megapodd.control.loop_specs import compile_loops
from megapodd.control.loops import LoopEngine
from megapodd.control.tick import ControlTick, TickDuty
from megapodd.devices import build_devices, register_outputs
from megapodd.devices.cdu import request_heartbeat
from megapodd.events import EventBus, Severity
from megapodd.gc_pacing import GcPacer
from megapodd.metrics.collector import TickHistogram
from megapodd.metrics.service import DaemonMetrics, EventCounts
from megapodd.mqtt.command_subscription import CommandSubscription
from megapodd.mqtt.session import MqttSession
from megapodd.mqtt.telemetry import Telemetry
from megapodd.point_events import PointEvents
from megapodd.power.controller import PowerController
from megapodd.safety.engine import InterlockEngine
from megapodd.safety.persist import AtomicFiles
from megapodd.safety.rules import compile_rules
from megapodd.sdnotify import Notifier
from megapodd.store import PointStore
from megapodd.version import package_version

log = structlog.get_logger("megapodd.app")

# SIGTERM to exit must fit in 5 s (invariant 7); the offline publish gets most.
_STOP_PUBLISH_TIMEOUT_S = 3.0
# A last save of interlock state that was asked for but not yet written.
_STOP_SAVE_TIMEOUT_S = 1.0


# How often the tick ages points whose device is busy, hung or reconnecting.
_STALENESS_CHECK_S = 0.25


def _loop_clock() -> float:
    return asyncio.get_running_loop().time()


class Daemon:
    def __init__(
        self,
        config: Config,
        notifier: Notifier | None = None,
        config_path: Path = Path("megapodd.toml"),
        state_files: AtomicFiles | None = None,
    ) -> None:
        self.config = config
        self.version = package_version()
        self.boot_id = uuid.uuid4().hex
        self.notifier = notifier or Notifier()
        self.events = EventBus(self.boot_id)
        self.event_counts = EventCounts()  # first, so the metrics count every event
        self.events.add_sink(self.event_counts.on_event)
        self.store = PointStore(self.events)
        try:
            config.state.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"state.dir: cannot create {config.state.dir}: {exc.strerror}"
            raise ConfigError(config_path, [problem]) from None
        self.telemetry = Telemetry(
            self.store,
            self._topic,
            config.state.dir,
            config.mqtt.snapshot_s,
            config.mqtt.queue_max_events,
            config.mqtt.device_budget_bytes_per_s,
        )
        self.events.add_sink(self.telemetry.on_event)
        self.devices = build_devices(config, self.store, self.events, config_path)
        self.arbiter = OutputArbiter(self.events, _loop_clock)
        register_outputs(self.arbiter, self.devices, config)
        self.interlocks = InterlockEngine(
            compile_rules(config),
            self.store,
            self.arbiter,
            self.events,
            config.state.dir / "interlocks.json",
            _loop_clock,
            files=state_files,
        )
        # Latched interlocks first, so the first write to a device is theirs (invariant 3).
        self.interlocks.restore()
        self.arbiter.start()  # queued: runs once each device is connected
        for supervisor in self.devices.supervisors:
            supervisor.add_connect_listener(
                functools.partial(self.arbiter.device_connected, supervisor.device_id)
            )
        loops, zones = compile_loops(config)
        self.loops = LoopEngine(
            loops, zones, self.store, self.arbiter, self.events, _loop_clock
        )
        self.power = (
            PowerController(config, self.store, self.arbiter, self.events, _loop_clock)
            if config.power is not None
            else None
        )
        self.point_events = PointEvents(self.store, self.events)
        self._subscribe()
        self.telemetry.add_retained_topic("interlocks", self.interlocks.snapshot)
        self.interlocks.add_listener(lambda: self.telemetry.topic_changed("interlocks"))
        self.telemetry.add_retained_topic("loops", self.loops.snapshot)
        self.loops.add_listener(lambda: self.telemetry.topic_changed("loops"))
        if self.power is not None:
            self.telemetry.add_retained_topic("power", self.power.snapshot)
            self.power.add_listener(lambda: self.telemetry.topic_changed("power"))
        duties = [
            # Four heartbeats per CDU watchdog period: one may wait behind a poll.
            TickDuty(
                cdu_config.watchdog_timeout_s / 4,
                functools.partial(request_heartbeat, cdu),
                f"{cdu.device_id} heartbeat",
                vital=True,
            )
            for cdu_config, cdu in self.devices.cdus.values()
        ]
        duties += [
            TickDuty(0.0, self.loops.tick, "control loops", vital=True),
            TickDuty(0.0, self.arbiter.tick, "output expiry and retries", vital=True),
            *(
                [TickDuty(0.0, self.power.tick, "power budget", vital=True)]
                if self.power is not None
                else []
            ),
            TickDuty(_STALENESS_CHECK_S, self._check_output_feedback, "output feedback"),
            TickDuty(_STALENESS_CHECK_S, self._refresh_staleness, "point staleness", vital=True),
            TickDuty(_STALENESS_CHECK_S, self.interlocks.check_inputs, "safety", vital=True),
            # Last, so that no duty waits behind it (megapodd/gc_pacing.py).
            TickDuty(0.0, GcPacer().collect, "garbage collection"),
        ]
        self.tick_times = TickHistogram()
        self.tick = ControlTick(
            config.control.tick_s,
            self.notifier,
            duties,
            self.events,
            on_duration=self.tick_times.observe,
        )
        self.commands = CommandService(
            self.store,
            self.events,
            self.devices,
            self.arbiter,
            self.interlocks,
            self.loops,
            _loop_clock,
            self.pod_info,
            self.power,
        )
        audit = self.commands.audit.refused
        self.api = ApiServer(
            config.api.socket,
            self.commands.commands(),
            reader_group=config.api.reader_group,
            admin_group=config.api.admin_group,
            on_refused=audit,
        )
        fleet = None
        if config.mqtt.commands:
            fleet = CommandSubscription(
                self.commands.commands(),
                audit,
                config.mqtt.topic_prefix,
                config.mqtt.command_rate_per_s,
                config.mqtt.command_burst,
                on_published=functools.partial(self.telemetry.stats.published, "reply"),
            )
        self.mqtt = MqttSession(
            config.mqtt, config.pod.id, self.telemetry, self.version, self.boot_id, fleet
        )
        self.metrics = DaemonMetrics(self, self.tick_times, self.event_counts)
        self._stop = asyncio.Event()

    def _topic(self, suffix: str) -> str:
        return f"{self.config.mqtt.topic_prefix}/{self.config.pod.id}/{suffix}"

    def _subscribe(self) -> None:
        """Every consumer of readings, each with what its failure means."""
        self.store.readings.add(
            "safety engine",
            self.interlocks.on_readings,
            Severity.CRITICAL,
            "interlocks may not act on this device's readings until it works again",
        )
        self.store.readings.add(
            "control loops",
            self.loops.on_readings,
            Severity.CRITICAL,
            "the loops may miss a bad reading of this device and not go to failsafe",
        )
        self.store.changes.add(
            "point events",
            self.point_events.on_change,
            Severity.ALARM,
            "outlet, breaker and leak changes may go without an event",
        )
        self.store.changes.add(
            "mqtt telemetry",
            self.telemetry.on_change,
            Severity.ALARM,
            "the fleet may see this device's state late",
        )

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
            mqtt = group.create_task(
                self._keep_running("mqtt session", self.mqtt.run), name="mqtt-session"
            )
            others = [
                group.create_task(sup.run(), name=f"supervisor:{sup.device_id}")
                for sup in self.devices.supervisors
            ]
            others.append(
                group.create_task(
                    self._keep_running("event journal", self.telemetry.outbox.run_journal),
                    name="event-journal",
                )
            )
            others.append(
                group.create_task(
                    self._keep_running(
                        "interlock state writer", self.interlocks.state_writer.run
                    ),
                    name="interlock-state-writer",
                )
            )
            others.append(
                group.create_task(self._keep_running("local API", self.api.run), name="api")
            )
            others.append(group.create_task(self.tick.run(), name="control-tick"))
            if self.metrics.server is not None:
                others.append(group.create_task(self.metrics.server.run(), name="metrics"))
            self.notifier.ready(f"supervising {len(self.devices.supervisors)} devices")
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
            # Pumps stay at their setpoint: stopping writes nothing to devices.
            await self.mqtt.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_PUBLISH_TIMEOUT_S):
                    await asyncio.shield(mqtt)
            mqtt.cancel()
            for task in others:
                task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_SAVE_TIMEOUT_S):
                await self.interlocks.state_writer.flush()
        self.notifier.close()

    def _check_output_feedback(self) -> None:
        self.arbiter.check_feedback(self.store.get)

    def _refresh_staleness(self) -> None:
        now = _loop_clock()
        for supervisor in self.devices.supervisors:
            supervisor.refresh_staleness(now)

    async def _keep_running(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a service task; if it fails, say so and start it again.

        A bug in publishing or in the local API must not end the TaskGroup:
        that would stop supervision of every device with it."""
        backoff = Backoff(initial_s=1.0, max_s=30.0)
        while True:
            try:
                await run()
            except Exception as exc:  # restarted below; the traceback goes to the log
                log.exception("service_failed", service=what)
                self.events.emit(
                    "service_failed",
                    Severity.ALARM,
                    "megapodd",
                    f"{what} failed ({type(exc).__name__}: {exc}); restarting it",
                    {"service": what, "error": type(exc).__name__},
                )
                await asyncio.sleep(backoff.next_delay_s())
            else:
                return

    def pod_info(self) -> dict[str, object]:
        return {
            "id": self.config.pod.id,
            "version": self.version,
            "boot_id": self.boot_id,
            "mqtt": {
                "connected": self.mqtt.connected,
                "pending_events": self.mqtt.pending_events,
            },
            "tick": self.tick.stats(),
        }
