"""Index the job table by (next_run_time, id), by which GET /jobs pages.

The job table is APScheduler's: its SQLAlchemyJobStore creates the table when the scheduler
starts, after the migrations. A database that has no job table yet gets it here, as APScheduler
3.11 declares it, so that the index can be made. Earlier versions of the service made the index
when the scheduler started: it is made only where it is missing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# As of this revision; a migration keeps the schema it made, whatever the code declares later.
JOBS_TABLE = "apscheduler_jobs"
LISTING_INDEX = "ix_apscheduler_jobs_next_run_time_id"


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table(JOBS_TABLE):
        op.create_table(
            JOBS_TABLE,
            # As SQLAlchemyJobStore.__init__ declares it, its index on next_run_time included.
            sa.Column("id", sa.Unicode(191), primary_key=True),
            sa.Column("next_run_time", sa.Float(25), index=True),
            sa.Column("job_state", sa.LargeBinary, nullable=False),
        )
    op.create_index(LISTING_INDEX, JOBS_TABLE, ["next_run_time", "id"], if_not_exists=True)


def downgrade() -> None:
    # The table stays: it is APScheduler's, and holds the stored jobs.
    op.drop_index(LISTING_INDEX, table_name=JOBS_TABLE, if_exists=True)
