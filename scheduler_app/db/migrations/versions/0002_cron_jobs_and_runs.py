"""Add cron job definitions and run records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scheduler_app.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cron_jobs",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("misfire_grace_s", sa.Float(), nullable=False),
        sa.Column("coalesce", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('running', 'success', 'error', 'missed')", name="ck_job_runs_outcome"
        ),
    )
    op.create_index("ix_job_runs_job_id_started", "job_runs", ["job_id", "scheduled_for"])
    op.create_index("ix_job_runs_outcome_finished", "job_runs", ["outcome", "finished_at"])
    op.create_index("ix_job_runs_finished", "job_runs", ["finished_at"])
    op.create_index("ix_reminders_finished_at", "reminders", ["finished_at"])
    op.create_index("ix_reminders_created_at", "reminders", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_reminders_created_at", table_name="reminders")
    op.drop_index("ix_reminders_finished_at", table_name="reminders")
    op.drop_table("job_runs")
    op.drop_table("cron_jobs")
