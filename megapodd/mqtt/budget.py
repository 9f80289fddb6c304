"""A bandwidth budget per device for state messages beyond the snapshot.

A token bucket in bytes: a device may publish whenever it is not in debt, and
each message costs its size, so on average it stays within `bytes_per_s`
however often its readings move past their deadbands. A quiet device saves
up to `BURST_S` seconds' worth. Changes that arrive while a device is in debt
are not lost: the device stays marked and its next message carries the
newest values (the update is *coalesced*).
"""

from __future__ import annotations

from dataclasses import dataclass

# A quiet device may spend this many seconds of its budget at once.
BURST_S = 10.0
# Out of debt within a byte: float rounding must not keep a device waiting on a sliver.
_SLACK_BYTES = 1.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at_s: float


class DeviceBudget:
    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s  # 0: no limit
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, device_id: str, now_s: float) -> _Bucket:
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = self._buckets[device_id] = _Bucket(self.bytes_per_s * BURST_S, now_s)
        earned = max(0.0, now_s - bucket.at_s) * self.bytes_per_s
        bucket.tokens = min(self.bytes_per_s * BURST_S, bucket.tokens + earned)
        bucket.at_s = now_s
        return bucket

    def allows(self, device_id: str, now_s: float) -> bool:
        """Whether a message may go now (the device is not in debt)."""
        return self.bytes_per_s <= 0 or self._bucket(device_id, now_s).tokens >= -_SLACK_BYTES

    def spend(self, device_id: str, size_bytes: int, now_s: float) -> None:
        """A message went (also one that had to: a snapshot, a state change)."""
        if self.bytes_per_s > 0:
            self._bucket(device_id, now_s).tokens -= size_bytes

    def ready_at_s(self, device_id: str, now_s: float) -> float:
        """When the device is out of debt again."""
        if self.bytes_per_s <= 0:
            return now_s
        bucket = self._bucket(device_id, now_s)
        return now_s + max(0.0, -bucket.tokens) / self.bytes_per_s
