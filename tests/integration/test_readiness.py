"""Readiness follows the database: 503 while PostgreSQL is gone, liveness unaffected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scheduler_app.app import create_app
from tests.support import fresh_postgres_database, make_settings, postgres_server_url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.mark.postgres
def test_readyz_is_503_when_the_database_is_gone(tmp_path: Path, postgres_url: str) -> None:
    with TestClient(create_app(make_settings(tmp_path, postgres_url))) as client:
        assert client.get("/readyz").status_code == 200

        server = create_engine(postgres_server_url() or "", isolation_level="AUTOCOMMIT")
        name = make_url(postgres_url).database
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        server.dispose()

        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert response.json()["checks"]["database"].startswith("unreachable")
        assert client.get("/healthz").status_code == 200
