"""SQLite's write-ahead log is copied into the database by the checkpointer, never by a commit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scheduler_app.checkpoint import WalCheckpointer
from scheduler_app.db import create_db_engine
from tests.support import sent_statements, wait_until

MIB = 2**20


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "scheduler.db"


@pytest.fixture
def engine(database: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{database}")
    yield engine
    engine.dispose()


def write_mebibytes(engine: Engine, count: int) -> None:
    """count commits of 1 MiB each: 256 pages each, past SQLite's 1,000-page checkpoint mark."""
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
        connection.commit()
        for _ in range(count):
            connection.exec_driver_sql("INSERT INTO blobs VALUES (randomblob(1048576))")
            connection.commit()


def wal_size(database: Path) -> int:
    return Path(f"{database}-wal").stat().st_size


def test_without_the_checkpointer_a_commit_checkpoints(engine: Engine, database: Path) -> None:
    # The contrast that makes the next test mean something: SQLite's default restarts the log.
    write_mebibytes(engine, 8)
    assert wal_size(database) < 6 * MIB


def test_commits_leave_the_log_to_the_checkpointer(engine: Engine, database: Path) -> None:
    checkpointer = WalCheckpointer.attach(engine)
    assert checkpointer is not None
    write_mebibytes(engine, 8)
    assert wal_size(database) > 8 * MIB  # every commit appended; none copied the log back
    assert database.stat().st_size < MIB

    log_frames, copied_frames = checkpointer.checkpoint()

    assert log_frames == copied_frames > 8 * 256
    assert database.stat().st_size > 8 * MIB


def test_the_running_checkpointer_copies_the_log_and_returns_its_connection(
    engine: Engine, database: Path
) -> None:
    checkpointer = WalCheckpointer.attach(engine, interval_s=0.05)
    assert checkpointer is not None
    checkpointer.start()
    try:
        write_mebibytes(engine, 3)
        wait_until(lambda: database.stat().st_size > 3 * MIB, timeout_s=3)
        assert database.stat().st_size > 3 * MIB
    finally:
        checkpointer.stop()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_only_sqlite_has_a_checkpointer() -> None:
    engine = create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert WalCheckpointer.attach(engine) is None


def test_an_idle_database_is_not_checkpointed_again(engine: Engine, database: Path) -> None:
    checkpointer = WalCheckpointer.attach(engine, interval_s=0.02)
    assert checkpointer is not None
    write_mebibytes(engine, 1)
    checkpointer.start()
    try:
        wait_until(lambda: database.stat().st_size > MIB)
        sent = sent_statements(engine)
        time.sleep(0.3)  # fifteen intervals with nothing written
        assert not [statement for statement in sent if "wal_checkpoint" in statement.text]

        write_mebibytes(engine, 1)
        wait_until(lambda: any("wal_checkpoint" in statement.text for statement in sent))
    finally:
        checkpointer.stop()
