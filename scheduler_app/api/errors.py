"""Map the service's exceptions to HTTP answers, in one place; every error body is JSON.

Every error answer is `{"detail": ...}`: a message, or for 422 a list of problems each naming its
field in `loc`. A database that cannot be reached answers 503 with Retry-After; anything else
unexpected answers 500 and is logged with its traceback, without SQL parameters (they may hold
e-mail addresses).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from scheduler_app.api.request_id import request_id_headers
from scheduler_app.db.engine import database_unavailable
from scheduler_app.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    InvalidField,
    NotFound,
    SchedulerAppError,
    TooManyRequests,
    Unauthorized,
)

logger = logging.getLogger(__name__)

STATUS_CODES: dict[type[SchedulerAppError], int] = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Unauthorized: status.HTTP_401_UNAUTHORIZED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    Conflict: status.HTTP_409_CONFLICT,
    InvalidField: status.HTTP_422_UNPROCESSABLE_CONTENT,
    ConfigError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    TooManyRequests: status.HTTP_429_TOO_MANY_REQUESTS,
}

DATABASE_UNAVAILABLE = "database unavailable, retry shortly"
RETRY_AFTER_S = 5
INTERNAL_ERROR = "internal error; the details are in the service log"


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SchedulerAppError)
    code = next(
        (code for kind, code in STATUS_CODES.items() if isinstance(exc, kind)),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
    if isinstance(exc, InvalidField):
        body: object = [{"loc": list(exc.location), "msg": exc.message, "type": "value_error"}]
    elif isinstance(exc, ConfigError):
        body = exc.message.splitlines()
    else:
        body = exc.message
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return JSONResponse({"detail": body}, status_code=code, headers=headers)


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, made safe for every input it echoes back.

    The default handler fails (and answers 500) when a rejected input is a non-finite number
    (`1e999`, `NaN`: JSON has no such values), bytes that are not UTF-8 (a text/plain body) or a
    string holding a lone surrogate (`"\\ud800"`, which has no UTF-8 form).
    """
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        {"detail": jsonable_encoder(_json_safe(exc.errors()))},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan"
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, str):
        # A lone surrogate (JSON's "\ud800") has no UTF-8 form: echoed as its escape instead.
        return value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer for HTTPException, with two corrections.

    A body that cannot be parsed (not UTF-8, nested too deeply) answers 422 naming the body, as
    invalid JSON syntax does, instead of FastAPI's 400 "There was an error parsing the body".
    A 405 lists every method of the resource in Allow: Starlette names only those of the first
    route whose path matched (`Allow: GET` for /reminders/{id}, whose DELETE is another route).
    """
    assert isinstance(exc, HTTPException)
    if exc.status_code == status.HTTP_400_BAD_REQUEST and exc.__cause__ is not None:
        # FastAPI's "There was an error parsing the body" (raised from the parsing error): the
        # same kind of problem as invalid JSON syntax, which FastAPI answers 422 naming the body.
        problem = _UNPARSABLE.get(type(exc.__cause__), "could not be read as JSON")
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": problem, "type": "json_invalid"}]},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED and isinstance(request.app, FastAPI):
        methods = allowed_methods(request.app, request.scope["path"])
        if methods:
            headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
            exc = HTTPException(exc.status_code, detail=exc.detail, headers=headers)
    return await http_exception_handler(request, exc)


_UNPARSABLE: dict[type[BaseException], str] = {
    UnicodeDecodeError: "is not valid UTF-8",
    RecursionError: "is nested too deeply",
}


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI document gives for every path template that matches path."""
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(path):
            methods.update(method.upper() for method in operations if method.upper() in _METHODS)
    return methods


_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not database_unavailable(exc):
        raise exc  # on to the 500 handler (and the server's log), like any other bug
    logger.warning(
        "database unavailable while serving %s %s: %s",
        request.method,
        request.url.path,
        describe_database_error(exc),
    )
    return JSONResponse(
        {"detail": DATABASE_UNAVAILABLE},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def describe_database_error(exc: BaseException) -> str:
    """The driver's error class and first line of its message: no SQL, no parameters."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    hide_sql_parameters(cause)
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else '(no message)'}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def hide_sql_parameters(exc: BaseException) -> None:
    """Make every SQLAlchemy error in exc's chain render without its bound parameters.

    Also effective for whoever logs the same exception afterwards (the server, re-raised by
    Starlette's ServerErrorMiddleware).
    """
    for link in _chain(exc):
        if isinstance(link, StatementError):
            link.hide_parameters = True


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    hide_sql_parameters(exc)
    logger.error("unhandled error", exc_info=exc)
    # Answered by Starlette's outermost middleware, past RequestIdMiddleware: the id is added
    # here.
    return JSONResponse(
        {"detail": INTERNAL_ERROR},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        headers=request_id_headers(),
    )


async def answer(request: Request, exc: Exception) -> Response | None:
    """The answer to one of the service's errors, a request that does not validate or an
    unavailable database; None for anything else."""
    if isinstance(exc, SchedulerAppError):
        return await _service_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return await _invalid_request(request, exc)
    if isinstance(exc, DBAPIError | PoolTimeoutError) and database_unavailable(exc):
        return await _database_error(request, exc)
    return None


class ServiceRoute(APIRoute):
    """A route that answers the service's errors itself: inside an app of your own (whose
    exception handlers are its own) they keep their status codes and bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answering(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = await answer(request, exc)
                if response is None:
                    raise
                return response

        return answering


def install(app: FastAPI) -> None:
    app.add_exception_handler(SchedulerAppError, _service_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
