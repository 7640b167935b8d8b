"""One leader per database: the lease, the fence, claimed ticks, two services on one database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from scheduler_app.app import create_app
from scheduler_app.builtin import REGISTRY
from scheduler_app.cluster import lease
from scheduler_app.db.models import Task, TaskStatus
from scheduler_app.engine import runs
from scheduler_app.engine.executor import JobContext, RegisteredJob
from scheduler_app.tasks.attempts import AttemptStart, start_attempts
from tests.support import (
    ADMIN,
    Deployment,
    make_settings,
    outbox_messages,
    show_reminder,
    wait_until,
)


def _expire(engine: Engine) -> None:
    """The lease runs out now, as it would after its holder stopped renewing it."""
    with engine.begin() as connection:
        connection.execute(update(lease.LEADERSHIP).values(expires_at=0.0))


def test_the_lease_is_taken_once_renewed_by_its_holder_only_and_taken_over_once_run_out(
    engine: Engine,
) -> None:
    with engine.begin() as connection:
        first = lease.acquire(connection, "a", 10)
        assert first is not None
        assert lease.acquire(connection, "b", 10) is None
        assert lease.renew(connection, "b", first.term, 10) is None
        renewed = lease.renew(connection, "a", first.term, 10)
        assert renewed is not None
        assert renewed.expires_at >= first.expires_at
        assert lease.still_held(connection, first.term)
    _expire(engine)
    with engine.begin() as connection:
        # Run out: its holder cannot extend it any more, and another takes it under a new term.
        assert not lease.still_held(connection, first.term)
        assert lease.renew(connection, "a", first.term, 10) is None
        second = lease.acquire(connection, "b", 10)
        assert second is not None
        assert second.term == first.term + 1
        # The stale holder can neither give it up nor take it from a live holder.
        assert not lease.resign(connection, "a", first.term)
        assert lease.take_over(connection, "a", "x", second.term, 10) is None
        assert lease.read(connection).holder == "b"
        assert lease.request_resignation(connection) == ("b", second.term)
        asked = lease.renew(connection, "b", second.term, 10)
        assert asked is not None
        assert asked.resign_requested
        assert lease.resign(connection, "b", second.term)
        state = lease.read(connection)
        assert state.holder is None
        assert not state.held


def _task(session: Session, task_id: str, now: datetime) -> None:
    session.add(
        Task(
            id=task_id,
            job="deliver_reminder",
            args=json.dumps({}),
            run_at=now,
            status=TaskStatus.SCHEDULED,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
    )
    session.commit()


def test_an_attempt_starts_only_under_the_term_that_holds_the_lease(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        held = lease.acquire(connection, "a", 10)
    assert held is not None
    with Session(engine) as session:
        _task(session, "t1", now)
        _task(session, "t2", now)
        stale = AttemptStart("t1", now, None, term=held.term - 1, fenced=True)
        nobody = AttemptStart("t2", now, None, term=None, fenced=True)
        assert start_attempts(session, [stale, nobody]) == [("fenced", None), ("fenced", None)]
        session.commit()
        assert {t.status for t in session.query(Task)} == {TaskStatus.SCHEDULED}
        current = AttemptStart("t1", now, None, term=held.term, fenced=True)
        [(outcome, attempt)] = start_attempts(session, [current])
        session.commit()
        assert outcome == "run"
        assert attempt is not None
        assert attempt.attempts == 1
    _expire(engine)
    with Session(engine) as session:
        # The same term once the lease ran out: nothing starts, even late tasks are left alone.
        late = AttemptStart("t2", now, timedelta(seconds=-1), term=held.term, fenced=True)
        assert start_attempts(session, [late]) == [("fenced", None)]
        session.commit()
        assert session.get(Task, "t2").status == TaskStatus.SCHEDULED  # type: ignore[union-attr]


def test_a_recurring_jobs_tick_is_claimed_once(engine: Engine) -> None:
    tick = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    with engine.begin() as connection:
        held = lease.acquire(connection, "a", 10)
    assert held is not None

    def claim(term: int | None, fenced: bool = True) -> bool:
        start = runs.RunStart("report", "daily_report", tick, datetime.now(UTC))
        with Session(engine) as session:
            claimed = runs.claim_tick(session, start, term, fenced)
            session.commit()
            return claimed

    assert not claim(held.term - 1)  # a stale term claims nothing
    assert claim(held.term)
    assert not claim(held.term)  # the same tick again, by anyone
    assert not claim(None, fenced=False)


def _subscribe(client: TestClient, delay_s: float) -> str:
    body = {"email": "ada@example.com", "delay_seconds": delay_s}
    answer = client.post("/subscribe", json=body)
    assert answer.status_code == 201, answer.text
    reminder_id: str = answer.json()["id"]
    return reminder_id


def _cluster(client: TestClient) -> dict[str, Any]:
    answer = client.get("/admin/cluster", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _leader(client: TestClient) -> str | None:
    leader = _cluster(client)["leader"]
    return None if leader is None else str(leader["id"])


def test_two_services_on_one_database_one_leads_and_the_other_takes_over(
    tmp_path: Path, database_url: str
) -> None:
    first = make_settings(tmp_path / "a", database_url)
    second = make_settings(tmp_path / "b", database_url)
    with TestClient(create_app(first)) as a, TestClient(create_app(second)) as b:
        a_id = a.get("/readyz").json()
        assert a_id["role"] == "leader"
        assert b.get("/readyz").json()["role"] == "follower"
        assert b.get("/readyz").status_code == 200
        view = _cluster(b)
        roles = sorted(p["role"] for p in view["processes"])
        assert roles == ["follower", "leader"]
        [leader] = [p for p in view["processes"] if p["role"] == "leader"]
        assert view["leader"]["id"] == leader["id"]
        assert view["leader"]["term"] >= 1
        assert datetime.fromisoformat(view["leader"]["lease_expires"]) > datetime.now(UTC)

        # Work posted to the follower is delivered by the leader, on time.
        reminder_id = _subscribe(b, 1.0)
        wait_until(lambda: show_reminder(b, reminder_id)["status"] == "sent", timeout_s=5)
        assert len(outbox_messages(tmp_path / "a" / "outbox")) == 1
        assert outbox_messages(tmp_path / "b" / "outbox") == []
        sent = show_reminder(b, reminder_id)
        lag = datetime.fromisoformat(sent["sent_at"]) - datetime.fromisoformat(sent["remind_at"])
        assert lag < timedelta(seconds=1.5)

        # Asked through the follower, the leader steps down and the follower takes over.
        old = _leader(b)
        resigned = b.post("/admin/cluster/resign", headers=ADMIN)
        assert resigned.status_code == 200, resigned.text
        assert resigned.json()["id"] == old
        wait_until(lambda: _leader(b) not in (None, old), timeout_s=5)
        assert b.get("/readyz").json()["role"] == "leader"
        assert a.get("/readyz").json()["role"] == "follower"
        reminder_id = _subscribe(a, 0.5)
        wait_until(lambda: show_reminder(a, reminder_id)["status"] == "sent", timeout_s=5)
        assert len(outbox_messages(tmp_path / "b" / "outbox")) == 1
    # Both stopped cleanly: nobody holds the lease.
    with TestClient(create_app(first)) as again:
        assert _leader(again) == again.app.state.scheduler_app.me.id  # type: ignore[attr-defined]


def test_a_process_with_the_scheduler_disabled_never_leads(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, scheduler={"enabled": False})
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["role"] == "follower"
        view = _cluster(client)
        assert view["leader"] is None
        assert [p["role"] for p in view["processes"]] == ["follower"]
        assert client.post("/admin/cluster/resign", headers=ADMIN).status_code == 409


def test_the_cluster_command_prints_the_leader_and_the_processes(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")},
        "SCHEDULER_DATABASE_URL": database_url,
        "SCHEDULER_STATE_DIR": str(tmp_path / "var"),
    }

    def cluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scheduler_app", "cluster", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=environment,
            timeout=30,
            check=False,
        )

    with TestClient(create_app(settings)) as client:
        me = client.app.state.scheduler_app.me  # type: ignore[attr-defined]
        shown = cluster("--json")
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        assert document["leader"]["id"] == me.id
        assert document["processes"][0]["role"] == "leader"
        assert document["processes"][0]["pid"] == os.getpid()
        answered = _cluster(client)
        assert answered["leader"]["term"] == document["leader"]["term"]
        assert [(p["id"], p["role"]) for p in answered["processes"]] == [
            (p["id"], p["role"]) for p in document["processes"]
        ]
        text = cluster()
        assert text.returncode == 0, text.stderr
        assert f"leader: {me.id}" in text.stdout
        assert "processes: 1" in text.stdout
    after = cluster()
    assert "leader: none" in after.stdout
    assert "processes: 0" in after.stdout


NOTED: list[tuple[str, str]] = []


async def _noted(ctx: JobContext, label: str) -> str:
    """Record which service ran it (by its state folder)."""
    NOTED.append((label, str(ctx.settings.state_dir)))
    return label


REGISTRY_WITH_NOTE = {**REGISTRY, "noted": RegisteredJob("noted", _noted, "Record a call.")}


def test_operations_through_a_follower_take_effect_in_the_leader_once(
    tmp_path: Path, database_url: str
) -> None:
    NOTED.clear()
    leading = Deployment(tmp_path / "a", database_url, REGISTRY_WITH_NOTE)
    following = Deployment(tmp_path / "b", database_url, REGISTRY_WITH_NOTE)
    note = {"id": "note", "job": "noted", "cron": "0 8 * * *", "args": ["cron"]}
    for deployment in (leading, following):
        (tmp_path / deployment.path.parent.name).mkdir(parents=True, exist_ok=True)
        deployment.write([note])
    with leading.client() as a, following.client() as b:
        assert b.get("/readyz").json()["role"] == "follower"

        # Run now through the follower: the leader runs it, under the run id answered at once.
        accepted = b.post("/jobs/note/run", headers=ADMIN)
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]

        def run_of_note() -> dict[str, Any] | None:
            runs = b.get("/jobs/note/runs", headers=ADMIN).json()["items"]
            done = [r for r in runs if r["id"] == run_id and r["outcome"] == "success"]
            return done[0] if done else None

        run = wait_until(run_of_note, timeout_s=5)
        assert run["manual"] is True
        assert [("cron", str(leading.settings().state_dir))] == NOTED

        # Pause and resume through the follower: the leader's store says so.
        assert b.post("/jobs/note/pause", headers=ADMIN).json()["paused"] is True
        assert a.get("/jobs/note", headers=ADMIN).json()["next_run_time"] is None
        resumed = b.post("/jobs/note/resume", headers=ADMIN).json()
        assert resumed["next_run_time"] is not None
        assert a.get("/jobs/note", headers=ADMIN).json()["paused"] is False

        # A reminder cancelled through the follower is never delivered by the leader.
        created = a.post("/subscribe", json={"email": "ada@example.com", "delay_seconds": 1})
        reminder_id = created.json()["id"]
        assert b.delete(f"/jobs/reminder:{reminder_id}", headers=ADMIN).status_code == 204
        assert show_reminder(a, reminder_id)["status"] == "cancelled"

        # A reload through the follower is applied once: the leader finds nothing to do.
        later = {"id": "later", "job": "noted", "cron": "0 9 * * *", "args": ["later"]}
        for deployment in (leading, following):
            deployment.write([note, later])
        assert b.post("/admin/reload", headers=ADMIN).json()["added"] == ["later"]
        again = a.post("/admin/reload", headers=ADMIN).json()
        assert again["added"] == []
        assert "later" in again["unchanged"]
        assert a.get("/jobs/later", headers=ADMIN).status_code == 200
        time.sleep(1.5)  # past the cancelled reminder's due time
    assert outbox_messages(tmp_path / "a" / "outbox") == []
