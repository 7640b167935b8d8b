from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from scheduler_app.app import create_app
from scheduler_app.settings import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan running: migrations applied, scheduler started."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client
