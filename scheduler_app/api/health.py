"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Response, status

from scheduler_app.api.deps import RuntimeDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.schemas import Health, Readiness
from scheduler_app.db.engine import ping

router = APIRouter(tags=["health"], route_class=ServiceRoute)

DATABASE_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Answer while the process is up."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Not ready; checks say why.",
            "content": {
                "application/json": {
                    "example": {
                        "status": "unavailable",
                        "role": "leader",
                        "checks": {"scheduler": "running", "database": "unreachable: TimeoutError"},
                    }
                }
            },
        }
    },
)
async def readyz(runtime: RuntimeDep, response: Response) -> Readiness:
    """Ready when the database answers and, in the leader, the scheduler runs. A follower is
    ready too: it serves the whole API while the leader runs the jobs."""
    checks: dict[str, str] = {}
    role: Literal["leader", "follower"] = "leader" if runtime.elector.leading else "follower"
    if not runtime.settings.scheduler.enabled:
        checks["scheduler"] = "disabled in this process"
    elif role == "follower":
        checks["scheduler"] = "following: another process leads"
    else:
        checks["scheduler"] = "running" if runtime.scheduler_running else "not running"
    try:
        await asyncio.wait_for(asyncio.to_thread(ping, runtime.engine), DATABASE_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = checks["database"] == "ok" and checks["scheduler"] != "not running"
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(status="ready" if ready else "unavailable", role=role, checks=checks)
