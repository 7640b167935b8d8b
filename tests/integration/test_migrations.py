"""Schema migrations on a real database, through the API and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Engine, Index, insert, inspect, select

from scheduler_app.db.engine import create_db_engine
from scheduler_app.db.migrate import current_revision, head_revision, upgrade_database
from scheduler_app.engine.scheduler import JOBS, JOBS_TABLE, LISTING_INDEX

CLI = [sys.executable, "-m", "scheduler_app"]


def test_upgrade_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        assert current_revision(engine) is None
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
        assert "reminders" in inspect(engine).get_table_names()
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
        assert "reminders" not in inspect(engine).get_table_names()
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
