"""Compose RFC 5322 messages, ready for the wire.

The header block is written here, for every message, and no header value ever goes through the
email package: its folding decoded an RFC 2047 encoded-word in a subject and wrote it back
unfolded on some Python versions (3.11.7, 3.12.1: CVE-2024-6923), so that a CR LF inside one
became a new header or the start of the body, and it folds a long non-ASCII value at a space left
between two encoded-words, which every decoder drops. Here a header value is written as it is
when it is plain printable ASCII that fits on one line and holds no "=?"; any other value becomes
encoded-words of UTF-8 that carry its spaces inside them, so that a decoder shows exactly the
text given, a literal "=?...?=" included.

The body and its MIME headers: a short-lined ASCII body is written directly, byte for byte what
the email package writes (a test holds the two to that); any other body is encoded by the email
package (quoted-printable or base64). Composing with the email package cost about 0.3 ms per
message, the largest share of a delivery's CPU time in a burst of reminders. Measured over 20,000
reminders (timeit, best of 9): 8 us per plain message (9 us before every header block was
written here) and 14 us with a non-ASCII subject (0.8 ms through the email package).
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime

import idna

# Every message leaves 7-bit clean unless an address needs SMTPUTF8: non-ASCII text is
# quoted-printable or base64 and its headers are encoded words, so no server extension is needed.
# Bodies are encoded with LF line ends (what the recipient's text had); the message's own lines
# end in CRLF, as on the wire.
_POLICY = default.clone(cte_type="7bit")
_POLICY_SMTPUTF8 = _POLICY.clone(utf8=True, cte_type="8bit")
_WIRE = {False: _POLICY.clone(linesep="\r\n"), True: _POLICY_SMTPUTF8.clone(linesep="\r\n")}
_MAX_LINE = 78  # RFC 5322's SHOULD, and the email policy's max_line_length
_MAX_WORD = 75  # RFC 2047's limit for one encoded-word
_WORD_OVERHEAD = len("=?utf-8?q??=")

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# Shapes written as they are; anything else is checked (or encoded) first.
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_DOMAIN}")
_PLAIN_TEXT = re.compile(r"[!-~]+( [!-~]+)*")
_PLAIN_PHRASE = re.compile(rf"{_ATEXT}+( {_ATEXT}+)*")
# An address whose local part, a dot-atom or a quoted string, may hold non-ASCII characters
# (RFC 6531) but no control character and no whitespace other than a space: str.isspace() covers
# every character that the email package takes for a line break.
_UTF8_ATEXT = r"[^\x00-\x20\x7f\s\"(),.:;<>@\[\\\]]"
_QUOTED = r'"(?:[^\x00-\x1f\x7f\s"\\]| |\\[ -~])*"'
_ADDRESS = re.compile(rf"(?:{_UTF8_ATEXT}+(?:\.{_UTF8_ATEXT}+)*|{_QUOTED})@{_DOMAIN}")
_LINE_BREAK = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")  # what str.splitlines splits on
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_MESSAGE_ID_LEFT = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# "Name <address>" with the name bare or quoted, or the address alone.
_FROM = re.compile(r'(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<name>[^"<>]*?))\s*<(?P<address>[^<>]*)>')

# RFC 2047 Q encoding with the characters allowed in every place, a display name included.
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q = tuple(chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256))
_PLAIN_BODY_HEADERS = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"\r\n"
)


@dataclass(frozen=True)
class OutgoingMessage:
    """A finished message: the envelope and the bytes of the message (CRLF line ends)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool  # an address is not ASCII: the server must offer SMTPUTF8

    @property
    def envelope(self) -> tuple[str, ...]:
        """The sender, then the recipients."""
        return (self.sender, *self.recipients)


def message_id(local_part: str, from_address: str) -> str:
    """A Message-ID that is the same every time the same thing is sent, so repeats are visible."""
    return _message_id(local_part, _sender(from_address))


def compose_message(
    *,
    to: str,
    from_address: str,
    subject: str,
    body: str,
    sent_at: datetime,
    stable_id: str,
    headers: dict[str, str] | None = None,
) -> OutgoingMessage:
    """Build a plain-text message; a header value with a line break is refused (ValueError).

    Args:
        to: the recipient address; a Unicode domain is sent in its ASCII (IDNA) form.
        from_address: the From header, optionally with a display name.
        subject: a single line, delivered exactly as given.
        body: the text body.
        sent_at: the Date header.
        stable_id: the left part of the Message-ID, unique per logical message.
        headers: extra headers, such as X-Reminder-Id.
    """
    sender = _sender(from_address)
    if "=?" in to or not _PLAIN_ADDRESS.fullmatch(to):
        to = _checked_address(to)
    smtputf8 = not (sender.address.isascii() and to.isascii())
    lines = [sender.header, _address_field("To", to), _header("Subject", subject)]
    lines.append(f"Date: {format_datetime(sent_at)}")
    lines.append(f"Message-ID: {_message_id(stable_id, sender)}")
    for name, value in (headers or {}).items():
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"not a header field name: {name!r}")
        lines.append(_header(name, value))
    lines.append("")
    data = "\r\n".join(lines).encode() + _body(body, smtputf8)
    return OutgoingMessage(sender.address, (to,), data, smtputf8)


def check_from_address(from_address: str) -> None:
    """ValueError unless the value can be a From header: see _sender."""
    _sender(from_address)


def ascii_domain(address: str) -> str:
    """The address with its domain in ASCII (IDNA) form; the part before the @ as it is.

    A Unicode domain can only be sent to a server that offers SMTPUTF8; its IDNA form names the
    same domain and every server takes it.
    """
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        # UTS 46 mapping (lower case), then IDNA 2008: what email-validator checks an address with.
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError as exc:
        raise ValueError(f"the domain of {address!r} has no IDNA form: {exc}") from exc


def _message_id(local_part: str, sender: _Sender) -> str:
    if not _MESSAGE_ID_LEFT.fullmatch(local_part):
        raise ValueError(f"not the left part of a Message-ID: {local_part!r}")
    return f"<{local_part}@{sender.domain}>"


def _checked_address(address: str) -> str:
    address = ascii_domain(address)
    # RFC 2047: no encoded-word in an address; decoders that decode one anyway (Python's does)
    # could find a line break in it.
    if "=?" in address or not _ADDRESS.fullmatch(address):
        raise ValueError(f"not a single plain e-mail address: {address!r}")
    return address


def _header(name: str, value: str) -> str:
    """One header field, folded into lines of CRLF SP when it is encoded."""
    line = f"{name}: {value}"
    if len(line) <= _MAX_LINE and "=?" not in value and _PLAIN_TEXT.fullmatch(value):
        return line
    if not value:
        return f"{name}:"
    if _LINE_BREAK.search(value):
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    return f"{name}: " + "\r\n ".join(_encoded_words(value, _MAX_LINE - len(name) - 2))


def _encoded_words(text: str, first_room: int) -> list[str]:
    """text as RFC 2047 encoded-words: the first at most first_room characters long, the others
    at most 75; each holds whole characters and the spaces among them, so that a decoder, which
    drops the folding between two words, gives back text exactly."""
    data = text.encode()  # a lone surrogate: UnicodeEncodeError, a ValueError
    q_size = sum(len(_Q[byte]) for byte in data)
    use_q = q_size <= 4 * -(-len(data) // 3)  # the shorter encoding of the two
    words: list[str] = []
    chunk = bytearray()
    size = 0  # of chunk, encoded
    room = min(first_room, _MAX_WORD) - _WORD_OVERHEAD
    for char in text:
        piece = char.encode()
        added = sum(len(_Q[byte]) for byte in piece) if use_q else 0
        grown = size + added if use_q else 4 * -(-(len(chunk) + len(piece)) // 3)
        if grown > room and chunk:
            words.append(_encoded_word(chunk, use_q))
            chunk = bytearray()
            room = _MAX_WORD - _WORD_OVERHEAD
            grown = added if use_q else 4 * -(-len(piece) // 3)
        chunk += piece
        size = grown
    words.append(_encoded_word(chunk, use_q))
    return words


def _encoded_word(data: bytes | bytearray, use_q: bool) -> str:
    if use_q:
        return "=?utf-8?q?" + "".join(_Q[byte] for byte in data) + "?="
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="


def _body(body: str, smtputf8: bool) -> bytes:
    """The MIME headers of the text body, a blank line and the body (CRLF line ends)."""
    if body.isascii():
        lines = body.encode("ascii").splitlines()
        if all(len(line) <= _MAX_LINE for line in lines):
            return _PLAIN_BODY_HEADERS + b"\r\n".join(lines) + b"\r\n"
    part = EmailMessage(policy=_POLICY_SMTPUTF8 if smtputf8 else _POLICY)
    part.set_content(body)
    return part.as_bytes(policy=_WIRE[smtputf8])


@dataclass(frozen=True)
class _Sender:
    address: str  # the envelope sender
    domain: str  # for Message-IDs
    header: str  # the From field


@functools.lru_cache(maxsize=16)
def _sender(from_address: str) -> _Sender:
    """What every message from this From value needs, worked out once (the same on every one);
    ValueError unless it is "Name <address>", '"Name" <address>' or a plain address."""
    value = from_address.strip()
    match = _FROM.fullmatch(value)
    if match is None:
        name, address = "", value
    else:
        quoted = match["quoted"]
        name = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match["name"].strip()
        address = match["address"].strip()
    address = _checked_address(address)
    if _LINE_BREAK.search(name):
        raise ValueError("the From name may not contain a line break")
    return _Sender(address, address.rpartition("@")[2], _from_header(name, address))


def _from_header(name: str, address: str) -> str:
    if not name:
        return _address_field("From", address)
    phrase = None
    if "=?" not in name:
        if _PLAIN_PHRASE.fullmatch(name):
            phrase = name
        elif _PLAIN_TEXT.fullmatch(name):
            phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if phrase is not None and len(f"From: {phrase}") <= _MAX_LINE:
        words = [phrase]
    else:
        words = _encoded_words(name, _MAX_LINE - len("From: "))
    # The address goes on a line of its own when the one the name ends on has no room for it.
    last = len(words[-1]) + (len("From: ") if len(words) == 1 else len(" "))
    separator = " " if last + len(address) + len(" <>") <= _MAX_LINE else "\r\n "
    return "From: " + "\r\n ".join(words) + f"{separator}<{address}>"


def _address_field(name: str, address: str) -> str:
    # Folded before the address when that makes the line short enough, as the email package does.
    line = f"{name}: {address}"
    if len(line) <= _MAX_LINE or len(address) >= _MAX_LINE:
        return line
    return f"{name}:\r\n {address}"
