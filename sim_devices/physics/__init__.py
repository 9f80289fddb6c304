"""The simulated pod's physical model (pure, deterministic for a seed)."""

from sim_devices.physics.model import (
    CoolingInputs,
    PhysicsInputError,
    PodModel,
    ServerInputs,
)
from sim_devices.physics.types import CoolingSnapshot, PodSnapshot, ServerId, ServerSnapshot

__all__ = [
    "CoolingInputs",
    "CoolingSnapshot",
    "PhysicsInputError",
    "PodModel",
    "PodSnapshot",
    "ServerId",
    "ServerInputs",
    "ServerSnapshot",
]
