"""Index reminders by recipient and status, for reminders.max_pending_per_address.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_reminders_address_status", "reminders", [sa.text("lower(email)"), "status"])


def downgrade() -> None:
    op.drop_index("ix_reminders_address_status", table_name="reminders")
