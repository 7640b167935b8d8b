"""Several processes on one database: the scheduler's lease, the processes, claimed ticks.

`leadership` holds one row, the lease of the process that runs the scheduler; `cluster_processes`
one row per running process; `job_runs.tick` the fire time of the recurring job's tick a run
claimed, unique per job, so that no tick runs twice. Runs recorded before have no tick: NULLs
never collide, so the index holds over every stored run.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEDULER_LEASE = "scheduler"


def upgrade() -> None:
    leadership = op.create_table(
        "leadership",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("term", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=True),
        sa.Column("resign_term", sa.BigInteger, nullable=True),
    )
    op.bulk_insert(
        leadership,
        [{"name": SCHEDULER_LEASE, "holder": None, "term": 0, "expires_at": 0.0}],
    )
    op.create_table(
        "cluster_processes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("tick", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ux_job_runs_job_id_tick", "job_runs", ["job_id", "tick"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_job_runs_job_id_tick", table_name="job_runs")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("tick")
    op.drop_table("cluster_processes")
    op.drop_table("leadership")
