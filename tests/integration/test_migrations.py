"""Schema migrations on a real database, through the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from fastapi.testclient import TestClient
from sqlalchemy import Engine, Index, insert, inspect, select, text

from scheduler_app.app import create_app
from scheduler_app.db.engine import create_db_engine, create_session_factory
from scheduler_app.db.migrate import (
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)
from scheduler_app.db.models import Base, Task
from scheduler_app.engine.scheduler import JOBS, JOBS_TABLE, LISTING_INDEX
from scheduler_app.security import hash_token
from tests.support import make_settings, wait_until

CLI = [sys.executable, "-m", "scheduler_app"]


def test_upgrade_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        assert current_revision(engine) is None
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
        assert "tasks" in inspect(engine).get_table_names()
        # Before the scheduler ever started: the job table is made for its index.
        assert job_indexes(engine) == JOB_INDEXES
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_every_migration_can_be_undone_and_redone(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine)
        upgrade_database(engine, "base")
        assert "tasks" not in inspect(engine).get_table_names()
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


# The job table's indexes: APScheduler's, and the one GET /jobs pages by.
JOB_INDEXES: dict[str | None, list[str | None]] = {
    "ix_apscheduler_jobs_next_run_time": ["next_run_time"],
    LISTING_INDEX: ["next_run_time", "id"],
}


def job_indexes(engine: Engine) -> dict[str | None, list[str | None]]:
    return {
        index["name"]: index["column_names"] for index in inspect(engine).get_indexes(JOBS_TABLE)
    }


@pytest.mark.parametrize(
    "listing_index",
    [
        pytest.param(True, id="made at start by the previous version"),
        pytest.param(False, id="without it"),
    ],
)
def test_a_database_of_the_previous_version_gets_the_job_listing_index(
    database_url: str, listing_index: bool
) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine, "0005")
        # What the previous version's scheduler did at start: APScheduler's job store made the
        # job table, then the service added the listing index (create_listing_index).
        apscheduler_table = SQLAlchemyJobStore(engine=engine).jobs_t
        apscheduler_table.create(engine)
        if listing_index:
            columns = apscheduler_table.c
            Index(LISTING_INDEX, columns.next_run_time, columns.id).create(engine)
        with engine.begin() as connection:
            connection.execute(insert(JOBS).values(id="kept", next_run_time=1.0, job_state=b"x"))

        upgrade_database(engine)

        assert current_revision(engine) == head_revision()
        assert job_indexes(engine) == JOB_INDEXES
        with engine.connect() as connection:
            assert connection.scalars(select(JOBS.c.id)).all() == ["kept"]
    finally:
        engine.dispose()


def test_db_upgrade_command(tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n")
    first = subprocess.run(
        [*CLI, "db", "upgrade", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    assert f"upgraded from empty to {head_revision()}" in first.stdout
    again = subprocess.run(
        [*CLI, "db", "upgrade", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert f"already at revision {head_revision()}" in again.stdout


# Reminders as the code before the task model stored them (revision 0005), one per status.
OLD_REMINDERS = [
    # id, status, attempts, last_error, sent_at, finished_at, next_attempt_at
    ("r-scheduled", "scheduled", 2, "SMTPConnectError", None, None, "2031-01-01 09:05:00+00:00"),
    ("r-sent", "sent", 1, None, "2030-01-01 09:00:01+00:00", "2030-01-01 09:00:01+00:00", None),
    ("r-failed", "failed", 8, "gave up after 8 attempts", None, "2030-01-01 10:00:00+00:00", None),
    ("r-cancelled", "cancelled", 0, None, None, "2030-01-01 08:00:00+00:00", None),
    ("r-missed", "missed", 0, "came due at ...", None, "2030-01-02 09:00:00+00:00", None),
]


def store_old_reminders(engine: Engine) -> None:
    with engine.begin() as connection:
        for rid, status, attempts, error, sent_at, finished_at, next_at in OLD_REMINDERS:
            connection.execute(
                text(
                    "INSERT INTO reminders (id, email, subject, message, remind_at, status, "
                    "attempts, last_error, created_at, updated_at, sent_at, finished_at, "
                    "next_attempt_at, cancel_token_hash, idempotency_key_hash, "
                    "request_fingerprint) VALUES (:id, :email, 'Tea', 'Put the kettle on', "
                    ":remind_at, :status, :attempts, :error, :created, :created, :sent_at, "
                    ":finished_at, :next_at, :token, :key, :fingerprint)"
                ),
                {
                    "id": rid,
                    "email": f"{rid}@example.com",
                    "remind_at": datetime(2030, 1, 1, 9, tzinfo=UTC),
                    "status": status,
                    "attempts": attempts,
                    "error": error,
                    "created": datetime(2029, 12, 31, tzinfo=UTC),
                    "sent_at": sent_at and datetime.fromisoformat(sent_at),
                    "finished_at": finished_at and datetime.fromisoformat(finished_at),
                    "next_at": next_at and datetime.fromisoformat(next_at),
                    "token": hash_token(f"token-{rid}"),
                    "key": hash_token(f"key-{rid}"),
                    "fingerprint": "f" * 64,
                },
            )


def test_reminders_of_every_status_become_tasks_and_read_as_before(
    tmp_path: Path, database_url: str
) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine, "0005")
        store_old_reminders(engine)
        upgrade_database(engine)
        with create_session_factory(engine)() as session:
            tasks = {task.id: task for task in session.scalars(select(Task))}
    finally:
        engine.dispose()

    assert set(tasks) == {row[0] for row in OLD_REMINDERS}
    for rid, status, attempts, error, _sent_at, finished_at, _next_at in OLD_REMINDERS:
        task = tasks[rid]
        assert task.job == "deliver_reminder"
        assert json.loads(task.args) == {
            "email": f"{rid}@example.com",
            "subject": "Tea",
            "message": "Put the kettle on",
        }
        assert task.recipient == f"{rid}@example.com"
        assert task.status == ("succeeded" if status == "sent" else status)
        assert (task.attempts, task.last_error) == (attempts, error)
        assert task.run_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
        assert task.finished_at == (finished_at and datetime.fromisoformat(finished_at))
        assert task.cancel_token_hash == hash_token(f"token-{rid}")
        assert task.idempotency_key_hash == hash_token(f"key-{rid}")

    # Through the API, each reads exactly as the reminder did, its cancel token still good.
    settings = make_settings(tmp_path, database_url, scheduler={"enabled": False})
    with TestClient(create_app(settings)) as client:
        for rid, status, attempts, _error, sent_at, finished_at, next_at in OLD_REMINDERS:
            shown = client.get(
                f"/reminders/{rid}", headers={"Authorization": f"Bearer token-{rid}"}
            ).json()
            assert shown["status"] == status
            assert shown["email"] == f"{rid}@example.com"
            assert shown["subject"] == "Tea"
            assert shown["attempts"] == attempts
            assert (shown["sent_at"] is None) == (sent_at is None)
            assert (shown["finished_at"] is None) == (finished_at is None)
            assert (shown["next_attempt_at"] is None) == (next_at is None)
            assert shown["remind_at"].startswith("2030-01-01T09:00:00")


def test_undoing_the_task_model_gives_the_reminders_back(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine, "0005")
        store_old_reminders(engine)
        upgrade_database(engine)
        downgrade_database(engine, "0005")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, status, email, sent_at FROM reminders"))
            back = {row.id: (row.status, row.email, row.sent_at is not None) for row in rows}
    finally:
        engine.dispose()
    assert back == {
        rid: (status, f"{rid}@example.com", sent_at is not None)
        for rid, status, _attempts, _error, sent_at, _finished, _next in OLD_REMINDERS
    }


# Waits for a go file, so that every process asks for the migration at the same moment.
CONCURRENT_UPGRADE = """
import sys, time
from pathlib import Path
from scheduler_app.db.engine import create_db_engine
from scheduler_app.db.migrate import upgrade_database

database_url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
engine = create_db_engine(database_url)
ready.touch()
while not go.exists():
    time.sleep(0.001)
upgrade_database(engine)
engine.dispose()
"""
STARTERS = 4


@pytest.mark.parametrize("start_at", [None, "0005"], ids=["empty", "older revision"])
def test_processes_starting_together_migrate_once(
    tmp_path: Path, database_url: str, start_at: str | None
) -> None:
    engine = create_db_engine(database_url)
    try:
        if start_at is not None:
            upgrade_database(engine, start_at)
        go = tmp_path / "go"
        readies = [tmp_path / f"ready-{number}" for number in range(STARTERS)]
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", CONCURRENT_UPGRADE, database_url, str(ready), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for ready in readies
        ]
        try:
            wait_until(lambda: all(ready.exists() for ready in readies), timeout_s=30)
            go.touch()
            results = [process.communicate(timeout=60) for process in processes]
        finally:
            for process in processes:
                process.kill()
                process.wait()
        failures = [
            err for process, (_, err) in zip(processes, results, strict=True) if process.returncode
        ]
        assert failures == []

        with engine.connect() as connection:
            versions = connection.scalars(text("SELECT version_num FROM alembic_version")).all()
        assert versions == [head_revision()]
        tables = inspect(engine).get_table_names()
        assert len(tables) == len(set(tables))
        assert set(tables) == {*Base.metadata.tables, JOBS_TABLE, "alembic_version"}
        assert job_indexes(engine) == JOB_INDEXES
    finally:
        engine.dispose()
