from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from email.utils import format_datetime, parseaddr, parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from scheduler_app.api.schemas import Subject
from scheduler_app.channels.email import OutgoingMessage, compose_message
from scheduler_app.channels.email.message import _PLAIN_ADDRESS, ascii_domain, message_id

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


HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "X-Reminder-Id"]
BODY_HEADERS = ["Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
LINE_BREAKS = ["\r\n", "\r", "\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def utf8(header_text: str) -> str:
    """Header text as written with SMTPUTF8 (RFC 6532): the parser leaves its UTF-8 undecoded."""
    return header_text.encode("ascii", "surrogateescape").decode()


def content(email: EmailMessage) -> str:
    """The text body with the line ends it had before it went on the wire (LF)."""
    text = email.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def header_lines(message: OutgoingMessage) -> list[bytes]:
    return message.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def field_lines(message: OutgoingMessage, name: str) -> list[bytes]:
    """The lines of one header field: its first line and the folded ones after it."""
    lines = header_lines(message)
    start = next(i for i, line in enumerate(lines) if line.startswith(name.encode() + b": "))
    end = start + 1
    while end < len(lines) and lines[end].startswith(b" "):
        end += 1
    return lines[start:end]


def assert_delivered_as_given(message: OutgoingMessage, subject: str, body: str) -> None:
    """Exactly our headers, once each; the subject exactly as given; the body as given."""
    email = parsed(message)
    assert email.keys() == [*HEADERS, *BODY_HEADERS]
    assert email["Subject"] == subject
    assert content(email) == body + "\n"
    assert all(len(line) <= 998 for line in message.data.split(b"\r\n"))
    assert all(len(line) <= 78 for line in field_lines(message, "Subject"))


# Accepted by POST /subscribe and delivered literally: what a decoder shows is these characters.
ENCODED_WORD_SUBJECTS = {
    "q": "=?utf-8?q?Hi=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AInjected_body?=",
    "b": "=?utf-8?b?SGkNCkJjYzogZXZpbEBhdHRhY2tlci5leGFtcGxlDQoNCkluamVjdGVkIGJvZHk=?=",
    "upper-case": "=?UTF-8?Q?Hi=0D=0ABcc:_evil@attacker.example?=",
    "latin-1": "=?iso-8859-1?q?Hi=0D=0ABcc:_evil@attacker.example?=",
    "inside-text": "Your invoice =?utf-8?q?=0D=0ABcc:_evil@attacker.example?= is ready",
    "two-words": "=?utf-8?q?Hi=0D=0A?= =?utf-8?q?Bcc:_evil@attacker.example?=",
    "folded-inside": "=?utf-8?q?Hi?=\t=?utf-8?q?=0D=0A=0D=0Abody?=".replace("\t", " "),
    "unicode-and-word": "Grüße =?utf-8?q?=0D=0ABcc:_evil@attacker.example?= 🎉",
    "unterminated": "=?utf-8?q?Hi=0D=0ABcc:_evil@attacker.example",
    "only-marker": "=?",
    "long": "=?utf-8?q?" + "=0D=0ABcc:_evil@attacker.example" * 5 + "?=",
}


@pytest.mark.parametrize("subject", ENCODED_WORD_SUBJECTS.values(), ids=ENCODED_WORD_SUBJECTS)
def test_a_subject_with_encoded_word_syntax_is_delivered_literally(subject: str) -> None:
    body = "The real body."
    message = compose(subject=subject, body=body, headers={"X-Reminder-Id": "42"})
    assert_delivered_as_given(message, subject, body)
    assert not any(line.lower().startswith(b"bcc") for line in message.data.split(b"\r\n"))
    assert message.data.count(b"\r\n\r\n") == 1


@pytest.mark.parametrize("brk", LINE_BREAKS)
@pytest.mark.parametrize(
    ("field", "refusal"),
    [
        ("subject", "linefeed or carriage return"),
        ("header", "linefeed or carriage return"),
        ("to", "not a single plain e-mail address"),
        ("from", "line break|not a single plain e-mail address"),
    ],
)
def test_a_line_break_never_reaches_a_header(field: str, refusal: str, brk: str) -> None:
    fields = {"to": "ada@example.com", "subject": "Hi", "header": "1", "from": "Ada"}
    fields[field] += f"{brk}Bcc: eve@example.com"
    with pytest.raises(ValueError, match=refusal):
        compose(
            to=fields["to"],
            from_address=f"{fields['from']} <x@example.com>",
            subject=fields["subject"],
            headers={"X-Reminder-Id": fields["header"]},
        )


@pytest.mark.parametrize("name", ["Bcc: eve@example.com\r\nX-Id", "X Id", "X:Id", "", "Zoë"])
def test_an_extra_header_name_must_be_a_field_name(name: str) -> None:
    with pytest.raises(ValueError, match="not a header field name"):
        compose(headers={name: "1"})


# The From value, from configuration: what it is written as, and how it reads back.
SENDER_FORMS = {
    "scheduler-app <reminders@localhost>": ("scheduler-app", "reminders@localhost"),
    "reminders@example.org": ("", "reminders@example.org"),
    '"Smith, Ada" <ada@example.org>': ("Smith, Ada", "ada@example.org"),
    '"Ada \\"Q\\" \\\\ L" <ada@example.org>': ('Ada "Q" \\ L', "ada@example.org"),
    "Ada (ops) <ada@example.org>": ("Ada (ops)", "ada@example.org"),
    "J. Smith <j@example.org>": ("J. Smith", "j@example.org"),
    "  Ada   <ada@example.org>  ": ("Ada", "ada@example.org"),
    "Zoë <z@example.org>": ("Zoë", "z@example.org"),
    '"first last"@example.org': ("", '"first last"@example.org'),
    "Zoë <z@bücher.example>": ("Zoë", "z@xn--bcher-kva.example"),
    "=?utf-8?q?Evil=0D=0ABcc:_x?= <a@example.org>": (
        "=?utf-8?q?Evil=0D=0ABcc:_x?=",
        "a@example.org",
    ),
    "Équipe des rappels <rappels@example.org>": ("Équipe des rappels", "rappels@example.org"),
}


@pytest.mark.parametrize(("from_address", "expected"), SENDER_FORMS.items(), ids=list(SENDER_FORMS))
def test_the_from_value_is_written_as_one_address(
    from_address: str, expected: tuple[str, str]
) -> None:
    message = compose(from_address=from_address, headers={"X-Reminder-Id": "42"})
    email = parsed(message)
    assert email.keys() == [*HEADERS, *BODY_HEADERS]
    [address] = email["From"].addresses
    assert (address.display_name, address.addr_spec) == expected
    assert message.sender == expected[1]
    assert message.data.isascii()
    assert all(len(line) <= 78 for line in field_lines(message, "From"))


def test_a_long_display_name_is_folded_between_whole_encoded_words() -> None:
    name = "Équipe des rappels de l'hôpital universitaire de Genève — service de nuit 🌙"
    message = compose(from_address=f"{name} <rappels@example.org>")
    lines = field_lines(message, "From")
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    raw = b"".join(lines).decode("ascii").removeprefix("From: ")
    # RFC 2047 drops the folding between two encoded-words: the name comes back whole. (Python's
    # own address parser keeps a space there, which is why this decodes with email.header.)
    assert str(make_header(decode_header(raw))) == f"{name} <rappels@example.org>"


@pytest.mark.parametrize(
    "from_address",
    [
        "nobody",
        "a@example.com, evil@example.com",
        "Ada <a@example.com>, evil@example.com",
        "ada@example.org (Ada)",
        '"a\nb"@example.com',
        '"a\tb"@example.com',
        "Ada <>",
        "Ada <=?utf-8?q?a?=@example.com>",
        "Ada <a@exa mple.com>",
        '"Ada <a@example.com>',
        "Ada <a@-.com>@",
    ],
)
def test_a_from_value_that_is_not_one_plain_address_is_refused(from_address: str) -> None:
    with pytest.raises(ValueError, match="not a single plain e-mail address"):
        compose(from_address=from_address)


@pytest.mark.parametrize(
    ("to", "sent_to", "smtputf8"),
    [
        ("user@bücher.example.com", "user@xn--bcher-kva.example.com", False),
        ("user@xn--bcher-kva.example.com", "user@xn--bcher-kva.example.com", False),
        ("jörg@bücher.example.com", "jörg@xn--bcher-kva.example.com", True),
        ("ada@faß.de", "ada@xn--fa-hia.de", False),
    ],
)
def test_a_unicode_domain_is_sent_in_its_ascii_form(to: str, sent_to: str, smtputf8: bool) -> None:
    message = compose(to=to)
    assert message.recipients == (sent_to,)
    assert message.smtputf8 is smtputf8
    assert utf8(parsed(message)["To"].addresses[0].addr_spec) == sent_to


@pytest.mark.parametrize("to", ["=?utf-8?q?a=0D=0ABcc=3A_x?=@example.com", "a=?b@example.com"])
def test_an_address_with_an_encoded_word_is_refused(to: str) -> None:
    # RFC 2047 forbids one in an address, and Python's parser decodes it: into a line break here.
    with pytest.raises(ValueError, match="not a single plain e-mail address"):
        compose(to=to)


def test_a_domain_without_an_ascii_form_is_refused() -> None:
    assert ascii_domain("ada@example.com") == "ada@example.com"
    with pytest.raises(ValueError, match="has no IDNA form"):
        ascii_domain("ada@b\u00fccher\u200d.example")


def email_package_rendering(
    *, to: str, from_address: str, subject: str, body: str, sent_at: datetime, stable_id: str
) -> bytes:
    """What the standard library's email package writes for the same message: the reference
    that compose_message must match byte for byte wherever the email package writes the header
    values back as they are (and whichever way compose_message encodes the body)."""
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
BODIES = st.one_of(
    st.lists(st.from_regex(r"[ -~]{0,120}", fullmatch=True), max_size=5).map("\n".join),
    st.text(st.one_of(ASCII_TEXT, st.sampled_from("\n\r")), max_size=300),
    st.text(st.one_of(SOME_TEXT, st.sampled_from("\n\r")), max_size=300),
)
PLAIN_ADDRESSES = st.one_of(
    st.emails().filter(lambda address: bool(_PLAIN_ADDRESS.fullmatch(address))),
    st.sampled_from(["ada@example.com", "a.b+tag@sub.example.co.uk", "zoë@example.com"]),
)
# From values the email package writes back as they are.
PLAIN_SENDERS = st.sampled_from(
    [
        "scheduler-app <reminders@localhost>",
        "reminders@example.org",
        '"Smith, Ada" <ada@example.org>',
        "Zoë <z@example.org>",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    to=PLAIN_ADDRESSES,
    from_address=PLAIN_SENDERS,
    subject=st.from_regex(r"[!-~]{1,30}( [!-~]{1,20}){0,4}", fullmatch=True),
    body=BODIES,
    stable_id=st.from_regex(r"reminder-[0-9a-f]{1,40}", fullmatch=True),
    offset_minutes=st.sampled_from([0, 60, -330]),
)
def test_a_plain_message_is_what_the_email_package_writes(
    to: str, from_address: str, subject: str, body: str, stable_id: str, offset_minutes: int
) -> None:
    assume("=?" not in subject and len(f"Subject: {subject}") <= 78)
    # The email package writes a non-ASCII name raw when an address needs SMTPUTF8; it is
    # encoded here all the same.
    assume(to.isascii() or from_address.isascii())
    sent_at = SENT.astimezone(timezone(timedelta(minutes=offset_minutes)))
    fields = {"to": to, "from_address": from_address, "subject": subject, "body": body}
    message = compose_message(
        **fields, sent_at=sent_at, stable_id=stable_id, headers={"X-Reminder-Id": stable_id}
    )
    assert message.data == email_package_rendering(**fields, sent_at=sent_at, stable_id=stable_id)


# Every subject POST /subscribe accepts: 1 to 200 characters, no control characters, no line or
# paragraph separators (lone surrogates cannot be encoded: refused too).
VALID_SUBJECTS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=200
)
SUBJECT_EXAMPLES = {
    "ascii": "Stand up",
    "long-ascii": "Remember to water the plants on the balcony before you leave " * 3,
    "one-ascii-word": "x" * 200,
    "spaces": "  two  spaces  and a trailing one ",
    "one-space": " ",
    "latin": "Rappel : réunion à 9 h, n'oubliez pas les documents signés et la clé " * 2,
    "cjk": "会議のリマインダー、明日の午前九時から第三会議室で定例会議があります。" * 3,
    "emoji": "🎉" * 200,
    "zwj": "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 " * 20,
    "rtl": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202eevil\u202c " * 6,
    "combining": "e\u0301\u0302\u0303 a\u0308 " * 30,
    "one-unicode-word": "é" * 200,
    "mixed-scripts": (
        "Ünïcödé 🎉 \U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 "
        "\U0001f44d\U0001f3fd \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 "
        "\u202eevil\u202c 日本語 e\u0301 \u200b"
    ),
    "encoded-word": ENCODED_WORD_SUBJECTS["q"],
    "underscores-and-equals": "_=_?=?_=" * 25,
}


@pytest.mark.parametrize("subject", SUBJECT_EXAMPLES.values(), ids=SUBJECT_EXAMPLES)
def test_a_subject_of_any_length_and_script_reads_back_exactly(subject: str) -> None:
    subject = subject[:200]
    assert TypeAdapter(Subject).validate_python(subject) == subject
    message = compose(subject=subject, body="Body", headers={"X-Reminder-Id": "42"})
    assert_delivered_as_given(message, subject, "Body")


@settings(max_examples=500, deadline=None)
@given(subject=VALID_SUBJECTS)
@example(subject=" x")
@example(subject="x ")
@example(subject="a" * 69)
@example(subject="a" * 70)
def test_any_valid_subject_reads_back_exactly_within_the_line_limits(subject: str) -> None:
    assert TypeAdapter(Subject).validate_python(subject) == subject
    message = compose(subject=subject, headers={"X-Reminder-Id": "42"})
    assert_delivered_as_given(message, subject, "")
    assert message.data.isascii()


ADDRESSES = st.one_of(
    st.emails(),
    st.sampled_from(["zoë@example.com", "user@bücher.example.com", "jörg@bücher.example"]),
)
SENDERS = st.sampled_from(list(SENDER_FORMS))


@settings(max_examples=300, deadline=None)
@given(to=ADDRESSES, from_address=SENDERS, subject=VALID_SUBJECTS, body=BODIES)
def test_every_message_reads_back_as_composed(
    to: str, from_address: str, subject: str, body: str
) -> None:
    assume("=?" not in to)
    message = compose(
        to=to, from_address=from_address, subject=subject, body=body, headers={"X-Reminder-Id": "1"}
    )
    email = parsed(message)
    assert email.keys() == [*HEADERS, *BODY_HEADERS]
    assert email["Subject"] == subject
    assert [utf8(a.addr_spec) for a in email["To"].addresses] == [ascii_domain(to)]
    assert message.recipients == (ascii_domain(to),)
    [sender] = email["From"].addresses
    assert (sender.display_name, sender.addr_spec) == SENDER_FORMS[from_address]
    # The body as set_content stores it: its lines (CR, LF or CRLF) each ended by a newline.
    assert content(email) == "\n".join(line.decode() for line in body.encode().splitlines()) + "\n"
    assert message.data.isascii() is not message.smtputf8
    assert all(len(line) <= 998 for line in message.data.split(b"\r\n"))
    assert all(len(line) <= 78 for line in field_lines(message, "Subject"))
