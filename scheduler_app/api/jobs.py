"""Operator routes for jobs, cron and reminder alike: /jobs and /runs (admin token)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.orm import Session

from scheduler_app.api.deps import AdminDep, RuntimeDep, SessionDep
from scheduler_app.api.schemas import JobDetail, JobsPage, RunAccepted, RunsPage
from scheduler_app.engine import jobs as job_admin

router = APIRouter(tags=["jobs"], dependencies=[AdminDep])

JobId = Annotated[str, Path(max_length=200, description="e.g. daily-report or reminder:<uuid>")]
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(max_length=1000, description="`next_cursor` of the previous page.")
]
Outcome = Literal["success", "error", "missed", "running"]

Responses = dict[int | str, dict[str, Any]]
_AUTH: Responses = {401: {"description": "Missing or wrong admin token."}}
_UNKNOWN: Responses = {404: {"description": "No scheduled job with this id."}}


@router.get("/jobs", response_model=JobsPage, responses=_AUTH)
async def list_jobs(
    runtime: RuntimeDep,
    kind: Literal["cron", "reminder"] | None = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Part of id or description.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """List scheduled jobs by next run time, paused jobs last."""

    def page_json(session: Session) -> str:
        page = job_admin.list_jobs(session, kind=kind, q=q, limit=limit, cursor=cursor)
        return page.model_dump_json()

    # The query and the JSON in one step: a plain route with a session takes four hops to a
    # worker thread (opening the session, the query, FastAPI's validation of the answer, closing
    # the session), and while deliveries keep the interpreter busy each hop waits its turn for
    # it. Without a search, a page follows the listing index.
    body = await runtime.read(page_json, indexed=q is None)
    return Response(body, media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobDetail, responses={**_AUTH, **_UNKNOWN})
def get_job(job_id: JobId, session: SessionDep) -> JobDetail:
    """Show one job and its most recent runs."""
    return job_admin.get_job(session, job_id)


@router.get("/jobs/{job_id}/runs", response_model=RunsPage, responses={**_AUTH, **_UNKNOWN})
def list_job_runs(
    job_id: JobId, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> RunsPage:
    """List a job's runs, newest first (also for a reminder already delivered)."""
    job_admin.require_runs_or_job(session, job_id)
    return job_admin.list_runs(session, job_id=job_id, outcome=None, limit=limit, cursor=cursor)


@router.delete(
    "/jobs/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        **_AUTH,
        **_UNKNOWN,
        409: {"description": "Declared in config.yaml: pause it or edit the file."},
    },
)
def cancel_job(job_id: JobId, runtime: RuntimeDep, session: SessionDep) -> Response:
    """Cancel a job; for a reminder it becomes 'cancelled'. Repeating it answers 204 again."""
    job_admin.cancel_job(session, runtime.scheduler, job_id, runtime.clock())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/jobs/{job_id}/pause", response_model=JobDetail, responses={**_AUTH, **_UNKNOWN})
def pause_job(job_id: JobId, runtime: RuntimeDep, session: SessionDep) -> JobDetail:
    """Pause a job; it stays paused across restarts and config reloads."""
    job_admin.pause_job(session, runtime.scheduler, job_id, runtime.clock())
    return job_admin.get_job(session, job_id)


@router.post(
    "/jobs/{job_id}/resume",
    response_model=JobDetail,
    responses={**_AUTH, **_UNKNOWN, 409: {"description": "Disabled in config.yaml."}},
)
def resume_job(job_id: JobId, runtime: RuntimeDep, session: SessionDep) -> JobDetail:
    """Resume a paused job from its next regular time."""
    job_admin.resume_job(session, runtime.scheduler, job_id, runtime.clock())
    return job_admin.get_job(session, job_id)


@router.post(
    "/jobs/{job_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={**_AUTH, **_UNKNOWN, 409: {"description": "The job is running now."}},
)
async def run_job(job_id: JobId, runtime: RuntimeDep) -> RunAccepted:
    """Run a job once now, outside its schedule; its next run time does not change."""

    name, args, kwargs = await asyncio.to_thread(runtime.in_session, job_admin.runnable, job_id)
    run_id = await runtime.executor.run_now(job_id, name, args, kwargs)
    return RunAccepted(job_id=job_id, run_id=run_id)


@router.get("/runs", response_model=RunsPage, responses=_AUTH)
def list_runs(
    session: SessionDep, outcome: Outcome | None = None, limit: Limit = 50, cursor: Cursor = None
) -> RunsPage:
    """List recent runs across all jobs, newest first; `outcome=error` for what broke."""
    return job_admin.list_runs(session, job_id=None, outcome=outcome, limit=limit, cursor=cursor)
