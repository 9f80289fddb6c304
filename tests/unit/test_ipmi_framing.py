"""Terminal Mode framing: exact bytes in, messages or IpmiFrameError out."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import FrameError
from drivers.ipmi.framing import (
    MAX_MESSAGE_CHARS,
    FrameReader,
    IpmiFrameError,
    TerminalErrorLine,
    decode_body,
    encode_frame,
)


def payloads(reader: FrameReader, data: bytes) -> list[bytes | str]:
    out: list[bytes | str] = []
    for item in reader.feed(data):
        if item.payload is not None:
            out.append(item.payload)
        else:
            out.append(f"error: {item.error}")
    return out


def test_encode_is_upper_case_hex_without_spaces() -> None:
    assert encode_frame(b"\x18\x04\x01") == b"[180401]\r"
    assert encode_frame(b"\x1c\x04\x01\x00\xab", b"\r\n") == b"[1C040100AB]\r\n"


def test_what_ipmitool_sends_is_read() -> None:
    # Captured from `ipmitool -I serial-terminal ... mc info` on a pty.
    reader = FrameReader()
    assert payloads(reader, b"[b0040000]\r\n[180c01]\r\n") == [b"\xb0\x04\x00\x00", b"\x18\x0c\x01"]


@pytest.mark.parametrize("line_end", [b"\r", b"\n", b"\r\n"])
def test_each_line_end_closes_a_message(line_end: bytes) -> None:
    assert payloads(FrameReader(), b"[1C 04 01 00]" + line_end) == [b"\x1c\x04\x01\x00"]


def test_spaces_and_any_case_accepted() -> None:
    assert decode_body(b"1c 04 2D 00  aB") == b"\x1c\x04\x2d\x00\xab"


def test_bytes_outside_brackets_ignored_and_counted() -> None:
    reader = FrameReader()
    assert payloads(reader, b"login: \xff\x00 junk\r\n[1C0401]\r\ntrailing") == [b"\x1c\x04\x01"]
    assert reader.noise_bytes == len(b"login: \xff\x00 junk\r\n") + len(b"\ntrailing")


def test_byte_at_a_time_gives_the_same_messages() -> None:
    stream = b"xx[1C0401]\r\n\n[1D 08 02 00]\r"
    reader = FrameReader()
    out: list[bytes | str] = []
    for byte in stream:
        out += payloads(reader, bytes((byte,)))
    assert out == [b"\x1c\x04\x01", b"\x1d\x08\x02\x00"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"1C0", "odd number"),
        (b"1C 0 4", "odd number"),
        (b"1C0G", "non-hex"),
        (b"1C\t04", "non-hex"),
        (b"", "empty"),
        (b"   ", "empty"),
    ],
)
def test_bad_bodies_name_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(IpmiFrameError, match=problem):
        decode_body(body)


def test_err_line_carries_its_code() -> None:
    with pytest.raises(TerminalErrorLine) as info:
        decode_body(b"ERR 12")
    assert info.value.code == 0x12


def test_cut_short_line_is_an_error_then_next_message_reads() -> None:
    out = payloads(FrameReader(), b"[1C04\r\n[1C0401]\r\n")
    assert out[0] == "error: line ended inside a message after 4 characters"
    assert out[1] == b"\x1c\x04\x01"


def test_new_bracket_restarts_and_reports() -> None:
    out = payloads(FrameReader(), b"[1C04[1C0401]\r")
    assert out == ["error: message cut short by a new '['", b"\x1c\x04\x01"]


def test_close_bracket_must_be_followed_by_line_end() -> None:
    out = payloads(FrameReader(), b"[1C0401]x[1C0402]\r")
    assert out[0] == "error: ']' followed by b'x'"
    assert out[1] == b"\x1c\x04\x02"


def test_close_bracket_followed_by_next_message() -> None:
    out = payloads(FrameReader(), b"[1C0401][1C0402]\r")
    assert out[0] == "error: ']' followed by b'['"
    assert out[1] == b"\x1c\x04\x02"


def test_122_character_limit() -> None:
    longest = bytes(range(60))  # 2 + 120 characters
    assert len(encode_frame(longest, b"")) == MAX_MESSAGE_CHARS
    assert payloads(FrameReader(), encode_frame(longest)) == [longest]
    with pytest.raises(IpmiFrameError, match="122"):
        encode_frame(bytes(61))
    out = payloads(FrameReader(), b"[" + b"00" * 61 + b"]\r[1C0401]\r")
    assert isinstance(out[0], str) and out[0].startswith("error: message longer than 122")
    assert out[-1] == b"\x1c\x04\x01"


def test_reset_drops_partial_message() -> None:
    reader = FrameReader()
    assert payloads(reader, b"[1C04") == []
    reader.reset()
    assert payloads(reader, b"01]\r[1C0401]\r") == [b"\x1c\x04\x01"]


def test_frame_error_is_a_transport_frame_error() -> None:
    assert issubclass(IpmiFrameError, FrameError)


@given(st.binary(min_size=1, max_size=60), st.sampled_from([b"\r", b"\n", b"\r\n"]))
def test_round_trip(payload: bytes, line_end: bytes) -> None:
    assert payloads(FrameReader(), encode_frame(payload, line_end)) == [payload]


@given(st.binary(min_size=1, max_size=60), st.binary(max_size=40))
def test_round_trip_after_noise_without_brackets(payload: bytes, noise: bytes) -> None:
    noise = noise.replace(b"[", b"").replace(b"]", b"")
    assert payloads(FrameReader(), noise + encode_frame(payload)) == [payload]


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    reader = FrameReader()
    for chunk in chunks:
        for item in reader.feed(chunk):
            assert (item.payload is None) != (item.error is None)
            assert item.error is None or isinstance(item.error, IpmiFrameError)


@given(st.binary(max_size=130))
def test_decode_body_raises_only_its_own_error(body: bytes) -> None:
    with contextlib.suppress(IpmiFrameError):
        decode_body(body)
