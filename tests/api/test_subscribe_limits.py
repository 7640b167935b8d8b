"""What keeps POST /subscribe from being an open mail trigger: rate limits and a token."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler_app.app import create_app
from tests.support import ADMIN, ADMIN_TOKEN, make_settings

SUBSCRIBE_TOKEN = "subscribe-token-0123456789"


@pytest.fixture
def limited(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    reminders = {"per_client_per_minute": 3, "max_pending_per_address": 2}
    settings = make_settings(tmp_path, database_url, reminders=reminders)
    with TestClient(create_app(settings)) as client:
        yield client


def body(email: str = "ada@example.com", delay_seconds: float = 3600) -> dict[str, Any]:
    return {"email": email, "delay_seconds": delay_seconds}


def test_a_client_past_its_rate_is_429_with_retry_after(limited: TestClient) -> None:
    answers = [limited.post("/subscribe", json=body(f"u{n}@example.com")) for n in range(3)]
    assert [answer.status_code for answer in answers] == [201, 201, 201]
    refused = limited.post("/subscribe", json=body("u3@example.com"))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    assert "more than 3 requests a minute from this client" in refused.json()["detail"]
    # Every kind of request counts, one that would be invalid or replayed included.
    with_key = limited.post("/subscribe", json=body(), headers={"Idempotency-Key": "k"})
    assert with_key.status_code == 429
    assert limited.post("/subscribe", json={"email": "nope"}).status_code == 429


def test_an_address_with_its_maximum_scheduled_is_429_until_one_is_gone(
    tmp_path: Path, database_url: str
) -> None:
    reminders = {"per_client_per_minute": 0, "max_pending_per_address": 2}
    with TestClient(create_app(make_settings(tmp_path, database_url, reminders=reminders))) as c:
        see_the_address_limit(c)


def see_the_address_limit(limited: TestClient) -> None:
    first = limited.post("/subscribe", json=body(delay_seconds=600))
    second = limited.post("/subscribe", json=body(delay_seconds=60))
    assert (first.status_code, second.status_code) == (201, 201)
    # The same mailbox whatever the case of its letters.
    refused = limited.post("/subscribe", json=body("ADA@Example.com"))
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("2 reminders are already scheduled")
    # When the earliest of them falls due.
    assert 55 <= int(refused.headers["Retry-After"]) <= 60

    cancelled = limited.delete(f"/reminders/{second.json()['id']}", headers=ADMIN)
    assert cancelled.status_code == 200
    assert limited.post("/subscribe", json=body()).status_code == 201


def test_a_replay_is_answered_even_at_the_address_limit(limited: TestClient) -> None:
    headers = {"Idempotency-Key": "order-1"}
    created = limited.post("/subscribe", json=body(), headers=headers)
    limited.post("/subscribe", json=body())
    replayed = limited.post("/subscribe", json=body(), headers=headers)
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == created.json()["id"]


def test_requests_at_once_for_one_address_create_no_more_than_the_limit(
    tmp_path: Path, database_url: str
) -> None:
    reminders = {"per_client_per_minute": 0, "max_pending_per_address": 3}
    settings = make_settings(tmp_path, database_url, reminders=reminders)
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(12) as threads:
        # The test client serves every thread's request on its one event loop, concurrently.
        answers = list(threads.map(lambda _: client.post("/subscribe", json=body()), range(12)))
    assert sorted(answer.status_code for answer in answers) == [201] * 3 + [429] * 9


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": "k"}], ids=["plain", "with-key"])
def test_a_subscribe_token_is_required_when_set(
    tmp_path: Path, database_url: str, headers: dict[str, str]
) -> None:
    reminders = {"subscribe_token": SUBSCRIBE_TOKEN}
    settings = make_settings(tmp_path, database_url, reminders=reminders)
    with TestClient(create_app(settings)) as client:
        missing = client.post("/subscribe", json=body(), headers=headers)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert "subscribe token" in missing.json()["detail"]
        wrong = {**headers, "Authorization": f"Bearer {SUBSCRIBE_TOKEN}x"}
        assert client.post("/subscribe", json=body(), headers=wrong).status_code == 401
        for token in (SUBSCRIBE_TOKEN, ADMIN_TOKEN):
            right = {**headers, "Authorization": f"Bearer {token}"}
            assert client.post("/subscribe", json=body(), headers=right).status_code == 201
