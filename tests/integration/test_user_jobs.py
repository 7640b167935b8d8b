"""Your own job functions, from a module outside the repository named by job_modules: tasks
created over HTTP and from Python run with their arguments, wrong arguments are refused at
creation, failures are retried then 'failed', and an operator retry runs them again."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from scheduler_app import DurableTasks, Scheduler
from scheduler_app.app import create_app
from scheduler_app.db.models import Task
from scheduler_app.errors import ConfigError
from scheduler_app.runtime import Runtime
from scheduler_app.tasks.arguments import InvalidArguments
from tests.support import ADMIN, make_settings, wait_until

USER_MODULE = '''
    from __future__ import annotations

    import json
    from datetime import datetime
    from pathlib import Path

    from scheduler_app import job


    @job("record_order_{tag}", max_attempts=3, retry_base_s=0.05, retry_max_s=0.1)
    async def record_order(order_id: int, path: str, placed_at: datetime | None = None) -> str:
        """Write down the order it was given."""
        record = {{"order_id": order_id, "placed_at": placed_at and placed_at.isoformat()}}
        with Path(path).open("a") as log:
            log.write(json.dumps(record) + "\\n")
        return "recorded"


    @job("flaky_{tag}", max_attempts=2, retry_base_s=0.05, retry_max_s=0.05)
    def flaky(path: str) -> None:
        """A plain function, run in a thread, that always fails."""
        with Path(path).open("a") as log:
            log.write("try\\n")
        raise RuntimeError("boom")
'''


@dataclass
class UserJobs:
    client: TestClient
    runtime: Runtime
    module: Any
    tag: str
    log: Path

    def create(self, job: str, args: dict[str, Any], **extra: Any) -> Any:
        body = {"job": f"{job}_{self.tag}", "args": args, **extra}
        return self.client.post("/tasks", json=body, headers=ADMIN)

    def show(self, task_id: str) -> dict[str, Any]:
        response = self.client.get(f"/tasks/{task_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def wait_for(self, task_id: str, status: str, timeout_s: float = 10.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            shown = self.show(task_id)
            return shown if shown["status"] == status else None

        return wait_until(probe, timeout_s=timeout_s)

    def records(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def write_module(folder: Path, tag: str) -> str:
    name = f"shop_jobs_{tag}"
    (folder / f"{name}.py").write_text(textwrap.dedent(USER_MODULE.format(tag=tag)))
    return name


@pytest.fixture
def user_jobs(tmp_path: Path, database_url: str) -> Iterator[UserJobs]:
    tag = uuid.uuid4().hex[:8]
    folder = tmp_path / "deployment"
    folder.mkdir()
    module = write_module(folder, tag)
    settings = make_settings(
        tmp_path, database_url, job_modules=[module], config_file=folder / "config.yaml"
    )
    with TestClient(create_app(settings)) as client:
        import sys

        yield UserJobs(
            client, client.app_state["runtime"], sys.modules[module], tag, tmp_path / "log.txt"
        )


def test_a_task_created_over_http_runs_with_its_arguments(user_jobs: UserJobs) -> None:
    log = str(user_jobs.log)
    created = user_jobs.create(
        "record_order", {"order_id": "42", "path": log, "placed_at": "2030-01-02T03:04:05+01:00"}
    )
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["job"] == f"record_order_{user_jobs.tag}"
    assert task["status"] == "scheduled"
    assert task["args"] == {"order_id": 42, "path": log, "placed_at": "2030-01-02T03:04:05+01:00"}
    assert created.headers["Location"] == f"/tasks/{task['id']}"

    done = user_jobs.wait_for(task["id"], "succeeded")
    assert done["attempts"] == 1
    assert [json.loads(line) for line in user_jobs.records()] == [
        {"order_id": 42, "placed_at": "2030-01-02T03:04:05+01:00"}
    ]
    runs = user_jobs.client.get(f"/jobs/task:{task['id']}/runs", headers=ADMIN).json()
    assert [(run["outcome"], run["result"]) for run in runs["items"]] == [("success", "recorded")]


@pytest.mark.parametrize(
    ("job", "args", "location"),
    [
        ("record_order", {"path": "x"}, ["body", "args", "order_id"]),
        ("record_order", {"order_id": "forty-two", "path": "x"}, ["body", "args", "order_id"]),
        ("record_order", {"order_id": 1, "path": "x", "bogus": 1}, ["body", "args", "bogus"]),
        ("no_such_job", {}, ["body", "job"]),
    ],
)
def test_wrong_arguments_are_refused_at_creation_naming_them(
    user_jobs: UserJobs, job: str, args: dict[str, Any], location: list[str]
) -> None:
    refused = user_jobs.create(job, args)
    assert refused.status_code == 422, refused.text
    assert [error["loc"] for error in refused.json()["detail"]] == [location]
    with Session(user_jobs.runtime.engine) as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0


def test_a_task_created_from_python_runs_and_wrong_arguments_raise(user_jobs: UserJobs) -> None:
    portal = user_jobs.client.portal
    assert portal is not None
    tasks = user_jobs.runtime.tasks
    task_id = portal.call(tasks.add_task, user_jobs.module.record_order, 7, str(user_jobs.log))
    user_jobs.wait_for(task_id, "succeeded")
    later = portal.call(
        lambda: tasks.schedule(
            user_jobs.module.record_order, order_id=8, path=str(user_jobs.log), delay_seconds=0.2
        )
    )
    user_jobs.wait_for(later, "succeeded")
    assert [json.loads(line)["order_id"] for line in user_jobs.records()] == [7, 8]

    with pytest.raises(InvalidArguments, match="is required") as missing:
        portal.call(tasks.add_task, user_jobs.module.record_order, 7)
    assert missing.value.location == ("args", "path")
    with pytest.raises(ValueError, match="not a registered job"):
        portal.call(tasks.add_task, print, 1)


def test_a_raising_job_is_retried_then_failed_and_an_operator_retry_runs_it_again(
    user_jobs: UserJobs,
) -> None:
    created = user_jobs.create("flaky", {"path": str(user_jobs.log)})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    failed = user_jobs.wait_for(task_id, "failed")
    assert failed["attempts"] == 2
    assert failed["last_error"] == "gave up after 2 attempts: RuntimeError: boom"
    assert user_jobs.records() == ["try", "try"]
    listed = user_jobs.client.get(
        "/tasks", params={"status": "failed", "job": f"flaky_{user_jobs.tag}"}, headers=ADMIN
    ).json()
    assert [item["id"] for item in listed["items"]] == [task_id]

    retried = user_jobs.client.post(f"/tasks/{task_id}/retry", headers=ADMIN)
    assert retried.status_code == 200, retried.text
    user_jobs.wait_for(task_id, "failed")
    wait_until(lambda: len(user_jobs.records()) == 4, timeout_s=5)
    # A finished task cannot be cancelled.
    assert user_jobs.client.delete(f"/tasks/{task_id}", headers=ADMIN).status_code == 409


def test_a_scheduled_task_can_be_cancelled_and_is_listed_with_its_job(
    user_jobs: UserJobs,
) -> None:
    created = user_jobs.create(
        "record_order", {"order_id": 1, "path": str(user_jobs.log)}, delay_seconds=3600
    )
    task_id = created.json()["id"]
    # Only failed or missed tasks are retried.
    assert user_jobs.client.post(f"/tasks/{task_id}/retry", headers=ADMIN).status_code == 409
    jobs = user_jobs.client.get("/jobs", params={"kind": "task"}, headers=ADMIN).json()
    assert [item["id"] for item in jobs["items"]] == [f"task:{task_id}"]
    cancelled = user_jobs.client.delete(f"/tasks/{task_id}", headers=ADMIN)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert user_jobs.client.delete(f"/tasks/{task_id}", headers=ADMIN).status_code == 200
    jobs = user_jobs.client.get("/jobs", params={"kind": "task"}, headers=ADMIN).json()
    assert jobs["items"] == []
    assert user_jobs.client.get("/tasks/nope", headers=ADMIN).status_code == 404


def test_an_idempotency_key_returns_the_first_task(user_jobs: UserJobs) -> None:
    body = {"order_id": 5, "path": str(user_jobs.log)}
    headers = {**ADMIN, "Idempotency-Key": "order-5"}
    first = user_jobs.client.post(
        "/tasks", json={"job": f"record_order_{user_jobs.tag}", "args": body}, headers=headers
    )
    again = user_jobs.client.post(
        "/tasks", json={"job": f"record_order_{user_jobs.tag}", "args": body}, headers=headers
    )
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = user_jobs.client.post(
        "/tasks",
        json={"job": f"record_order_{user_jobs.tag}", "args": {**body, "order_id": 6}},
        headers=headers,
    )
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_a_task_added_in_the_callers_transaction_exists_only_if_it_commits(
    user_jobs: UserJobs, database_url: str
) -> None:
    tasks = user_jobs.runtime.tasks
    record_order = user_jobs.module.record_order
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            tasks.add_task_in(session, record_order, 1, str(user_jobs.log))
            session.rollback()
        with Session(engine) as session:
            kept = tasks.add_task_in(session, record_order, 2, str(user_jobs.log))
            session.commit()
        user_jobs.wait_for(kept, "succeeded")
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Task)) == 1
    finally:
        engine.dispose()
    assert [json.loads(line)["order_id"] for line in user_jobs.records()] == [2]


def test_a_name_registered_twice_or_a_module_that_fails_stops_start_up(
    tmp_path: Path, database_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    first, second = write_module(tmp_path, tag), write_module(tmp_path, tag + "b")
    (tmp_path / f"{second}.py").write_text(
        (tmp_path / f"{second}.py").read_text().replace(f'_{tag}b"', f'_{tag}"')
    )
    settings = make_settings(
        tmp_path, database_url, job_modules=[first, second], config_file=tmp_path / "c.yaml"
    )
    with pytest.raises(ConfigError) as twice, TestClient(create_app(settings)):
        pass
    assert twice.value.message == (
        f"job_modules: {second}: job 'record_order_{tag}' is registered twice (also in {first})"
    )
    assert "\n" not in twice.value.message

    (tmp_path / "broken_jobs.py").write_text("import no_such_module_here\n")
    settings = make_settings(
        tmp_path, database_url, job_modules=["broken_jobs"], config_file=tmp_path / "c.yaml"
    )
    with pytest.raises(ConfigError) as broken, TestClient(create_app(settings)):
        pass
    assert broken.value.message == (
        "job_modules: broken_jobs: cannot be imported: ModuleNotFoundError: "
        "No module named 'no_such_module_here'"
    )


def test_a_cron_entry_of_config_yaml_may_name_your_job(tmp_path: Path, database_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    module = write_module(tmp_path, tag)
    log = tmp_path / "log.txt"
    entry = {
        "id": "nightly-order",
        "job": f"record_order_{tag}",
        "cron": "0 3 * * *",
        "kwargs": {"order_id": 9, "path": str(log)},
    }
    settings = make_settings(
        tmp_path,
        database_url,
        job_modules=[module],
        config_file=tmp_path / "config.yaml",
        jobs=[entry],
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/jobs/nightly-order/run", headers=ADMIN).status_code == 202
        wait_until(lambda: (log.exists() and log.read_text()) or None, timeout_s=5)
    assert [json.loads(line)["order_id"] for line in log.read_text().splitlines()] == [9]

    refused = make_settings(
        tmp_path,
        database_url,
        job_modules=[module],
        config_file=tmp_path / "config.yaml",
        jobs=[{**entry, "kwargs": {"order_id": "nine", "path": str(log)}}],
    )
    with (
        pytest.raises(ConfigError, match=r"jobs\[0\] 'nightly-order': argument order_id"),
        TestClient(create_app(refused)),
    ):
        pass


def test_inside_your_own_app_under_a_prefix(tmp_path: Path, database_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    module = write_module(tmp_path, tag)
    settings = make_settings(
        tmp_path, database_url, job_modules=[module], config_file=tmp_path / "config.yaml"
    )
    scheduler = Scheduler(settings)
    app = FastAPI(lifespan=scheduler.lifespan)
    app.include_router(scheduler.router, prefix="/scheduler")
    log = tmp_path / "log.txt"

    @app.post("/orders/{order_id}")
    async def place(order_id: int, tasks: DurableTasks) -> dict[str, str]:
        import sys

        record = sys.modules[module].record_order
        return {"task": await tasks.add_task(record, order_id, str(log))}

    with TestClient(app) as client:
        task_id = client.post("/orders/3").json()["task"]
        shown = wait_until(
            lambda: (
                (r := client.get(f"/scheduler/tasks/{task_id}", headers=ADMIN).json())["status"]
                == "succeeded"
                and r
            ),
            timeout_s=5,
        )
        assert shown["args"] == {"order_id": 3, "path": str(log)}
        created = client.post(
            "/scheduler/tasks",
            json={"job": f"record_order_{tag}", "args": {"order_id": 4, "path": str(log)}},
            headers=ADMIN,
        )
        assert created.headers["Location"] == f"/scheduler/tasks/{created.json()['id']}"
        assert client.get("/scheduler/readyz").status_code == 200


def test_errors_keep_their_status_inside_your_own_app(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, job_modules=[])
    scheduler = Scheduler(settings)
    # An app of your own: none of the service's exception handlers.
    app = FastAPI(lifespan=scheduler.lifespan)
    app.include_router(scheduler.router, prefix="/scheduler")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/scheduler/tasks").status_code == 401
        assert client.get("/scheduler/tasks/nope", headers=ADMIN).status_code == 404
        unknown = client.post("/scheduler/tasks", json={"job": "nope"}, headers=ADMIN)
        assert unknown.status_code == 422
        assert unknown.json()["detail"][0]["loc"] == ["body", "job"]
        bad = client.post("/scheduler/subscribe", json={"email": "x"})
        assert bad.status_code == 422
        token = client.post(
            "/scheduler/subscribe", json={"email": "ada@example.com", "delay_seconds": 60}
        ).json()["cancel_token"]
        assert client.get("/scheduler/reminders/nope", headers=ADMIN).status_code == 404
        assert (
            client.get(
                "/scheduler/reminders/nope", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 404
        )
