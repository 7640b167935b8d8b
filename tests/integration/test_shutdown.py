"""Stopping the service closes every database connection it opened, even one that a worker
thread is using at that moment."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scheduler_app.app import create_app
from scheduler_app.engine.scheduler import JOBS_TABLE
from tests.support import fresh_postgres_database, make_settings, postgres_server_url, wait_until

pytestmark = pytest.mark.postgres


def backends(database_url: str) -> int:
    """How many connections the server has open to this database."""
    server = create_engine(postgres_server_url() or "", isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            count = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                {"name": make_url(database_url).database},
            ).scalar_one()
    finally:
        server.dispose()
    return int(count)


@pytest.mark.parametrize(
    ("blocked_table", "recovery_interval_s", "delay_seconds"),
    [
        # The reminder falls due while the lock is held: the pass that would run it waits.
        pytest.param(JOBS_TABLE, 600, 1.0, id="a pass over the job store"),
        # Nothing falls due: only the recovery pass reads the tasks. When it ends it wakes
        # the scheduler, whose pass then races with the stop.
        pytest.param("tasks", 0.2, 3600, id="a recovery pass"),
    ],
)
def test_stop_waits_for_a_database_read_under_way_then_closes_every_connection(
    tmp_path: Path, blocked_table: str, recovery_interval_s: float, delay_seconds: float
) -> None:
    with fresh_postgres_database() as url:
        settings = make_settings(
            tmp_path, url, scheduler={"recovery_interval_s": recovery_interval_s}
        )
        client = TestClient(create_app(settings))
        client.__enter__()
        stopping = threading.Thread(target=client.__exit__, args=(None, None, None))
        holder = create_engine(url)
        try:
            response = client.post(
                "/subscribe", json={"email": "ada@example.com", "delay_seconds": delay_seconds}
            )
            assert response.status_code == 201, response.text
            with holder.connect() as locking:
                locking.execute(text(f"LOCK TABLE {blocked_table} IN ACCESS EXCLUSIVE MODE"))
                # The service's read is under way, blocked behind the lock, when it is stopped.
                wait_until(
                    lambda: locking.execute(
                        text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    ).scalar_one()
                )
                stopping.start()
                stopping.join(0.3)
                assert stopping.is_alive(), "stopped without waiting for the read under way"
                locking.rollback()
            stopping.join(15)
            assert not stopping.is_alive(), "the service did not stop"
        finally:
            holder.dispose()
            if not stopping.is_alive() and stopping.ident is None:
                client.__exit__(None, None, None)
        wait_until(lambda: backends(url) == 0 or None, timeout_s=5)


def test_a_connection_returned_after_stop_is_closed(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        settings = make_settings(tmp_path, url, scheduler={"shutdown_timeout_s": 0.2})
        with TestClient(create_app(settings)) as client:
            runtime = client.app_state["runtime"]
            # What a worker thread that outlives the stop holds: stop waits for it, gives up
            # after the shutdown timeout and disposes of the engine; the thread returns it later.
            late = runtime.engine.connect()
            late.execute(text("SELECT 1"))
        assert backends(url) == 1
        late.close()
        wait_until(lambda: backends(url) == 0 or None, timeout_s=5)
