"""IPMI v2.0 Terminal Mode framing: hex text between brackets, one message a line.

Pure functions of bytes (no I/O). A message is `[` + hex pairs (optionally
separated by spaces, any case) + `]` + a line end (CR, LF or CR LF). Bytes
outside the brackets are ignored: a console line also carries log text and
line noise. Terminal Mode has no checksum, so the framing is strict about
everything it can check: only hex pairs, at most 122 characters a message,
and `]` must be followed directly by a line end.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from drivers.errors import FrameError

# IPMI v2.0 §14.7.4: a Terminal Mode message is at most 122 characters, brackets included.
MAX_MESSAGE_CHARS = 122
_OPEN = 0x5B  # [
_CLOSE = 0x5D  # ]
_CR = 0x0D
_LF = 0x0A
_SPACE = 0x20
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
# The common case, checked in C: hex pairs with optional spaces between them.
_WELL_FORMED = re.compile(rb" *[0-9A-Fa-f]{2}(?: *[0-9A-Fa-f]{2})* *")
_DELIMITER = re.compile(rb"[\[\]\r\n]")


class IpmiFrameError(FrameError):
    """Bytes on the line that are not a well-formed Terminal Mode message."""


class TerminalErrorLine(IpmiFrameError):
    """The BMC answered `[ERR xx]`: it could not take our message."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


def encode_frame(payload: bytes, line_end: bytes = b"\r") -> bytes:
    """One message as it goes on the wire: upper-case hex pairs, no spaces."""
    if not payload:
        raise IpmiFrameError("empty message")
    text = b"[" + payload.hex().upper().encode("ascii") + b"]"
    if len(text) > MAX_MESSAGE_CHARS:
        raise IpmiFrameError(
            f"message of {len(payload)} bytes is {len(text)} characters, "
            f"over the {MAX_MESSAGE_CHARS}-character limit"
        )
    return text + line_end


def decode_body(body: bytes) -> bytes:
    """Hex text between the brackets -> bytes; raises IpmiFrameError naming the fault."""
    if _WELL_FORMED.fullmatch(body):
        return bytes.fromhex(body.replace(b" ", b"").decode("ascii"))
    if body[:3].upper() == b"ERR":
        code_text = body[3:].strip()
        code: int | None
        try:
            code = int(code_text, 16) if code_text else None
        except ValueError:
            code = None
        raise TerminalErrorLine(f"BMC error line [{body.decode('latin-1')}]", code)
    out = bytearray()
    for token in body.split(b" "):
        if not token:
            continue
        if not _HEX_DIGITS.issuperset(token):
            raise IpmiFrameError(f"non-hex character in {token!r}")
        if len(token) % 2:
            raise IpmiFrameError(f"odd number of hex digits in {token!r}")
        out += bytes.fromhex(token.decode("ascii"))
    if not out:
        raise IpmiFrameError("empty message []")
    return bytes(out)


class _State(enum.Enum):
    OUTSIDE = 0
    INSIDE = 1
    CLOSED = 2  # saw `]`, waiting for the line end


@dataclass(frozen=True, slots=True)
class FrameItem:
    """One result of feeding bytes: a message's bytes or the error it turned out to be."""

    payload: bytes | None
    error: IpmiFrameError | None = None


class FrameReader:
    """Cuts a byte stream into messages; keeps partial input between feeds."""

    __slots__ = ("_body", "_noise_bytes", "_state")

    def __init__(self) -> None:
        self._state = _State.OUTSIDE
        self._body = bytearray()
        self._noise_bytes = 0

    @property
    def noise_bytes(self) -> int:
        """Bytes seen outside any message (ignored, counted for diagnostics)."""
        return self._noise_bytes

    def reset(self) -> None:
        """Forget any partial message (resynchronise after noise or a timeout)."""
        self._state = _State.OUTSIDE
        self._body.clear()

    def feed(self, data: bytes) -> list[FrameItem]:
        items: list[FrameItem] = []
        i = 0
        n = len(data)
        while i < n:
            state = self._state
            if state is _State.OUTSIDE:
                j = data.find(b"[", i)
                if j < 0:
                    self._noise_bytes += n - i
                    break
                self._noise_bytes += j - i
                self._state = _State.INSIDE
                i = j + 1
            elif state is _State.INSIDE:
                i = self._feed_inside(data, i, items)
            else:
                byte = data[i]
                body = bytes(self._body)
                self.reset()
                if byte in (_CR, _LF):
                    try:
                        items.append(FrameItem(decode_body(body)))
                    except IpmiFrameError as exc:
                        items.append(FrameItem(None, exc))
                    i += 1
                else:
                    items.append(
                        FrameItem(None, IpmiFrameError(f"']' followed by {bytes([byte])!r}"))
                    )
                    # Do not consume it: it may be the `[` of the next message.
        return items

    def _feed_inside(self, data: bytes, i: int, items: list[FrameItem]) -> int:
        """Collect body bytes up to a delimiter; return the index to continue at."""
        n = len(data)
        start = i
        found = _DELIMITER.search(data, i)
        i = found.start() if found else n
        self._body += data[start:i]
        if len(self._body) + 2 > MAX_MESSAGE_CHARS:
            size = len(self._body)
            self.reset()
            items.append(
                FrameItem(None, IpmiFrameError(f"message longer than {MAX_MESSAGE_CHARS} "
                                               f"characters ({size + 1} without its end)"))
            )
            return i
        if i == n:
            return i
        byte = data[i]
        if byte == _CLOSE:
            self._state = _State.CLOSED
            return i + 1
        if byte == _OPEN:
            # A new message starts inside an unfinished one: the first was cut short.
            self._body.clear()
            items.append(FrameItem(None, IpmiFrameError("message cut short by a new '['")))
            return i + 1
        size = len(self._body)
        self.reset()
        items.append(FrameItem(None, IpmiFrameError(f"line ended inside a message "
                                                    f"after {size} characters")))
        return i + 1
