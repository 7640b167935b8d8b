"""Operator routes for jobs, cron and reminder alike: /jobs (admin token)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status

from scheduler_app.api.deps import AdminDep, AuditDep, JobsDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.params import Cursor, Limit
from scheduler_app.api.schemas import JobDetail, JobsPage, RunAccepted, RunsPage

router = APIRouter(tags=["jobs"], dependencies=[AdminDep], route_class=ServiceRoute)

JobId = Annotated[str, Path(max_length=200, description="e.g. daily-report or reminder:<uuid>")]
Responses = dict[int | str, dict[str, Any]]
_AUTH: Responses = {401: {"description": "Missing or wrong admin token."}}
_UNKNOWN: Responses = {404: {"description": "No scheduled job with this id."}}


@router.get("/jobs", response_model=JobsPage, responses=_AUTH)
async def list_jobs(
    jobs: JobsDep,
    kind: Literal["cron", "reminder", "task"] | None = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Part of id or description.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """List scheduled jobs by next run time, paused jobs last."""
    body = await jobs.page_json(kind=kind, q=q, limit=limit, cursor=cursor)
    return Response(body, media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobDetail, responses={**_AUTH, **_UNKNOWN})
def get_job(job_id: JobId, jobs: JobsDep) -> JobDetail:
    """Show one job and its most recent runs."""
    return jobs.detail(job_id)


@router.get("/jobs/{job_id}/runs", response_model=RunsPage, responses={**_AUTH, **_UNKNOWN})
def list_job_runs(
    job_id: JobId, jobs: JobsDep, limit: Limit = 50, cursor: Cursor = None
) -> RunsPage:
    """List a job's runs, newest first (also for a reminder already delivered)."""
    return jobs.runs(job_id=job_id, outcome=None, limit=limit, cursor=cursor)


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
def cancel_job(job_id: JobId, jobs: JobsDep, audit: AuditDep) -> Response:
    """Cancel a job; for a reminder it becomes 'cancelled'. Repeating it answers 204 again."""
    with audit.recorded("cancel_job", job_id):
        jobs.cancel(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/jobs/{job_id}/pause", response_model=JobDetail, responses={**_AUTH, **_UNKNOWN})
def pause_job(job_id: JobId, jobs: JobsDep, audit: AuditDep) -> JobDetail:
    """Pause a job; it stays paused across restarts and config reloads."""
    with audit.recorded("pause_job", job_id):
        return jobs.pause(job_id)


@router.post(
    "/jobs/{job_id}/resume",
    response_model=JobDetail,
    responses={**_AUTH, **_UNKNOWN, 409: {"description": "Disabled in config.yaml."}},
)
def resume_job(job_id: JobId, jobs: JobsDep, audit: AuditDep) -> JobDetail:
    """Resume a paused job from its next regular time."""
    with audit.recorded("resume_job", job_id):
        return jobs.resume(job_id)


@router.post(
    "/jobs/{job_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={**_AUTH, **_UNKNOWN, 409: {"description": "The job is running now."}},
)
async def run_job(job_id: JobId, jobs: JobsDep, audit: AuditDep) -> RunAccepted:
    """Run a job once now, outside its schedule; its next run time does not change."""
    async with audit.recorded_async("run_job", job_id) as outcome:
        run_id = await jobs.run_now(job_id)
        outcome.detail = f"run {run_id}"
    return RunAccepted(job_id=job_id, run_id=run_id)
