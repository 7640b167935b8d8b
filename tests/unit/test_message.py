from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from email.utils import format_datetime, parseaddr, parsedate_to_datetime
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_app.mail import OutgoingMessage, compose_message
from scheduler_app.mail.message import message_id

SENT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def compose(**fields: Any) -> OutgoingMessage:
    """compose_message with plain values for every field a test leaves out."""
    defaults: dict[str, Any] = {
        "to": "ada@example.com",
        "from_address": "x@example.com",
        "subject": "Hi",
        "body": "",
        "sent_at": SENT,
        "stable_id": "r",
    }
    return compose_message(**{**defaults, **fields})


def parsed(message: OutgoingMessage) -> EmailMessage:
    result = BytesParser(policy=default).parsebytes(message.data)
    assert isinstance(result, EmailMessage)
    return result


def test_a_message_has_the_rfc_5322_headers_and_its_envelope() -> None:
    message = compose(
        from_address="Reminders <noreply@reminders.example.org>",
        subject="Stand up",
        body="Time to stand up.",
        stable_id="reminder-42",
        headers={"X-Reminder-Id": "42"},
    )
    assert message.sender == "noreply@reminders.example.org"
    assert message.recipients == ("ada@example.com",)
    assert not message.smtputf8
    email = parsed(message)
    assert email["To"] == "ada@example.com"
    assert email["From"] == "Reminders <noreply@reminders.example.org>"
    assert email["Subject"] == "Stand up"
    assert parsedate_to_datetime(str(email["Date"])) == SENT
    assert email["Message-ID"] == "<reminder-42@reminders.example.org>"
    assert email["X-Reminder-Id"] == "42"
    assert email.get_content().strip() == "Time to stand up."
    assert b"\r\n\r\n" in message.data
    assert b"\n" not in message.data.replace(b"\r\n", b"")


def test_the_message_id_is_the_same_for_every_repeat() -> None:
    first = message_id("reminder-7", "a@example.com")
    assert first == message_id("reminder-7", "Other Name <b@example.com>")
    assert first != message_id("reminder-8", "a@example.com")


def test_unicode_subjects_and_bodies_leave_as_seven_bit_text() -> None:
    message = compose(from_address="Zoë <x@example.com>", subject="Rappel: réunion 🗓", body="Grüße")
    assert message.data.isascii()
    assert not message.smtputf8
    assert b"=?utf-8?" in message.data
    email = parsed(message)
    assert email["Subject"] == "Rappel: réunion 🗓"
    assert email["From"].addresses[0].display_name == "Zoë"
    assert email.get_content().strip() == "Grüße"


def test_a_non_ascii_address_needs_smtputf8_and_keeps_its_headers_in_utf8() -> None:
    message = compose(to="zoë@example.com", subject="Grüße", body="Grüße")
    assert message.smtputf8
    assert message.recipients == ("zoë@example.com",)
    assert "To: zoë@example.com\r\n".encode() in message.data
    assert parsed(message).get_content().strip() == "Grüße"


@pytest.mark.parametrize("field", ["subject", "to", "header"])
def test_a_line_break_never_reaches_a_header(field: str) -> None:
    fields = {"to": "ada@example.com", "subject": "Hi", "header": "1"}
    fields[field] += "\r\nBcc: eve@example.com"
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        compose(
            to=fields["to"],
            subject=fields["subject"],
            headers={"X-Reminder-Id": fields["header"]},
        )


def email_package_rendering(
    *, to: str, from_address: str, subject: str, body: str, sent_at: datetime, stable_id: str
) -> bytes:
    """What the standard library's email package writes for the same message: the reference
    that compose_message must match byte for byte, whichever way it builds the message."""
    smtputf8 = not (to.isascii() and parseaddr(from_address)[1].isascii())
    policy = default.clone(cte_type="8bit" if smtputf8 else "7bit", utf8=smtputf8)
    message = EmailMessage(policy=policy)
    message["From"] = from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id(stable_id, from_address)
    message["X-Reminder-Id"] = stable_id
    message.set_content(body)
    return message.as_bytes(policy=policy.clone(linesep="\r\n"))


ASCII_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SOME_TEXT = st.one_of(ASCII_TEXT, st.sampled_from("\t\u00e9\u00a0\u2028🎉=?"))
ADDRESSES = st.one_of(
    st.emails(),
    st.sampled_from(["ada@example.com", "a.b+tag@sub.example.co.uk", "zoë@example.com"]),
)
SENDERS = st.sampled_from(
    [
        "scheduler-app <reminders@localhost>",
        "reminders@example.org",
        '"Smith, Ada" <ada@example.org>',
        "Ada (ops) <ada@example.org>",
        "Zoë <z@example.org>",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    to=ADDRESSES,
    from_address=SENDERS,
    subject=st.one_of(
        st.from_regex(r"[!-~]{1,30}( [!-~]{1,20}){0,4}", fullmatch=True),
        st.text(SOME_TEXT, min_size=1, max_size=90),
    ),
    body=st.one_of(
        st.lists(st.from_regex(r"[ -~]{0,120}", fullmatch=True), max_size=5).map("\n".join),
        st.text(st.one_of(ASCII_TEXT, st.sampled_from("\n\r")), max_size=300),
        st.text(st.one_of(SOME_TEXT, st.sampled_from("\n\r")), max_size=300),
    ),
    stable_id=st.from_regex(r"reminder-[0-9a-f]{1,40}", fullmatch=True),
    offset_minutes=st.sampled_from([0, 60, -330]),
)
def test_every_message_is_what_the_email_package_writes(
    to: str, from_address: str, subject: str, body: str, stable_id: str, offset_minutes: int
) -> None:
    sent_at = SENT.astimezone(timezone(timedelta(minutes=offset_minutes)))
    rendering = partial(
        email_package_rendering, to=to, from_address=from_address, subject=subject, body=body
    )
    composing = partial(
        compose_message, to=to, from_address=from_address, subject=subject, body=body
    )
    try:
        expected = rendering(sent_at=sent_at, stable_id=stable_id)
    except ValueError:  # a line break the email package sees (U+2028 ...): refused alike
        with pytest.raises(ValueError, match="linefeed or carriage return"):
            composing(sent_at=sent_at, stable_id=stable_id)
        return
    message = composing(sent_at=sent_at, stable_id=stable_id, headers={"X-Reminder-Id": stable_id})
    assert message.data == expected
