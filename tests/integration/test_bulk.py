"""Multi-row statements: what they write reads back exactly as the ORM wrote it, in one step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, select
from sqlalchemy.orm import Session

from scheduler_app.db import bulk
from scheduler_app.db.bulk import insert_rows, update_rows
from scheduler_app.db.models import JobRun, RunOutcome, Task, TaskStatus
from tests.support import sent_statements

NOW = datetime(2026, 11, 21, 9, 0, 0, 123456, tzinfo=UTC)
RUNS = cast(Table, JobRun.__table__)
TASKS = cast(Table, Task.__table__)
STARTED = ("id", "job_id", "job", "scheduled_for", "started_at", "outcome", "manual")


def started(count: int, prefix: str = "run") -> list[tuple[Any, ...]]:
    return [
        (f"{prefix}-{n}", f"job-{n}", "note", NOW + timedelta(seconds=n), None, "running", n % 2)
        for n in range(count)
    ]


def test_inserted_rows_read_back_with_their_types(engine: Engine) -> None:
    sent = sent_statements(engine)
    with Session(engine) as session:
        insert_rows(session, RUNS, STARTED, started(3))
        session.commit()

    # One statement, not an executemany.
    assert [statement.executemany for statement in sent] == [False]
    with Session(engine) as session:
        loaded = session.scalars(select(JobRun).order_by(JobRun.id)).all()
    assert [(run.id, run.scheduled_for, run.started_at, run.manual) for run in loaded] == [
        ("run-0", NOW, None, False),
        ("run-1", NOW + timedelta(seconds=1), None, True),
        ("run-2", NOW + timedelta(seconds=2), None, False),
    ]
    assert loaded[0].scheduled_for.tzinfo is not None


def test_rows_whose_unique_value_is_taken_are_skipped_and_counted(engine: Engine) -> None:
    with Session(engine) as session:
        assert insert_rows(session, RUNS, STARTED, started(2)) == 2
        session.commit()
    with Session(engine) as session:
        # run-0 and run-1 are stored already: the other two go in, without an error.
        inserted = insert_rows(session, RUNS, STARTED, started(4), unless_taken="id")
        session.commit()
    assert inserted == 2
    with Session(engine) as session:
        assert len(session.scalars(select(JobRun.id)).all()) == 4


def test_update_sets_each_row_its_values_and_leaves_the_others(engine: Engine) -> None:
    with Session(engine) as session:
        insert_rows(session, RUNS, STARTED, started(4))
        session.commit()
    sent = sent_statements(engine)
    later = NOW + timedelta(minutes=5)
    with Session(engine) as session:
        rows = [
            ("run-1", RunOutcome.SUCCESS, later, None, "ok"),
            ("run-3", RunOutcome.ERROR, later + timedelta(seconds=1), "boom", None),
            ("no-such-run", RunOutcome.ERROR, later, "nothing", None),
        ]
        update_rows(session, RUNS, "id", ("outcome", "finished_at", "error", "result"), rows)
        session.commit()

    assert [statement.executemany for statement in sent] == [False]
    with Session(engine) as session:
        loaded = {run.id: run for run in session.scalars(select(JobRun))}
    assert set(loaded) == {"run-0", "run-1", "run-2", "run-3"}
    outcomes = {
        run_id: (run.outcome, run.finished_at, run.error, run.result)
        for run_id, run in loaded.items()
    }
    assert outcomes == {
        "run-0": ("running", None, None, None),
        "run-1": ("success", later, None, "ok"),
        "run-2": ("running", None, None, None),
        "run-3": ("error", later + timedelta(seconds=1), "boom", None),
    }


def test_constants_and_columns_of_nulls_keep_their_column_types(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all(
            Task(
                id=f"r{n}",
                job="some_job",
                args="{}",
                run_at=NOW,
                status=TaskStatus.SCHEDULED,
                attempts=1,
                created_at=NOW,
                updated_at=NOW,
                next_attempt_at=NOW,
                last_error="earlier",
            )
            for n in range(2)
        )
        session.commit()
    with Session(engine) as session:
        update_rows(
            session,
            TASKS,
            "id",
            ("requeued_at", "finished_at", "last_error"),
            [("r0", None, NOW, None), ("r1", None, None, None)],
            constants={"status": TaskStatus.SUCCEEDED, "next_attempt_at": None},
        )
        session.commit()

    with Session(engine) as session:
        loaded = session.scalars(select(Task).order_by(Task.id)).all()
    assert [
        (r.status, r.requeued_at, r.finished_at, r.last_error, r.next_attempt_at) for r in loaded
    ] == [("succeeded", None, NOW, None, None), ("succeeded", None, None, None, None)]


def test_delete_removes_only_the_rows_that_match_every_column(engine: Engine) -> None:
    with Session(engine) as session:
        insert_rows(session, RUNS, STARTED, started(4))
        session.commit()
    sent = sent_statements(engine)
    with engine.begin() as connection:
        bulk.delete_rows(
            connection,
            RUNS,
            ("id", "outcome"),
            [("run-0", "running"), ("run-1", "success"), ("run-2", "running"), ("nope", "x")],
        )

    assert [statement.executemany for statement in sent] == [False]
    with Session(engine) as session:
        left = session.scalars(select(JobRun.id).order_by(JobRun.id)).all()
    assert left == ["run-1", "run-3"]  # run-1 is running, not "success"


def test_rows_beyond_one_statement_are_split_where_each_value_is_a_parameter(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "MAX_PARAMETERS", 7 * 40)
    sent = sent_statements(engine)
    with Session(engine) as session:
        insert_rows(session, RUNS, STARTED, started(100))
        update_rows(
            session, RUNS, "id", ("outcome",), [(f"run-{n}", "success") for n in range(0, 100, 2)]
        )
        session.commit()

    inserts = [statement for statement in sent if statement.text.startswith("INSERT")]
    # SQLite: 40 + 40 + 20 rows. PostgreSQL binds one array per column, whatever the rows.
    assert len(inserts) == (3 if engine.dialect.name == "sqlite" else 1)
    with Session(engine) as session:
        outcomes = [run.outcome for run in session.scalars(select(JobRun).order_by(JobRun.manual))]
    assert outcomes == ["success"] * 50 + ["running"] * 50


def test_on_postgresql_the_text_is_the_same_for_any_number_of_rows(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite lists the values, one placeholder each")
    sent = sent_statements(engine)
    with Session(engine) as session:
        insert_rows(session, RUNS, STARTED, started(3, prefix="a"))
        insert_rows(session, RUNS, STARTED, started(60, prefix="b"))
        update_rows(session, RUNS, "id", ("outcome",), [("a-0", "success")])
        update_rows(session, RUNS, "id", ("outcome",), [(f"b-{n}", "error") for n in range(60)])
        session.commit()

    texts = [statement.text for statement in sent]
    assert len(texts) == 4
    assert texts[0] == texts[1]
    assert texts[2] == texts[3]
    with Session(engine) as session:
        outcomes = {run.id: run.outcome for run in session.scalars(select(JobRun))}
    assert len(outcomes) == 63
    assert [outcomes["a-0"], outcomes["a-1"], outcomes["b-59"]] == ["success", "running", "error"]


def test_timestamps_are_stored_as_the_orm_stores_them(engine: Engine) -> None:
    # A whole second too: a driver's own format may leave out a zero fraction.
    instants = [NOW, NOW.replace(microsecond=0)]
    with Session(engine) as session:
        for n, instant in enumerate(instants):
            session.add(
                JobRun(
                    id=f"orm-{n}",
                    job_id="job",
                    job="note",
                    scheduled_for=instant,
                    outcome="running",
                    manual=False,
                )
            )
        rows = [
            (f"bulk-{n}", "job", "note", t, None, "running", False) for n, t in enumerate(instants)
        ]
        insert_rows(session, RUNS, STARTED, rows)
        session.commit()

    with Session(engine) as session:
        for n, instant in enumerate(instants):
            # Compared in SQL: on SQLite a timestamp is text, equal only in the same format.
            found = session.scalars(
                select(JobRun.id).where(JobRun.scheduled_for == instant).order_by(JobRun.id)
            ).all()
            assert found == [f"bulk-{n}", f"orm-{n}"]
