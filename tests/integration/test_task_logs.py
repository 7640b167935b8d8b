"""The lines logged about a task name it and its job: the job function's own lines (async, or
run in a thread), and the service's about the attempt's outcome. A task added while serving a
request is no part of that request: its lines carry no request id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from scheduler_app import DurableTasks, JobFailure, RequestIdMiddleware, Scheduler, TaskContext, job
from tests.log_capture import captured_log
from tests.support import ADMIN, make_settings, wait_until

shop = logging.getLogger("shop")


@job("logged_order", max_attempts=2, retry_base_s=0.05, retry_max_s=0.05)
async def logged_order(ctx: TaskContext, order_id: int) -> str:
    assert ctx.task is not None
    shop.info("order %d, attempt %d", order_id, ctx.task.attempts)
    if ctx.task.attempts == 1:
        raise JobFailure("the warehouse is busy", transient=True)
    return "packed"


@job("logged_receipt")
def logged_receipt(order_id: int) -> None:
    shop.info("receipt for order %d", order_id)


def test_a_tasks_lines_name_it_and_its_job(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, job_modules=[])
    scheduler = Scheduler(settings)
    app = FastAPI(lifespan=scheduler.lifespan)
    app.include_router(scheduler.router)
    app.add_middleware(RequestIdMiddleware)

    @app.post("/orders/{order_id}")
    async def place(order_id: int, tasks: DurableTasks) -> dict[str, str]:
        shop.info("placing order %d", order_id)
        return {
            "order": await tasks.add_task(logged_order, order_id),
            "receipt": await tasks.add_task(logged_receipt, order_id),
        }

    with captured_log("json") as log, TestClient(app) as client:
        placed = client.post("/orders/7")
        assert placed.status_code == 200, placed.text
        ids = placed.json()

        def status(task_id: str) -> Any:
            return client.get(f"/tasks/{task_id}", headers=ADMIN).json()["status"]

        wait_until(lambda: status(ids["order"]) == "succeeded" and status(ids["receipt"]))
        wait_until(lambda: status(ids["receipt"]) == "succeeded")

    [request_line] = log.find("placing order 7")
    assert request_line["request_id"] == placed.headers["X-Request-ID"]
    attempts = log.find("order 7, attempt")
    assert [line["message"] for line in attempts] == ["order 7, attempt 1", "order 7, attempt 2"]
    # The executor's line about the failed attempt, after the job function returned.
    [retry] = log.find("the warehouse is busy; next attempt at")
    [receipt] = log.find("receipt for order 7")
    for line in (*attempts, retry):
        assert (line.get("job"), line.get("task_id")) == ("logged_order", ids["order"]), line
    assert (receipt.get("job"), receipt.get("task_id")) == ("logged_receipt", ids["receipt"])
    for line in (*attempts, retry, receipt):
        assert "request_id" not in line, line
