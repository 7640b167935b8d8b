"""The processes on the database, each as it last reported itself (on the database's clock)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, Table, delete, insert, select, update

from scheduler_app.cluster.identity import ProcessIdentity
from scheduler_app.cluster.lease import database_now
from scheduler_app.db.models import ClusterProcess

PROCESSES = cast(Table, ClusterProcess.__table__)


@dataclass(frozen=True)
class Member:
    id: str
    host: str
    pid: int
    version: str
    node: str
    started_at: float
    last_seen: float


def register(connection: Connection, me: ProcessIdentity) -> None:
    now = database_now(connection.dialect.name)
    connection.execute(
        insert(PROCESSES).values(
            id=me.id,
            host=me.host,
            pid=me.pid,
            version=me.version,
            node=me.node,
            started_at=now,
            last_seen=now,
        )
    )


def report(connection: Connection, me: ProcessIdentity) -> None:
    """Record that this process is alive now (again, should the row have been forgotten)."""
    now = database_now(connection.dialect.name)
    result = connection.execute(
        update(PROCESSES).where(PROCESSES.c.id == me.id).values(last_seen=now)
    )
    if not result.rowcount:
        register(connection, me)


def leave(connection: Connection, me: ProcessIdentity) -> None:
    connection.execute(delete(PROCESSES).where(PROCESSES.c.id == me.id))


def forget_gone(connection: Connection, after_s: float) -> int:
    """Delete the processes not seen for after_s; how many."""
    now = database_now(connection.dialect.name)
    result = connection.execute(delete(PROCESSES).where(PROCESSES.c.last_seen < now - after_s))
    return int(result.rowcount)


def seen_within(connection: Connection, within_s: float) -> list[Member]:
    """The processes seen within the last within_s seconds, oldest first."""
    now = database_now(connection.dialect.name)
    rows = connection.execute(
        select(PROCESSES)
        .where(PROCESSES.c.last_seen >= now - within_s)
        .order_by(PROCESSES.c.started_at, PROCESSES.c.id)
    ).all()
    return [Member(r.id, r.host, r.pid, r.version, r.node, r.started_at, r.last_seen) for r in rows]


def find(connection: Connection, process_id: str) -> Member | None:
    r = connection.execute(select(PROCESSES).where(PROCESSES.c.id == process_id)).one_or_none()
    if r is None:
        return None
    return Member(r.id, r.host, r.pid, r.version, r.node, r.started_at, r.last_seen)
