"""Operator routes for the run history of every job: /runs (admin token)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from scheduler_app.api.deps import AdminDep, JobsDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.params import Cursor, Limit
from scheduler_app.api.responses import ADMIN, DATABASE, INVALID, merge
from scheduler_app.api.schemas import RunsPage

router = APIRouter(tags=["jobs"], dependencies=[AdminDep], route_class=ServiceRoute)

Outcome = Literal["success", "error", "missed", "running"]


@router.get("/runs", response_model=RunsPage, responses=merge(ADMIN, INVALID, DATABASE))
def list_runs(
    jobs: JobsDep, outcome: Outcome | None = None, limit: Limit = 50, cursor: Cursor = None
) -> RunsPage:
    """List recent runs across all jobs, newest first; `outcome=error` for what broke."""
    return jobs.runs(job_id=None, outcome=outcome, limit=limit, cursor=cursor)
