"""Schema migrations on a real database, through the API and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from scheduler_app.db.engine import create_db_engine
from scheduler_app.db.migrate import current_revision, head_revision, upgrade_database

CLI = [sys.executable, "-m", "scheduler_app"]


def test_upgrade_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        assert current_revision(engine) is None
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
        assert "reminders" in inspect(engine).get_table_names()
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_every_migration_can_be_undone_and_redone(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine)
        upgrade_database(engine, "base")
        assert "reminders" not in inspect(engine).get_table_names()
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_db_upgrade_command(tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n")
    first = subprocess.run(
        [*CLI, "db", "upgrade", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    assert f"upgraded from empty to {head_revision()}" in first.stdout
    again = subprocess.run(
        [*CLI, "db", "upgrade", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert f"already at revision {head_revision()}" in again.stdout
