"""One task model: every reminder becomes a task of the deliver_reminder job.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

The reminder's e-mail fields become the task's JSON arguments and its address the task's
recipient; "sent" becomes "succeeded". The APScheduler jobs that fire reminders are left as they
are: they carry the job's name and the id, which the task keeps.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scheduler_app.db.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TIMES = (
    "created_at",
    "updated_at",
    "last_attempt_at",
    "finished_at",
    "next_attempt_at",
    "requeued_at",
)
_KEPT = ("id", "attempts", "last_error", *_TIMES)
_TOKENS = ("cancel_token_hash", "idempotency_key_hash", "request_fingerprint")


def _json_object(*pairs: str) -> str:
    function = "json_build_object" if op.get_bind().dialect.name == "postgresql" else "json_object"
    cast = "::text" if op.get_bind().dialect.name == "postgresql" else ""
    return f"{function}({', '.join(pairs)}){cast}"


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("run_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Column("requeued_at", UTCDateTime()),
        sa.Column("recipient", sa.String(320)),
        sa.Column("cancel_token_hash", sa.String(64)),
        sa.Column("idempotency_key_hash", sa.String(64), unique=True),
        sa.Column("request_fingerprint", sa.String(64)),
        sa.CheckConstraint(
            "status IN ('scheduled', 'running', 'succeeded', 'failed', 'cancelled', 'missed')",
            name="ck_tasks_status",
        ),
    )
    args = _json_object("'email'", "email", "'subject'", "subject", "'message'", "message")
    columns = ", ".join((*_KEPT, *_TOKENS))
    op.execute(
        f"INSERT INTO tasks (job, args, run_at, status, recipient, {columns}) "  # noqa: S608
        f"SELECT 'deliver_reminder', {args}, remind_at, "
        "CASE status WHEN 'sent' THEN 'succeeded' ELSE status END, email, "
        f"{columns} FROM reminders"
    )
    op.drop_table("reminders")
    op.create_index("ix_tasks_status_run_at", "tasks", ["status", "run_at"])
    op.create_index("ix_tasks_finished_at", "tasks", ["finished_at"])
    op.create_index("ix_tasks_created_at", "tasks", ["created_at"])
    op.create_index("ix_tasks_recipient_status", "tasks", [sa.text("lower(recipient)"), "status"])


def downgrade() -> None:
    op.create_table(
        "reminders",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("remind_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        *(sa.Column(name, UTCDateTime()) for name in _TIMES),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("cancel_token_hash", sa.String(64)),
        sa.Column("idempotency_key_hash", sa.String(64), unique=True),
        sa.Column("request_fingerprint", sa.String(64)),
        sa.CheckConstraint(
            "status IN ('scheduled', 'sent', 'failed', 'cancelled', 'missed')",
            name="ck_reminders_status",
        ),
    )
    postgres = op.get_bind().dialect.name == "postgresql"

    def field(name: str) -> str:
        return f"(args::json ->> '{name}')" if postgres else f"json_extract(args, '$.{name}')"

    columns = ", ".join((*_KEPT, *_TOKENS))
    # A task that is neither a reminder nor expressible as one (running: back to scheduled,
    # which is what recovery makes of it) has no place in the old schema.
    op.execute(
        "INSERT INTO reminders (email, subject, message, remind_at, status, sent_at, "  # noqa: S608
        f"{columns}) SELECT {field('email')}, {field('subject')}, {field('message')}, run_at, "
        "CASE status WHEN 'succeeded' THEN 'sent' WHEN 'running' THEN 'scheduled' "
        "ELSE status END, CASE status WHEN 'succeeded' THEN finished_at END, "
        f"{columns} FROM tasks WHERE job = 'deliver_reminder'"
    )
    op.drop_table("tasks")
    op.create_index("ix_reminders_status_remind_at", "reminders", ["status", "remind_at"])
    op.create_index("ix_reminders_finished_at", "reminders", ["finished_at"])
    op.create_index("ix_reminders_created_at", "reminders", ["created_at"])
    op.create_index("ix_reminders_address_status", "reminders", [sa.text("lower(email)"), "status"])
