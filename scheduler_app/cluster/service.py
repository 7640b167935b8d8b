"""What operators see of the cluster and ask of it: who leads, which processes run, step down."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Connection, Engine

from scheduler_app.cluster import lease, members
from scheduler_app.cluster.elector import Elector
from scheduler_app.cluster.notify import LEASE, Notifier
from scheduler_app.cluster.timing import Timing
from scheduler_app.errors import Conflict


@dataclass(frozen=True)
class LeaderView:
    id: str
    term: int
    lease_expires: datetime
    acquired_at: datetime | None


@dataclass(frozen=True)
class ProcessView:
    id: str
    host: str
    pid: int
    role: Literal["leader", "follower"]
    version: str
    started_at: datetime
    last_seen: datetime


@dataclass(frozen=True)
class ClusterView:
    leader: LeaderView | None
    processes: list[ProcessView]


def read_cluster(connection: Connection, timing: Timing) -> ClusterView:
    """The lease as held now (None when nobody holds it) and the processes seen lately."""
    state = lease.read(connection)
    leader = None
    if state.held and state.holder is not None:
        acquired = None if state.acquired_at is None else _moment(state.acquired_at)
        leader = LeaderView(state.holder, state.term, _moment(state.expires_at), acquired)
    processes = [
        ProcessView(
            id=member.id,
            host=member.host,
            pid=member.pid,
            role="leader" if leader is not None and member.id == leader.id else "follower",
            version=member.version,
            started_at=_moment(member.started_at),
            last_seen=_moment(member.last_seen),
        )
        for member in members.seen_within(connection, timing.gone_after_s)
    ]
    return ClusterView(leader, processes)


@dataclass(frozen=True)
class Resignation:
    id: str
    term: int


@dataclass(frozen=True)
class ClusterService:
    engine: Engine
    elector: Elector
    notifier: Notifier

    def view(self) -> ClusterView:
        with self.engine.connect() as connection:
            return read_cluster(connection, self.elector.timing)

    async def resign(self) -> Resignation:
        """Make the leader step down, whichever process it is: at once here, or on its next
        renewal (woken by a notification where there are some). Conflict when nobody leads."""
        term = self.elector.term
        if term is not None and await self.elector.resign():
            return Resignation(self.elector.me.id, term)
        with self.engine.begin() as connection:
            asked = lease.request_resignation(connection)
        if asked is None:
            raise Conflict("no process leads now: there is no leader to step down")
        self.notifier.send(LEASE)
        return Resignation(*asked)


def _moment(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
