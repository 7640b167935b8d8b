"""Bring the service's schema to the newest Alembic revision."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from scheduler_app.files import PRIVATE_FILE, private_dir

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed number, the same in every process: the key of PostgreSQL's migration lock.
_PG_MIGRATION_LOCK = 0x5C4ED
VERSION_TABLE = "alembic_version"
# Beside a SQLite database file: the file whose lock one migrating process holds.
SQLITE_LOCK_SUFFIX = ".migrate.lock"
logger = logging.getLogger(__name__)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Apply every migration not yet applied; a no-op on an up-to-date database.

    Safe when several processes start together on one database: one migrates, the others wait
    for it and then find nothing left to do.

    Args:
        engine: the service's engine.
        revision: the target revision: "head" for the newest, "base" to undo them all.
    """
    # Nothing to do: skip the lock and Alembic, whose set-up is most of a no-op upgrade's time
    # and logs. Not on SQLite: there the first connection to a new file switches it to WAL,
    # which fails at once ("database is locked") while another process migrates it, so even the
    # first look waits for the lock (a file lock: cheap).
    if revision == "head" and engine.dialect.name != "sqlite" and _at_head(engine):
        return
    with migration_lock(engine):
        # Looked at again: another process may have migrated while this one waited.
        if revision == "head" and _at_head(engine):
            return
        _migrate(engine, revision, down=revision == "base")


def downgrade_database(engine: Engine, revision: str) -> None:
    """Undo the migrations after `revision` ("base": all of them)."""
    with migration_lock(engine):
        _migrate(engine, revision, down=True)


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the database's migration lock, waiting for another process that holds it.

    PostgreSQL: a session-level advisory lock on a connection of its own, kept for the whole
    migration whatever the migration does with its transactions. SQLite: an exclusive lock on
    a file beside the database (an in-memory database is this process's only). The lock is
    given back on error too, and by the operating system if the process dies.
    """
    if engine.dialect.name == "postgresql":
        with _postgresql_lock(engine):
            yield
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with _file_lock(Path(database + SQLITE_LOCK_SUFFIX)):
        yield


@contextmanager
def _postgresql_lock(engine: Engine) -> Iterator[None]:
    key = {"key": _PG_MIGRATION_LOCK}
    # Autocommit: the connection holds the lock without sitting idle in a transaction.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if not connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
            logger.info("waiting for another process's schema migration to finish")
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    private_dir(path.parent)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process's schema migration to finish")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _migrate(engine: Engine, revision: str, *, down: bool) -> None:
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def _at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as connection:
        # Read directly: Alembic's MigrationContext logs its set-up at every look.
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        revision: str | None = connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608
        return revision


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
