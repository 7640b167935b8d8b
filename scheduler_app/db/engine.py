"""The database engine and sessions; SQLite is tuned for one writer and concurrent readers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.files import create_private_file

SessionFactory = sessionmaker[Session]
T = TypeVar("T")
logger = logging.getLogger(__name__)
# How long a SQLite writer waits for the lock before "database is locked": long enough for
# ordinary contention, short enough that a request answers 503 instead of hanging.
SQLITE_BUSY_TIMEOUT_S = 5.0
# Connections kept in the pool, and opened beyond them at busy times.
POOL_SIZE = 10
MAX_OVERFLOW = 20


def create_db_engine(database_url: str) -> Engine:
    """Create the engine shared by the service's tables and the APScheduler job store.

    Args:
        database_url: a SQLAlchemy URL; for a SQLite file its folder is created.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW
        )

    if url.database and url.database != ":memory:":
        # SQLite gives its -wal and -shm files the database file's permissions.
        create_private_file(Path(url.database))
    engine = create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
    )
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a delivery writes; busy_timeout makes writers queue instead of
    # failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Raise if the database cannot take a write (SQLite) or answer a query (PostgreSQL)."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Readers go on under a held write lock in WAL mode; what matters is writing.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            connection.exec_driver_sql("ROLLBACK")
        else:
            connection.execute(text("SELECT 1"))


def database_unavailable(exc: BaseException) -> bool:
    """Whether exc says the database cannot serve now (down, restarting, locked, connection lost,
    pool exhausted): worth trying again later. A refusal of the statement itself (constraint,
    data or SQL errors) is not: trying again would fail alike.

    Args:
        exc: any exception, from the database or not.
    """
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def describe_unavailable(exc: BaseException) -> str:
    """What the driver said, on one line of at most 200 characters, for a log."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    return " ".join(str(cause).split())[:200]


async def with_db_retries(
    step: Callable[[], Awaitable[T]], *, attempts: int = 6, first_delay_s: float = 0.5
) -> T:
    """Await a database step, trying it again while the database is unreachable or locked
    (waits double from first_delay_s); the last failure is raised."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return await step()
        except Exception as exc:
            if attempt == attempts or not database_unavailable(exc):
                raise
            logger.warning(
                "database unavailable (%s); retrying in %.1f s", describe_unavailable(exc), delay
            )
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def describe_url(database_url: str) -> str:
    """The URL with any password masked, for logs."""
    return make_url(database_url).render_as_string(hide_password=True)
