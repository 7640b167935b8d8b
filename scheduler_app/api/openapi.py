"""What the service's app adds around every route, written into its OpenAPI document.

The routes document their own answers (scheduler_app.api.responses), which hold wherever they
are included. The service's app adds middleware around them that answers for every route: the
body size limit (413) and the request id (`X-Request-ID` on every answer). Those answers exist
only in the service's app, so they are added to its document here, not to the routes.

FastAPI also drops every null from the document, examples included, which leaves the examples
of fields that are null at times (`"last_error": null`) without those required fields: the
service's document gets the models' examples back as they are written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from scheduler_app.api import responses as responses_module
from scheduler_app.api import schemas as schemas_module
from scheduler_app.api.limits import too_large_detail
from scheduler_app.api.responses import Error

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = {
    "description": "The id of this request, as in the service's log lines: the one the client "
    "sent in X-Request-ID when it is 1 to 64 letters, digits or ._:/+=@-, else a new one.",
    "required": True,
    "schema": {"type": "string", "maxLength": 64},
}
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def document_service(app: FastAPI, *, max_body_bytes: int) -> None:
    """Make app.openapi() describe the service's middleware too; built once, then cached."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # A copy: FastAPI's document shares dicts with the routes' `responses`, which other
            # apps including the same routes must not see changed.
            document = copy.deepcopy(generate())
            add_service_answers(document, max_body_bytes=max_body_bytes)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def model_examples() -> dict[str, list[Any]]:
    """The examples of the API's models, by model name, nulls included."""
    found: dict[str, list[Any]] = {}
    for module in (schemas_module, responses_module):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
            ):
                examples = value.model_json_schema().get("examples")
                if examples:
                    found[value.__name__] = examples
    return found


def add_service_answers(document: dict[str, Any], *, max_body_bytes: int) -> None:
    """Add 413 to every operation that takes a body and X-Request-ID to every response; give
    the models' examples their nulls back."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(Error.__name__, Error.model_json_schema())
    for name, examples in model_examples().items():
        if name in schemas and "examples" in schemas[name]:
            schemas[name]["examples"] = examples
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault(
                    "413",
                    {
                        "description": f"The body is larger than {max_body_bytes} bytes.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{Error.__name__}"},
                                "example": {"detail": too_large_detail(max_body_bytes)},
                            }
                        },
                    },
                )
            for response in responses.values():
                headers = {**response.get("headers", {}), REQUEST_ID_HEADER: _REQUEST_ID}
                response["headers"] = headers
