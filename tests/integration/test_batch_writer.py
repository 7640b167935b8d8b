"""Group commit: steps queued together share one transaction, and a failing step fails alone."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import cast

import pytest
from sqlalchemy import Engine, QueuePool, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from scheduler_app.api.schemas import ReminderCreate
from scheduler_app.db.batch_writer import (
    BUSY_WITHIN_S,
    HELD_FIRST_RETRY_S,
    HELD_MAX_RETRY_S,
    LINGER_S,
    PATIENT_AFTER,
    PATIENT_S,
    BatchWriter,
    Grouped,
)
from scheduler_app.db.engine import create_db_engine, create_session_factory
from scheduler_app.db.migrate import upgrade_database
from scheduler_app.db.models import JobRun, RunOutcome, Task
from scheduler_app.engine import runs
from scheduler_app.engine.scheduler import JOBS
from scheduler_app.reminders import service as reminders
from scheduler_app.settings import ReminderSettings
from tests.support import fresh_postgres_database, postgres_refusing_connections

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
SUCCESS = RunOutcome.SUCCESS


@contextlib.contextmanager
def running_writer(
    engine: Engine,
    linger_s: float = LINGER_S,
    patient_s: float = PATIENT_S,
    patient_after: int = PATIENT_AFTER,
    held_retry_s: float = HELD_FIRST_RETRY_S,
) -> Iterator[BatchWriter]:
    writer = BatchWriter(
        create_session_factory(engine),
        linger_s=linger_s,
        patient_s=patient_s,
        patient_after=patient_after,
        held_retry_s=held_retry_s,
    )
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()


@pytest.fixture
def writer(engine: Engine) -> Iterator[BatchWriter]:
    with running_writer(engine) as writer:
        yield writer


def run_start(label: str) -> runs.RunStart:
    return runs.RunStart(f"job-{label}", "note", scheduled_for=NOW, started_at=NOW)


def start_run(label: str) -> Callable[[Session], str]:
    start = run_start(label)
    return lambda session: runs.start_runs(session, [start])[0]


def stored_runs(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(JobRun)) or 0)


def run_outcomes(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        return {run.job_id: run.outcome for run in session.scalars(select(JobRun))}


@contextlib.contextmanager
def postgres_engine() -> Iterator[tuple[str, Engine]]:
    """A fresh PostgreSQL database, migrated, and an engine on it: what an outage is cut from."""
    with fresh_postgres_database() as url:
        engine = create_db_engine(url)
        upgrade_database(engine)
        try:
            yield url, engine
        finally:
            engine.dispose()


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


def test_the_writer_goes_on_after_its_connections_were_cut_during_a_pause(
    database_url: str, engine: Engine, writer: BatchWriter
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("only a PostgreSQL connection can be cut from outside")

    async def one(label: str) -> str:
        return await writer.run(start_run(label))

    asyncio.run(one("before"))
    with postgres_refusing_connections(database_url):
        pass  # every connection to the database is cut; new ones are accepted after
    asyncio.run(one("after"))

    assert stored_runs(engine) == 2


def test_the_writer_keeps_one_connection_between_batches_and_gives_it_back_on_stop(
    engine: Engine,
) -> None:
    checkouts: list[None] = []
    event.listen(engine, "checkout", lambda *_: checkouts.append(None))
    writer = BatchWriter(create_session_factory(engine))
    writer.start()

    async def one_after_another() -> None:
        for label in range(5):
            await writer.run(start_run(str(label)))  # each alone in its batch

    try:
        asyncio.run(one_after_another())
        # A checkout pings the server first on PostgreSQL: one per batch cost a round trip each.
        assert len(checkouts) == 1
        assert stored_runs(engine) == 5
    finally:
        writer.stop()
    assert cast(QueuePool, engine.pool).checkedout() == 0


def test_a_stopped_writer_refuses_new_steps(engine: Engine) -> None:
    writer = BatchWriter(create_session_factory(engine))

    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(writer.run(start_run("late")))


def test_grouped_steps_write_every_item_in_one_call(engine: Engine, writer: BatchWriter) -> None:
    calls: list[int] = []

    def start_all(session: Session, starts: list[runs.RunStart]) -> list[str]:
        calls.append(len(starts))
        return runs.start_runs(session, starts)

    grouped = Grouped("start runs, counted", start_all)
    starts = [runs.RunStart(f"job-{n}", "note", NOW, NOW) for n in range(100)]

    async def many() -> list[str]:
        return await asyncio.gather(*(writer.run_grouped(grouped, start) for start in starts))

    run_ids = asyncio.run(many())

    with Session(engine) as session:
        stored = {run.id: run.job_id for run in session.scalars(select(JobRun))}
    assert [stored[run_id] for run_id in run_ids] == [start.job_id for start in starts]
    assert sum(calls) == 100
    assert len(calls) < 100


def test_a_run_started_and_finished_in_one_batch_ends_finished(
    engine: Engine, writer: BatchWriter
) -> None:
    # The finish of an earlier run comes first in the batch, so without phases the batch would
    # update before it inserts, and the short run would stay 'running'.
    earlier = runs.RunStart("job-earlier", "note", NOW, NOW)
    short = runs.RunStart("job-short", "note", NOW, NOW)
    inside, release = threading.Event(), threading.Event()

    def block(_session: Session) -> None:
        inside.set()
        release.wait(5)

    async def one_batch() -> None:
        await writer.run_grouped(runs.START_RUNS, earlier)
        blocked = asyncio.ensure_future(writer.run(block))
        assert await asyncio.to_thread(inside.wait, 5)  # the writer is inside that batch
        queued = [
            writer.queue_grouped(runs.FINISH_RUNS, runs.RunEnd(earlier.run_id, NOW, SUCCESS)),
            writer.queue_grouped(runs.START_RUNS, short),
            writer.queue_grouped(runs.FINISH_RUNS, runs.RunEnd(short.run_id, NOW, SUCCESS)),
        ]
        release.set()
        await asyncio.gather(blocked, *queued)

    asyncio.run(one_batch())

    with Session(engine) as session:
        outcomes = {run.job_id: run.outcome for run in session.scalars(select(JobRun))}
    assert outcomes == {"job-earlier": SUCCESS, "job-short": SUCCESS}


def test_concurrent_requests_with_one_idempotency_key_create_one_reminder(
    engine: Engine, writer: BatchWriter
) -> None:
    limits = ReminderSettings()
    due = NOW + timedelta(hours=1)

    def request(email: str, key: str | None) -> reminders.SubscribeRequest:
        body = ReminderCreate(email=email, delay_seconds=3600)
        return reminders.SubscribeRequest(body, NOW, due, limits, key, secret_key=b"k" * 32)

    requests = [request("ada@example.com", "order-1") for _ in range(5)]
    requests += [request(f"u{n}@example.com", None) for n in range(5)]

    async def all_at_once() -> list[reminders.Subscription]:
        return await asyncio.gather(
            *(writer.run_grouped(reminders.SUBSCRIBE, item) for item in requests)
        )

    subscriptions = asyncio.run(all_at_once())

    keyed = subscriptions[:5]
    assert len({s.reminder_id for s in keyed}) == 1
    assert [s.replayed for s in keyed].count(False) == 1
    assert len({s.cancel_token for s in keyed}) == 1
    with Session(engine) as session:
        stored = set(session.scalars(select(Task.id)))
        jobs = set(session.scalars(select(JOBS.c.id)))
    assert stored == {s.reminder_id for s in subscriptions}
    assert len(stored) == 6
    assert jobs == {f"reminder:{reminder_id}" for reminder_id in stored}


def test_a_step_after_a_quiet_spell_is_written_without_waiting(engine: Engine) -> None:
    async def quiet_then_one(writer: BatchWriter) -> str:
        await writer.run(start_run("first"))
        await asyncio.sleep(10 * BUSY_WITHIN_S)  # the writer is idle again
        return await asyncio.wait_for(writer.run(start_run("after a pause")), timeout=5)

    # A writer that waited before every batch would hold this step for a minute.
    with running_writer(engine, linger_s=60.0) as writer:
        assert asyncio.run(quiet_then_one(writer))
    assert stored_runs(engine) == 2


def test_steps_that_keep_coming_wait_to_share_a_commit(engine: Engine) -> None:
    commits: list[None] = []

    async def staggered(writer: BatchWriter, offset_s: float) -> None:
        # Each worker queues its next step a little after the others, as deliveries do once
        # their messages are out: without waiting, the writer would commit each on its own.
        for step in range(5):
            await asyncio.sleep(offset_s)
            await writer.run(start_run(f"{offset_s}-{step}"))

    async def workers(writer: BatchWriter) -> None:
        await writer.run(start_run("warm-up"))
        event.listen(engine, "commit", lambda _connection: commits.append(None))
        await asyncio.gather(*(staggered(writer, 0.02 * worker) for worker in range(4)))

    with running_writer(engine, linger_s=0.1) as writer:
        asyncio.run(workers(writer))
    assert stored_runs(engine) == 21
    assert len(commits) <= 10  # 20 steps from 4 workers: about one commit per round of 4


# Closer together than BUSY_WITHIN_S, as the steps of deliveries are in a burst.
STREAM_EVERY_S = 0.4 * BUSY_WITHIN_S


async def patient_stream(
    writer: BatchWriter, count: int, every_s: float = STREAM_EVERY_S
) -> list[asyncio.Future[str]]:
    """Queue `count` patient steps (run starts), one every every_s, from right after a commit;
    their futures."""
    await writer.run(start_run("warm-up"))
    queued = []
    for number in range(count):
        queued.append(writer.queue_grouped(runs.START_RUNS, run_start(str(number))))
        await asyncio.sleep(every_s)
    return queued


def test_patient_steps_that_keep_coming_gather_into_few_commits(engine: Engine) -> None:
    commits: list[None] = []

    async def stream(writer: BatchWriter) -> None:
        event.listen(engine, "commit", lambda _connection: commits.append(None))
        steps = await patient_stream(writer, count=100)
        await asyncio.wait_for(asyncio.gather(*steps), timeout=30)

    # Without patience the writer commits after each 20 ms wait: ten times or more.
    with running_writer(engine, linger_s=0.02, patient_s=2.0, patient_after=1) as writer:
        asyncio.run(stream(writer))
    assert stored_runs(engine) == 101
    assert len(commits) <= 4  # the warm-up, the stream, and a step or two around them


def test_patient_steps_wait_no_longer_than_patient_s(engine: Engine) -> None:
    commits: list[None] = []

    async def stream(writer: BatchWriter) -> float:
        event.listen(engine, "commit", lambda _connection: commits.append(None))
        began = monotonic()
        steps = await patient_stream(writer, count=400)
        await asyncio.wait_for(asyncio.gather(*steps), timeout=30)
        return monotonic() - began

    with running_writer(engine, linger_s=0.01, patient_s=0.1, patient_after=1) as writer:
        stream_lasted = asyncio.run(stream(writer))
    assert stored_runs(engine) == 401
    # A batch that gathered for as long as steps kept coming would hold them all, up to the
    # limit of a batch: two commits and the warm-up's.
    assert stream_lasted > 0.8
    assert len(commits) >= 5


def test_a_step_that_is_not_patient_ends_the_wait(engine: Engine) -> None:
    async def stream_with_one_urgent(writer: BatchWriter) -> str:
        # 1.2 s of steps: a batch of them that an urgent step did not end would fill up
        # (MAX_BATCH steps) after a second, or gather for the 1.5 s allowed.
        steps = asyncio.ensure_future(patient_stream(writer, count=300, every_s=0.004))
        await asyncio.sleep(0.2)
        urgent = await asyncio.wait_for(writer.run(start_run("urgent")), timeout=0.4)
        await asyncio.wait_for(asyncio.gather(*await steps), timeout=30)
        return urgent

    with running_writer(engine, linger_s=0.01, patient_s=1.5, patient_after=1) as writer:
        assert asyncio.run(stream_with_one_urgent(writer))
    assert stored_runs(engine) == 302


def test_a_trickle_of_patient_steps_is_not_held(engine: Engine) -> None:
    async def trickle(writer: BatchWriter) -> None:
        steps = await patient_stream(writer, count=100)
        await asyncio.wait_for(asyncio.gather(*steps), timeout=5)

    # Batches of a few steps each: none of them gathers for the minute allowed.
    with running_writer(engine, linger_s=0.005, patient_s=60.0) as writer:
        asyncio.run(trickle(writer))
    assert stored_runs(engine) == 101


@pytest.mark.postgres
def test_steps_until_written_outlast_an_outage_while_other_steps_fail_at_once() -> None:
    kept = run_start("kept")

    async def outage(url: str, writer: BatchWriter) -> None:
        with postgres_refusing_connections(url):
            started = writer.queue_grouped(runs.START_RUNS, kept, until_written=True)
            with pytest.raises(OperationalError):
                await writer.run(start_run("not kept"))
            await asyncio.sleep(4 * HELD_FIRST_RETRY_S)  # tried again meanwhile, in vain
            assert not started.done()
        assert await asyncio.wait_for(started, timeout=HELD_MAX_RETRY_S + 5) == kept.run_id

    with postgres_engine() as (url, engine):
        with running_writer(engine) as writer:
            asyncio.run(outage(url, writer))
        assert run_outcomes(engine) == {"job-kept": RunOutcome.RUNNING}


@pytest.mark.postgres
def test_a_step_until_written_is_written_after_the_held_ones_queued_before_it() -> None:
    run = run_start("kept")
    end = runs.RunEnd(run.run_id, NOW, SUCCESS)

    async def outage(url: str, writer: BatchWriter) -> None:
        with postgres_refusing_connections(url):
            started = writer.queue_grouped(runs.START_RUNS, run, until_written=True)
            with pytest.raises(OperationalError):
                await writer.run(start_run("probe"))  # queued after the start: it was held
        # The database is back, but the held start waits for its next try: the finish must
        # not overtake it, or it would update nothing and the run would stay 'running'.
        finished = writer.queue_grouped(runs.FINISH_RUNS, end, until_written=True)
        await writer.run(start_run("after"))  # a commit that succeeds: held steps go next
        await asyncio.wait_for(asyncio.gather(started, finished), timeout=5)

    with postgres_engine() as (url, engine):
        # Only a successful commit, not the timer, brings the held steps back in time.
        with running_writer(engine, held_retry_s=60.0) as writer:
            asyncio.run(outage(url, writer))
        assert run_outcomes(engine) == {"job-kept": SUCCESS, "job-after": RunOutcome.RUNNING}


@pytest.mark.postgres
def test_stopping_during_an_outage_gives_up_the_held_steps_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stop_during_outage(url: str, writer: BatchWriter) -> asyncio.Future[str]:
        with postgres_refusing_connections(url):
            started = writer.queue_grouped(runs.START_RUNS, run_start("lost"), until_written=True)
            with pytest.raises(OperationalError):
                await writer.run(start_run("probe"))
            await asyncio.to_thread(writer.stop)
        await asyncio.sleep(0)  # the cancellation is handed to this loop by the writer's thread
        return started

    with postgres_engine() as (url, engine):
        with running_writer(engine) as writer:
            started = asyncio.run(stop_during_outage(url, writer))
        assert stored_runs(engine) == 0
    assert started.cancelled()
    [record] = [r for r in caplog.records if "stopping without" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert "stopping without 1 write(s)" in record.getMessage()
    assert record.getMessage().endswith("did not take: 1 x start runs")
