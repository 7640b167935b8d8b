"""The scheduler's lease in the database: acquire, renew, resign, read, and the fence.

Every time is the database's: `now` below is evaluated by the database, so hosts whose clocks
disagree still agree on who leads. Each statement is one conditional write that names the holder
and its term, so that a stale process can neither renew nor resign a lease that is no longer its.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Table,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)

from scheduler_app.db.models import Leadership

SCHEDULER_LEASE = "scheduler"
LEADERSHIP = cast(Table, Leadership.__table__)
_ROW = LEADERSHIP.c.name == SCHEDULER_LEASE


def database_now(dialect: str) -> ColumnElement[float]:
    """The database's clock, in seconds since the epoch.

    PostgreSQL's clock_timestamp() moves within a transaction (now() would not); SQLite's
    julianday('now') is the host's clock, which is the only one on SQLite's single host.
    """
    if dialect == "postgresql":
        return sql_cast(func.extract("epoch", func.clock_timestamp()), Float)
    return (func.julianday("now") - 2440587.5) * 86400.0


@dataclass(frozen=True)
class Held:
    """A lease this process holds: its term and when it runs out (database clock)."""

    term: int
    expires_at: float


@dataclass(frozen=True)
class LeaseState:
    """The lease as the database has it now."""

    holder: str | None
    term: int
    expires_at: float
    acquired_at: float | None
    now: float

    @property
    def held(self) -> bool:
        return self.holder is not None and self.expires_at > self.now


def read(connection: Connection) -> LeaseState:
    now = database_now(connection.dialect.name)
    row = connection.execute(
        select(
            LEADERSHIP.c.holder,
            LEADERSHIP.c.term,
            LEADERSHIP.c.expires_at,
            LEADERSHIP.c.acquired_at,
            now.label("now"),
        ).where(_ROW)
    ).one()
    return LeaseState(row.holder, row.term, row.expires_at, row.acquired_at, row.now)


def acquire(connection: Connection, holder: str, lease_s: float) -> Held | None:
    """Take the lease if nobody holds it (or its holder let it run out); None otherwise."""
    now = database_now(connection.dialect.name)
    free = or_(LEADERSHIP.c.holder.is_(None), LEADERSHIP.c.expires_at <= now)
    return _take(connection, free, holder, lease_s)


def _take(
    connection: Connection, condition: ColumnElement[bool], holder: str, lease_s: float
) -> Held | None:
    """Take the lease under a new term where condition holds; None where it does not."""
    now = database_now(connection.dialect.name)
    row = connection.execute(
        update(LEADERSHIP)
        .where(_ROW, condition)
        .values(
            holder=holder,
            term=LEADERSHIP.c.term + 1,
            expires_at=now + lease_s,
            acquired_at=now,
            resign_term=None,
        )
        .returning(LEADERSHIP.c.term, LEADERSHIP.c.expires_at)
    ).one_or_none()
    return None if row is None else Held(row.term, row.expires_at)


@dataclass(frozen=True)
class Renewed:
    expires_at: float
    # An operator asked this term's holder to step down (POST /admin/cluster/resign).
    resign_requested: bool


def renew(connection: Connection, holder: str, term: int, lease_s: float) -> Renewed | None:
    """Extend the lease held under term by lease_s from now; None if it is no longer held so
    (another process took it, or it ran out: a lease that ran out is never extended)."""
    now = database_now(connection.dialect.name)
    row = connection.execute(
        update(LEADERSHIP)
        .where(
            _ROW,
            LEADERSHIP.c.holder == holder,
            LEADERSHIP.c.term == term,
            LEADERSHIP.c.expires_at > now,
        )
        .values(expires_at=now + lease_s)
        .returning(LEADERSHIP.c.expires_at, LEADERSHIP.c.resign_term)
    ).one_or_none()
    if row is None:
        return None
    return Renewed(row.expires_at, row.resign_term == term)


def resign(connection: Connection, holder: str, term: int) -> bool:
    """Give the lease up at once, if still held under term; whether it was."""
    result = connection.execute(
        update(LEADERSHIP)
        .where(_ROW, LEADERSHIP.c.holder == holder, LEADERSHIP.c.term == term)
        .values(holder=None, expires_at=0.0, resign_term=None)
    )
    return bool(cast(Any, result).rowcount)


def request_resignation(connection: Connection) -> tuple[str, int] | None:
    """Ask the current leader, whichever process it is, to step down; its id and term, or
    None when nobody leads."""
    now = database_now(connection.dialect.name)
    row = connection.execute(
        update(LEADERSHIP)
        .where(_ROW, LEADERSHIP.c.holder.is_not(None), LEADERSHIP.c.expires_at > now)
        .values(resign_term=LEADERSHIP.c.term)
        .returning(LEADERSHIP.c.holder, LEADERSHIP.c.term)
    ).one_or_none()
    return None if row is None else (str(row.holder), int(row.term))


def holds(dialect: str) -> ColumnElement[bool]:
    """A condition true while the lease is held under the term given as the `lease_term`
    parameter: the fence that a write of the leader's work names."""
    now = database_now(dialect)
    return exists(
        select(literal_column("1"))
        .select_from(LEADERSHIP)
        .where(
            and_(
                _ROW,
                LEADERSHIP.c.term == bindparam("lease_term"),
                LEADERSHIP.c.expires_at > now,
            )
        )
    )


def still_held(connection: Connection, term: int) -> bool:
    """Whether the lease is still held under term, now."""
    return bool(connection.scalar(select(holds(connection.dialect.name)), {"lease_term": term}))


def take_over(
    connection: Connection, holder: str, dead_holder: str, dead_term: int, lease_s: float
) -> Held | None:
    """Take the lease from a holder known to be dead (its pid gone on this machine), if it still
    holds it under dead_term; None otherwise."""
    still_its = and_(LEADERSHIP.c.holder == dead_holder, LEADERSHIP.c.term == dead_term)
    return _take(connection, still_its, holder, lease_s)
