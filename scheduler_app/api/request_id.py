"""Every request gets an id: the client's X-Request-ID when it is sane, else a new one. It is
set for the log lines of the request (scheduler_app.logs.REQUEST_ID) and sent back as the
X-Request-ID header of every answer.

A pure ASGI middleware: it costs one header scan, an id and one header more on POST
/subscribe, the service's busiest route, where a BaseHTTPMiddleware would cost a task and a
stream per request.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_app.ids import new_id
from scheduler_app.logs import REQUEST_ID

HEADER = b"x-request-id"
# 64: the audit log keeps the id of an operator action in a column of that size.
MAX_LENGTH = 64
# What a client's id may hold: letters, digits and a few marks, nothing that could break a log
# line or a header (no spaces, quotes, control characters).
_SANE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,%d}" % MAX_LENGTH)


def incoming_id(scope: Scope) -> str | None:
    """The client's X-Request-ID if it is sane (up to 64 letters, digits or ._:/+=@-), else
    None; the first such header counts."""
    for name, value in scope.get("headers", ()):
        if name == HEADER:  # ASGI header names are lowercase
            return value.decode("ascii") if _SANE.fullmatch(value) else None
    return None


class RequestIdMiddleware:
    """Give each HTTP request an id, for its log lines and its answer's X-Request-ID header.

    create_app installs it; in an app of your own, `app.add_middleware(RequestIdMiddleware)`
    (added last, it is the outermost: the answers of the other middlewares carry the id too).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_id(scope) or new_id()
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        await self.app(scope, receive, send_with_id)
        # Reset only after a normal return. When the app raises, the server logs the error
        # after this frame is gone, in the same request's task (uvicorn runs each request in a
        # task of its own, whose context ends with it): that line keeps the id. So does the
        # 500 answer of the app's outermost error handler (api/errors.py).
        REQUEST_ID.reset(token)


def request_id_headers() -> dict[str, str]:
    """The X-Request-ID header of the request being served, for an answer sent outside the
    middleware (the 500 of Starlette's outermost error handler); empty outside a request."""
    request_id = REQUEST_ID.get()
    return {"X-Request-ID": request_id} if request_id is not None else {}
