"""The broker connection with TLS (own CA, client certificate) and a username
and password, against a mosquitto that requires all of them."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, free_tcp_port, wait_tcp_port, wait_until
from tests.mqtt_contract import ContractRecorder

pytestmark = pytest.mark.integration


def _issue(
    directory: Path, name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return subject, key


@pytest.fixture
def tls_mosquitto(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, Path, MosquittoBroker]]:
    """The TLS broker, its PKI, and a plain listener of the same broker."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = _issue(pki, "ca", None)
    _issue(pki, "server", ca)
    _issue(pki, "client", ca)
    passwd = pki / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "megapodd", "s3cret"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    port, plain_port = free_tcp_port(), free_tcp_port()
    conf = pki / "mosquitto.conf"
    conf.write_text(
        # A plain listener too, for the contract check of what the daemon publishes.
        f"per_listener_settings true\nlistener {plain_port} 127.0.0.1\nallow_anonymous true\n"
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
        f"require_certificate true\nallow_anonymous false\npassword_file {passwd}\n"
        # As root, mosquitto would drop to its own user, which cannot read
        # pytest's private temporary directory.
        "persistence false\nuser root\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_tcp_port("127.0.0.1", port, timeout_s=10)
        yield MosquittoBroker("127.0.0.1", port), pki, MosquittoBroker("127.0.0.1", plain_port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def tls_broker(
    tls_mosquitto: tuple[MosquittoBroker, Path, MosquittoBroker],
) -> AsyncIterator[tuple[MosquittoBroker, Path]]:
    """The TLS broker, with what the daemon publishes held to its schemas."""
    broker, pki, plain = tls_mosquitto
    async with ContractRecorder(plain) as recorder:
        yield broker, pki
    recorder.check()


def _tls_config(
    tmp_path: Path, broker: MosquittoBroker, pki: Path, pod_id: str, password: str
) -> Path:
    """A daemon config for the TLS broker: CA, client certificate, user, password."""
    (pki / "password").write_text(f"{password}\n")
    config = write_config(tmp_path, broker, pod_id)
    text = config.read_text().replace(
        f'url = "{broker.url}"',
        f'url = "mqtts://127.0.0.1:{broker.port}"\nusername = "megapodd"\n'
        f'password_file = "{pki / "password"}"\nca_file = "{pki / "ca.pem"}"\n'
        f'cert_file = "{pki / "client.pem"}"\nkey_file = "{pki / "client.key"}"',
    )
    config.write_text(text)
    return config


async def test_publishes_over_tls_with_client_certificate_and_password(
    tmp_path: Path, tls_broker: tuple[MosquittoBroker, Path]
) -> None:
    broker, pki = tls_broker
    config = _tls_config(tmp_path, broker, pki, "pod-tls", "s3cret")
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    async with running_daemon(config) as daemon:
        await wait_until(lambda: daemon.mqtt.connected, timeout_s=10)
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            username="megapodd",
            password="s3cret",  # noqa: S106 - the test broker's password
            tls_context=context,
        ) as client:
            await client.subscribe("megapod/v1/pod-tls/status", qos=1)
            async with asyncio.timeout(5):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    assert json.loads(message.payload)["state"] == "online"
                    break


async def test_a_wrong_password_keeps_retrying_and_the_daemon_runs_on(
    tmp_path: Path, tls_broker: tuple[MosquittoBroker, Path]
) -> None:
    broker, pki = tls_broker
    config = _tls_config(tmp_path, broker, pki, "pod-tls-bad", "wrong")
    async with running_daemon(config) as daemon:
        await wait_until(lambda: daemon.mqtt.connect_failures >= 2, timeout_s=10)
        assert not daemon.mqtt.connected
        assert daemon.mqtt.pending_events >= 1  # daemon_started waits, not lost
