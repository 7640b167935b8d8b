"""The dashboard's session cookie, CSRF check and flash messages, and the route class that turns
their refusals into answers: a login page for a page asked for without a session, 403 for a form
without its token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response, status
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.routing import APIRoute

from scheduler_app.api.deps import RuntimeDep
from scheduler_app.api.errors import answer
from scheduler_app.dashboard.sessions import DashboardLogins, Login
from scheduler_app.errors import NotFound
from scheduler_app.runtime import Runtime

COOKIE = "dashboard_session"
FLASH_COOKIE = "dashboard_flash"
# Flash messages longer than this are cut: they travel in a cookie.
FLASH_CHARS = 1000


class LoginRequired(Exception):
    """A page was asked for without a live session."""


class CsrfRejected(Exception):
    """A form came without the session's CSRF token (or without a session)."""


def logins(runtime: Runtime) -> DashboardLogins:
    return DashboardLogins(
        runtime.sessions,
        runtime.clock,
        runtime.admin_token,
        runtime.settings.dashboard.session_hours,
    )


async def require_enabled(runtime: RuntimeDep) -> None:
    if not runtime.settings.dashboard.enabled:
        raise NotFound("the dashboard is switched off (dashboard.enabled: false)")


async def _find_login(request: Request, runtime: Runtime) -> Login | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie or len(cookie) > 200:
        return None
    return await asyncio.to_thread(logins(runtime).find, cookie)


async def current_login(request: Request, runtime: RuntimeDep) -> Login:
    login = await _find_login(request, runtime)
    if login is None:
        raise LoginRequired
    return login


async def checked_form_login(request: Request, runtime: RuntimeDep) -> Login:
    """The session of a POST whose form carries the session's CSRF token; else CsrfRejected."""
    login = await _find_login(request, runtime)
    form = await request.form()
    sent = form.get("csrf_token")
    if (
        login is None
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), login.csrf_token.encode())
    ):
        raise CsrfRejected
    return login


LoginDep = Annotated[Login, Depends(current_login)]
FormLoginDep = Annotated[Login, Depends(checked_form_login)]


def base_path(request: Request) -> str:
    """Where the dashboard is mounted (/dashboard, or under the host app's prefix)."""
    return str(request.url_for("dashboard_overview").path)


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def set_session_cookie(request: Request, response: Response, login: Login) -> None:
    response.set_cookie(
        COOKIE,
        login.cookie,
        expires=login.expires_at,
        path=base_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path=base_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# Flash messages: the result of an action, shown once on the page the action redirects to. Kept
# in a cookie signed with the service's secret key, so that only the service can set one.


def _signature(secret_key: bytes, payload: str) -> str:
    return hmac.new(secret_key, f"flash\0{payload}".encode(), hashlib.sha256).hexdigest()


def set_flash(request: Request, response: Response, runtime: Runtime, kind: str, text: str) -> None:
    raw = json.dumps({"kind": kind, "text": text[:FLASH_CHARS]})
    payload = base64.urlsafe_b64encode(raw.encode()).decode()
    response.set_cookie(
        FLASH_COOKIE,
        f"{payload}.{_signature(runtime.secret_key, payload)}",
        path=base_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def take_flash(request: Request, runtime: Runtime) -> dict[str, str] | None:
    """The flash message the request carries, if it is the service's own."""
    value = request.cookies.get(FLASH_COOKIE)
    if not value or "." not in value:
        return None
    payload, _, signature = value.rpartition(".")
    if not hmac.compare_digest(signature, _signature(runtime.secret_key, payload)):
        return None
    try:
        message = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    return {"kind": str(message.get("kind", "ok")), "text": str(message.get("text", ""))}


def forget_flash(request: Request, response: Response) -> None:
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=base_path(request))


class DashboardRoute(APIRoute):
    """A dashboard route: no session → the login page (303), a form without its CSRF token → 403,
    the dashboard switched off → 404; the service's other errors as the API answers them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answering(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                login = request.url_for("dashboard_login").path
                return RedirectResponse(login, status_code=status.HTTP_303_SEE_OTHER)
            except CsrfRejected:
                return HTMLResponse(
                    "<!doctype html><title>Refused</title><p>This form was refused: it did not "
                    "carry this session's token (log in again and retry).</p>",
                    status_code=status.HTTP_403_FORBIDDEN,
                )
            except NotFound as exc:
                return PlainTextResponse(exc.message, status_code=status.HTTP_404_NOT_FOUND)
            except Exception as exc:
                response = await answer(request, exc)
                if response is None:
                    raise
                return response

        return answering
