"""SIGHUP makes the running service re-read config.yaml; a bad file changes nothing."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from scheduler_app.db.models import CronJob
from tests.acceptance.service import Service, service_environment


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> Iterator[Service]:
    running = Service(tmp_path, service_environment(tmp_path, database_url, None))
    yield running
    running.close()


def stored_cron_jobs(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                row.id: row.cron for row in connection.execute(select(CronJob.id, CronJob.cron))
            }
    finally:
        engine.dispose()


def test_sighup_reloads_the_jobs_and_refuses_a_bad_file(
    service: Service, database_url: str
) -> None:
    service.config_path.write_text(
        "jobs:\n  - {id: daily-report, job: daily_report, cron: '0 8 * * *'}\n"
    )
    service.start()
    # With the built-in maintenance, which runs whether or not the file names it.
    assert stored_cron_jobs(database_url) == {
        "daily-report": "0 8 * * *",
        "token-cleanup": "*/15 * * * *",
    }

    service.config_path.write_text(
        "jobs:\n"
        "  - {id: daily-report, job: daily_report, cron: '0 9 * * *'}\n"
        "  - {id: token-cleanup, job: token_cleanup, cron: '*/15 * * * *'}\n"
    )
    assert service.process is not None
    service.process.send_signal(signal.SIGHUP)
    service.wait_until(
        "the reload",
        lambda: (
            stored_cron_jobs(database_url)
            == {"daily-report": "0 9 * * *", "token-cleanup": "*/15 * * * *"}
        ),
    )

    service.config_path.write_text("jobs:\n  - {id: daily-report, job: nope, cron: '0 9 * * *'}\n")
    service.process.send_signal(signal.SIGHUP)
    service.wait_until("the refusal", lambda: "configuration refused" in service.log_text() or None)
    assert "unknown job 'nope'" in service.log_text()
    assert service.running
    assert stored_cron_jobs(database_url) == {
        "daily-report": "0 9 * * *",
        "token-cleanup": "*/15 * * * *",
    }
