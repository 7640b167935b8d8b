"""Dependencies shared by the routes: the services, a database session, bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from scheduler_app.audit import CLI_USER_AGENT, Actor, Audit
from scheduler_app.audit.service import Source
from scheduler_app.cluster.service import ClusterService
from scheduler_app.cron.reconcile import ReconcilePlan
from scheduler_app.engine.jobs import JobsService
from scheduler_app.engine.quarantine import QuarantineService
from scheduler_app.errors import Unauthorized
from scheduler_app.runtime import Runtime
from scheduler_app.tasks.service import Tasks


# The dependencies that do no I/O are coroutines: FastAPI runs a plain function in its thread
# pool, a hop per request that cost more than the work.
async def get_runtime(request: Request) -> Runtime:
    # The lifespan's state, or (a lifespan composed into the host app's own, whose state it
    # does not yield) what Scheduler.lifespan left on the app.
    runtime = getattr(request.state, "runtime", None) or getattr(
        request.app.state, "scheduler_app", None
    )
    if not isinstance(runtime, Runtime):
        raise RuntimeError(
            "scheduler_app is not running: give the app lifespan=scheduler.lifespan, or enter "
            "`async with scheduler.lifespan(app)` in the app's own lifespan"
        )
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_jobs(runtime: RuntimeDep) -> JobsService:
    return JobsService(
        runtime.sessions,
        runtime.scheduler,
        runtime.executor,
        runtime.clock,
        runtime.read,
        runtime.wake_leader,
    )


JobsDep = Annotated[JobsService, Depends(get_jobs)]


async def get_cluster(runtime: RuntimeDep) -> ClusterService:
    return ClusterService(runtime.engine, runtime.elector, runtime.notifier)


ClusterDep = Annotated[ClusterService, Depends(get_cluster)]


async def get_tasks(runtime: RuntimeDep) -> Tasks:
    return runtime.tasks


TasksDep = Annotated[Tasks, Depends(get_tasks)]


async def get_quarantine(runtime: RuntimeDep) -> QuarantineService:
    return QuarantineService(runtime.sessions, runtime.scheduler)


QuarantineDep = Annotated[QuarantineService, Depends(get_quarantine)]
Reload = Callable[[], Awaitable[ReconcilePlan]]


async def get_reload(runtime: RuntimeDep) -> Reload:
    return runtime.reload


ReloadDep = Annotated[Reload, Depends(get_reload)]

_bearer = HTTPBearer(auto_error=False, description="The admin token or a reminder's cancel token.")


async def get_bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "send 'Authorization: Bearer <token>' (a cancel token or the admin token)"
        )
    return credentials.credentials


BearerTokenDep = Annotated[str, Depends(get_bearer_token)]


async def require_admin(token: BearerTokenDep, runtime: RuntimeDep) -> None:
    """Allow only the admin token, compared in constant time."""
    if not hmac.compare_digest(token.encode(), runtime.admin_token.encode()):
        raise Unauthorized("this route needs the admin token")


AdminDep = Depends(require_admin)


async def get_audit(request: Request, runtime: RuntimeDep) -> Audit:
    """The audit log as this request's caller writes to it (admin routes only: the admin token
    is the credential named)."""
    agent = request.headers.get("user-agent", "")
    source: Source = "cli" if agent.startswith(CLI_USER_AGENT + "/") else "api"
    client = request.client.host if request.client is not None else "an unknown client"
    request_id = request.headers.get("x-request-id")
    return Audit(runtime.audit, Actor(source, f"admin token from {client}", request_id))


AuditDep = Annotated[Audit, Depends(get_audit)]
