"""The MQTT contract's three copies agree: schemas/ (what subscribers code
against), docs/mqtt.md (what people read) and the code (every event type it
can emit, every fleet command it takes)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from megapodd.commands.dispatch import Command
from megapodd.commands.requests import parse_request
from megapodd.point_events import RULES as POINT_RULES
from tests.mqtt_contract import SCHEMAS_DIR, Contract, load_index

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "mqtt.md").read_text()


def _section(title: str) -> str:
    """The text of a markdown section, up to the next heading of its level or higher."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", DOCS, re.MULTILINE)
    assert match is not None, f"docs/mqtt.md has no section {title!r}"
    level = len(match.group(1))
    rest = DOCS[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _first_column(section: str) -> list[str]:
    """The backticked names in the first column of the section's table rows."""
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([^`]+)`", row.split("|")[1])[0] for row in rows]


def test_every_schema_is_valid_draft_2020_12_and_named_in_the_index() -> None:
    index = load_index()
    named = {*index["published"].values(), *index["commands"].values(), index["reply"]}
    files = {p.name for p in SCHEMAS_DIR.glob("*.schema.json")}
    assert named == files
    for name in files:
        schema = json.loads((SCHEMAS_DIR / name).read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_the_docs_topics_and_the_schemas_agree_both_ways() -> None:
    index = load_index()
    table = _section("Topics")
    documented = {re.sub(r"<[a-z_]+>", "+", t) for t in _first_column(table)}
    published = set(index["published"])
    assert documented - {"cmd/+"} == published
    assert "cmd/+" in documented
    # Each row links its schema, and each schema is linked from the docs.
    for pattern, schema in index["published"].items():
        row = next(
            line
            for line in table.splitlines()
            if line.startswith("| `") and re.sub(r"<[a-z_]+>", "+", line.split("`")[1]) == pattern
        )
        assert f"../schemas/{schema}" in row, f"the row of {pattern} does not link {schema}"
    for schema in {*index["commands"].values(), index["reply"]}:
        assert f"../schemas/{schema}" in DOCS, f"docs/mqtt.md does not link {schema}"


def test_the_docs_event_types_and_the_event_schema_agree_both_ways() -> None:
    schema = json.loads((SCHEMAS_DIR / "event.schema.json").read_text())
    types = set(schema["properties"]["type"]["enum"])
    documented = set(_first_column(_section("Event types")))
    assert documented == types
    assert {f"data_{t}" for t in types} <= set(schema["$defs"])


def test_the_docs_fleet_verbs_and_the_request_schemas_agree_both_ways() -> None:
    index = load_index()
    verbs = {c.removeprefix("cmd/") for c in index["commands"]}
    documented = set(_first_column(_section("Commands: `cmd/<verb>`")))
    assert documented == verbs


def _emitted_types() -> set[str]:
    """Every event type a literal `emit("…")` in megapodd/ can make, and the point events'."""
    types = {rule.event_type for rule in POINT_RULES}
    for path in (ROOT / "megapodd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name != "emit":
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                types.add(first.value)
            elif isinstance(first, ast.JoinedStr):  # f"device_{state.value}"
                prefix = "".join(str(v.value) for v in first.values if isinstance(v, ast.Constant))
                types |= {f"{prefix}{s}" for s in ("online", "stale", "offline")}
    return types


def test_every_event_type_the_code_emits_has_a_schema_and_no_other() -> None:
    schema = json.loads((SCHEMAS_DIR / "event.schema.json").read_text())
    assert _emitted_types() == set(schema["properties"]["type"]["enum"])


def test_the_fleet_verbs_are_the_commands_marked_for_the_fleet() -> None:
    from megapodd.commands.service import CommandService

    fleet = {
        name
        for name, command in CommandService.commands(_NoService()).items()  # type: ignore[arg-type]
        if command.fleet
    }
    assert {c.removeprefix("cmd/") for c in load_index()["commands"]} == fleet


class _NoService:
    """Enough of a CommandService to list its commands."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


# Requests: the schema and the daemon's own parsing give the same verdict.
_REQUESTS: dict[str, list[dict[str, Any]]] = {
    "outlet": [
        {"pdu": "pdu-r1a", "outlet": 3, "action": "off"},
        {"pdu": "pdu-r1a", "outlet": 0, "action": "off"},
        {"pdu": "pdu-r1a", "outlet": 3, "action": "toggle"},
        {"pdu": "PDU", "outlet": 3, "action": "on"},
        {"pdu": "pdu-r1a", "outlet": "3", "action": "on"},
        {"pdu": "pdu-r1a", "outlet": True, "action": "on"},
        {"pdu": "pdu-r1a", "action": "on"},
        {"pdu": "pdu-r1a", "outlet": 3, "action": "on", "extra": 1},
    ],
    "server": [
        {"server": "r1s01", "action": "soft"},
        {"server": "r1s01", "action": "halt"},
        {"server": "r1s01"},
    ],
    "override": [
        {"device": "cdu1", "output": "pump_speed_pct", "value": 80, "duration_s": 600},
        {"device": "cdu1", "output": "outlet_3", "value": "off", "duration_s": 1},
        {"device": "cdu1", "output": "pump_speed_pct", "value": 80, "duration_s": 0.5},
        {"device": "cdu1", "output": "pump_speed_pct", "value": 80, "duration_s": 28801},
        {"device": "cdu1", "output": "pump_speed_pct", "value": True, "duration_s": 60},
        {"device": "cdu1", "output": "", "value": 1, "duration_s": 60},
        {"device": "cdu1", "output": "x" * 65, "value": 1, "duration_s": 60},
        {"device": "cdu1", "output": "pump_speed_pct", "value": [1], "duration_s": 60},
    ],
    "power_budget": [
        {"watts": 50_000},
        {"watts": 50_000.5},
        {"watts": 0},
        {"watts": -5},
        {"watts": "5000"},
        {"watts": True},
        {},
        {"watts": 1, "x": 1},
    ],
    "release": [
        {"device": "cdu1", "output": "pump_speed_pct"},
        {"device": "cdu1"},
        {"device": "cdu1", "output": 5},
    ],
}


@pytest.mark.parametrize(
    ("verb", "args"),
    [(verb, args) for verb, cases in _REQUESTS.items() for args in cases],
)
@pytest.mark.parametrize("request_id", ["req-1", "has space", "", None])
def test_a_request_fits_its_schema_exactly_when_the_daemon_parses_it(
    verb: str, args: dict[str, Any], request_id: str | None
) -> None:
    contract = Contract()
    from megapodd.commands.service import CommandService

    commands: dict[str, Command] = CommandService.commands(_NoService())  # type: ignore[arg-type]
    payload = dict(args) if request_id is None else {"request_id": request_id, **args}
    schema_ok = not contract.problems(f"cmd-{verb}.schema.json", payload)
    try:
        parse_request(commands[verb].request, payload)
        parsed_ok = True
    except ValueError:
        parsed_ok = False
    # Over MQTT a request id is required (the subscription checks it first).
    daemon_ok = parsed_ok and bool(request_id)
    assert schema_ok == daemon_ok, (payload, contract.problems(f"cmd-{verb}.schema.json", payload))
