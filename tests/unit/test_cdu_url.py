"""Parsing the [[cdu]] url setting."""

from __future__ import annotations

import pytest

from drivers.errors import ConfigurationError
from drivers.modbus.url import ModbusTransport, ModbusUrl, parse_modbus_url


def test_tcp_with_port() -> None:
    assert parse_modbus_url("modbus+tcp://10.0.0.5:1502") == ModbusUrl(
        ModbusTransport.TCP, host="10.0.0.5", port=1502
    )


def test_tcp_default_port_and_trailing_slash() -> None:
    url = parse_modbus_url("modbus+tcp://cdu-a.pod/")
    assert (url.host, url.port) == ("cdu-a.pod", 502)


def test_rtu_defaults_to_19200_8e1() -> None:
    url = parse_modbus_url("modbus+rtu:///dev/ttyUSB0")
    assert url == ModbusUrl(
        ModbusTransport.RTU, device="/dev/ttyUSB0", baud=19200, parity="E", bytesize=8, stopbits=1
    )


def test_rtu_options() -> None:
    url = parse_modbus_url("modbus+rtu:///dev/ttyS1?baud=9600&parity=n&stopbits=2")
    assert (url.device, url.baud, url.parity, url.stopbits) == ("/dev/ttyS1", 9600, "N", 2)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tcp://1.2.3.4:502", "scheme 'tcp' is not modbus\\+tcp or modbus\\+rtu"),
        ("1.2.3.4:502", "is not modbus\\+tcp or modbus\\+rtu"),
        ("modbus+tcp://:502", "has no host"),
        ("modbus+tcp://host:99999", "not a valid URL"),
        ("modbus+tcp://host:port", "not a valid URL"),
        ("modbus+tcp://host:502/x", "takes only host and port"),
        ("modbus+tcp://host:502?baud=1", "takes only host and port"),
        ("modbus+rtu://host/dev/ttyS0", "must have an empty host"),
        ("modbus+rtu://", "no serial device path"),
        ("modbus+rtu:///dev/ttyS0?speed=9600", "unknown option 'speed'"),
        ("modbus+rtu:///dev/ttyS0?parity=X", "parity='X' is not one of N, E, O"),
        ("modbus+rtu:///dev/ttyS0?baud=fast", "baud='fast' is not an integer"),
        ("modbus+rtu:///dev/ttyS0?baud=0", "baud='0' is not allowed"),
        ("modbus+rtu:///dev/ttyS0?bytesize=9", r"bytesize=.9. is not allowed \(one of \[7, 8\]\)"),
        ("modbus+rtu:///dev/ttyS0?stopbits=3", "stopbits='3' is not allowed"),
    ],
)
def test_bad_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_modbus_url(url)


def test_driver_constructor_rejects_bad_settings() -> None:
    from drivers.modbus.cdu import CduDriver

    with pytest.raises(ConfigurationError, match="no host"):
        CduDriver("modbus+tcp://:502")
    with pytest.raises(ConfigurationError, match="unit 300"):
        CduDriver("modbus+tcp://h:502", unit=300)
    with pytest.raises(ConfigurationError, match="poll_s"):
        CduDriver("modbus+tcp://h:502", poll_s=0)
    with pytest.raises(ConfigurationError, match="retries"):
        CduDriver("modbus+tcp://h:502", retries=-1)


def test_driver_poll_groups() -> None:
    from drivers.modbus.cdu import CduDriver

    driver = CduDriver("modbus+tcp://h:502", poll_s=0.2)
    assert driver.kind == "cdu"
    groups = {g.name: g.period_s for g in driver.poll_groups()}
    assert groups == {"safety": 0.2, "settings": pytest.approx(1.0)}
