"""Compose RFC 5322 messages, ready for the wire.

Most reminders are short ASCII text to a plain address. For those the message is written
directly, byte for byte what the email package would produce (a test holds the two to that);
everything else (non-ASCII text, long lines, display names that need quoting) goes through the
email package. Composing with the email package cost about 0.3 ms per message, the largest
share of a delivery's CPU time in a burst of reminders.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, parseaddr

# Every message leaves 7-bit clean unless an address needs SMTPUTF8: non-ASCII text is
# quoted-printable or base64 and its headers are encoded words, so no server extension is needed.
# Bodies are encoded with LF line ends (what the recipient's text had); the message's own lines
# end in CRLF, as on the wire.
_POLICY = default.clone(cte_type="7bit")
_POLICY_SMTPUTF8 = _POLICY.clone(utf8=True, cte_type="8bit")
_MAX_LINE = 78  # the email policy's max_line_length

# Shapes the email package writes back unchanged; anything else takes the general path.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*"
)
_PLAIN_TEXT = re.compile(r"[!-~]+( [!-~]+)*")
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
    return f"<{local_part}@{_sender(from_address).domain}>"


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
    """Build a plain-text message; header values with CR or LF are refused (ValueError).

    Args:
        to: the recipient address.
        from_address: the From header, optionally with a display name.
        subject: a single line.
        body: the text body.
        sent_at: the Date header.
        stable_id: the left part of the Message-ID, unique per logical message.
        headers: extra headers, such as X-Reminder-Id.
    """
    fields = [
        ("From", from_address),
        ("To", to),
        ("Subject", subject),
        ("Date", format_datetime(sent_at)),
        ("Message-ID", message_id(stable_id, from_address)),
        *(headers or {}).items(),
    ]
    sender = _sender(from_address)
    smtputf8 = not (sender.address.isascii() and to.isascii())
    data: bytes | None = None
    if not smtputf8 and sender.written_as_is and _PLAIN_ADDRESS.fullmatch(to):
        data = _plain_message(fields, body)
    if data is None:
        data = _general_message(fields, body, smtputf8)
    return OutgoingMessage(sender.address, (to,), data, smtputf8)


def _plain_message(fields: list[tuple[str, str]], body: str) -> bytes | None:
    """The message written directly, or None when the email package would write it otherwise
    (it folds or encodes a header, or encodes the body)."""
    lines = []
    for name, value in fields:
        line = f"{name}: {value}"
        if len(line) > _MAX_LINE or not _PLAIN_TEXT.fullmatch(value) or "=?" in value:
            return None
        lines.append(line)
    if not body.isascii():
        return None
    body_lines = body.encode("ascii").splitlines()
    if any(len(line) > _MAX_LINE for line in body_lines):
        return None
    head = "\r\n".join(lines).encode("ascii")
    return head + b"\r\n" + _PLAIN_BODY_HEADERS + b"\r\n".join(body_lines) + b"\r\n"


def _general_message(fields: list[tuple[str, str]], body: str, smtputf8: bool) -> bytes:
    message = EmailMessage(policy=_POLICY_SMTPUTF8 if smtputf8 else _POLICY)
    for name, value in fields:
        message[name] = value
    message.set_content(body)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


@dataclass(frozen=True)
class _Sender:
    address: str  # the envelope sender
    domain: str  # for Message-IDs
    written_as_is: bool  # the email package writes the From value back unchanged


@functools.lru_cache(maxsize=16)
def _sender(from_address: str) -> _Sender:
    """What every message from this From value needs, worked out once (the same on every one)."""
    address = parseaddr(from_address)[1]
    probe = EmailMessage(policy=_POLICY)
    probe["From"] = from_address
    written_as_is = probe.as_bytes() == f"From: {from_address}\n\n".encode()
    return _Sender(address, address.rpartition("@")[2] or "localhost", written_as_is)
