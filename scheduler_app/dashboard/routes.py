"""The dashboard's routes: each page parses its query, calls one service function and renders;
each action confirms, runs through the audit log and redirects with a flash message.

Every page can be asked for as a fragment (header `X-Dashboard-Fragment: 1`): only its live part,
which the page's script fetches every few seconds to refresh itself.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal, cast, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from scheduler_app.api.deps import ClusterDep, JobsDep, QuarantineDep, RuntimeDep
from scheduler_app.api.params import Cursor
from scheduler_app.api.schemas import JobPublic
from scheduler_app.audit import Actor
from scheduler_app.audit.service import Source
from scheduler_app.dashboard import actions
from scheduler_app.dashboard.auth import (
    COOKIE,
    DashboardRoute,
    FormLoginDep,
    LoginDep,
    base_path,
    clear_session_cookie,
    client_of,
    forget_flash,
    logins,
    require_enabled,
    set_flash,
    set_session_cookie,
    take_flash,
)
from scheduler_app.dashboard.overview import OverviewService
from scheduler_app.dashboard.schedule import Schedule, describe_schedule
from scheduler_app.dashboard.sessions import Login
from scheduler_app.db.models import TaskStatus
from scheduler_app.engine.jobs import JobKind, JobState
from scheduler_app.errors import ConfigError, SchedulerAppError
from scheduler_app.logs import REQUEST_ID
from scheduler_app.reminders.service import ReminderStatus
from scheduler_app.runtime import Runtime

router = APIRouter(
    prefix="/dashboard",
    include_in_schema=False,
    dependencies=[Depends(require_enabled)],
    route_class=DashboardRoute,
)

PAGE_SIZE = 25
REFRESH_MS = 5000
STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
Search = Annotated[str | None, Query(max_length=200)]
NAV = (
    ("dashboard_overview", "Overview"),
    ("dashboard_jobs", "Jobs"),
    ("dashboard_tasks", "Tasks"),
    ("dashboard_failed", "Failed"),
    ("dashboard_quarantined", "Quarantined"),
    ("dashboard_config", "Config"),
    ("dashboard_audit", "Audit"),
)


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # Built on first use, not at import; autoescaping on for every template.
    environment = Environment(
        loader=PackageLoader("scheduler_app.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["ts"] = _timestamp
    environment.filters["seconds"] = _seconds
    environment.filters["local"] = _local
    return environment


def _timestamp(moment: datetime | None) -> str:
    """A moment in UTC, to the second."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _local(moment: datetime | None) -> str:
    """A moment in its own zone, with the zone's abbreviation and offset."""
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M %Z (UTC%z)")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _render(
    request: Request,
    runtime: Runtime,
    template: str,
    login: Login | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    fragment = request.headers.get("x-dashboard-fragment") == "1"
    flash = None if fragment else take_flash(request, runtime)

    def url(route: str, /, **params: Any) -> str:
        return str(request.url_for(route, **params).path)

    html = (
        _environment()
        .get_template(template)
        .render(
            request=request,
            url=url,
            base=base_path(request),
            here=_here(request),
            nav=NAV,
            login=login,
            flash=flash,
            fragment=fragment,
            refresh_ms=REFRESH_MS,
            query=lambda **params: _query(request, **params),
            confirm_href=lambda *args: _confirm_href(request, *args),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if flash is not None:
        forget_flash(request, response)
    return response


def _here(request: Request) -> str:
    """This page's path and query, for the `next` of its actions."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _confirm_href(
    request: Request,
    action: str,
    target: str | None,
    back: str | None,
    filters: dict[str, str] | None,
) -> str:
    """The confirm step of an action on target (with a filter for "retry all matching")."""
    params = {"action": action, "target": target or "", "next": back or ""}
    params.update({key: value for key, value in (filters or {}).items() if value})
    return str(request.url_for("dashboard_confirm").path) + "?" + urlencode(params)


def _query(request: Request, **params: Any) -> str:
    """This page's query with params replaced (None removes one), as "?..."."""
    values = {key: value for key, value in request.query_params.items() if key != "cursor"}
    for key, value in params.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = str(value)
    return "?" + urlencode(values) if values else "?"


# Static files: from the package, by name (never a path from the request).


@router.get("/static/{name}", name="dashboard_static")
async def static(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    content = (resources.files("scheduler_app.dashboard") / "static" / name).read_bytes()
    return Response(content, media_type=media_type, headers={"Cache-Control": "max-age=300"})


# Login and logout.


@router.get("/login", name="dashboard_login")
async def login_form(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    return _render(request, runtime, "login.html", None, error=None)


@router.post("/login", name="dashboard_login_post")
async def login(
    request: Request,
    runtime: RuntimeDep,
    token: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    client = client_of(request)
    # Taken before the token is checked, so that guesses sent at once cannot outrun the limit;
    # given back after a good login: only wrong tokens count.
    wait_s = runtime.dashboard_login_limiter.acquire(client)
    if wait_s is not None:
        return _render(
            request,
            runtime,
            "login.html",
            None,
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            error=f"Too many attempts from {client}: try again in {wait_s:.0f} s.",
        )
    actor = _actor(client)

    def log_in() -> Login | None:
        try:
            with runtime.audit.recorded(actor, "login", None) as outcome:
                found = logins(runtime).login(token, client)
                if found is None:
                    raise WrongToken("wrong token")
                outcome.detail = f"session until {_timestamp(found.expires_at)}"
                return found
        except WrongToken:
            return None

    found = await asyncio.to_thread(log_in)
    if found is None:
        return _render(
            request,
            runtime,
            "login.html",
            None,
            status_code=status.HTTP_401_UNAUTHORIZED,
            error="That is not the admin token.",
        )
    runtime.dashboard_login_limiter.refund(client)
    response = RedirectResponse(base_path(request), status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookie(request, response, found)
    return response


class WrongToken(SchedulerAppError):
    """A login with a token that is not the admin token."""


@router.post("/logout", name="dashboard_logout")
async def logout(request: Request, runtime: RuntimeDep, login: FormLoginDep) -> Response:
    actor = _actor(login.client)

    def log_out() -> None:
        with runtime.audit.recorded(actor, "logout", None):
            logins(runtime).logout(login.cookie)

    await asyncio.to_thread(log_out)
    response = RedirectResponse(
        request.url_for("dashboard_login").path, status_code=status.HTTP_303_SEE_OTHER
    )
    clear_session_cookie(request, response)
    set_flash(request, response, runtime, "ok", "Logged out.")
    return response


def _actor(client: str) -> Actor:
    # The request's id as the middleware settled it (and as the log lines carry it).
    return Actor("dashboard", f"dashboard login from {client}", REQUEST_ID.get())


# Pages.


@router.get("", name="dashboard_overview")
async def overview(
    request: Request, runtime: RuntimeDep, cluster: ClusterDep, login: LoginDep
) -> HTMLResponse:
    reader = OverviewService(runtime.sessions, runtime.clock)
    data, view = await asyncio.gather(
        asyncio.to_thread(reader.read), asyncio.to_thread(cluster.view)
    )
    return _render(
        request, runtime, "overview.html", login, data=data, cluster=view, me=runtime.me.id
    )


@router.get("/jobs", name="dashboard_jobs")
async def jobs_page(
    request: Request,
    runtime: RuntimeDep,
    jobs: JobsDep,
    login: LoginDep,
    q: Search = None,
    kind: Search = None,
    state: Search = None,
    cursor: Cursor = None,
) -> HTMLResponse:
    # A filter form sends "" for "any": read as no filter, as is anything unknown.
    kind = kind if kind in get_args(JobKind) else None
    state = state if state in get_args(JobState) else None
    page = await jobs.page(
        kind=cast(JobKind | None, kind),
        q=q or None,
        state=cast(JobState | None, state),
        limit=PAGE_SIZE,
        cursor=cursor,
    )
    now = runtime.clock()
    schedules = {job.id: _schedule(job, now) for job in page.items}
    return _render(
        request,
        runtime,
        "jobs.html",
        login,
        page=page,
        schedules=schedules,
        q=q or "",
        kind=kind,
        state=state,
    )


def _schedule(job: JobPublic, now: datetime) -> Schedule | None:
    """A cron job's schedule in words with its next fires; None for reminders and tasks."""
    if job.cron is None or job.timezone is None:
        return None
    try:
        return describe_schedule(job.cron, job.timezone, now)
    except (ValueError, KeyError):
        # A row written by another version of the service, with what this one cannot read:
        # the page still shows the job, without its schedule.
        return None


@router.get("/jobs/{job_id:path}", name="dashboard_job")
async def job_page(
    request: Request,
    runtime: RuntimeDep,
    jobs: JobsDep,
    login: LoginDep,
    job_id: str,
    cursor: Cursor = None,
) -> HTMLResponse:
    def read() -> tuple[Any, Any]:
        return jobs.detail(job_id), jobs.runs(
            job_id=job_id, outcome=None, limit=PAGE_SIZE, cursor=cursor
        )

    job, runs = await asyncio.to_thread(read)
    return _render(
        request,
        runtime,
        "job.html",
        login,
        job=job,
        runs=runs,
        schedule=_schedule(job, runtime.clock()),
    )


@router.get("/tasks", name="dashboard_tasks")
async def tasks_page(
    request: Request,
    runtime: RuntimeDep,
    login: LoginDep,
    what: Literal["reminders", "tasks"] = "reminders",
    id: Search = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    job: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    cursor: Cursor = None,
) -> HTMLResponse:
    def read() -> dict[str, Any]:
        if id:
            return {"found": _look_up(runtime, id.strip())}
        if what == "reminders":
            reminder_status = ReminderStatus(status) if status else None
            page = runtime.reminders.page(reminder_status, email or None, PAGE_SIZE, cursor)
            return {"reminders": page}
        task_status = TaskStatus(status) if status else None
        return {
            "tasks": runtime.tasks.page(
                job=job or None, status=task_status, limit=PAGE_SIZE, cursor=cursor
            )
        }

    try:
        found = await asyncio.to_thread(read)
    except ValueError:
        found = {"problem": f"unknown status {status!r}"}
    return _render(
        request,
        runtime,
        "tasks.html",
        login,
        what=what,
        id=id or "",
        email=email or "",
        job=job or "",
        status=status or "",
        reminder_statuses=list(ReminderStatus),
        task_statuses=list(TaskStatus),
        **found,
    )


def _look_up(runtime: Runtime, task_id: str) -> dict[str, Any] | None:
    """A reminder or task by id, with which it is; None when neither."""
    try:
        reminder, _ = runtime.reminders.show(task_id, runtime.admin_token)
        return {"kind": "reminder", **reminder}
    except SchedulerAppError:
        pass
    try:
        return {"kind": "task", **runtime.tasks.show(task_id)}
    except SchedulerAppError:
        return None


@router.get("/failed", name="dashboard_failed")
async def failed_page(
    request: Request,
    runtime: RuntimeDep,
    login: LoginDep,
    email: Annotated[str | None, Query(max_length=320)] = None,
    error_contains: Annotated[str | None, Query(max_length=200)] = None,
    job: Annotated[str | None, Query(max_length=100)] = None,
    cursor: Cursor = None,
) -> HTMLResponse:
    def read() -> tuple[Any, Any]:
        # Filtered in the database as "retry all matching" selects them, so that the listing
        # and the retry agree (every page, not only the one shown).
        reminders = runtime.reminders.page(
            ReminderStatus.FAILED,
            email or None,
            PAGE_SIZE,
            cursor,
            error_contains=error_contains or None,
        )
        tasks = runtime.tasks.page(
            job=job or None, status=TaskStatus.FAILED, limit=PAGE_SIZE, cursor=None
        )
        return reminders, tasks

    reminders, tasks = await asyncio.to_thread(read)
    return _render(
        request,
        runtime,
        "failed.html",
        login,
        reminders=reminders.items,
        next_cursor=reminders.next_cursor,
        tasks=tasks.items,
        email=email or "",
        error_contains=error_contains or "",
        job=job or "",
    )


@router.get("/quarantined", name="dashboard_quarantined")
async def quarantined_page(
    request: Request, runtime: RuntimeDep, quarantine: QuarantineDep, login: LoginDep
) -> HTMLResponse:
    kept = await asyncio.to_thread(quarantine.list_jobs)
    return _render(request, runtime, "quarantined.html", login, jobs=kept)


@router.get("/config", name="dashboard_config")
async def config_page(request: Request, runtime: RuntimeDep, login: LoginDep) -> HTMLResponse:
    try:
        preview = await runtime.preview_reload()
        problems: list[str] = []
    except ConfigError as exc:
        preview = None
        problems = exc.message.splitlines()
    return _render(
        request,
        runtime,
        "config.html",
        login,
        preview=preview,
        problems=problems,
        config_file=str(runtime.settings.config_file or "(none)"),
    )


@router.get("/audit", name="dashboard_audit")
async def audit_page(
    request: Request,
    runtime: RuntimeDep,
    login: LoginDep,
    source: Search = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=300)] = None,
    cursor: Cursor = None,
) -> HTMLResponse:
    page = await asyncio.to_thread(
        lambda: runtime.audit.page(
            source=cast(Source, source) if source in get_args(Source) else None,
            action=action or None,
            target=target or None,
            limit=PAGE_SIZE,
            cursor=cursor,
        )
    )
    return _render(
        request,
        runtime,
        "audit.html",
        login,
        page=page,
        source=source or "",
        action=action or "",
        target=target or "",
        action_names=sorted([*actions.ACTIONS, "login", "logout"]),
    )


# Actions: a confirm step (GET), then the action (POST), then back with a flash message.


@router.get("/confirm", name="dashboard_confirm")
async def confirm_page(
    request: Request,
    runtime: RuntimeDep,
    login: LoginDep,
    action: Annotated[str, Query(max_length=64)],
    target: Annotated[str | None, Query(max_length=300)] = None,
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> HTMLResponse:
    chosen = actions.ACTIONS.get(action)
    if chosen is None or (chosen.needs_target and not target):
        return _render(
            request, runtime, "error.html", login, status_code=404, message="No such action."
        )
    filters = {
        name: request.query_params[name]
        for name in actions.FILTER_FIELDS
        if request.query_params.get(name)
    }
    return _render(
        request,
        runtime,
        "confirm.html",
        login,
        action=chosen,
        target=target,
        question=chosen.question.format(target=target),
        filters=filters,
        back=_safe_next(request, next),
    )


@router.post("/actions/{name}", name="dashboard_action")
async def act(
    request: Request,
    runtime: RuntimeDep,
    jobs: JobsDep,
    quarantine: QuarantineDep,
    cluster: ClusterDep,
    login: FormLoginDep,
    name: str,
) -> Response:
    form = await request.form()
    back = _safe_next(request, _text(form.get("next")))
    chosen = actions.ACTIONS.get(name)
    target = _text(form.get("target")) or None
    response = RedirectResponse(back, status_code=status.HTTP_303_SEE_OTHER)
    if chosen is None or (chosen.needs_target and not target):
        set_flash(request, response, runtime, "error", "No such action.")
        return response
    filters = {field: value for field in actions.FILTER_FIELDS if (value := _text(form.get(field)))}
    services = actions.Services(runtime, jobs, quarantine, cluster)
    try:
        message = await actions.perform(
            chosen,
            services,
            _actor(login.client),
            actions.Request(target[:300] if target else None, filters),
        )
    except SchedulerAppError as exc:
        set_flash(request, response, runtime, "error", f"{chosen.label} failed: {exc.message}")
    else:
        set_flash(request, response, runtime, "ok", message)
    return response


def _text(value: Any) -> str:
    return value.strip()[:2000] if isinstance(value, str) else ""


def _safe_next(request: Request, value: str | None) -> str:
    """Where to go back to: a page of the dashboard only (never another site)."""
    base = base_path(request)
    if value and value.startswith(base) and not value.startswith("//") and "\\" not in value:
        return value
    return base


__all__ = ["COOKIE", "router"]
