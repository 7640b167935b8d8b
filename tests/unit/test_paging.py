from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_app.db.paging import TIME_POSITION, keyset_page, time_cursor
from scheduler_app.errors import InvalidField

START = datetime(2030, 1, 1, tzinfo=UTC)
# Newest first, two items sharing a time: the id breaks the tie.
ITEMS = [(START + timedelta(minutes=minute), item_id) for minute, item_id in [(3, "c"), (2, "b")]]
ITEMS += [(START, "z"), (START, "a")]


def fetch(before: tuple[datetime, str] | None, count: int) -> Sequence[tuple[datetime, str]]:
    return [item for item in ITEMS if before is None or item < before][:count]


def page(cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    found = keyset_page(
        fetch,
        cursor=cursor,
        position=TIME_POSITION,
        limit=limit,
        cursor_after=lambda item: time_cursor(*item),
    )
    return [item_id for _, item_id in found.items], found.next_cursor


def test_the_cursors_walk_every_item_once_in_order() -> None:
    seen: list[str] = []
    ids, cursor = page(None, limit=1)
    while cursor is not None:
        seen += ids
        ids, cursor = page(cursor, limit=1)
    assert [*seen, *ids] == ["c", "b", "z", "a"]


def test_the_next_page_starts_after_the_last_item_of_this_one() -> None:
    ids, cursor = page(None, limit=3)
    assert ids == ["c", "b", "z"]
    assert page(cursor, limit=3) == (["a"], None)


def test_a_page_that_ends_with_the_last_item_has_no_next_cursor() -> None:
    assert page(None, limit=4) == (["c", "b", "z", "a"], None)
    assert page(None, limit=5) == (["c", "b", "z", "a"], None)


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        "WzFd",  # [1]
        "WyIyMDMwLTAxLTAxVDAwOjAwOjAwIiwiYSJd",  # ["2030-01-01T00:00:00","a"]: no offset
    ],
)
def test_a_cursor_this_service_did_not_issue_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidField) as refused:
        page(cursor, limit=2)
    assert refused.value.location == ("query", "cursor")
