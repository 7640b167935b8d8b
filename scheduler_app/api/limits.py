"""Refuse request bodies over a size limit: by Content-Length before reading, else while reading.

A pure ASGI middleware, so that it sees the body as it arrives and can answer before a route
(or FastAPI's body parsing) buffers it. Behind uvicorn, h11/httptools already reject a malformed
Content-Length with a plain-text 400 before the app runs; this middleware gives the same request
a JSON 400 when it reaches the app some other way (another server, an in-process client).
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024
"""The largest request body accepted; the largest valid body (a reminder) is about 6 KB."""

# int() refuses very long digit strings (sys.get_int_max_str_digits); anything this long is
# far beyond any limit anyway.
_MAX_LENGTH_DIGITS = 18


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body without a (truthful) Content-Length passes the limit.

    An HTTPException so that FastAPI's body parsing re-raises it as it is (any other exception
    there becomes "400 There was an error parsing the body") and its default handler answers 413
    with the detail; the middleware answers it itself if it gets that far.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large_detail(limit))


class MalformedContentLength(ValueError):
    """The Content-Length header is not one non-negative decimal number."""


def too_large_detail(limit: int) -> str:
    return f"request body larger than {limit} bytes"


def declared_length(scope: Scope) -> int | None:
    """The body size the client announced, or None without a Content-Length header.

    Several Content-Length headers (or a comma-separated list) are allowed only if they agree
    (RFC 9110, section 8.6); a value over 18 digits is returned as a number over any limit.

    Raises:
        MalformedContentLength: a value is empty, not decimal digits, or the values disagree.
    """
    values: set[str] = set()
    for name, raw in scope.get("headers", ()):
        if name.lower() != b"content-length":
            continue
        for item in raw.decode("latin-1").split(","):
            value = item.strip(" \t")
            if not (value.isascii() and value.isdigit()):
                raise MalformedContentLength(f"not a number of bytes: {item.strip()!r}")
            values.add(value.lstrip("0") or "0")
    if not values:
        return None
    if len(values) > 1:
        raise MalformedContentLength("several different values")
    value = values.pop()
    if len(value) > _MAX_LENGTH_DIGITS:
        return sys.maxsize
    return int(value)


class BodySizeLimit:
    """Answer 413 with a JSON `detail` for request bodies over `max_bytes`.

    Args:
        app: the ASGI app to protect.
        max_bytes: the largest body allowed, in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        place = _nul_in_url(scope)
        if place is not None:
            # PostgreSQL cannot store or compare text with NUL: refuse it at the door.
            detail = [
                {"loc": place, "msg": "must not contain NUL characters", "type": "value_error"}
            ]
            await _answer(scope, receive, send, 422, detail)
            return
        try:
            declared = declared_length(scope)
        except MalformedContentLength as exc:
            await _answer(scope, receive, send, 400, f"malformed Content-Length header: {exc}")
            return
        if declared is not None and declared > self.max_bytes:
            # Answered before a byte of the body is read; the server discards or closes.
            await _answer(scope, receive, send, 413, too_large_detail(self.max_bytes))
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:
            if response_started:
                raise
            await _answer(scope, receive, send, exc.status_code, exc.detail)


def _nul_in_url(scope: Scope) -> list[str] | None:
    """Where a NUL character is in the URL: ["path"] or ["query", name]; None if nowhere."""
    if "\x00" in scope.get("path", ""):
        return ["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return ["query", name.replace("\x00", "")]
    return None


async def _answer(
    scope: Scope, receive: Receive, send: Send, status_code: int, detail: object
) -> None:
    await JSONResponse({"detail": detail}, status_code=status_code)(scope, receive, send)
