"""Fixtures of the integration tests."""

from collections.abc import AsyncIterator

import pytest

from tests.helpers import MosquittoBroker
from tests.integration.simulated_pod import pod
from tests.mqtt_contract import ContractRecorder

__all__ = ["mqtt_contract", "pod"]  # pod: the small simulated pod with a daemon on it


@pytest.fixture(autouse=True)
async def mqtt_contract(request: pytest.FixtureRequest) -> AsyncIterator[ContractRecorder | None]:
    """Every test on the shared broker: each message under megapod/v1/ and each
    reply to a fleet command must fit its schema (schemas/), or the test fails."""
    if "mosquitto" not in request.fixturenames:
        yield None
        return
    broker: MosquittoBroker = request.getfixturevalue("mosquitto")
    async with ContractRecorder(broker) as recorder:
        yield recorder
    recorder.check()
