"""Request ids: every answer carries X-Request-ID (the client's when sane, else a new one), and
every line logged while serving the request names it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from scheduler_app import RequestIdMiddleware, Scheduler
from scheduler_app.api.limits import MAX_BODY_BYTES
from scheduler_app.app import create_app
from scheduler_app.settings import Settings
from tests.log_capture import captured_log
from tests.support import ADMIN, make_settings

# Request ids do not depend on the database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def broken_app_client(settings: Settings) -> Iterator[TestClient]:
    """The service's app with one more route, which fails: its answer is Starlette's 500."""
    app = create_app(settings)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _is_new_id(value: str) -> bool:
    return uuid.UUID(value).version == 7


def test_each_answer_gets_a_new_id_unless_the_client_sent_a_sane_one(client: TestClient) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")
    assert _is_new_id(first.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    sane = "Abc-123_z.9:/+=@" + "x" * 48  # 64 characters
    assert client.get("/healthz", headers={"X-Request-ID": sane}).headers["X-Request-ID"] == sane


@pytest.mark.parametrize(
    "insane",
    [b"", b"has space", b"x" * 65, b'quote"d', b"tab\tbed", "caf\u00e9".encode()],
)
def test_an_insane_incoming_id_is_replaced(client: TestClient, insane: bytes) -> None:
    answer = client.get("/healthz", headers={b"X-Request-ID": insane})
    assert len(answer.headers.get_list("X-Request-ID")) == 1
    assert _is_new_id(answer.headers["X-Request-ID"])


def test_error_answers_carry_the_id_too(client: TestClient) -> None:
    sent = {"X-Request-ID": "trace-42"}
    answers = {
        "404": client.get("/no-such-route", headers=sent),
        "401": client.get("/jobs", headers=sent),
        "422": client.post("/subscribe", json={"email": "nope"}, headers=sent),
        "413": client.post(
            "/subscribe",
            content=b"{}",
            headers={**sent, "Content-Length": str(MAX_BODY_BYTES + 1)},
        ),
        "405": client.put("/subscribe", headers=sent),
    }
    for code, answer in answers.items():
        assert str(answer.status_code) == code, answer.text
        assert answer.headers.get_list("X-Request-ID") == ["trace-42"], code


def test_an_operator_actions_audit_entry_has_the_answers_request_id(client: TestClient) -> None:
    paused = client.post("/jobs/token-cleanup/pause", headers={**ADMIN, "X-Request-ID": "a b"})
    resumed = client.post("/jobs/token-cleanup/resume", headers={**ADMIN, "X-Request-ID": "op-5"})
    assert (paused.status_code, resumed.status_code) == (200, 200), (paused.text, resumed.text)
    listed = client.get("/admin/audit", headers=ADMIN).json()["items"]
    by_action = {entry["action"]: entry["request_id"] for entry in listed}
    assert by_action == {"pause_job": paused.headers["X-Request-ID"], "resume_job": "op-5"}


def test_a_rate_limited_answer_carries_the_id(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, reminders={"per_client_per_minute": 1})
    body = {"email": "ann@example.com", "delay_seconds": 600}
    with TestClient(create_app(settings)) as client:
        assert client.post("/subscribe", json=body).status_code == 201
        limited = client.post("/subscribe", json=body, headers={"X-Request-ID": "burst-1"})
    assert limited.status_code == 429
    assert limited.headers["X-Request-ID"] == "burst-1"


def test_an_unhandled_error_answers_500_with_the_id_and_its_log_line_names_it(
    broken_app_client: TestClient,
) -> None:
    with captured_log("json") as log:
        answer = broken_app_client.get("/broken")
    assert answer.status_code == 500
    request_id = answer.headers["X-Request-ID"]
    assert _is_new_id(request_id)
    [line] = log.find("unhandled error")
    assert line["level"] == "ERROR"
    assert line["request_id"] == request_id
    assert "RuntimeError: a bug" in line["exc_info"]


def test_in_an_app_of_your_own_the_middleware_names_the_request_in_its_lines(
    settings: Settings,
) -> None:
    scheduler = Scheduler(settings)
    app = FastAPI(lifespan=scheduler.lifespan)
    app.include_router(scheduler.router, prefix="/scheduler")
    app.add_middleware(RequestIdMiddleware)
    shop = logging.getLogger("shop")

    @app.post("/orders")
    async def order() -> dict[str, str]:
        shop.info("order placed")
        return {"status": "ok"}

    with TestClient(app) as client, captured_log("json") as log:
        placed = client.post("/orders")
        sent = client.post("/orders", headers={"X-Request-ID": "order-9"})
        health = client.get("/scheduler/healthz")
        outside = "after the requests"
        shop.info(outside)
    assert _is_new_id(health.headers["X-Request-ID"])
    lines = log.find("order placed")
    assert [line["request_id"] for line in lines] == [placed.headers["X-Request-ID"], "order-9"]
    assert sent.headers["X-Request-ID"] == "order-9"
    [after] = log.find(outside)
    assert "request_id" not in after
