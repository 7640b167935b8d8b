"""Dependencies shared by the routes: the runtime, a database session, bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from scheduler_app.errors import Unauthorized
from scheduler_app.runtime import Runtime


# The dependencies that do no I/O are coroutines: FastAPI runs a plain function in its thread
# pool, a hop per request that cost more than the work.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

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
