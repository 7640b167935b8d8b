"""Alembic environment: runs on the connection handed in by scheduler_app.db.migrate."""

from __future__ import annotations

from alembic import context

from scheduler_app.db.models import Base

APSCHEDULER_TABLES = {"apscheduler_jobs"}


def _include_object(obj: object, name: str | None, type_: str, *_: object) -> bool:
    return not (type_ == "table" and name in APSCHEDULER_TABLES)


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_object=_include_object,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
