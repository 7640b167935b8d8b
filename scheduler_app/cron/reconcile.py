"""Bring the stored cron jobs in line with the `jobs:` list of config.yaml.

New entries are added, changed ones updated, removed ones deleted; unchanged ones are left alone
so that they keep their next run time. Reminders are never touched.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler_app.cron.entries import OPTIONAL_KEYS, REQUIRED_KEYS, CronJobSpec
from scheduler_app.db.models import CronJob
from scheduler_app.engine.executor import registered_job


@dataclass(frozen=True)
class ReconcilePlan:
    added: list[CronJobSpec] = field(default_factory=list)
    changed: list[CronJobSpec] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, list[str]]:
        return {
            "added": [spec.id for spec in self.added],
            "changed": [spec.id for spec in self.changed],
            "removed": list(self.removed),
            "unchanged": list(self.unchanged),
        }


def plan_reconcile(specs: Sequence[CronJobSpec], stored: Mapping[str, str]) -> ReconcilePlan:
    """Compare the file's jobs with the stored ones (id -> fingerprint)."""
    plan = ReconcilePlan()
    for spec in specs:
        if spec.id not in stored:
            plan.added.append(spec)
        elif stored[spec.id] != spec.fingerprint:
            plan.changed.append(spec)
        else:
            plan.unchanged.append(spec.id)
    wanted = {spec.id for spec in specs}
    plan.removed.extend(sorted(job_id for job_id in stored if job_id not in wanted))
    return plan


def stored_fingerprints(session: Session) -> dict[str, str]:
    return {
        row.id: row.fingerprint for row in session.execute(select(CronJob.id, CronJob.fingerprint))
    }


# The fields of a cron job an operator compares, in the order shown: every key of an entry
# but its id.
_COMPARED = tuple(key for key in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if key != "id")


@dataclass(frozen=True)
class FieldChange:
    name: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class JobChange:
    """What applying the file would do to one cron job, field by field."""

    id: str
    change: Literal["add", "change", "remove"]
    fields: list[FieldChange]


@dataclass(frozen=True)
class ReconcilePreview:
    plan: ReconcilePlan
    changes: list[JobChange]


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple | dict):
        return json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)
    return str(value)


def _values(source: Any) -> dict[str, str]:
    return {name: _shown(getattr(source, name)) for name in _COMPARED}


def describe_changes(plan: ReconcilePlan, stored: Mapping[str, CronJob]) -> list[JobChange]:
    """The plan as a diff: every field of an added or removed job, the differing fields of a
    changed one (stored: the rows by id)."""
    changes: list[JobChange] = []
    for spec in plan.added:
        after = _values(spec)
        changes.append(
            JobChange(spec.id, "add", [FieldChange(n, None, v) for n, v in after.items()])
        )
    for spec in plan.changed:
        before, after = _values(stored[spec.id]), _values(spec)
        differing = [
            FieldChange(n, before[n], after[n]) for n in _COMPARED if before[n] != after[n]
        ]
        changes.append(JobChange(spec.id, "change", differing))
    for job_id in plan.removed:
        before = _values(stored[job_id])
        changes.append(
            JobChange(job_id, "remove", [FieldChange(n, v, None) for n, v in before.items()])
        )
    return changes


def preview_reconcile(session: Session, specs: Sequence[CronJobSpec]) -> ReconcilePreview:
    """What reconcile would change, without changing anything (for the operator to review)."""
    rows = {row.id: row for row in session.scalars(select(CronJob))}
    plan = plan_reconcile(specs, {job_id: row.fingerprint for job_id, row in rows.items()})
    return ReconcilePreview(plan, describe_changes(plan, rows))


def reconcile(
    session: Session, scheduler: BaseScheduler, specs: Sequence[CronJobSpec], now: datetime
) -> ReconcilePlan:
    """Apply the file's jobs to the database and the scheduler; return what changed.

    Args:
        session: a session on the service's database.
        scheduler: the running (possibly paused) scheduler whose store holds the jobs.
        specs: the validated `jobs:` entries.
        now: the current time, for the rows' timestamps.
    """
    try:
        return _reconcile(session, scheduler, specs, now)
    except IntegrityError:
        # Processes starting together on one database add the same new jobs: the first to
        # store its rows wins, and this one applies the file again against them.
        session.rollback()
        return _reconcile(session, scheduler, specs, now)


def _reconcile(
    session: Session, scheduler: BaseScheduler, specs: Sequence[CronJobSpec], now: datetime
) -> ReconcilePlan:
    plan = plan_reconcile(specs, stored_fingerprints(session))
    rows = {row.id: row for row in session.scalars(select(CronJob))}
    # End the read before the job store writes on its own connection: SQLite has one writer.
    session.commit()

    # The scheduler first, the rows last: if the process dies in between, the rows still show
    # the old definitions and the next start applies the same changes again.
    for spec in plan.added:
        _schedule(scheduler, spec, paused=not spec.enabled, keep_next_run=False)
    for spec in plan.changed:
        row = rows[spec.id]
        new_timing = (row.cron, row.timezone) != (spec.cron, spec.timezone)
        _schedule(
            scheduler, spec, paused=row.paused or not spec.enabled, keep_next_run=not new_timing
        )
    for job_id in plan.removed:
        with contextlib.suppress(JobLookupError):
            scheduler.remove_job(job_id)
    for spec in specs:
        if spec.id in plan.unchanged and scheduler.get_job(spec.id) is None:
            # Self-heal: a row whose job vanished from the store gets it back.
            _schedule(
                scheduler,
                spec,
                paused=rows[spec.id].paused or not spec.enabled,
                keep_next_run=False,
            )

    for spec in plan.added:
        row = CronJob(id=spec.id, paused=False, created_at=now)
        _copy_spec(row, spec, now)
        session.add(row)
    for spec in plan.changed:
        _copy_spec(session.merge(rows[spec.id]), spec, now)
    if plan.removed:
        session.execute(delete(CronJob).where(CronJob.id.in_(plan.removed)))
    session.commit()
    return plan


def _copy_spec(row: CronJob, spec: CronJobSpec, now: datetime) -> None:
    row.job = spec.job
    row.cron = spec.cron
    row.timezone = spec.timezone
    row.args = list(spec.args)
    row.kwargs = dict(spec.kwargs)
    row.enabled = spec.enabled
    row.misfire_grace_s = spec.misfire_grace_s
    row.coalesce = spec.coalesce
    row.description = spec.description
    row.source = spec.source
    row.fingerprint = spec.fingerprint
    row.updated_at = now


def _schedule(
    scheduler: BaseScheduler, spec: CronJobSpec, *, paused: bool, keep_next_run: bool
) -> None:
    existing = scheduler.get_job(spec.id) if keep_next_run else None
    options: dict[str, object] = {}
    if paused:
        options["next_run_time"] = None
    elif existing is not None and existing.next_run_time is not None:
        # Only arguments or policy changed: the schedule, and so the next run, stays.
        options["next_run_time"] = existing.next_run_time
    # replace_existing: restarting N times leaves exactly one copy of each job.
    scheduler.add_job(
        registered_job,
        trigger=spec.trigger(),
        args=(spec.job, *spec.args),
        kwargs=dict(spec.kwargs),
        id=spec.id,
        name=spec.description or spec.id,
        # APScheduler takes whole seconds only.
        misfire_grace_time=max(1, math.ceil(spec.misfire_grace_s)),
        coalesce=spec.coalesce,
        max_instances=1,
        replace_existing=True,
        **options,
    )
