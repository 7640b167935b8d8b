"""The reminder's address: a short way for plain addresses, pydantic's EmailStr for the rest.

Whatever the way, the answer must be EmailStr's: the same normalised address or the same error.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import EmailStr, TypeAdapter, ValidationError

from scheduler_app.schemas import _PLAIN_ADDRESS, EmailAddress, _plain_address

OURS = TypeAdapter(EmailAddress)
PYDANTIC = TypeAdapter(EmailStr)


def outcome(adapter: TypeAdapter[str], value: str) -> object:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        return exc.errors(include_url=False)


def assert_same_outcome(value: str) -> None:
    assert outcome(OURS, value) == outcome(PYDANTIC, value), value


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
