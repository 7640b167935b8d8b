"""Routes for tasks of your own jobs: POST/GET /tasks, GET/DELETE /tasks/{id}, retry (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from scheduler_app.api.deps import AdminDep, AuditDep, TasksDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.params import Cursor, IdempotencyKey, Limit
from scheduler_app.api.schemas import (
    RetryResult,
    TaskCreate,
    TaskPublic,
    TaskRetryFilter,
    TasksPage,
)
from scheduler_app.db.models import TaskStatus

router = APIRouter(tags=["tasks"], dependencies=[AdminDep], route_class=ServiceRoute)

Responses = dict[int | str, dict[str, Any]]
_AUTH: Responses = {401: {"description": "Missing or wrong admin token."}}
_UNKNOWN: Responses = {404: {"description": "No task with this id."}}


@router.post(
    "/tasks",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskPublic,
    responses={
        **_AUTH,
        422: {"description": "Unknown job, or an argument that does not fit: loc names it."},
    },
)
async def create_task(
    body: TaskCreate,
    tasks: TasksDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> TaskPublic:
    """Store a task that runs a registered job function with these arguments."""
    fields, replayed = await tasks.create(
        body.job,
        body.args,
        run_at=body.run_at,
        delay_seconds=body.delay_seconds,
        idempotency_key=idempotency_key,
    )
    # Under the prefix the router was included with, if any.
    response.headers["Location"] = request.url_for("get_task", task_id=fields["id"]).path
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return TaskPublic.model_validate(fields)


@router.get("/tasks", response_model=TasksPage, responses=_AUTH)
def list_tasks(
    tasks: TasksDep,
    job: Annotated[str | None, Query(max_length=100)] = None,
    status: TaskStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TasksPage:
    """List tasks of your jobs, most recently changed first; filter by job and status."""
    page = tasks.page(job=job, status=status, limit=limit, cursor=cursor)
    return TasksPage(
        items=[TaskPublic.model_validate(item) for item in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/tasks/{task_id}", response_model=TaskPublic, responses={**_AUTH, **_UNKNOWN})
def get_task(task_id: str, tasks: TasksDep) -> TaskPublic:
    """Show a task: its status, attempts and last error."""
    return TaskPublic.model_validate(tasks.show(task_id))


@router.delete(
    "/tasks/{task_id}",
    response_model=TaskPublic,
    responses={**_AUTH, **_UNKNOWN, 409: {"description": "Already finished."}},
)
def cancel_task(task_id: str, tasks: TasksDep, audit: AuditDep) -> TaskPublic:
    """Cancel a scheduled task; cancelling a cancelled one again is a no-op."""
    with audit.recorded("cancel_task", task_id):
        return TaskPublic.model_validate(tasks.cancel(task_id))


@router.post(
    "/tasks/{task_id}/retry",
    response_model=TaskPublic,
    responses={
        **_AUTH,
        **_UNKNOWN,
        409: {"description": "Neither failed or missed nor waiting for a retry."},
    },
)
def retry_task(task_id: str, tasks: TasksDep, audit: AuditDep) -> TaskPublic:
    """Run a task again now: a failed or missed one with a fresh set of attempts, one waiting
    for its automatic retry at once (retry now), keeping its attempts."""
    with audit.recorded("retry_task", task_id):
        return TaskPublic.model_validate(tasks.retry(task_id))


@router.post("/tasks/retry", response_model=RetryResult, responses=_AUTH)
def retry_tasks(body: TaskRetryFilter, tasks: TasksDep, audit: AuditDep) -> RetryResult:
    """Run again now every failed (or missed) task that matches the filter."""
    with audit.recorded("retry_tasks", body.job) as outcome:
        retried = tasks.retry_matching(
            job=body.job, status=TaskStatus(body.status), limit=body.limit
        )
        outcome.detail = f"{len(retried)} {body.status} task(s) retried"
    return RetryResult(requeued=retried)
