"""The reminder's address: a short way for plain addresses, pydantic's EmailStr for the rest.

Whatever the way, the answer must be EmailStr's (the same normalised address or the same error)
with two differences: the domain is in its ASCII (IDNA) form, as email-validator gives it, and an
address with "=?" (an RFC 2047 encoded-word) is refused.
"""

from __future__ import annotations

import email_validator
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import EmailStr, TypeAdapter, ValidationError

from scheduler_app.api.schemas import _PLAIN_ADDRESS, EmailAddress, _plain_address

OURS = TypeAdapter(EmailAddress)
PYDANTIC = TypeAdapter(EmailStr)


def outcome(adapter: TypeAdapter[str], value: str) -> object:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        return exc.errors(include_url=False)


def expected_outcome(value: str) -> object:
    answer = outcome(PYDANTIC, value)
    if not isinstance(answer, str):
        return answer
    if "=?" in answer:
        return "refused: =?"
    parts = email_validator.validate_email(answer, check_deliverability=False)
    return f"{parts.local_part}@{parts.ascii_domain}"


def assert_same_outcome(value: str) -> None:
    answer = outcome(OURS, value)
    if isinstance(answer, list) and "'=?'" in answer[0]["msg"]:
        assert answer[0]["msg"].startswith("value is not a valid email address: "), answer
        answer = "refused: =?"
    assert answer == expected_outcome(value), value


EDGES = [
    "ada@example.com",
    "Ada.Lovelace+tea@mail.example.co.uk",
    "ada@EXAMPLE.com",
    "ada@xn--bcher-kva.example",
    "ada@ab--cd.example",
    "ada@localhost",
    "ada@printer.local",
    "ada@x.test",
    "ada@10.in-addr.arpa",
    "ada@invalid",
    "ada@example.c0m",
    "ada@123.example",
    "ada@example.123",
    "ada@-example.com",
    "ada@example-.com",
    "ada..l@example.com",
    ".ada@example.com",
    "ada.@example.com",
    "ada@example",
    "Ada <ada@example.com>",
    " ada@example.com",
    "jörg@example.com",
    "ada@bücher.example",
    "ada@BÜCHER.example",
    "ada@bücher。example",
    "ada@faß.de",
    "ada@xn--fa-hia.de",
    "ada@σοφος.gr",
    "jörg@bücher.example",
    "=?utf-8?q?a=0D=0ABcc=3A_evil?=@example.com",
    "a=?b@example.com",
    "a?=b@example.com",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "ada@" + "b" * 63 + ".example",
    "ada@" + "b" * 64 + ".example",
    "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 58,
    "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 59,
    "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 60,
    "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 61,  # 255 characters: one past the limit
    "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".com",
]


@pytest.mark.parametrize("value", EDGES)
def test_an_edge_case_is_answered_as_email_str_would(value: str) -> None:
    assert_same_outcome(value)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("user@bücher.example.com", "user@xn--bcher-kva.example.com"),
        ("user@xn--bcher-kva.example.com", "user@xn--bcher-kva.example.com"),
        ("user@XN--BCHER-KVA.example.com", "user@xn--bcher-kva.example.com"),
        ("user@BÜCHER.Example.com", "user@xn--bcher-kva.example.com"),
        ("jörg@bücher.example.com", "jörg@xn--bcher-kva.example.com"),
        ("ada@faß.de", "ada@xn--fa-hia.de"),
    ],
)
def test_a_domain_is_kept_in_its_ascii_form(value: str, stored: str) -> None:
    assert OURS.validate_python(value) == stored


@pytest.mark.parametrize(
    "value", ["=?utf-8?q?a=0D=0ABcc=3A_evil?=@example.com", "a=?b@example.com"]
)
def test_an_address_with_an_encoded_word_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="must not contain '=\\?'"):
        OURS.validate_python(value)


def test_the_usual_addresses_take_the_short_way() -> None:
    # Otherwise the short way would be dead code, and these tests would prove nothing.
    assert _plain_address("ada@example.com")
    assert _plain_address("Ada.Lovelace+tea@mail.example.co.uk")
    assert not _plain_address("ada@EXAMPLE.com")
    assert not _plain_address("ada@x.test")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True))
def test_an_address_of_the_short_way_s_shape_is_answered_as_email_str_would(value: str) -> None:
    assert_same_outcome(value)


@settings(max_examples=400)
@given(st.text(alphabet="aZ09.-_+@ xn<>\u00e9\u0430", min_size=1, max_size=40))
def test_any_string_is_answered_as_email_str_would(value: str) -> None:
    assert_same_outcome(value)


@settings(max_examples=200)
@given(
    local=st.text(alphabet="ab.", min_size=1, max_size=70),
    labels=st.lists(st.text(alphabet="b-", min_size=1, max_size=66), min_size=1, max_size=5),
    top=st.text(alphabet="cC1", min_size=1, max_size=64),
)
@example(local="a", labels=["b" * 63, "b" * 63, "b" * 63], top="c" * 59)
def test_lengths_at_and_past_every_limit_are_answered_as_email_str_would(
    local: str, labels: list[str], top: str
) -> None:
    assert_same_outcome(f"{local}@{'.'.join([*labels, top])}")
