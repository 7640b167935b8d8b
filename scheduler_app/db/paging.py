"""Opaque keyset cursors: the position after the last item of a page.

A cursor is a JSON list in base64url, which a client can forge: its elements go into SQL, so
every one is checked against the position's type (strict: no bool for a number, no text for a
number, no nesting), and a cursor that does not fit answers 422 naming it.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter

from scheduler_app.api.schemas import Moment, Text
from scheduler_app.errors import InvalidField

P = TypeVar("P")

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
