"""Opaque keyset cursors: the position after the last item of a page."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from scheduler_app.errors import InvalidField


def encode_cursor(*position: Any) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """The position in a cursor, or InvalidField when it is not one this service issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except ValueError:
        position = None
    if not isinstance(position, list) or len(position) != size:
        raise InvalidField(("query", "cursor"), "is not a cursor from a previous page")
    return position


def parse_cursor_time(text: Any) -> datetime:
    """An aware datetime from a cursor, or InvalidField."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidField(("query", "cursor"), "is not a cursor from a previous page")
    return moment
