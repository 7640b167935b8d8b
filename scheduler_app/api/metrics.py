"""GET /metrics: the service's Prometheus metrics (metrics.token, when set, guards it)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler_app.api.deps import RuntimeDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.responses import Responses, merge, unauthorized
from scheduler_app.errors import Unauthorized
from scheduler_app.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"], route_class=ServiceRoute)

_scraper = HTTPBearer(
    auto_error=False,
    scheme_name="MetricsToken",
    description="metrics.token, when set (not the admin token).",
)


async def require_metrics_token(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scraper)],
) -> None:
    """Open unless metrics.token is set; then only that token, compared in constant time.
    The admin token is not a scraper's: Prometheus's configuration holds the token it sends."""
    expected = runtime.settings.metrics.token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("this route needs 'Authorization: Bearer <metrics.token>'")


_EXAMPLE = """\
# HELP scheduler_app_leader 1 while this process leads (runs the scheduler), else 0.
# TYPE scheduler_app_leader gauge
scheduler_app_leader 1.0
# HELP scheduler_app_failed_queue Tasks and reminders in status failed.
# TYPE scheduler_app_failed_queue gauge
scheduler_app_failed_queue 2.0
"""
_RESPONSES: Responses = merge(
    {
        200: {
            "description": "The metrics in the Prometheus text format (version 0.0.4).",
            "content": {"text/plain": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        }
    },
    unauthorized(
        "metrics.token is set, and the request did not send it.",
        "this route needs 'Authorization: Bearer <metrics.token>'",
    ),
)


@router.get(
    "/metrics",
    response_class=Response,
    responses=_RESPONSES,
    dependencies=[Depends(require_metrics_token)],
    # The token is optional (metrics.token unset: open): the empty requirement says so.
    openapi_extra={"security": [{}]},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process: its task attempts, runs, fire lag and leadership,
    and counts read from the database at most every metrics.refresh_s seconds."""
    return Response(await runtime.metrics.scrape(), media_type=CONTENT_TYPE)
