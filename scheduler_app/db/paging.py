"""Keyset pages and their opaque cursors: a cursor is the position after a page's last item.

A cursor is a JSON list in base64url, which a client can forge: its elements go into SQL, so
every one is checked against the position's type (strict: no bool for a number, no text for a
number, no nesting), and a cursor that does not fit answers 422 naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter
from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from scheduler_app.api.schemas import Moment, Text
from scheduler_app.errors import InvalidField

P = TypeVar("P")
T = TypeVar("T")

NOT_A_CURSOR = "is not a cursor from a previous page"
# Positions are validated as strictly as JSON types them: "1" is no number, nor is `true`.
STRICT = ConfigDict(strict=True)
# An item's id as it ends a position: job ids are at most 200 characters, reminder and run ids 36.
CursorId = Annotated[Text, Field(min_length=1, max_length=200)]

# Runs and reminders, newest first: the time the last item is sorted by (with its offset), and
# its id.
TimePosition = tuple[Moment, CursorId]
TIME_POSITION: TypeAdapter[TimePosition] = TypeAdapter(TimePosition, config=STRICT)


def encode_cursor(*position: Any) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, position: TypeAdapter[P]) -> P:
    """The position in a cursor, or InvalidField when it is not one this service issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return position.validate_json(raw)
    except ValueError:  # not base64 or not JSON (binascii.Error), or not a position
        raise InvalidField(("query", "cursor"), NOT_A_CURSOR) from None


def time_cursor(moment: datetime, item_id: str) -> str:
    """The cursor after an item sorted by moment, then by id."""
    return encode_cursor(moment.isoformat(), item_id)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def keyset_page(
    fetch: Callable[[P | None, int], Sequence[T]],
    *,
    cursor: str | None,
    position: TypeAdapter[P],
    limit: int,
    cursor_after: Callable[[T], str],
) -> Page[T]:
    """One page of items and the cursor to the next page (None on the last one).

    Args:
        fetch: fetch(after, count) returns at most count items in page order, those that
            follow the position `after` (from the first item when None).
        cursor: the client's cursor, None or empty for the first page.
        position: the type of a position, which a cursor must fit.
        limit: the number of items per page.
        cursor_after: the cursor that continues after an item.
    """
    after = decode_cursor(cursor, position) if cursor else None
    # One more than a page: whether a next page exists, without a count.
    found = fetch(after, limit + 1)
    items = list(found[:limit])
    next_cursor = cursor_after(items[-1]) if len(found) > limit else None
    return Page(items, next_cursor)


def older_than(
    moment: InstrumentedAttribute[datetime],
    item_id: InstrumentedAttribute[str],
    position: tuple[datetime, str],
) -> ColumnElement[bool]:
    """The items after a TIME_POSITION in a newest-first order by (moment, id)."""
    at, after_id = position
    return or_(moment < at, and_(moment == at, item_id < after_id))
