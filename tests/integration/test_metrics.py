"""GET /metrics through the real app: task attempts, recurring runs (a missed one included),
fire lag, the counts read from the database, the leader; the token that guards it; and the
one statement a scrape costs at most."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, event, update
from sqlalchemy.engine import make_url

from scheduler_app.app import create_app
from scheduler_app.builtin import REGISTRY
from scheduler_app.db.models import Task
from scheduler_app.engine.executor import JobContext, RegisteredJob
from scheduler_app.metrics import Metrics
from scheduler_app.registry import job, options_of, user_job
from scheduler_app.runtime import Runtime
from scheduler_app.tasks.policy import JobFailure
from tests.support import ADMIN, Deployment, free_port, make_settings, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
METRICS_TOKEN = "scrape-token-0123456789"


async def note(ctx: JobContext, label: str) -> str:
    return f"noted {label}"


async def explode(ctx: JobContext) -> None:
    raise RuntimeError("the report server is on fire")


@job("metrics_ok")
async def works(order_id: int) -> str:
    await asyncio.sleep(0.01)
    return f"order {order_id}"


@job("metrics_boom", max_attempts=1)
async def fails(order_id: int) -> None:
    raise JobFailure(f"order {order_id} refused", transient=False)


@job("metrics_late", late_window_s=1)
async def late(order_id: int) -> None:
    raise AssertionError("past its late window: never called")


def _user(func: Any) -> RegisteredJob:
    options = options_of(func)
    assert options is not None
    return user_job(func, options)


TEST_REGISTRY = {
    **REGISTRY,
    "note": RegisteredJob("note", note, "Record a call."),
    "explode": RegisteredJob("explode", explode, "Always fail."),
    "metrics_ok": _user(works),
    "metrics_boom": _user(fails),
    "metrics_late": _user(late),
}
RECURRING = [
    {"id": "note-a", "job": "note", "cron": "0 8 * * *", "args": ["a"]},
    {"id": "boom", "job": "explode", "cron": "30 6 * * *"},
    {"id": "late-a", "job": "note", "cron": "0 0 1 1 *", "args": ["b"], "misfire_grace_s": 60},
]


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def runtime_of(client: TestClient) -> Runtime:
    runtime: Runtime = client.app_state["runtime"]
    return runtime


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Deployment:
    deployment = Deployment(tmp_path, database_url, registry=TEST_REGISTRY)
    # Every scrape reads the database: the test sees each change at once.
    deployment.overrides["metrics"] = {"refresh_s": 0}
    deployment.write(RECURRING)
    return deployment


@pytest.fixture
def client(deployment: Deployment) -> Iterator[TestClient]:
    with deployment.client() as client:
        yield client


def create_task(client: TestClient, job_name: str, **extra: Any) -> str:
    body = {"job": job_name, "args": {"order_id": 7}, **extra}
    created = client.post("/tasks", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    task_id: str = created.json()["id"]
    return task_id


def make_late(client: TestClient, task_id: str) -> None:
    """The task came due an hour ago, as if the service had been down since: due now, it
    starts past its late window of 1 s."""
    runtime = runtime_of(client)
    with runtime.sessions() as session:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        session.execute(update(Task).where(Task.id == task_id).values(run_at=an_hour_ago))
        session.commit()
    runtime.scheduler.modify_job(f"task:{task_id}", next_run_time=datetime.now(UTC))


def test_task_attempts_and_the_stored_counts_move(client: TestClient) -> None:
    before = scrape(client)
    assert value(before, "scheduler_app_leader") == 1.0
    for job_name in ("metrics_ok", "metrics_boom", "metrics_late"):
        for outcome in ("success", "error", "failed", "missed"):
            series = "scheduler_app_task_attempts_total"
            assert value(before, series, job=job_name, outcome=outcome) == 0.0
    assert value(before, "scheduler_app_failed_queue") == 0.0

    create_task(client, "metrics_ok")
    create_task(client, "metrics_boom")
    make_late(client, create_task(client, "metrics_late", delay_seconds=60))

    def attempts_counted() -> Samples | None:
        samples = scrape(client)
        series = "scheduler_app_task_attempts_total"
        counted = (
            value(samples, series, job="metrics_ok", outcome="success"),
            value(samples, series, job="metrics_boom", outcome="failed"),
            value(samples, series, job="metrics_late", outcome="missed"),
        )
        return samples if counted == (1.0, 1.0, 1.0) else None

    samples = wait_until(attempts_counted)
    # Read from the database: every status of a job with tasks, 0 included.
    tasks = "scheduler_app_tasks"
    assert value(samples, tasks, job="metrics_ok", status="succeeded") == 1.0
    assert value(samples, tasks, job="metrics_ok", status="scheduled") == 0.0
    assert value(samples, tasks, job="metrics_boom", status="failed") == 1.0
    assert value(samples, tasks, job="metrics_late", status="missed") == 1.0
    assert value(samples, "scheduler_app_failed_queue") == 1.0
    # Each attempt is a run that started: timed, and its lateness measured (from the time its
    # scheduled job fired for, here now).
    for job_name in ("metrics_ok", "metrics_boom", "metrics_late"):
        assert value(samples, "scheduler_app_run_duration_seconds_count", job=job_name) == 1.0
        assert value(samples, "scheduler_app_fire_lag_seconds_count", job=job_name) == 1.0
    # Task attempts are not counted as recurring runs.
    assert not [
        key for key in samples if key[0] == "scheduler_app_runs_total" and "metrics" in str(key)
    ]


def test_recurring_runs_a_missed_one_and_next_fire_times(client: TestClient) -> None:
    runtime = runtime_of(client)
    first = scrape(client)
    for job_id in ("note-a", "boom", "late-a"):
        for outcome in ("success", "error", "missed"):
            assert value(first, "scheduler_app_runs_total", job=job_id, outcome=outcome) == 0.0
    next_note = runtime.scheduler.get_job("note-a").next_run_time
    fire = "scheduler_app_next_fire_timestamp_seconds"
    assert value(first, fire, job="note-a") == pytest.approx(next_note.timestamp())

    now = datetime.now(UTC)
    runtime.scheduler.modify_job("note-a", next_run_time=now)
    runtime.scheduler.modify_job("boom", next_run_time=now)
    # Two hours late, past its misfire_grace_s of 60: recorded missed, not run.
    runtime.scheduler.modify_job("late-a", next_run_time=now - timedelta(hours=2))

    def runs_counted() -> Samples | None:
        samples = scrape(client)
        runs = "scheduler_app_runs_total"
        counted = (
            value(samples, runs, job="note-a", outcome="success"),
            value(samples, runs, job="boom", outcome="error"),
            value(samples, runs, job="late-a", outcome="missed"),
        )
        return samples if counted == (1.0, 1.0, 1.0) else None

    samples = wait_until(runs_counted)
    assert value(samples, "scheduler_app_runs_total", job="late-a", outcome="success") == 0.0
    assert value(samples, "scheduler_app_fire_lag_seconds_count", job="note-a") == 1.0
    assert value(samples, "scheduler_app_fire_lag_seconds_count", job="late-a") is None
    lag = value(samples, "scheduler_app_fire_lag_seconds_sum", job="note-a")
    assert lag is not None
    assert 0.0 <= lag < 30.0
    assert value(samples, "scheduler_app_run_duration_seconds_count", job="boom") == 1.0

    # The next fire time moved on once the job ran: tomorrow's 08:00.
    def moved_on() -> float | None:
        at = value(scrape(client), fire, job="note-a")
        return at if at is not None and at > now.timestamp() else None

    assert wait_until(moved_on) == pytest.approx(
        runtime.scheduler.get_job("note-a").next_run_time.timestamp()
    )
    # A paused job has no next fire time.
    assert client.post("/jobs/boom/pause", headers=ADMIN).status_code == 200
    assert value(scrape(client), fire, job="boom") is None


def test_each_service_counts_on_its_own_registry(client: TestClient) -> None:
    scrape(client)
    assert GLOBAL_REGISTRY.get_sample_value("scheduler_app_leader") is None
    assert GLOBAL_REGISTRY.get_sample_value("scheduler_app_database_errors_total") is None


def test_a_configured_token_is_required(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, metrics={"token": METRICS_TOKEN})
    with TestClient(create_app(settings)) as client:
        for headers in ({}, ADMIN, {"Authorization": "Bearer wrong-token-0123456789"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert METRICS_TOKEN not in refused.text
        samples = scrape(client, {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert value(samples, "scheduler_app_leader") == 1.0


def test_without_a_token_it_is_open_and_the_openapi_document_shows_it(
    tmp_path: Path, database_url: str
) -> None:
    with TestClient(create_app(make_settings(tmp_path, database_url))) as client:
        assert client.get("/metrics").status_code == 200
        operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert set(operation["responses"]) == {"200", "401"}
    assert "text/plain" in operation["responses"]["200"]["content"]
    # The bearer token is documented, and optional.
    assert operation["security"] == [{"MetricsToken": []}, {}]


def statements_sent(engine: Engine) -> list[str]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        sent.append(sql)

    event.listen(engine, "before_cursor_execute", record)
    return sent


def test_a_scrape_costs_one_statement_at_most(engine: Engine) -> None:
    cached = Metrics(engine, refresh_s=60)
    sent = statements_sent(engine)
    first = cached.render().decode()
    assert len(sent) == 1
    assert "scheduler_app_failed_queue 0.0" in first
    for _ in range(3):
        cached.render()
    assert len(sent) == 1, "the cached counts were read again"

    every_time = Metrics(engine, refresh_s=0)
    sent.clear()
    every_time.render()
    every_time.render()
    assert len(sent) == 2


def unreachable(database_url: str, tmp_path: Path) -> Engine:
    """An engine whose every connection fails: a SQLite file that cannot be opened (a
    folder), or a PostgreSQL port where nothing listens."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return create_engine(f"sqlite:///{tmp_path}")
    return create_engine(url.set(host="127.0.0.1", port=free_port()))


def test_database_errors_are_counted_and_the_gauges_wait_for_the_database(
    database_url: str, tmp_path: Path
) -> None:
    engine = unreachable(database_url, tmp_path)
    try:
        metrics = Metrics(engine, refresh_s=60)
        text = metrics.render().decode()
        # Not read: no made-up zeros, and not tried again before refresh_s.
        assert "scheduler_app_failed_queue " not in text
        assert "scheduler_app_database_errors_total 1.0" in text
        metrics.render()
        assert "scheduler_app_database_errors_total 1.0" in metrics.render().decode()
    finally:
        engine.dispose()
