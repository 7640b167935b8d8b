"""Operator routes for the service as a whole: reload the configuration, quarantined jobs."""

from __future__ import annotations

from fastapi import APIRouter, Response

from scheduler_app.api.deps import AdminDep, AuditDep, QuarantineDep, ReloadDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.responses import (
    ADMIN,
    DATABASE,
    INVALID,
    InvalidConfiguration,
    conflict,
    merge,
    not_found,
)
from scheduler_app.api.schemas import QUARANTINED_EXAMPLES, QuarantinedJobPublic, ReloadResult

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[AdminDep], route_class=ServiceRoute
)


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses=merge(
        ADMIN,
        {
            422: {
                "model": InvalidConfiguration,
                "description": "The file is invalid; nothing was changed. `detail` lists why, "
                "one line each.",
            }
        },
        DATABASE,
    ),
)
async def reload_configuration(reload: ReloadDep, audit: AuditDep) -> ReloadResult:
    """Re-read config.yaml and bring the cron jobs in line with it."""
    async with audit.recorded_async("reload_configuration") as outcome:
        result = ReloadResult(**(await reload()).summary())
        outcome.detail = result.model_dump_json()
    return result


@router.get(
    "/quarantined-jobs",
    response_model=list[QuarantinedJobPublic],
    responses=merge(
        {200: {"content": {"application/json": {"example": QUARANTINED_EXAMPLES}}}},
        ADMIN,
        DATABASE,
    ),
)
def list_quarantined_jobs(quarantine: QuarantineDep) -> list[QuarantinedJobPublic]:
    """Stored jobs that could not be restored (renamed function, corrupt data), set aside."""
    return quarantine.list_jobs()


@router.post(
    "/quarantined-jobs/{job_id}/restore",
    status_code=204,
    response_class=Response,
    responses=merge(
        ADMIN,
        not_found("No quarantined job with this id.", "no quarantined job with id 'weekly-digest'"),
        conflict(
            "A job with this id is scheduled already.",
            "a job with id 'weekly-digest' is scheduled again already; delete this copy",
        ),
        INVALID,
        DATABASE,
    ),
)
def restore_quarantined_job(job_id: str, quarantine: QuarantineDep, audit: AuditDep) -> Response:
    """Put a set-aside job back after the cause was repaired (e.g. the code deployed again)."""
    with audit.recorded("restore_quarantined_job", job_id):
        quarantine.restore_job(job_id)
    return Response(status_code=204)
