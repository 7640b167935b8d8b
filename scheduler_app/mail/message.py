"""Compose RFC 5322 messages."""

from __future__ import annotations

import functools
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, parseaddr
from typing import Any


class _CachingHeaderRegistry(HeaderRegistry):
    """The standard header classes, built once per header name: CPython's registry creates a
    new class for every header of every message, a third of the cost of composing one."""

    @functools.cache  # noqa: B019 (one registry per process, never freed)
    def __getitem__(self, name: str) -> Any:
        return super().__getitem__(name)

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if name.lower() == "from":  # the same sender on every message: parsed once
            return self._sender(name, value)
        return super().__call__(name, value)

    @functools.lru_cache(maxsize=16)  # noqa: B019
    def _sender(self, name: str, value: Any) -> BaseHeader:
        return super().__call__(name, value)


_POLICY = default.clone(header_factory=_CachingHeaderRegistry())


def message_id(local_part: str, from_address: str) -> str:
    """A Message-ID that is the same every time the same thing is sent, so repeats are visible."""
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "localhost"
    return f"<{local_part}@{domain}>"


def compose_message(
    *,
    to: str,
    from_address: str,
    subject: str,
    body: str,
    sent_at: datetime,
    stable_id: str,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """Build a plain-text message; header values with CR or LF are refused by the email policy.

    Args:
        to: the recipient address.
        from_address: the From header, optionally with a display name.
        subject: a single line.
        body: the text body.
        sent_at: the Date header.
        stable_id: the left part of the Message-ID, unique per logical message.
        headers: extra headers, such as X-Reminder-Id.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id(stable_id, from_address)
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message
