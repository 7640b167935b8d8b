"""What POST /subscribe accepts is delivered exactly as sent, through the service to the outbox
and to a real SMTP server: a subject with RFC 2047 encoded-word syntax arrives as those literal
characters (never as a decoded line break, header or body), a subject of any length and script
arrives whole, and an address with a Unicode domain is stored and sent in its ASCII form.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from scheduler_app.app import create_app
from scheduler_app.settings import Settings
from tests.support import (
    SmtpSink,
    make_settings,
    running_smtp_sink,
    show_reminder,
    smtp_mail,
    wait_for_status,
)

HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "X-Reminder-Id",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
]
BODY = "The message the client sent.\nIts second line."

# Accepted (201) and delivered as these literal characters.
ENCODED_WORD_SUBJECTS = {
    "q": "=?utf-8?q?Hi=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AInjected_body?=",
    "b": "=?utf-8?b?SGkNCkJjYzogZXZpbEBhdHRhY2tlci5leGFtcGxlDQoNCkluamVjdGVkIGJvZHk=?=",
    "upper-case-q": "=?UTF-8?Q?Hi=0D=0ABcc:_evil@attacker.example?=",
    "inside-longer-text": "Invoice =?utf-8?q?=0D=0ABcc:_evil@attacker.example?= is ready",
    "two-words": "=?utf-8?q?Hi=0D=0A?= =?utf-8?b?QmNjOiBldmlsQGF0dGFja2VyLmV4YW1wbGU=?=",
    "non-ascii-and-word": "Grüße =?utf-8?q?=0D=0ABcc:_evil@attacker.example?= 🎉",
    "long": "=?utf-8?q?" + "=0D=0AX-Injected:_yes" * 8 + "?=",
}
# Longer than one encoded-word: each is folded into several, and must lose no space.
LONG_SUBJECTS = {
    "mixed-scripts": (
        "Ünïcödé 🎉 \U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 "
        "\U0001f44d\U0001f3fd \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 "
        "\u202eevil\u202c 日本語 e\u0301 \u200b"
    ),
    "latin": "Rappel : réunion à 9 h, n'oubliez pas les documents signés et la clé du local",
    "cjk": (
        "会議のリマインダー 明日の午前九時から第三会議室で定例会議があります 資料をご持参ください"
    ),
    "emoji": "🎉 " * 66,
    "rtl": "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd " * 12,
    "combining": "e\u0301\u0302 a\u0308 o\u0303 " * 20,
    "long-ascii": "Remember to water the plants on the balcony before you leave for the airport",
    "ascii-word": "x" * 200,
    "spaces": "  two  leading, two  inside and one trailing ",
}
# Refused (422 naming the subject) and never stored.
REFUSED_SUBJECTS = {
    "crlf": "Hi\r\nBcc: evil@attacker.example",
    "lf": "Hi\nBcc: evil@attacker.example",
    "cr": "Hi\rBcc: evil@attacker.example",
    "crlf-crlf-body": "Hi\r\n\r\nInjected body",
    "line-separator": "Hi\u2028Bcc: evil@attacker.example",
    "paragraph-separator": "Hi\u2029Bcc: evil@attacker.example",
    "next-line": "Hi\x85Bcc: evil@attacker.example",
    "vertical-tab": "Hi\x0bBcc: evil@attacker.example",
    "form-feed": "Hi\x0cBcc: evil@attacker.example",
    "record-separator": "Hi\x1eBcc: evil@attacker.example",
    "encoded-word-and-crlf": "=?utf-8?q?Hi?=\r\nBcc: evil@attacker.example",
    "non-ascii-and-line-separator": "Grüße\u2028=?utf-8?q?Bcc:_evil@attacker.example?=",
}


@dataclass
class RawSink(SmtpSink):
    """An SMTP sink that keeps each message's bytes as they came and its envelope."""

    raw: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[list[str], list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.raw.append(envelope.content)
            self.envelopes.append((list(envelope.mail_options), list(envelope.rcpt_tos)))
        return "250 OK"


@dataclass
class Delivery:
    """The service's settings, and what its mail backend delivered: the .eml files or what the
    SMTP server received."""

    settings: Settings
    sink: RawSink | None

    def delivered(self) -> list[bytes]:
        if self.sink is not None:
            with self.sink._lock:
                return list(self.sink.raw)
        return [path.read_bytes() for path in sorted(self.settings.mail.outbox_dir.glob("*.eml"))]


@pytest.fixture(params=["outbox", "smtp"])
def delivery(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str
) -> Iterator[Delivery]:
    if request.param == "outbox":
        yield Delivery(make_settings(tmp_path, database_url), None)
        return
    with running_smtp_sink(RawSink) as sink:
        settings = make_settings(tmp_path, database_url, mail=smtp_mail(sink.host, sink.port))
        yield Delivery(settings, sink)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage) -> str:
    content = message.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_every_accepted_subject_is_delivered_exactly_as_sent(delivery: Delivery) -> None:
    subjects = {**ENCODED_WORD_SUBJECTS, **LONG_SUBJECTS}
    sent: dict[str, tuple[str, str]] = {}  # reminder id -> (case, subject)
    with TestClient(create_app(delivery.settings)) as client:
        for case, subject in subjects.items():
            created = client.post(
                "/subscribe",
                json={
                    "email": "ada@example.com",
                    "delay_seconds": 0.2,
                    "subject": subject,
                    "message": BODY,
                },
            )
            assert created.status_code == 201, (case, created.text)
            assert created.json()["subject"] == subject, case
            sent[created.json()["id"]] = (case, subject)
        for reminder_id in sent:
            wait_for_status(client, reminder_id, "sent")
            assert show_reminder(client, reminder_id)["subject"] == sent[reminder_id][1]

    delivered = delivery.delivered()
    assert len(delivered) == len(sent)
    for data in delivered:
        message = parse(data)
        case, subject = sent[message["X-Reminder-Id"]]
        assert message.keys() == HEADERS, case
        assert message["Subject"] == subject, case
        assert body_of(message) == BODY + "\n", case
        assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"], case
        head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
        assert head.isascii(), case
        assert not any(line.lower().startswith(b"bcc") for line in head.split(b"\n")), case
        assert all(len(line) <= 78 for line in head.split(b"\n")), case


@pytest.mark.parametrize("subject", REFUSED_SUBJECTS.values(), ids=REFUSED_SUBJECTS)
def test_a_subject_with_a_line_break_is_refused_and_not_stored(
    client: TestClient, database_url: str, subject: str
) -> None:
    response = client.post(
        "/subscribe", json={"email": "ada@example.com", "delay_seconds": 60, "subject": subject}
    )
    assert response.status_code == 422, response.text
    assert ["body", "subject"] in [problem["loc"] for problem in response.json()["detail"]]
    assert stored_emails(database_url) == []


def stored_emails(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT recipient FROM tasks")).scalars())
    finally:
        engine.dispose()


@contextlib.contextmanager
def service_without_smtputf8(
    tmp_path: Path, database_url: str
) -> Iterator[tuple[TestClient, RawSink]]:
    """The service delivering to an SMTP server that does not offer SMTPUTF8."""
    with running_smtp_sink(RawSink, enable_SMTPUTF8=False) as sink:
        settings = make_settings(tmp_path, database_url, mail=smtp_mail(sink.host, sink.port))
        with TestClient(create_app(settings)) as client:
            yield client, sink


@pytest.mark.parametrize(
    "given",
    ["user@bücher.example.com", "user@xn--bcher-kva.example.com", "user@BÜCHER.example.com"],
)
def test_a_unicode_domain_is_stored_and_sent_in_its_ascii_form(
    tmp_path: Path, database_url: str, given: str
) -> None:
    ascii_address = "user@xn--bcher-kva.example.com"
    with service_without_smtputf8(tmp_path, database_url) as (client, sink):
        created = client.post("/subscribe", json={"email": given, "delay_seconds": 0.2})
        assert created.status_code == 201, created.text
        reminder_id = created.json()["id"]
        assert created.json()["email"] == ascii_address
        assert show_reminder(client, reminder_id)["email"] == ascii_address
        assert stored_emails(database_url) == [ascii_address]
        wait_for_status(client, reminder_id, "sent")
    [(options, recipients)] = sink.envelopes
    assert "SMTPUTF8" not in options
    assert recipients == [ascii_address]
    [data] = sink.raw
    assert data.isascii()
    assert parse(data)["To"].addresses[0].addr_spec == ascii_address


def test_a_unicode_local_part_still_needs_smtputf8(tmp_path: Path, database_url: str) -> None:
    with service_without_smtputf8(tmp_path, database_url) as (client, sink):
        created = client.post(
            "/subscribe", json={"email": "jörg@bücher.example.com", "delay_seconds": 0.2}
        )
        assert created.status_code == 201, created.text
        assert created.json()["email"] == "jörg@xn--bcher-kva.example.com"
        failed = wait_for_status(client, created.json()["id"], "failed")
    assert "SMTPUTF8" in failed["last_error"]
    assert failed["attempts"] == 1
    assert sink.raw == []
