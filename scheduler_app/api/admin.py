"""Operator routes for the service as a whole: reload the configuration, quarantined jobs."""

from __future__ import annotations

from fastapi import APIRouter, Response

from scheduler_app.api.deps import AdminDep, AuditDep, QuarantineDep, ReloadDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.schemas import QuarantinedJobPublic, ReloadResult

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[AdminDep], route_class=ServiceRoute
)


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses={
        401: {"description": "Missing or wrong admin token."},
        422: {"description": "The file is invalid; nothing was changed. `detail` lists why."},
    },
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
    responses={401: {"description": "Missing or wrong admin token."}},
)
def list_quarantined_jobs(quarantine: QuarantineDep) -> list[QuarantinedJobPublic]:
    """Stored jobs that could not be restored (renamed function, corrupt data), set aside."""
    return quarantine.list_jobs()


@router.post(
    "/quarantined-jobs/{job_id}/restore",
    status_code=204,
    response_class=Response,
    responses={
        401: {"description": "Missing or wrong admin token."},
        404: {"description": "No quarantined job with this id."},
        409: {"description": "A job with this id is scheduled already."},
    },
)
def restore_quarantined_job(job_id: str, quarantine: QuarantineDep, audit: AuditDep) -> Response:
    """Put a set-aside job back after the cause was repaired (e.g. the code deployed again)."""
    with audit.recorded("restore_quarantined_job", job_id):
        quarantine.restore_job(job_id)
    return Response(status_code=204)
