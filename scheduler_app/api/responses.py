"""The error answers routes document, in one place: their bodies, examples and headers.

Each route lists the answers it can give with `responses=merge(...)`. The bodies are those of
scheduler_app.api.errors: `{"detail": "message"}`, and for 422 `{"detail": [problem, ...]}`
each problem naming its field in `loc`. Headers are written out in each response, not as
`$ref`s: the routes are also included in apps of their own, whose documents hold no
components of this module's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scheduler_app.api.errors import DATABASE_UNAVAILABLE, RETRY_AFTER_S

Responses = dict[int | str, dict[str, Any]]


class Problem(BaseModel):
    """One reason a request was refused; `loc` names where: ["body", "email"], ["query",
    "limit"], ["header", "Idempotency-Key"], ["path", "job_id"] ..."""

    # FastAPI adds `input` (the value refused) and, for some problems, `ctx`.
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "loc": ["body", "delay_seconds"],
                    "msg": "Input should be greater than 0",
                    "type": "greater_than",
                    "input": -5,
                    "ctx": {"gt": 0},
                }
            ]
        },
    )

    loc: list[str | int] = Field(description="Where: the part of the request, then the field.")
    msg: str = Field(description="What is wrong, in words.")
    type: str = Field(description="The kind of problem, for programs.")


class InvalidRequest(BaseModel):
    """A 422: the request is well-formed HTTP but a field of it is invalid."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "email"],
                            "msg": "value is not a valid email address: An email address "
                            "must have an @-sign.",
                            "type": "value_error",
                            "input": "ada.example.com",
                        }
                    ]
                }
            ]
        }
    )

    detail: list[Problem]


class InvalidConfiguration(BaseModel):
    """A 422 of POST /admin/reload: why the configuration file was refused, one line each."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        "config.yaml: jobs[0]: unknown job 'daily_reprot' "
                        "(known jobs: daily_report)"
                    ]
                }
            ]
        }
    )

    detail: list[str]


class Error(BaseModel):
    """Any other error: what went wrong, in words."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "no task with id '0193a4b2-7c1e'"}]}
    )

    detail: str


def _integer_header(description: str) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "integer"}}


RETRY_AFTER = {
    "Retry-After": _integer_header("Seconds to wait before trying again."),
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with.",
        "required": True,
        "schema": {"type": "string", "enum": ["Bearer"]},
    }
}


def error(
    description: str, example: str, *, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One error response whose body is `{"detail": example}`."""
    response: dict[str, Any] = {
        "model": Error,
        "description": description,
        "content": {"application/json": {"example": {"detail": example}}},
    }
    if headers:
        response["headers"] = headers
    return response


def merge(*parts: Responses) -> Responses:
    """The responses of a route, from the pieces below."""
    merged: Responses = {}
    for part in parts:
        merged.update(part)
    return merged


def unauthorized(description: str, example: str) -> Responses:
    return {401: error(description, example, headers=WWW_AUTHENTICATE)}


def not_found(description: str, example: str) -> Responses:
    return {404: error(description, example)}


def conflict(description: str, example: str) -> Responses:
    return {409: error(description, example)}


ADMIN: Responses = unauthorized("Missing or wrong admin token.", "this route needs the admin token")

INVALID: Responses = {
    422: {
        "model": InvalidRequest,
        "description": "A parameter or a field of the body is invalid; each `detail[].loc` "
        "names one.",
    }
}

DATABASE: Responses = {
    503: error(
        "The database cannot be reached; nothing was changed. Retry-After says when to try again.",
        DATABASE_UNAVAILABLE,
        headers={"Retry-After": _integer_header(f"Seconds to wait: {RETRY_AFTER_S}.")},
    )
}
"""Every route that reads or writes the database."""


def created(location: str) -> dict[str, Any]:
    """The headers of a 201 from a create route that takes an Idempotency-Key."""
    return {
        "headers": {
            "Location": {
                "description": f"The path of the resource created: {location}.",
                "required": True,
                "schema": {"type": "string"},
            },
            "Idempotent-Replayed": {
                "description": "`true` when this answer repeats the first one for the same "
                "Idempotency-Key (nothing new was created); absent otherwise.",
                "required": False,
                "schema": {"type": "string", "enum": ["true"]},
            },
        }
    }
