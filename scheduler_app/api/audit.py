"""The audit log of operator actions: GET /admin/audit (admin token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from scheduler_app.api.deps import AdminDep, RuntimeDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.params import Cursor, Limit
from scheduler_app.api.responses import ADMIN, DATABASE, INVALID, merge
from scheduler_app.api.schemas import AuditEntryPublic, AuditPage
from scheduler_app.audit.service import Source

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[AdminDep], route_class=ServiceRoute
)


@router.get(
    "/audit",
    response_model=AuditPage,
    responses=merge(ADMIN, INVALID, DATABASE),
)
def list_audit_entries(
    runtime: RuntimeDep,
    source: Source | None = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. pause_job.")] = None,
    target: Annotated[str | None, Query(max_length=300, description="A job or task id.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditPage:
    """Every operator action (API, command line, dashboard), newest first: who, what, when and
    what came of it."""
    page = runtime.audit.page(
        source=source, action=action, target=target, limit=limit, cursor=cursor
    )
    return AuditPage(
        items=[AuditEntryPublic.model_validate(item) for item in page.items],
        next_cursor=page.next_cursor,
    )
