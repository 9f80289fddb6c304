"""What the MQTT side published: messages and bytes per topic kind and per
device, and the device updates the bandwidth budget merged into later
messages. Read by the metrics (megapodd/metrics/)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Traffic:
    messages: int = 0
    bytes: int = 0  # topic and payload, as the broker receives them


@dataclass(slots=True)
class DeviceTraffic(Traffic):
    coalesced: int = 0  # updates held back by the budget and carried by a later message


@dataclass(slots=True)
class PublishStats:
    # "status", "device_state", "interlocks", "loops", "events", "reply", ...
    topics: dict[str, Traffic] = field(default_factory=dict)
    devices: dict[str, DeviceTraffic] = field(default_factory=dict)

    def published(self, kind: str, topic: str, payload: bytes, device: str | None = None) -> None:
        size = len(topic.encode()) + len(payload)
        traffic = self.topics.setdefault(kind, Traffic())
        traffic.messages += 1
        traffic.bytes += size
        if device is not None:
            per_device = self.devices.setdefault(device, DeviceTraffic())
            per_device.messages += 1
            per_device.bytes += size

    def coalesced(self, device: str) -> None:
        self.devices.setdefault(device, DeviceTraffic()).coalesced += 1
