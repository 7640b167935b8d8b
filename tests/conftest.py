from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler_app.settings import Settings
from tests.support import SmtpSink, fresh_postgres_database, make_settings, running_smtp_sink


@pytest.fixture(autouse=True)
def _scrub_scheduler_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SCHEDULER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A real, empty database: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scheduler.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running_smtp_sink(SmtpSink) as sink:
        yield sink
