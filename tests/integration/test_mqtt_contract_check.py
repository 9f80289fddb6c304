"""The contract check itself: what breaks the schemas is caught, with the topic
and the reason; what fits passes."""

from __future__ import annotations

import json

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.helpers import MosquittoBroker
from tests.mqtt_contract import ContractRecorder

pytestmark = pytest.mark.integration

STATUS = {"state": "online", "ts": 1.0, "version": "0.1.0", "boot_id": "a" * 32}


async def test_the_contract_check_catches_what_does_not_fit(
    mosquitto: MosquittoBroker, mqtt_contract: ContractRecorder
) -> None:
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.publish("megapod/v1/pod-check/status", json.dumps(STATUS), qos=1)
        bad = {**STATUS, "state": "sleeping"}
        await client.publish("megapod/v1/pod-check/status", json.dumps(bad), qos=1)
        await client.publish("megapod/v1/pod-check/weather", b"{}", qos=1)
        await client.publish("megapod/v1/pod-check/events", b"not json", qos=1)
        # A request its schema refuses, and a reply that accepts it anyway.
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = "check/replies"
        properties.CorrelationData = b"c1"
        await client.publish(
            "megapod/v1/pod-check/cmd/outlet", b'{"outlet":0}', qos=1, properties=properties
        )
        reply = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        reply.CorrelationData = b"c1"
        result = {"ok": True, "result": {"pdu": "p", "outlet": 0, "state": "on"}}
        await client.publish("check/replies", json.dumps(result), qos=1, properties=reply)
    await mqtt_contract.settle()
    found = "\n".join(mqtt_contract.problems)
    assert len(mqtt_contract.problems) == 4, found
    assert "status (status.schema.json) state: 'sleeping' is not one of" in found
    assert "megapod/v1/pod-check/weather: no schema for this topic" in found
    assert "megapod/v1/pod-check/events: not JSON" in found
    assert "the daemon accepted a cmd/outlet request its schema refuses" in found
    mqtt_contract.problems.clear()  # what was published on purpose does not fail this test
