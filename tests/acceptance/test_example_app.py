"""The example app (examples/fastapi_app) under uvicorn: a task enqueued with DurableTasks
survives a SIGKILL right after the response and runs exactly once; a task added in the
caller's own transaction exists only if that transaction commits."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.service import Service, service_environment

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"


class ExampleApp(Service):
    ready_path = "/scheduler/readyz"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--app-dir",
            str(EXAMPLE),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]

    def welcomed(self) -> list[str]:
        path = self.workdir / "var" / "welcomed.txt"
        return path.read_text().splitlines() if path.exists() else []

    def task(self, task_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/scheduler/tasks/{task_id}", headers=self.admin_headers())
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def wait_for(self, task_id: str, status: str, timeout_s: float = 10.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            shown = self.task(task_id)
            return shown if shown["status"] == status else None

        return self.wait_until(f"task {task_id} {status}", probe, timeout_s=timeout_s)


@pytest.fixture
def example(tmp_path: Path, database_url: str) -> Iterator[ExampleApp]:
    variables = service_environment(
        tmp_path, database_url, {"EXAMPLE_CONFIG": str(EXAMPLE / "config.yaml")}
    )
    app = ExampleApp(tmp_path, variables)
    yield app
    app.close()


def test_a_task_enqueued_before_a_sigkill_runs_exactly_once_after_the_restart(
    example: ExampleApp,
) -> None:
    # The first process is killed while the task is under way (it waits 30 s before writing).
    example.env["EXAMPLE_WELCOME_DELAY_S"] = "30"
    example.start()
    with example.client() as client:
        response = client.post("/register", json={"email": "ada@example.com", "name": "Ada"})
    assert response.status_code == 200, response.text
    task_id = response.json()["task"]
    example.wait_until(
        "the task under way", lambda: example.task(task_id)["status"] == "running" or None
    )
    example.kill()
    assert example.welcomed() == []

    example.env["EXAMPLE_WELCOME_DELAY_S"] = "0"
    example.start()
    done = example.wait_until(
        "the task done after the restart",
        lambda: ((shown := example.task(task_id))["status"] == "succeeded" and shown) or None,
        timeout_s=15,
    )
    assert done["attempts"] == 2  # the interrupted one, and the one after the restart
    assert example.welcomed() == [f"{task_id} ada@example.com Ada"]


def test_a_task_in_the_callers_transaction_exists_only_if_it_commits(
    example: ExampleApp,
) -> None:
    example.start()
    with example.client() as client:
        rolled_back = client.post(
            "/signup", params={"fail": "true"}, json={"email": "bob@example.com", "name": "Bob"}
        )
        committed = client.post("/signup", json={"email": "eve@example.com", "name": "Eve"})
        assert rolled_back.status_code == committed.status_code == 200
        task_id = committed.json()["task"]
        example.wait_until(
            "the committed task done",
            lambda: example.task(task_id)["status"] == "succeeded" or None,
        )
        listed = client.get("/scheduler/tasks", headers=example.admin_headers()).json()
    assert [item["id"] for item in listed["items"]] == [task_id]
    assert example.welcomed() == [f"{task_id} eve@example.com Eve"]
