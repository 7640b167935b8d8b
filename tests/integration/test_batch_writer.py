"""Group commit: steps queued together share one transaction, and a failing step fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from scheduler_app import runs
from scheduler_app.batch_writer import BatchWriter
from scheduler_app.db import create_session_factory
from scheduler_app.models import JobRun

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture
def writer(engine: Engine) -> Iterator[BatchWriter]:
    writer = BatchWriter(create_session_factory(engine))
    writer.start()
    yield writer
    writer.stop()


def start_run(label: str) -> Callable[[Session], str]:
    return lambda session: runs.start_run(session, f"job-{label}", "note", NOW, NOW)


def stored_runs(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(JobRun)) or 0)


def test_concurrent_steps_share_commits_and_each_gets_its_result(
    engine: Engine, writer: BatchWriter
) -> None:
    commits: list[None] = []
    event.listen(engine, "commit", lambda _connection: commits.append(None))

    async def many() -> list[str]:
        return await asyncio.gather(*(writer.run(start_run(str(n))) for n in range(200)))

    run_ids = asyncio.run(many())

    assert len(set(run_ids)) == 200
    assert stored_runs(engine) == 200
    assert len(commits) < 200


def test_a_failing_step_fails_alone(engine: Engine, writer: BatchWriter) -> None:
    def broken(session: Session) -> None:
        session.add(JobRun(id="dup", job_id="x", job="note", scheduled_for=NOW, outcome="success"))
        session.flush()
        session.add(JobRun(id="dup", job_id="x", job="note", scheduled_for=NOW, outcome="success"))
        session.flush()

    async def mixed() -> list[object]:
        steps: list[Awaitable[object]] = [writer.run(start_run(str(n))) for n in range(20)]
        steps.insert(10, writer.run(broken))
        return await asyncio.gather(*steps, return_exceptions=True)

    outcomes = asyncio.run(mixed())

    failures = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(failures) == 1
    assert "dup" in str(failures[0]) or "UNIQUE" in str(failures[0]).upper()
    assert stored_runs(engine) == 20


def test_a_stopped_writer_refuses_new_steps(engine: Engine) -> None:
    writer = BatchWriter(create_session_factory(engine))

    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(writer.run(start_run("late")))
