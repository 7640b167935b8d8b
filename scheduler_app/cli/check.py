"""What `scheduler-app check-config` prints: each cron job in words, and the plan to apply them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from scheduler_app.cron.crontab import describe_crontab, next_fire_times
from scheduler_app.cron.entries import CronJobSpec
from scheduler_app.cron.reconcile import ReconcilePlan, plan_reconcile, stored_fingerprints
from scheduler_app.db.engine import create_db_engine, describe_url
from scheduler_app.settings import Settings


def describe_jobs(specs: Sequence[CronJobSpec], settings: Settings, now: datetime) -> Iterator[str]:
    source = settings.config_file or "configuration"
    builtin = sum(spec.source == "builtin" for spec in specs)
    yield f"{source}: valid, {len(specs) - builtin} cron job(s)" + (
        f", and {builtin} built-in" if builtin else ""
    )
    for spec in specs:
        state = "" if spec.enabled else " [disabled]"
        if spec.source == "builtin":
            state += " [built in: runs unless config.yaml has an entry for its job]"
        yield ""
        yield f"{spec.id}{state}: job {spec.job}, cron '{spec.cron}' ({spec.timezone})"
        yield f"  {describe_crontab(spec.cron)}"
        if spec.description:
            yield f"  {spec.description}"
        moments = next_fire_times(spec.trigger(), now, 3)
        # Minutes, unless a seconds field sets the runs apart within a minute.
        timespec = "seconds" if any(moment.second for moment in moments) else "minutes"
        upcoming = ", ".join(moment.isoformat(timespec=timespec) for moment in moments)
        yield f"  next runs: {upcoming}"


def describe_plan(specs: Sequence[CronJobSpec], database_url: str) -> Iterator[str]:
    where = describe_url(database_url)
    yield ""
    try:
        plan = _plan_against(specs, database_url)
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        yield f"plan: cannot read {where}: {reason}"
        return
    if plan is None:
        plan = plan_reconcile(specs, {})
        yield f"plan for {where} (no database yet):"
    else:
        yield f"plan for {where}:"
    yield from _plan_lines(plan)


def _plan_against(specs: Sequence[CronJobSpec], database_url: str) -> ReconcilePlan | None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return None  # do not create an empty database file just to look into it
    engine = create_db_engine(database_url)
    try:
        if "cron_jobs" not in inspect(engine).get_table_names():
            return plan_reconcile(specs, {})
        with Session(engine) as session:
            return plan_reconcile(specs, stored_fingerprints(session))
    finally:
        engine.dispose()


def _plan_lines(plan: ReconcilePlan) -> Iterator[str]:
    for label, ids in plan.summary().items():
        yield f"  {label}: {', '.join(ids) if ids else '-'}"
