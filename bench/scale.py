"""Scale: N reminders pending far in the future, seeded straight into the database in bulk.

Seeding goes around the API (posting 1,000,000 reminders one by one would take over an hour at the
measured enqueue rate): rows are written as each target writes them itself. For scheduler_app a
`tasks` row (a reminder is a task of the deliver_reminder job) plus an `apscheduler_jobs` row whose
job_state is the pickled APScheduler Job the service stores (registered_job, args
("deliver_reminder", id), a DateTrigger, misfire_grace_time None), the same format as
tests/support.py seed_reminder_jobs; for the baseline the pickled Job that its add_job stores
(send_reminder with its four arguments, the scheduler's defaults). Then: start-up time with N
pending, GET /jobs first page and a page 90 % deep, POST /subscribe latency, CPU use while idle (65
s), peak RSS, and last a burst of reminders due at one instant on top of the backlog: its delivery
should cost what the same burst costs on an empty database, not grow with what else is pending.
After that, the enqueue rate with the backlog against an empty database's, in alternating pairs of
wrk runs."""

from __future__ import annotations

import http.client
import json
import pickle
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from bench.common import ADMIN_HEADERS, database, percentile, quick
from bench.enqueue import wrk
from bench.measure import SinkLog, delivery_figures
from bench.scenarios import (
    DRAIN_DEADLINE_S,
    Run,
    drain,
    log,
    post_reminders,
    sink,
    sleep_until,
)
from bench.targets import TARGETS, SchedulerApp, Server, service_env

CHUNK = 10_000
REQUEST_TIMEOUT_S = 300.0
# Stop repeating a slow request once this much time went into it.
REPEAT_BUDGET_S = 60.0
IDLE_WINDOW_S = 15.0 if quick() else 65.0
WRK_DURATION_S = 5.0 if quick() else 10.0
# Reminders posted due at one instant on top of the backlog, once the rest is measured.
BURST = 100 if quick() else 1_000
BURST_FIGURES = ("delivered", "lost", "duplicated", "fire_lag_p50_s", "fire_lag_p99_s")
# The enqueue rate with the backlog is set beside an empty database's in alternating runs: this
# machine's speed drifts by more than the 20 % in question between runs an hour apart.
ENQUEUE_PAIRS = 1 if quick() else 3
SETTLE_S = 1.0
SUBSCRIBE_BODY = {
    "email": "bench@example.com",
    "delay_seconds": 2592000,
    "subject": "Bench",
    "message": "A benchmark reminder.",
}


def _due_times(count: int) -> list[datetime]:
    start = datetime.now(UTC) + timedelta(days=1)
    step = timedelta(days=29) / count
    return [start + step * i for i in range(count)]


def _create_scheduler_app_schema(server: SchedulerApp) -> None:
    from pathlib import Path

    from bench.common import PYTHON

    executable = str(Path(PYTHON).parent / "scheduler-app")
    done = subprocess.run(  # noqa: S603
        [executable, "db", "upgrade", "--config", str(server.config)],
        cwd=server.home,
        env={**_os_env(), **service_env(server.database_url, server.sink_port, server.home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scheduler-app db upgrade failed: {done.stdout}{done.stderr}")


def _os_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}


def seed_scheduler_app(database_url: str, count: int) -> None:
    from sqlalchemy import create_engine, insert

    from scheduler_app.db.models import Task
    from scheduler_app.engine.scheduler import JOBS, task_job_row
    from scheduler_app.ids import new_id
    from scheduler_app.reminders.job import REMINDER_JOB, REMINDER_JOB_PREFIX
    from scheduler_app.tasks.store import new_row

    now = datetime.now(UTC)
    engine = create_engine(database_url)
    # As migration 0006 or the job store at start would: the table with its indexes.
    JOBS.create(engine, checkfirst=True)
    try:
        due_times = _due_times(count)
        for begin in range(0, count, CHUNK):
            reminder_rows, job_rows = [], []
            for i, due in enumerate(due_times[begin : begin + CHUNK], start=begin):
                reminder_id = new_id()
                args = {
                    "email": f"bench{i}@example.com",
                    "subject": f"Bench {i}",
                    "message": "A benchmark reminder.",
                }
                row = new_row(reminder_id, REMINDER_JOB, args, due, now)
                reminder_rows.append({**row, "recipient": args["email"]})
                job_rows.append(task_job_row(REMINDER_JOB, REMINDER_JOB_PREFIX, reminder_id, due))
            with engine.begin() as connection:
                connection.execute(insert(Task), reminder_rows)
                connection.execute(insert(JOBS), job_rows)
    finally:
        engine.dispose()


def seed_baseline(database_url: str, count: int) -> None:
    import logging

    from apscheduler.job import Job
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.util import datetime_to_utc_timestamp
    from sqlalchemy import insert

    store = SQLAlchemyJobStore(url=database_url)
    store._scheduler, store._alias = None, "default"
    store._logger = logging.getLogger("bench.seed")
    store.jobs_t.create(store.engine, True)  # what SQLAlchemyJobStore.start does
    scheduler = SimpleNamespace(timezone=UTC)
    due_times = _due_times(count)
    try:
        for begin in range(0, count, CHUNK):
            rows = []
            for i, due in enumerate(due_times[begin : begin + CHUNK], start=begin):
                reminder_id = str(uuid.uuid4())
                # What AsyncIOScheduler.add_job stores with its defaults.
                job = Job(
                    scheduler,
                    id=reminder_id,
                    func="bench.baseline.app:send_reminder",
                    args=[reminder_id, f"bench{i}@example.com", f"Bench {i}", "A reminder."],
                    kwargs={},
                    trigger=DateTrigger(run_date=due, timezone=UTC),
                    executor="default",
                    misfire_grace_time=1,
                    coalesce=False,
                    max_instances=1,
                    next_run_time=due,
                    name="send_reminder",
                )
                rows.append(
                    {
                        "id": job.id,
                        "next_run_time": datetime_to_utc_timestamp(due),
                        "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol),
                    }
                )
            with store.engine.begin() as connection:
                connection.execute(insert(store.jobs_t), rows)
    finally:
        store.engine.dispose()


def _analyze(database_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def _deep_cursor(database_url: str, depth: int) -> str:
    from sqlalchemy import create_engine, text

    from scheduler_app.db.paging import encode_cursor

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT id, next_run_time FROM apscheduler_jobs "
                    "WHERE next_run_time IS NOT NULL ORDER BY next_run_time, id "
                    "LIMIT 1 OFFSET :offset"
                ),
                {"offset": depth - 1},
            ).one()
    finally:
        engine.dispose()
    # The cursor the service hands out after the row at `depth` (phase 0: scheduled jobs).
    return encode_cursor(0, row.next_run_time, row.id)


def _timed(
    server: Server, method: str, path: str, repeats: int, body: bytes | None = None
) -> dict[str, Any]:
    parts = urlsplit(server.url)
    latencies: list[float] = []
    statuses: set[int] = set()
    spent = 0.0
    headers = {**ADMIN_HEADERS, "Content-Type": "application/json"}
    for _ in range(repeats):
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=REQUEST_TIMEOUT_S
        )
        began = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            statuses.add(response.status)
        except OSError as exc:
            statuses.add(0)
            log(f"{method} {path[:60]}: {type(exc).__name__}: {exc}")
        finally:
            connection.close()
        latencies.append(time.perf_counter() - began)
        spent += latencies[-1]
        if spent > REPEAT_BUDGET_S:
            break
    return {
        "p50": percentile(latencies, 50),
        "max": max(latencies),
        "n": len(latencies),
        "statuses": sorted(statuses),
    }


def _idle_cpu_percent(server: Server, seconds: float) -> float:
    import psutil

    process = psutil.Process(server.pid)
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / seconds


def _burst_on_backlog(run: Run, server: Server, sink_log: SinkLog) -> dict[str, Any]:
    """BURST reminders posted due at one instant while the backlog stays pending: whether a
    burst's delivery reads only its own rows (the drain of the storm scenario's size of burst)
    or something that grows with the backlog."""
    due, accepted, _ = post_reminders(server, run, BURST, 0.0, "reminders on top of the backlog")
    sleep_until(due)
    stopped, _ = drain(
        sink_log,
        accepted,
        deadline=due + DRAIN_DEADLINE_S,
        pending=lambda: server.pending(due_before=due + 1),
        not_before=due + 2,
    )
    delivered = delivery_figures(accepted, sink_log, due)
    log(
        f"{run.target}: burst on the backlog delivered {delivered['delivered']}/{len(accepted)}, "
        f"drain {delivered['drain_s'] or float('nan'):.2f} s ({stopped})"
    )
    return {
        "burst_on_backlog_accepted": len(accepted),
        "burst_on_backlog_drain_s": delivered["drain_s"],
        "burst_on_backlog_stopped_because": stopped,
        **{f"burst_on_backlog_{key}": delivered[key] for key in BURST_FIGURES},
    }


def scale_run(run: Run, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    params = {
        "pending": size,
        "due": "evenly from 1 day to 30 days ahead",
        "seeding": "bulk SQL inserts of the rows each target writes itself (not via the API)"
        + ("; then ANALYZE" if run.db == "postgres" else ""),
        "deep_page": "after 90 % of the jobs",
        "repeats": "10 per request (fewer if one takes over 60 s in total)",
        "idle_window_s": IDLE_WINDOW_S,
        "burst_on_backlog": f"{BURST} posted due at one instant, after the other measurements",
    }
    figures: dict[str, Any] = {}
    with (
        sink(run.directory) as (sink_port, sink_log, _),
        database(run.db, run.directory, run.target) as url,
    ):
        server = TARGETS[run.target](run.directory, url, sink_port)
        began = time.perf_counter()
        log(f"{run.target}: seeding {size:,} pending reminders")
        if isinstance(server, SchedulerApp):
            _create_scheduler_app_schema(server)
            seed_scheduler_app(url, size)
        else:
            seed_baseline(url, size)
        figures["seed_s"] = time.perf_counter() - began
        if run.db == "postgres":
            # What autovacuum would do within a minute of a bulk load: without statistics the
            # planner treats the freshly filled tables as tiny.
            _analyze(url)
        figures["pending_before_start"] = server.pending()
        try:
            log(f"{run.target}: seeded in {figures['seed_s']:.0f} s, starting")
            figures["startup_s"] = server.start()
            log(f"{run.target}: ready in {figures['startup_s']:.2f} s")
            depth = int(size * 0.9)
            first = _timed(server, "GET", "/jobs?limit=50", 10)
            if isinstance(server, SchedulerApp):
                deep_path = f"/jobs?limit=50&cursor={_deep_cursor(url, depth)}"
            else:
                deep_path = f"/jobs?limit=50&offset={depth}"
            deep = _timed(server, "GET", deep_path, 10)
            posted = _timed(server, "POST", "/subscribe", 20, json.dumps(SUBSCRIBE_BODY).encode())
            for name, timing in (
                ("jobs_first_page", first),
                ("jobs_deep_page", deep),
                ("subscribe_with_pending", posted),
            ):
                figures[f"{name}_p50_s"] = timing["p50"]
                figures[f"{name}_max_s"] = timing["max"]
                figures[f"{name}_requests"] = timing["n"]
                figures[f"{name}_statuses"] = timing["statuses"]
            # The enqueue rate right after start-up with this many pending; the comparison with
            # an empty database is made in alternating pairs at the end.
            loaded = wrk([server.url + "/subscribe"], WRK_DURATION_S, SUBSCRIBE_BODY, run.directory)
            figures.update({f"with_pending_{key}": value for key, value in loaded.items()})
            # Idle: nothing is due, yet scheduler_app's recovery pass runs every
            # scheduler.recovery_interval_s (60 s); this window holds at least one.
            figures["idle_cpu_percent"] = _idle_cpu_percent(server, IDLE_WINDOW_S)
            figures["idle_window_s"] = IDLE_WINDOW_S
            figures["pending_after"] = server.pending()
            figures.update(_burst_on_backlog(run, server, sink_log))
            server.record_rss()
            figures["peak_rss_mb"] = max(server.peak_rss, default=0) / 2**20 or None
            log(
                f"{run.target}: first page {first['p50']:.4f} s, deep page {deep['p50']:.4f} s, "
                f"POST {posted['p50']:.4f} s, wrk {loaded.get('wrk_requests_per_s')}/s, "
                f"peak RSS {figures['peak_rss_mb']:.0f} MiB"
            )
        finally:
            server.stop()
            figures["peak_rss_mb"] = max(server.peak_rss, default=0) / 2**20 or None
        if isinstance(server, SchedulerApp):
            params["enqueue_pairs"] = (
                f"{ENQUEUE_PAIRS} pairs of the same wrk command, each on a fresh start: a new "
                "empty database and the seeded one, in alternating order"
            )
            figures.update(_enqueue_against_empty(run, server, sink_port))
    return params, figures


def _enqueue_against_empty(run: Run, seeded: Server, sink_port: int) -> dict[str, Any]:
    """wrk's POST /subscribe rate with the backlog over an empty database's, in pairs of runs a
    minute apart; the order within a pair alternates so that a drifting machine favours neither."""
    pending_rates: list[float] = []
    empty_rates: list[float] = []
    for pair in range(ENQUEUE_PAIRS):
        with database(run.db, run.directory, f"{run.target}-empty-{pair}") as url:
            empty = TARGETS[run.target](run.directory, url, sink_port)
            runs = [(seeded, pending_rates), (empty, empty_rates)]
            for server, rates in runs if pair % 2 else reversed(runs):
                rates.append(_wrk_rate(run, server))
        log(
            f"{run.target}: enqueue pair {pair + 1}: {pending_rates[-1]:.0f}/s with the backlog, "
            f"{empty_rates[-1]:.0f}/s empty"
        )
    ratios = [pending / empty for pending, empty in zip(pending_rates, empty_rates, strict=True)]
    return {
        "enqueue_pairs_with_pending_per_s": pending_rates,
        "enqueue_pairs_empty_per_s": empty_rates,
        "enqueue_with_pending_over_empty": ratios,
        "enqueue_with_pending_over_empty_median": statistics.median(ratios),
    }


def _wrk_rate(run: Run, server: Server) -> float:
    server.start()
    try:
        time.sleep(SETTLE_S)
        figures = wrk([server.url + "/subscribe"], WRK_DURATION_S, SUBSCRIBE_BODY, run.directory)
    finally:
        server.stop()
    return float(figures["wrk_requests_per_s"])
