"""net-snmp's command-line tools against the simulated PDU agent."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.snmp.ber import format_oid
from drivers.snmp.usm import AuthProtocol, UsmStat
from sim_devices.pdu import RPDU2, PduFarm, PduSpec, serve_pdus
from tests.helpers import communicate

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("snmpget") is None, reason="net-snmp tools not installed"),
]

OUTLETS = 24
B = format_oid(RPDU2)
V3_OK = [
    "-l",
    "authPriv",
    "-u",
    "megapod",
    "-A",
    "megapod-auth-pass",
    "-x",
    "AES",
    "-X",
    "megapod-priv-pass",
]


@pytest.fixture
def tool_env(tmp_path: Path) -> dict[str, str]:
    # Keep the tools away from ~/.snmp and /var/lib/snmp, and quiet about MIBs.
    return {
        **os.environ,
        "SNMPCONFPATH": str(tmp_path),
        "SNMP_PERSISTENT_DIR": str(tmp_path / "persist"),
        "MIBS": "",
        "MIBDIRS": str(tmp_path),
    }


async def run(env: dict[str, str], *argv: str, timeout_s: float = 20.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    code, out, err = await communicate(proc, timeout_s)
    return code, out.decode(), err.decode()


@pytest.fixture
async def farm() -> AsyncIterator[PduFarm]:
    specs = [
        PduSpec("pdu-sha", outlets=OUTLETS),
        PduSpec("pdu-sha256", outlets=OUTLETS, v3_auth_protocol=AuthProtocol.HMAC_SHA256_192),
    ]
    async with await serve_pdus(specs) as farm:
        for n in range(1, OUTLETS + 1):
            farm["pdu-sha"].model.set_outlet_load_w(n, 200.0)
        yield farm


def target(farm: PduFarm, name: str = "pdu-sha") -> str:
    return f"127.0.0.1:{farm[name].port}"


def expected_subset(outlets: int) -> list[str]:
    rows = [f"{B}.4.3.1.{c}.1" for c in (4, 5, 9)]
    rows += [f"{B}.6.3.1.{c}.{p}" for c in (4, 5, 6, 7) for p in (1, 2, 3)]
    rows += [f"{B}.9.2.3.1.{c}.{n}" for c in (3, 5, 6) for n in range(1, outlets + 1)]
    rows += [f"{B}.9.2.4.1.5.{n}" for n in range(1, outlets + 1)]
    rows += [f"{B}.9.4.3.1.{c}.{n}" for c in (6, 7, 11) for n in range(1, outlets + 1)]
    return rows


async def test_snmpbulkwalk_lists_the_rpdu2_subset(farm: PduFarm, tool_env: dict[str, str]) -> None:
    code, out, err = await run(
        tool_env, "snmpbulkwalk", "-v2c", "-c", "public", "-On", target(farm), B
    )
    assert code == 0, err
    # Our MIB ends with this subtree, so the walk ends on endOfMibView, which
    # snmpbulkwalk prints as a last "No more variables" line.
    assert out.splitlines()[-1].endswith(
        "No more variables left in this MIB View (It is past the end of the MIB tree)"
    )
    lines = [line for line in out.splitlines()[:-1] if line.strip()]
    oids = [line.split(" = ", 1)[0].lstrip(".") for line in lines]
    assert oids == expected_subset(OUTLETS)  # every object, in lexicographic order
    values = dict(line.lstrip(".").split(" = ", 1) for line in lines)
    assert values[f"{B}.6.3.1.6.1"] == "INTEGER: 230"
    assert values[f"{B}.4.3.1.5.1"] == "INTEGER: 480"  # 24 × 200 W in hundredths of kW
    assert values[f"{B}.9.2.3.1.3.7"] == 'STRING: "Outlet 7"'


async def test_snmpset_turns_an_outlet_off(farm: PduFarm, tool_env: dict[str, str]) -> None:
    control, state = f"{B}.9.2.4.1.5.6", f"{B}.9.2.3.1.5.6"
    code, out, err = await run(
        tool_env, "snmpset", "-v2c", "-c", "private", "-On", target(farm), control, "i", "2"
    )
    assert code == 0, err
    assert "INTEGER: 2" in out
    assert not farm["pdu-sha"].model.outlet_is_on(6)
    code, out, err = await run(
        tool_env, "snmpget", "-v2c", "-c", "public", "-Oqv", target(farm), state
    )
    assert (code, out.strip()) == (0, "1")


async def test_snmpset_refusals(farm: PduFarm, tool_env: dict[str, str]) -> None:
    state = f"{B}.9.2.3.1.5.6"
    code, out, err = await run(
        tool_env, "snmpset", "-v2c", "-c", "private", target(farm), state, "i", "1"
    )
    assert code != 0
    assert "notWritable" in out + err
    control = f"{B}.9.2.4.1.5.6"
    code, out, err = await run(
        tool_env, "snmpset", "-v2c", "-c", "private", target(farm), control, "i", "4"
    )
    assert code != 0
    assert "wrongValue" in out + err
    assert farm["pdu-sha"].model.outlet_is_on(6)


@pytest.mark.parametrize(("pdu", "auth"), [("pdu-sha", "SHA"), ("pdu-sha256", "SHA-256")])
async def test_snmpget_v3_auth_priv(
    farm: PduFarm, tool_env: dict[str, str], pdu: str, auth: str
) -> None:
    code, out, err = await run(
        tool_env,
        "snmpget",
        "-v3",
        *V3_OK,
        "-a",
        auth,
        "-Oqv",
        target(farm, pdu),
        "1.3.6.1.2.1.1.5.0",
        f"{B}.6.3.1.6.2",
    )
    assert code == 0, err
    assert out.split() == [f'"{pdu}"', "230"]


async def test_snmpset_v3_switches_an_outlet(farm: PduFarm, tool_env: dict[str, str]) -> None:
    code, _, err = await run(
        tool_env, "snmpset", "-v3", *V3_OK, "-a", "SHA", target(farm), f"{B}.9.2.4.1.5.9", "i", "2"
    )
    assert code == 0, err
    assert not farm["pdu-sha"].model.outlet_is_on(9)


async def test_wrong_community_gets_no_answer(farm: PduFarm, tool_env: dict[str, str]) -> None:
    code, out, err = await run(
        tool_env,
        "snmpget",
        "-v2c",
        "-c",
        "guess",
        "-t",
        "0.5",
        "-r",
        "0",
        target(farm),
        "1.3.6.1.2.1.1.5.0",
    )
    assert code != 0
    assert "Timeout" in out + err
    assert farm["pdu-sha"].agent.stats.dropped >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "-u",
                "megapod",
                "-a",
                "SHA",
                "-A",
                "not-the-auth-pass",
                "-x",
                "AES",
                "-X",
                "megapod-priv-pass",
            ],
            "Authentication failure",
        ),
        (
            [
                "-u",
                "intruder",
                "-a",
                "SHA",
                "-A",
                "megapod-auth-pass",
                "-x",
                "AES",
                "-X",
                "megapod-priv-pass",
            ],
            "Unknown user name",
        ),
    ],
    ids=["wrong-auth-key", "unknown-user"],
)
async def test_wrong_v3_credentials_are_rejected(
    farm: PduFarm, tool_env: dict[str, str], args: list[str], message: str
) -> None:
    code, out, err = await run(
        tool_env,
        "snmpget",
        "-v3",
        "-l",
        "authPriv",
        *args,
        "-t",
        "1",
        "-r",
        "0",
        target(farm),
        "1.3.6.1.2.1.1.5.0",
    )
    assert code != 0
    assert message in out + err


async def test_wrong_v3_priv_key_is_rejected(farm: PduFarm, tool_env: dict[str, str]) -> None:
    args = [
        "-u",
        "megapod",
        "-a",
        "SHA",
        "-A",
        "megapod-auth-pass",
        "-x",
        "AES",
        "-X",
        "not-the-priv-pass",
    ]
    code, out, _ = await run(
        tool_env,
        "snmpget",
        "-v3",
        "-l",
        "authPriv",
        *args,
        "-t",
        "1",
        "-r",
        "0",
        target(farm),
        "1.3.6.1.2.1.1.5.0",
    )
    assert code != 0
    assert "1.3.6.1.2.1.1.5.0" not in out  # no value leaked
    assert farm["pdu-sha"].agent.stats.usm.get(UsmStat.DECRYPTION_ERRORS) == 1
