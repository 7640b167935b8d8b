"""Bring the service's schema to the newest Alembic revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed number: processes starting together on PostgreSQL migrate one after the other.
_PG_MIGRATION_LOCK = 0x5C4ED
VERSION_TABLE = "alembic_version"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Apply every migration not yet applied; a no-op on an up-to-date database.

    Args:
        engine: the service's engine.
        revision: the target revision: "head" for the newest, "base" to undo them all.
    """
    if revision == "head" and current_revision(engine) == head_revision():
        # Nothing to do: skip Alembic, whose set-up is most of a no-op upgrade's time and logs.
        return
    _migrate(engine, revision, down=revision == "base")


def downgrade_database(engine: Engine, revision: str) -> None:
    """Undo the migrations after `revision` ("base": all of them)."""
    _migrate(engine, revision, down=True)


def _migrate(engine: Engine, revision: str, *, down: bool) -> None:
    config = _alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        config.attributes["connection"] = connection
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


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
