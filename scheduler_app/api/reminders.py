"""Routes for one-off reminders: POST /subscribe, GET and DELETE /reminders/{id}."""

from __future__ import annotations

import hmac
from contextlib import nullcontext
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from scheduler_app.api.deps import AdminDep, AuditDep, BearerTokenDep, RuntimeDep, get_runtime
from scheduler_app.api.errors import ServiceRoute, answer
from scheduler_app.api.params import IdempotencyKey
from scheduler_app.api.schemas import (
    ReminderCreate,
    ReminderCreated,
    ReminderPublic,
    RemindersPage,
    RetryFilter,
    RetryResult,
)
from scheduler_app.errors import TooManyRequests, Unauthorized
from scheduler_app.reminders import service as reminders
from scheduler_app.reminders.service import ReminderStatus
from scheduler_app.runtime import Runtime

router = APIRouter(tags=["reminders"], route_class=ServiceRoute)


_AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"description": "No bearer token."},
    403: {"description": "The token is neither this reminder's cancel token nor the admin token."},
    404: {"description": "No reminder with this id."},
}


_PUBLIC_FIELDS = tuple(ReminderPublic.model_fields)


def _public(fields: dict[str, Any], *, admin: bool = True) -> ReminderPublic:
    public = ReminderPublic.model_validate(fields)
    if admin:
        return public
    return public.model_copy(update={"last_error": reminders.public_error(public.last_error)})


async def subscribe(
    body: ReminderCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Schedule a one-off reminder e-mail."""
    # Called, not declared: solving RuntimeDep as a sub-dependency took about 5 % of this
    # route's samples in a py-spy profile, on the service's busiest route.
    runtime = await get_runtime(request)
    subscription = await runtime.reminders.subscribe(body, idempotency_key)
    headers = {"Location": f"/reminders/{subscription.reminder_id}"}
    if subscription.replayed:
        headers["Idempotent-Replayed"] = "true"
    # Validated once from the reminder's row and answered as is: the route's busiest path
    # skips FastAPI's second validation of the response model.
    fields = subscription.public()
    fields["cancel_token"] = subscription.cancel_token
    created = ReminderCreated.model_validate(fields)
    return Response(
        created.model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers=headers,
    )


class SubscribeRoute(ServiceRoute):
    """POST /subscribe as declared, with a shorter way through for the usual request.

    A body sent as `application/json` without an Idempotency-Key header is validated straight
    from its bytes and handed to the endpoint: FastAPI's solving of the route's parameters took
    about a third of the service's CPU time per reminder (py-spy, under wrk). Any other request,
    or a body that does not validate, goes through the route as declared, so that FastAPI
    answers it exactly as it always has; the OpenAPI schema is the declared route's too.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            await self._handle(request, scope, receive, send)
        except Exception as exc:
            # Answered here, not by the app's handlers: inside an app of your own too.
            response = await answer(request, exc)
            if response is None:
                raise
            await response(scope, receive, send)

    async def _handle(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        if not _plain_json_post(scope):
            if scope["method"] == "POST":
                admit_subscriber(await get_runtime(request), request)
            await super().handle(scope, receive, send)
            return
        raw = await request.body()
        # Before the body is parsed: a refused client costs no more than reading it.
        admit_subscriber(await get_runtime(request), request)
        try:
            body = ReminderCreate.model_validate_json(raw)
        except ValidationError:
            await super().handle(scope, _replay(raw, receive), send)
            return
        response = await subscribe(body, request)
        await response(scope, receive, send)


def admit_subscriber(runtime: Runtime, request: Request) -> None:
    """Refuse a POST /subscribe without the subscribe token (when one is set), or past the
    client's rate limit."""
    token = runtime.settings.reminders.subscribe_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        allowed = (token.get_secret_value(), runtime.admin_token)
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(given.encode(), secret.encode()) for secret in allowed
        ):
            raise Unauthorized(
                "send 'Authorization: Bearer <token>' with the subscribe token "
                "(reminders.subscribe_token)"
            )
    # The client's address as the server saw it, or as a trusted proxy reported it.
    client = request.client.host if request.client else "unknown"
    wait_s = runtime.subscribe_limiter.acquire(client)
    if wait_s is not None:
        limit = runtime.subscribe_limiter.per_minute
        raise TooManyRequests(
            f"more than {limit} requests a minute from this client address; try again later",
            retry_after_s=wait_s,
        )


def _plain_json_post(scope: Scope) -> bool:
    if scope["method"] != "POST":
        return False
    content_type = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            return False
        if name == b"content-type":
            content_type = value
    return content_type == b"application/json"


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for a body that was read already: the body once, then what the client sends."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


router.add_api_route(
    "/subscribe",
    subscribe,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=ReminderCreated,
    responses={
        401: {"description": "reminders.subscribe_token is set and was not sent."},
        422: {"description": "A field is invalid; `detail[].loc` names it."},
        429: {
            "description": "Too many requests from this client, or too many reminders "
            "scheduled for this address; Retry-After says when to try again."
        },
    },
    route_class_override=SubscribeRoute,
)


@router.get("/reminders/{reminder_id}", response_model=ReminderPublic, responses=_AUTH_ERRORS)
def get_reminder(reminder_id: str, token: BearerTokenDep, runtime: RuntimeDep) -> ReminderPublic:
    """Show a reminder and its delivery status."""
    fields, admin = runtime.reminders.show(reminder_id, token)
    return _public(fields, admin=admin)


@router.delete(
    "/reminders/{reminder_id}",
    response_model=ReminderPublic,
    responses={**_AUTH_ERRORS, 409: {"description": "Already sent, failed or missed."}},
)
def cancel_reminder(
    reminder_id: str, token: BearerTokenDep, runtime: RuntimeDep, audit: AuditDep
) -> ReminderPublic:
    """Cancel a scheduled reminder; cancelling a cancelled one again is a no-op."""
    # An operator's cancellation is an audited action; a subscriber's own is not.
    operator = hmac.compare_digest(token.encode(), runtime.admin_token.encode())
    with audit.recorded("cancel_reminder", reminder_id) if operator else nullcontext():
        fields, admin = runtime.reminders.cancel(reminder_id, token)
    return _public(fields, admin=admin)


@router.get(
    "/reminders",
    response_model=RemindersPage,
    dependencies=[AdminDep],
    responses={401: {"description": "Missing or wrong admin token."}},
)
def list_reminders(
    runtime: RuntimeDep,
    status: ReminderStatus | None = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> RemindersPage:
    """List reminders, most recently changed first; `status=failed` for the failed queue."""
    page = runtime.reminders.page(status, email, limit, cursor)
    return RemindersPage(items=[_public(r) for r in page.items], next_cursor=page.next_cursor)


@router.post(
    "/reminders/retry",
    response_model=RetryResult,
    dependencies=[AdminDep],
    responses={401: {"description": "Missing or wrong admin token."}},
)
def retry_matching(body: RetryFilter, runtime: RuntimeDep, audit: AuditDep) -> RetryResult:
    """Schedule again every failed (or missed) reminder that matches the filter."""
    with audit.recorded("retry_reminders", body.email) as outcome:
        requeued = runtime.reminders.retry_matching(
            ReminderStatus(body.status),
            body.email,
            body.error_contains,
            body.finished_after,
            body.finished_before,
            body.limit,
        )
        outcome.detail = f"{len(requeued)} {body.status} reminder(s) retried"
    return RetryResult(requeued=requeued)


@router.post(
    "/reminders/{reminder_id}/retry",
    response_model=ReminderPublic,
    dependencies=[AdminDep],
    responses={
        401: {"description": "Missing or wrong admin token."},
        404: {"description": "No reminder with this id."},
        409: {"description": "Neither failed or missed nor waiting for a retry."},
    },
)
def retry_reminder(reminder_id: str, runtime: RuntimeDep, audit: AuditDep) -> ReminderPublic:
    """Deliver a reminder again now: a failed or missed one with a fresh set of attempts, one
    waiting for its automatic retry at once (retry now), keeping its attempts."""
    with audit.recorded("retry_reminder", reminder_id):
        return _public(runtime.reminders.retry(reminder_id))
