"""The OpenAPI document is complete, and /docs shows it without the Internet.

The rules below walk every operation of the document (the service's, and the routes included
under a prefix in an app of one's own) and fail naming each operation that misses one: examples
on every body, the project's 422 body, 401 on routes that take a token, 404 on routes with an
id, 413 on routes with a body, 429 and 503 with Retry-After, X-Request-ID on every answer,
Location and Idempotent-Replayed on the create routes. A new route is held to them as soon as
it is in the document; the few answers that cannot be told from the document alone (403, 409,
which routes are rate-limited or never touch the database) are listed here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from swagger_ui_bundle import swagger_ui_path

from scheduler_app.api.docs import install_docs
from scheduler_app.api.limits import MAX_BODY_BYTES
from scheduler_app.api.openapi import document_service
from scheduler_app.app import create_app
from scheduler_app.scheduler import Scheduler
from tests.support import make_settings

PREFIX = "/scheduler"
Document = dict[str, Any]
Key = tuple[str, str]  # (method, path without the prefix)

# Answers the document alone cannot tell: which routes give them.
FORBIDDEN = {("get", "/reminders/{reminder_id}"), ("delete", "/reminders/{reminder_id}")}
CONFLICTS = {
    ("delete", "/reminders/{reminder_id}"),
    ("post", "/reminders/{reminder_id}/retry"),
    ("delete", "/tasks/{task_id}"),
    ("post", "/tasks/{task_id}/retry"),
    ("delete", "/jobs/{job_id}"),
    ("post", "/jobs/{job_id}/resume"),
    ("post", "/jobs/{job_id}/run"),
    ("post", "/admin/quarantined-jobs/{job_id}/restore"),
    ("post", "/admin/cluster/resign"),
}
RATE_LIMITED = {("post", "/subscribe")}
CREATE_ROUTES = {("post", "/subscribe"), ("post", "/tasks")}
# Routes that never need the database, so never answer "database unavailable" (503): the
# probes. /readyz answers its own 503 (not ready) with its usual body.
# /metrics: its counts from the database are cached, and kept when the database is away.
WITHOUT_DATABASE = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
TABLES = {
    "FORBIDDEN": FORBIDDEN,
    "CONFLICTS": CONFLICTS,
    "RATE_LIMITED": RATE_LIMITED,
    "CREATE_ROUTES": CREATE_ROUTES,
    "WITHOUT_DATABASE": WITHOUT_DATABASE,
}

ERROR = "#/components/schemas/Error"
INVALID_BODIES = {
    "#/components/schemas/InvalidRequest",
    "#/components/schemas/InvalidConfiguration",
}
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as in the document
    key: Key  # path without the prefix the routes were included with
    spec: dict[str, Any]

    @property
    def responses(self) -> dict[str, Any]:
        responses: dict[str, Any] = self.spec.get("responses", {})
        return responses

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


def operations(document: Document, prefix: str = "") -> list[Operation]:
    found = []
    for path, items in document["paths"].items():
        for method, spec in items.items():
            if method in _METHODS:
                key = (method, path.removeprefix(prefix))
                found.append(Operation(method, path, key, spec))
    return found


def resolve(document: Document, schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        _, _, name = schema["$ref"].rpartition("/")
        schema = document["components"]["schemas"][name]
    return schema


def media_types(operation: Operation) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every request and response body of the operation: (where, media type object)."""
    for media_type, media in operation.spec.get("requestBody", {}).get("content", {}).items():
        yield f"request body {media_type}", media
    for status, response in operation.responses.items():
        for media_type, media in response.get("content", {}).items():
            yield f"{status} {media_type}", media


def examples_of(document: Document, media: dict[str, Any]) -> list[Any]:
    """The examples given on the media type, else on its (resolved) schema."""
    if "example" in media:
        return [media["example"]]
    if media.get("examples"):
        return [example["value"] for example in media["examples"].values()]
    schema = resolve(document, media.get("schema", {}))
    if "example" in schema:
        return [schema["example"]]
    return list(schema.get("examples", []))


def headers_of(operation: Operation, status: str) -> dict[str, Any]:
    headers: dict[str, Any] = operation.responses.get(status, {}).get("headers", {})
    return headers


def schema_ref(operation: Operation, status: str) -> str | None:
    content = operation.responses.get(status, {}).get("content", {})
    ref: str | None = content.get("application/json", {}).get("schema", {}).get("$ref")
    return ref


# --- The rules: each returns the problems of one operation, in words ------------------------

Rule = Callable[[Document, Operation], list[str]]


def examples_on_every_body(document: Document, operation: Operation) -> list[str]:
    return [
        f"{where}: no example"
        for where, media in media_types(operation)
        if not examples_of(document, media)
    ]


def examples_valid(document: Document, operation: Operation) -> list[str]:
    """Each example validates against its schema. Only the service's document: FastAPI drops
    nulls from a document's examples, and the service puts them back (api/openapi.py)."""
    problems = []
    for where, media in media_types(operation):
        examples = examples_of(document, media)
        root = {**media.get("schema", {}), "components": document.get("components", {})}
        validator = jsonschema_rs.validator_for(root)
        for example in examples:
            problems += [
                f"{where}: example invalid: {e.message}" for e in validator.iter_errors(example)
            ]
    return problems


def invalid_request_answered(document: Document, operation: Operation) -> list[str]:
    takes_input = bool(operation.spec.get("parameters")) or "requestBody" in operation.spec
    if "422" not in operation.responses:
        return ["no 422 (it takes parameters or a body)"] if takes_input else []
    if schema_ref(operation, "422") not in INVALID_BODIES:
        return [f"422 body is {schema_ref(operation, '422')}, not the project's"]
    return []


def unauthorized_on_token_routes(document: Document, operation: Operation) -> list[str]:
    if not operation.spec.get("security") and "401" not in operation.responses:
        return []
    problems = []
    if "401" not in operation.responses:
        problems.append("no 401 (it takes a bearer token)")
    elif "WWW-Authenticate" not in headers_of(operation, "401"):
        problems.append("401 without WWW-Authenticate")
    return problems


def forbidden_where_a_token_may_not_grant(document: Document, operation: Operation) -> list[str]:
    if operation.key in FORBIDDEN and "403" not in operation.responses:
        return ["no 403 (a reminder's token may not grant it)"]
    return []


def not_found_on_routes_with_an_id(document: Document, operation: Operation) -> list[str]:
    if "{" in operation.path and "404" not in operation.responses:
        return ["no 404 (it takes an id in its path)"]
    return []


def conflicts_listed(document: Document, operation: Operation) -> list[str]:
    if operation.key in CONFLICTS and "409" not in operation.responses:
        return ["no 409"]
    return []


def too_large_on_routes_with_a_body(document: Document, operation: Operation) -> list[str]:
    if "requestBody" in operation.spec and "413" not in operation.responses:
        return ["no 413 (it takes a body)"]
    return []


def too_many_requests_with_retry_after(document: Document, operation: Operation) -> list[str]:
    problems = []
    if operation.key in RATE_LIMITED and "429" not in operation.responses:
        problems.append("no 429 (it is rate-limited)")
    if "429" in operation.responses and "Retry-After" not in headers_of(operation, "429"):
        problems.append("429 without Retry-After")
    return problems


def database_unavailable_with_retry_after(document: Document, operation: Operation) -> list[str]:
    if operation.key in WITHOUT_DATABASE:
        return []
    if "503" not in operation.responses:
        return ["no 503 (it needs the database)"]
    problems = []
    if schema_ref(operation, "503") != ERROR:
        problems.append(f"503 body is {schema_ref(operation, '503')}, not {ERROR}")
    if "Retry-After" not in headers_of(operation, "503"):
        problems.append("503 without Retry-After")
    return problems


def request_id_on_every_answer(document: Document, operation: Operation) -> list[str]:
    return [
        f"{status} without X-Request-ID"
        for status in operation.responses
        if "X-Request-ID" not in headers_of(operation, status)
    ]


def created_answers_locate(document: Document, operation: Operation) -> list[str]:
    problems = []
    if operation.key in CREATE_ROUTES and "201" not in operation.responses:
        problems.append("no 201 (it creates)")
    takes_key = any(
        parameter.get("name") == "Idempotency-Key"
        for parameter in operation.spec.get("parameters", [])
    )
    for status in ("200", "201"):
        headers = headers_of(operation, status)
        if status == "201" and status in operation.responses and "Location" not in headers:
            problems.append("201 without Location")
        if takes_key and status in operation.responses and "Idempotent-Replayed" not in headers:
            problems.append(f"{status} without Idempotent-Replayed (it takes an Idempotency-Key)")
    return problems


ROUTE_RULES: list[Rule] = [
    examples_on_every_body,
    invalid_request_answered,
    unauthorized_on_token_routes,
    forbidden_where_a_token_may_not_grant,
    not_found_on_routes_with_an_id,
    conflicts_listed,
    too_many_requests_with_retry_after,
    database_unavailable_with_retry_after,
    created_answers_locate,
]
"""What the routes document themselves, wherever they are included."""
SERVICE_RULES: list[Rule] = [
    examples_valid,
    too_large_on_routes_with_a_body,
    request_id_on_every_answer,
]
"""What the service's app adds around them (body size limit, request ids)."""


def problems(document: Document, rules: list[Rule], prefix: str = "") -> list[str]:
    return [
        f"{operation}: {problem}"
        for operation in operations(document, prefix)
        for rule in rules
        for problem in rule(document, operation)
    ]


# --- The documents -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """create_app's app, without its lifespan: the document and /docs need no database."""
    tmp_path = tmp_path_factory.mktemp("service")
    return TestClient(create_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'db'}")))


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """An app of one's own with the routes under a prefix and the offline docs beside them."""
    tmp_path = tmp_path_factory.mktemp("library")
    scheduler = Scheduler(make_settings(tmp_path, f"sqlite:///{tmp_path / 'db'}"))
    app = FastAPI(title="my app", docs_url=None, redoc_url=None)
    app.include_router(scheduler.router, prefix=PREFIX)
    install_docs(app, path=f"{PREFIX}/docs")
    return TestClient(app)


@pytest.fixture(scope="module")
def document(service: TestClient) -> Document:
    response = service.get("/openapi.json")
    assert response.status_code == 200
    body: Document = response.json()
    return body


def test_every_operation_of_the_service_documents_its_answers(document: Document) -> None:
    assert problems(document, ROUTE_RULES + SERVICE_RULES) == []


def test_routes_included_under_a_prefix_document_their_answers(
    library: TestClient, document: Document
) -> None:
    own = library.get("/openapi.json").json()
    assert {op.key for op in operations(own, PREFIX)} == {op.key for op in operations(document)}
    assert problems(own, ROUTE_RULES, PREFIX) == []


def test_the_tables_name_routes_of_the_document(document: Document) -> None:
    keys = {operation.key for operation in operations(document)}
    for name, table in TABLES.items():
        assert table <= keys, f"{name} names routes that are not in the document: {table - keys}"


def test_the_validation_error_body_is_the_projects_own(document: Document) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's, whose shape the project does not use
    problem = schemas["Problem"]
    assert problem["required"] == ["loc", "msg", "type"]
    # Every object the document describes comes with an example.
    missing = [
        name
        for name, schema in schemas.items()
        if schema.get("type") == "object" and not schema.get("examples")
    ]
    assert missing == []


class Thing(BaseModel):
    name: str


def test_the_rules_fail_a_route_that_documents_nothing() -> None:
    app = FastAPI()

    @app.post("/things/{thing_id}", status_code=201)
    def create_thing(thing_id: str, body: Thing) -> Thing:
        return body

    found = problems(app.openapi(), ROUTE_RULES + SERVICE_RULES)
    expected = [
        "request body application/json: no example",
        "422 body is #/components/schemas/HTTPValidationError, not the project's",
        "no 404 (it takes an id in its path)",
        "no 503 (it needs the database)",
        "201 without Location",
        "no 413 (it takes a body)",
        "201 without X-Request-ID",
    ]
    for problem in expected:
        assert f"POST /things/{{thing_id}}: {problem}" in found


def test_the_service_answers_are_added_once_and_to_its_own_document_only() -> None:
    app = FastAPI()

    @app.put("/things/{thing_id}")
    def put_thing(thing_id: str, body: dict[str, str]) -> dict[str, str]:
        return body

    shared_headers = {"Retry-After": {"schema": {"type": "integer"}}}
    other = FastAPI()
    for target in (app, other):
        target.add_api_route(
            "/slow", put_thing, methods=["POST"], responses={429: {"headers": shared_headers}}
        )
    document_service(app, max_body_bytes=MAX_BODY_BYTES)
    first = app.openapi()
    assert app.openapi() is first
    assert set(first["paths"]["/things/{thing_id}"]["put"]["responses"]) == {"200", "413", "422"}
    assert "X-Request-ID" in first["paths"]["/slow"]["post"]["responses"]["429"]["headers"]
    # The routes' own `responses` are left as they were: another app shows no X-Request-ID.
    assert shared_headers == {"Retry-After": {"schema": {"type": "integer"}}}
    assert (
        "X-Request-ID"
        not in other.openapi()["paths"]["/slow"]["post"]["responses"]["429"]["headers"]
    )


# --- /docs without the Internet ----------------------------------------------------------------

ASSET = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)\"""")
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def assert_docs_served_by_the_app(client: TestClient, docs: str, openapi_url: str) -> None:
    page = client.get(docs)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert re.search(r"https?://|//[a-z]", page.text) is None, "the page names another host"
    assert f"url: '{openapi_url}'" in page.text
    assets = ASSET.findall(page.text)
    assert {Path(url).suffix for url in assets} == set(CONTENT_TYPES), assets
    for url in assets:
        assert url.startswith(f"{docs}/static/"), url
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert CONTENT_TYPES[Path(url).suffix] in answer.headers["content-type"], url
        assert answer.content == (swagger_ui_path / Path(url).name).read_bytes()
    assert client.get(openapi_url).status_code == 200


def test_docs_and_their_files_are_served_by_the_service(service: TestClient) -> None:
    assert_docs_served_by_the_app(service, "/docs", "/openapi.json")
    # ReDoc is off: it would load its script and fonts from the Internet.
    assert service.get("/redoc").status_code == 404


def test_docs_beside_routes_under_a_prefix(library: TestClient) -> None:
    assert_docs_served_by_the_app(library, f"{PREFIX}/docs", "/openapi.json")


def test_the_served_swagger_ui_reads_the_documents_openapi_version(document: Document) -> None:
    # Swagger UI before 5 refuses an OpenAPI 3.1 document ("Unable to render this definition").
    major = int(Path(str(swagger_ui_path)).name.removeprefix("swagger-ui-").split(".")[0])
    assert document["openapi"].startswith("3.1")
    assert major >= 5


def test_install_docs_refuses_an_app_without_a_document() -> None:
    with pytest.raises(ValueError, match="no OpenAPI document"):
        install_docs(FastAPI(openapi_url=None))
