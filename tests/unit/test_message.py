from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest

from scheduler_app.mail import compose_message
from scheduler_app.mail.message import message_id

SENT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_message_has_the_rfc_5322_headers() -> None:
    message = compose_message(
        to="ada@example.com",
        from_address="Reminders <noreply@reminders.example.org>",
        subject="Stand up",
        body="Time to stand up.",
        sent_at=SENT,
        stable_id="reminder-42",
        headers={"X-Reminder-Id": "42"},
    )
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Reminders <noreply@reminders.example.org>"
    assert message["Subject"] == "Stand up"
    assert parsedate_to_datetime(str(message["Date"])) == SENT
    assert message["Message-ID"] == "<reminder-42@reminders.example.org>"
    assert message["X-Reminder-Id"] == "42"
    assert message.get_content().strip() == "Time to stand up."


def test_the_message_id_is_the_same_for_every_repeat() -> None:
    first = message_id("reminder-7", "a@example.com")
    assert first == message_id("reminder-7", "Other Name <b@example.com>")
    assert first != message_id("reminder-8", "a@example.com")


def test_unicode_subjects_and_bodies_are_encoded() -> None:
    message = compose_message(
        to="zoë@example.com",
        from_address="x@example.com",
        subject="Rappel: réunion 🗓",
        body="Grüße",
        sent_at=SENT,
        stable_id="r",
    )
    raw = message.as_bytes()
    assert b"=?utf-8?" in raw
    assert message.get_content().strip() == "Grüße"


def test_a_line_break_never_reaches_a_header() -> None:
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        compose_message(
            to="ada@example.com",
            from_address="x@example.com",
            subject="Hi\r\nBcc: eve@example.com",
            body="",
            sent_at=SENT,
            stable_id="r",
        )
