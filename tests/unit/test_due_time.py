from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from scheduler_app.api.schemas import ReminderCreate
from scheduler_app.errors import InvalidField
from scheduler_app.reminders.service import resolve_due_time
from scheduler_app.settings import ReminderSettings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = ReminderSettings(max_delay_days=30)


def request(**fields: object) -> ReminderCreate:
    return ReminderCreate.model_validate({"email": "ada@example.com", **fields})


def test_delay_is_counted_from_now() -> None:
    assert resolve_due_time(request(delay_seconds=90), NOW, LIMITS) == NOW + timedelta(seconds=90)


def test_remind_at_is_converted_to_utc() -> None:
    due = resolve_due_time(request(remind_at="2026-03-02T09:00:00+01:00"), NOW, LIMITS)
    assert due == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert due.tzinfo == UTC


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({}, "remind_at", "exactly one of delay_seconds or remind_at"),
        (
            {"delay_seconds": 5, "remind_at": "2026-03-02T09:00:00Z"},
            "delay_seconds",
            "exactly one",
        ),
        ({"remind_at": "2026-03-01T11:59:59Z"}, "remind_at", "is in the past"),
        ({"remind_at": "2026-04-01T12:00:01Z"}, "remind_at", "more than 30 days ahead"),
        ({"delay_seconds": 30 * 86400 + 1}, "delay_seconds", "more than 30 days ahead"),
        ({"delay_seconds": 1e300}, "delay_seconds", "more than 30 days ahead"),
    ],
)
def test_out_of_range_times_name_the_field(
    fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidField) as raised:
        resolve_due_time(request(**fields), NOW, LIMITS)
    assert raised.value.location == ("body", field)
    assert message in raised.value.message


def test_the_last_allowed_instant_is_accepted() -> None:
    due = resolve_due_time(request(delay_seconds=30 * 86400), NOW, LIMITS)
    assert due == NOW + timedelta(days=30)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"remind_at": "2026-03-02T09:00:00"}, "remind_at"),  # naive: no offset
        ({"delay_seconds": 0}, "delay_seconds"),
        ({"delay_seconds": -5}, "delay_seconds"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "ada@example.com\r\nBcc: eve@example.com"}, "email"),
        ({"subject": "Hi\r\nBcc: eve@example.com"}, "subject"),
        ({"subject": "x" * 201}, "subject"),
        ({"message": "x" * 5001}, "message"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_the_schema_rejects_malformed_fields(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ReminderCreate.model_validate({"email": "ada@example.com", "delay_seconds": 5, **fields})
    assert raised.value.errors()[0]["loc"][0] == field


def test_an_offset_other_than_utc_is_kept_exactly() -> None:
    tokyo = timezone(timedelta(hours=9))
    due = resolve_due_time(
        request(remind_at=datetime(2026, 3, 2, 9, 0, tzinfo=tokyo).isoformat()), NOW, LIMITS
    )
    assert due == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
