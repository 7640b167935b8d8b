"""The retention job: expire cancel tokens and Idempotency-Keys, delete old reminders, runs,
audit entries and dashboard logins.

The rule it enforces is documented in scheduler_app.maintenance.retention.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated

from pydantic import Field

from scheduler_app.db.engine import SessionFactory
from scheduler_app.engine.executor import JobContext
from scheduler_app.maintenance import retention as cleanup

logger = logging.getLogger(__name__)


# The same bounds as retention.batch_size: config.yaml's kwargs are checked against them.
BatchSize = Annotated[int, Field(ge=1, le=100_000)]


async def token_cleanup(ctx: JobContext, batch_size: BatchSize | None = None) -> str:
    """Apply the retention rule in batches of batch_size (default retention.batch_size).

    Returns the number of rows each step changed.
    """
    retention = ctx.settings.retention
    size = retention.batch_size if batch_size is None else batch_size
    if size < 1:  # a direct call; config.yaml's kwargs are checked against BatchSize
        raise ValueError(f"batch_size must be at least 1, not {size}")
    # One reading of the clock for every step, so that all of them apply the same rule.
    cutoffs = cleanup.retention_cutoffs(ctx.clock(), retention)

    steps = (
        ("tokens expired", cleanup.expire_cancel_tokens, cutoffs.cancel_token),
        ("idempotency keys expired", cleanup.expire_idempotency_keys, cutoffs.idempotency_key),
        ("reminders deleted", cleanup.delete_finished_reminders, cutoffs.reminder),
        ("tasks deleted", cleanup.delete_finished_tasks, cutoffs.task),
        ("runs deleted", cleanup.delete_old_runs, cutoffs.run),
        ("audit entries deleted", cleanup.delete_old_audit_entries, cutoffs.audit),
        ("dashboard logins expired", cleanup.delete_expired_logins, cutoffs.login),
    )
    counts: list[str] = []
    for label, step, cutoff in steps:
        changed = await run_in_batches(ctx.sessions, step, cutoff, size)
        counts.append(f"{label}: {changed}")
    summary = ", ".join(counts)
    logger.info("token cleanup: %s", summary)
    return summary


async def run_in_batches(
    sessions: SessionFactory, step: cleanup.BatchStep, cutoff: datetime, batch_size: int
) -> int:
    """Run step batch after batch until a batch selects fewer than batch_size keys.

    Returns the number of rows changed in all batches.
    """

    def one_batch() -> tuple[int, int]:
        with sessions() as session:
            return step(session, cutoff, batch_size)

    total = 0
    while True:
        # Each batch is its own short transaction in a worker thread; yielding between batches
        # lets other jobs and requests run while a large backlog is worked off.
        selected, changed = await asyncio.to_thread(one_batch)
        total += changed
        if selected < batch_size:
            return total
        await asyncio.sleep(0)
