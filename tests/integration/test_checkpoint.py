"""SQLite's write-ahead log is copied into the database by the checkpointer, never by a commit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scheduler_app.db.checkpoint import WalCheckpointer
from scheduler_app.db.engine import create_db_engine
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


def write_blobs(
    engine: Engine, commits: int, size: int = MIB, pause_s: float = 0.0, keep: int | None = None
) -> None:
    """commits of one blob of size bytes each, pause_s apart; with keep, all but the last keep
    blobs are deleted in each commit, so that the table stays small. A commit of the default
    1 MiB writes 256 pages, past SQLite's 1,000-page checkpoint mark in four."""
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
        connection.commit()
        for _ in range(commits):
            connection.exec_driver_sql("INSERT INTO blobs VALUES (randomblob(?))", (size,))
            if keep is not None:
                connection.exec_driver_sql(
                    "DELETE FROM blobs WHERE rowid <= (SELECT max(rowid) - ? FROM blobs)", (keep,)
                )
            connection.commit()
            time.sleep(pause_s)


def wal_size(database: Path) -> int:
    return Path(f"{database}-wal").stat().st_size


def test_without_the_checkpointer_a_commit_checkpoints(engine: Engine, database: Path) -> None:
    # The contrast that makes the next test mean something: SQLite's default restarts the log.
    write_blobs(engine, 8)
    assert wal_size(database) < 6 * MIB


def test_commits_leave_the_log_to_the_checkpointer(engine: Engine, database: Path) -> None:
    checkpointer = WalCheckpointer.attach(engine)
    assert checkpointer is not None
    write_blobs(engine, 8)
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
        write_blobs(engine, 3)
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
    write_blobs(engine, 1)
    checkpointer.start()
    try:
        wait_until(lambda: database.stat().st_size > MIB)
        sent = sent_statements(engine)
        time.sleep(0.3)  # fifteen intervals with nothing written
        assert not [statement for statement in sent if "wal_checkpoint" in statement.text]

        write_blobs(engine, 1)
        wait_until(lambda: any("wal_checkpoint" in statement.text for statement in sent))
    finally:
        checkpointer.stop()


@pytest.mark.parametrize(("restart_frames", "grows"), [(10**9, True), (256, False)])
def test_under_steady_writes_the_log_is_restarted_once_past_its_mark(
    engine: Engine, database: Path, restart_frames: int, grows: bool
) -> None:
    # Without restarts (the first case) passive checkpoints never let the log start over.
    checkpointer = WalCheckpointer.attach(engine, interval_s=0.02, restart_frames=restart_frames)
    assert checkpointer is not None
    checkpointer.start()
    try:
        # Like a busy database writer: commits of 64 KiB with short pauses. Pauses of 2 ms
        # were long enough, on a fast machine, for a passive checkpoint to copy every frame
        # now and then, so that the log started over without restarts (at 6 to 22 MiB).
        write_blobs(engine, 300, size=64 * 1024, pause_s=0.0005, keep=4)  # about 40 MiB of log
    finally:
        checkpointer.stop()
    assert (wal_size(database) > 16 * MIB) is grows


def test_a_restart_gives_up_while_a_reader_holds_older_frames(engine: Engine) -> None:
    checkpointer = WalCheckpointer.attach(engine)
    assert checkpointer is not None
    write_blobs(engine, 1)
    with engine.connect() as reader:
        reader.exec_driver_sql("BEGIN")
        reader.exec_driver_sql("SELECT count(*) FROM blobs").one()  # its snapshot ends here
        write_blobs(engine, 1)
        began = time.monotonic()
        assert checkpointer.restart() is False
        waited = time.monotonic() - began
        reader.rollback()
    assert waited < 2  # not the connections' 5 s busy timeout
    assert checkpointer.restart() is True
    write_blobs(engine, 1)  # writers go on
