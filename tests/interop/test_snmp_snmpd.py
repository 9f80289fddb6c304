"""Our client and driver against a real net-snmp `snmpd`, cross-checked with net-snmp's tools."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.base import Quality
from drivers.snmp import (
    AuthProtocol,
    NotWritableError,
    PrivProtocol,
    SnmpAuthError,
    SnmpClient,
    SnmpTimeout,
    Tag,
    UsmUser,
    VarBind,
    format_oid,
    parse_oid,
)
from drivers.snmp.message import CommunityMessage, decode_message, encode_message
from drivers.snmp.protocol_pdu import Pdu, PduType
from drivers.snmp.rack_pdu import SnmpPduDriver
from tests.helpers import communicate, free_udp_port

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("snmpd") is None, reason="net-snmp snmpd not installed"),
]

AUTH, PRIV = "megapod-auth-pass", "megapod-priv-pass"
SYSTEM = parse_oid("1.3.6.1.2.1.1")
SYS_DESCR = parse_oid("1.3.6.1.2.1.1.1.0")
SYS_OBJECT_ID = parse_oid("1.3.6.1.2.1.1.2.0")
SYS_UPTIME = parse_oid("1.3.6.1.2.1.1.3.0")
SYS_CONTACT = parse_oid("1.3.6.1.2.1.1.4.0")
SYS_NAME = parse_oid("1.3.6.1.2.1.1.5.0")
SYS_LOCATION = parse_oid("1.3.6.1.2.1.1.6.0")
SHA_USER = UsmUser("megapod", AuthProtocol.HMAC_SHA_96, AUTH, PrivProtocol.AES128, PRIV)
SHA256_USER = UsmUser("megapod256", AuthProtocol.HMAC_SHA256_192, AUTH, PrivProtocol.AES128, PRIV)


@dataclass(frozen=True)
class Snmpd:
    port: int
    env: dict[str, str]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def _wait_ready(port: int, timeout_s: float) -> None:
    """Block until snmpd answers a v2c GET (start-up only; the tests themselves are async)."""
    probe = encode_message(
        CommunityMessage(b"public", Pdu(PduType.GET, 1, 0, 0, (VarBind.null(SYS_UPTIME),)))
    )
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            sock.sendto(probe, ("127.0.0.1", port))
            try:
                if isinstance(decode_message(sock.recv(65535)), CommunityMessage):
                    return
            except TimeoutError:
                continue
    raise TimeoutError(f"snmpd did not answer on port {port} within {timeout_s} s")


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    workdir: Path = tmp_path_factory.mktemp("snmpd")
    port = free_udp_port()
    conf = workdir / "snmpd.conf"
    conf.write_text(
        f"agentAddress udp:127.0.0.1:{port}\n"
        "rocommunity public 127.0.0.1\n"
        "rwcommunity private 127.0.0.1\n"
        f'createUser megapod SHA "{AUTH}" AES "{PRIV}"\n'
        f'createUser megapod256 SHA-256 "{AUTH}" AES "{PRIV}"\n'
        "rwuser megapod priv\n"
        "rwuser megapod256 priv\n"
        "sysLocation megapod-lab\n"
        "sysContact ops@megapod.example\n"
    )
    env = {
        **os.environ,
        "SNMPCONFPATH": str(workdir),
        "SNMP_PERSISTENT_DIR": str(workdir / "persist"),  # createUser keys land here
        "MIBS": "",
        "MIBDIRS": str(workdir),
    }
    log = (workdir / "snmpd.log").open("wb")
    proc = subprocess.Popen(
        ["snmpd", "-f", "-Lo", "-C", "-c", str(conf), "-p", str(workdir / "snmpd.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        _wait_ready(port, timeout_s=15.0)
        yield Snmpd(port, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def tool(snmpd: Snmpd, *argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=snmpd.env
    )
    code, out, err = await communicate(proc, timeout_s=20)
    assert code == 0, err.decode()
    return out.decode()


def parse_netsnmp(out: str) -> list[tuple[str, str, str]]:
    """'-On -Ox -Oe' lines -> (oid, type, value) with strings as hex and OIDs without the dot."""
    rows: list[tuple[str, str, str]] = []
    for line in out.splitlines():
        if " = " not in line:
            # net-snmp wraps long Hex-STRINGs at 16 bytes a line.
            if rows and rows[-1][1] == "Hex-STRING" and line.strip():
                oid, kind, value = rows[-1]
                rows[-1] = (oid, kind, value + line.replace(" ", "").lower())
            continue
        oid, rest = line.split(" = ", 1)
        kind, _, value = rest.partition(": ")
        if kind == "Timeticks":
            value = value.split(")")[0].lstrip("(")
        elif kind == "Hex-STRING":
            value = value.replace(" ", "").lower()
        elif kind == "OID":
            value = value.lstrip(".")
        elif kind == "STRING":
            kind, value = "Hex-STRING", value.strip('"').encode().hex()
        rows.append((oid.lstrip("."), kind, value.strip()))
    return rows


_NETSNMP_TYPES = {
    Tag.OCTET_STRING: "Hex-STRING",
    Tag.INTEGER: "INTEGER",
    Tag.OID: "OID",
    Tag.TIMETICKS: "Timeticks",
    Tag.COUNTER32: "Counter32",
    Tag.GAUGE32: "Gauge32",
}


def ours(vbs: tuple[VarBind, ...]) -> list[tuple[str, str, str]]:
    rows = []
    for vb in vbs:
        value = vb.value
        if isinstance(value, bytes):
            text = value.hex()
        elif isinstance(value, tuple):
            text = format_oid(value)
        else:
            text = str(value)
        rows.append((format_oid(vb.oid), _NETSNMP_TYPES.get(vb.tag, vb.tag.name), text))
    return rows


def same_apart_from_uptime(a: list[tuple[str, str, str]], b: list[tuple[str, str, str]]) -> None:
    assert [r[:2] for r in a] == [r[:2] for r in b]
    for mine, theirs in zip(a, b, strict=True):
        if mine[1] == "Timeticks":
            assert abs(int(mine[2]) - int(theirs[2])) < 500  # a few seconds apart at most
        else:
            assert mine == theirs


V2 = ["-v2c", "-c", "public", "-On", "-Ox", "-Oe"]
V3_SHA = [
    "-v3",
    "-l",
    "authPriv",
    "-u",
    "megapod",
    "-a",
    "SHA",
    "-A",
    AUTH,
    "-x",
    "AES",
    "-X",
    PRIV,
]
OIDS = [SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_CONTACT, SYS_LOCATION]


async def test_v2c_get_agrees_with_snmpget(snmpd: Snmpd) -> None:
    async with SnmpClient("127.0.0.1", snmpd.port) as client:
        mine = ours(await client.get(OIDS))
    theirs = parse_netsnmp(await tool(snmpd, "snmpget", *V2, snmpd.target, *map(format_oid, OIDS)))
    same_apart_from_uptime(mine, theirs)
    assert mine[4][2] == b"megapod-lab".hex()


async def test_v2c_getbulk_agrees_with_snmpbulkget(snmpd: Snmpd) -> None:
    async with SnmpClient("127.0.0.1", snmpd.port) as client:
        mine = ours(
            await client.get_bulk([SYS_UPTIME, SYSTEM], non_repeaters=1, max_repetitions=12)
        )
    theirs = parse_netsnmp(
        await tool(
            snmpd,
            "snmpbulkget",
            *V2,
            "-Cn1",
            "-Cr12",
            snmpd.target,
            format_oid(SYS_UPTIME),
            format_oid(SYSTEM),
        )
    )
    assert len(mine) == 13
    same_apart_from_uptime(mine, theirs)


async def test_v2c_set_is_seen_by_snmpget_and_the_reverse(snmpd: Snmpd) -> None:
    async with SnmpClient("127.0.0.1", snmpd.port, write_community="private") as client:
        await client.set([VarBind.octets(SYS_NAME, b"set-by-megapodd")])
        theirs = await tool(
            snmpd, "snmpget", "-v2c", "-c", "public", "-Oqv", snmpd.target, format_oid(SYS_NAME)
        )
        assert theirs.strip() == '"set-by-megapodd"'
        await tool(
            snmpd,
            "snmpset",
            "-v2c",
            "-c",
            "private",
            snmpd.target,
            format_oid(SYS_NAME),
            "s",
            "set-by-snmpset",
        )
        assert (await client.get([SYS_NAME]))[0].value == b"set-by-snmpset"


async def test_v2c_missing_objects_and_read_only(snmpd: Snmpd) -> None:
    async with SnmpClient("127.0.0.1", snmpd.port, write_community="private") as client:
        missing = await client.get(
            [parse_oid("1.3.6.1.2.1.1.1.1"), parse_oid("1.3.6.1.4.1.318.1.1.26.4.3.1.5.1")]
        )
        assert [vb.tag for vb in missing] == [Tag.NO_SUCH_INSTANCE, Tag.NO_SUCH_OBJECT]
        with pytest.raises(NotWritableError):
            await client.set([VarBind.octets(SYS_DESCR, b"nope")])


@pytest.mark.parametrize("user", [SHA_USER, SHA256_USER], ids=["SHA-AES", "SHA256-AES"])
async def test_v3_get_and_set(snmpd: Snmpd, user: UsmUser) -> None:
    async with SnmpClient("127.0.0.1", snmpd.port, user=user) as client:
        mine = ours(await client.get(OIDS))
        await client.set([VarBind.octets(SYS_NAME, f"v3-{user.name}".encode())])
    theirs = parse_netsnmp(
        await tool(snmpd, "snmpget", *V3_SHA, "-On", "-Ox", snmpd.target, *map(format_oid, OIDS))
    )
    same_apart_from_uptime(mine, theirs)
    name = await tool(snmpd, "snmpget", *V3_SHA, "-Oqv", snmpd.target, format_oid(SYS_NAME))
    assert name.strip() == f'"v3-{user.name}"'


@pytest.mark.parametrize(
    "user",
    [
        UsmUser("megapod", AuthProtocol.HMAC_SHA_96, "wrong-auth-pass", PrivProtocol.AES128, PRIV),
        UsmUser("stranger", AuthProtocol.HMAC_SHA_96, AUTH, PrivProtocol.AES128, PRIV),
    ],
    ids=["wrong-digest", "unknown-user"],
)
async def test_v3_bad_credentials_are_configuration_errors(snmpd: Snmpd, user: UsmUser) -> None:
    async with SnmpClient("127.0.0.1", snmpd.port, user=user, timeout_s=2.0) as client:
        with pytest.raises(SnmpAuthError):
            await client.get([SYS_NAME])


async def test_wrong_community_times_out(snmpd: Snmpd) -> None:
    async with SnmpClient(
        "127.0.0.1", snmpd.port, community="wrong", timeout_s=0.3, retries=1
    ) as client:
        with pytest.raises(SnmpTimeout):
            await client.get([SYS_NAME])


async def test_pdu_driver_on_an_agent_without_the_pdu_mib(snmpd: Snmpd) -> None:
    driver = SnmpPduDriver(host="127.0.0.1", port=snmpd.port, outlets=48, timeout_s=2.0)
    await driver.connect()
    try:
        before = driver.stats.requests_sent
        fast = await driver.read_group("fast")
        slow = await driver.read_group("slow")
        assert driver.stats.requests_sent - before == 2
    finally:
        await driver.close()
    assert len(fast) == 15
    assert len(slow) == 144
    assert all(
        p.quality is Quality.BAD and p.value is None for p in [*fast.values(), *slow.values()]
    )
