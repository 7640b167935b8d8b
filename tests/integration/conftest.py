from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from scheduler_app.db.engine import create_db_engine
from scheduler_app.db.migrate import upgrade_database


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test database with the schema migrated."""
    engine = create_db_engine(database_url)
    upgrade_database(engine)
    yield engine
    engine.dispose()
