"""Record operator actions and list them, newest first.

An action is recorded around the service call that carries it out, so that the entry says what
came of it: "ok" (with a summary when the action has one) or "error" with the message the caller
was given. Should the entry itself not be written (the database gone), that is logged and the
action's own result stands: an operator is not told that an action failed when it was done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import insert, select

from scheduler_app.clock import Clock
from scheduler_app.db.engine import SessionFactory
from scheduler_app.db.models import AuditEntry
from scheduler_app.db.paging import STRICT, CursorId, Page, encode_cursor, keyset_page
from scheduler_app.errors import SchedulerAppError
from scheduler_app.ids import new_id

Source = Literal["api", "cli", "dashboard"]
# Entries are listed by id: ids grow with time, so the last id seen is the whole position.
ID_POSITION: TypeAdapter[tuple[CursorId]] = TypeAdapter(tuple[CursorId], config=STRICT)
# The User-Agent of `scheduler-app jobs ...` (then "/<version>"): its actions are recorded as the
# command line's.
CLI_USER_AGENT = "scheduler-app-cli"
MAX_DETAIL = 1000
logger = logging.getLogger(__name__)
UNEXPECTED = "internal error; the details are in the service log"


@dataclass(frozen=True)
class Actor:
    """Who acts: where from, the credential and client as far as the service can tell."""

    source: Source
    who: str
    request_id: str | None = None


@dataclass
class Outcome:
    """What the action came to; the action's body may set `detail` (e.g. "3 tasks retried")."""

    detail: str | None = None


@dataclass(frozen=True)
class Audit:
    """The audit log as one actor writes to it (an API request, a dashboard login)."""

    log: AuditLog
    actor: Actor

    def recorded(self, action: str, target: str | None = None) -> AbstractContextManager[Outcome]:
        return self.log.recorded(self.actor, action, target)

    def recorded_async(
        self, action: str, target: str | None = None
    ) -> AbstractAsyncContextManager[Outcome]:
        return self.log.recorded_async(self.actor, action, target)


class AuditLog:
    """The audit entries in the database, shared by every process on it."""

    def __init__(self, sessions: SessionFactory, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    @contextmanager
    def recorded(self, actor: Actor, action: str, target: str | None) -> Iterator[Outcome]:
        """Record the action done in the body, "ok" or, should it raise, "error" (re-raised).

        Blocking: for code that runs in a worker thread (synchronous routes, the dashboard).
        """
        outcome = Outcome()
        try:
            yield outcome
        except Exception as exc:
            self._keep(actor, action, target, "error", _message(exc))
            raise
        self._keep(actor, action, target, "ok", outcome.detail)

    @asynccontextmanager
    async def recorded_async(
        self, actor: Actor, action: str, target: str | None
    ) -> AsyncIterator[Outcome]:
        """`recorded` for code on the event loop: the entry is written off the loop."""
        outcome = Outcome()
        try:
            yield outcome
        except Exception as exc:
            await asyncio.to_thread(self._keep, actor, action, target, "error", _message(exc))
            raise
        await asyncio.to_thread(self._keep, actor, action, target, "ok", outcome.detail)

    def _keep(
        self,
        actor: Actor,
        action: str,
        target: str | None,
        outcome: Literal["ok", "error"],
        detail: str | None,
    ) -> None:
        try:
            self.record(actor, action, target, outcome, detail)
        except Exception:
            logger.exception("the audit entry for %s (%s) could not be stored", action, outcome)

    def record(
        self,
        actor: Actor,
        action: str,
        target: str | None,
        outcome: Literal["ok", "error"],
        detail: str | None = None,
    ) -> None:
        """Store one entry."""
        row = {
            "id": new_id(),
            "at": self._clock(),
            "source": actor.source,
            "actor": actor.who[:200],
            "action": action[:64],
            "target": None if target is None else target[:300],
            "outcome": outcome,
            "detail": None if detail is None else detail[:MAX_DETAIL],
            "request_id": None if actor.request_id is None else actor.request_id[:64],
        }
        with self._sessions() as session:
            session.execute(insert(AuditEntry), [row])
            session.commit()

    def page(
        self,
        *,
        source: Source | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:
        """Entries newest first, filtered by source, action and target (each exact)."""

        def fetch(after: tuple[str] | None, count: int) -> list[dict[str, Any]]:
            query = select(AuditEntry)
            if source is not None:
                query = query.where(AuditEntry.source == source)
            if action is not None:
                query = query.where(AuditEntry.action == action)
            if target is not None:
                query = query.where(AuditEntry.target == target)
            if after is not None:
                query = query.where(AuditEntry.id < after[0])
            query = query.order_by(AuditEntry.id.desc()).limit(count)
            with self._sessions() as session:
                return [_fields(entry) for entry in session.scalars(query)]

        return keyset_page(
            fetch,
            cursor=cursor,
            position=ID_POSITION,
            limit=limit,
            cursor_after=lambda item: encode_cursor(item["id"]),
        )


def _message(exc: Exception) -> str:
    # What the caller was told: a service error's message; for anything else the traceback goes
    # to the log, not here.
    return exc.message if isinstance(exc, SchedulerAppError) else UNEXPECTED


def _fields(entry: AuditEntry) -> dict[str, Any]:
    at: datetime = entry.at
    return {
        "id": entry.id,
        "at": at,
        "source": entry.source,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": entry.detail,
        "request_id": entry.request_id,
    }
