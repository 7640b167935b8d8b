from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler_app.api.reminders import _plain_json_post
from tests.support import ADMIN


def subscribe(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"email": "ada@example.com", "delay_seconds": 3600, **fields}
    response = client.post("/subscribe", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_subscribe_answers_201_with_the_reminder(client: TestClient) -> None:
    before = datetime.now(UTC)
    response = client.post(
        "/subscribe",
        json={"email": "ada@example.com", "delay_seconds": 60, "subject": "Tea", "message": "Hi"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert body["status"] == "scheduled"
    assert body["subject"] == "Tea"
    assert body["remind_at"].endswith("Z")
    due = datetime.fromisoformat(body["remind_at"])
    assert before + timedelta(seconds=60) <= due <= datetime.now(UTC) + timedelta(seconds=60)
    assert len(body["cancel_token"]) >= 32
    assert response.headers["Location"] == f"/reminders/{body['id']}"


def test_reminder_ids_are_uuids_that_grow_with_creation_time(client: TestClient) -> None:
    # Rows written one after the other then share the pages of the primary-key index.
    ids = [subscribe(client)["id"] for _ in range(20)]
    assert [uuid.UUID(reminder_id).version for reminder_id in ids] == [7] * 20
    assert ids == sorted(ids)


def test_remind_at_with_an_offset_is_stored_in_utc(client: TestClient) -> None:
    local = (datetime.now(UTC) + timedelta(days=2)).astimezone(
        __import__("zoneinfo").ZoneInfo("America/New_York")
    )
    body = subscribe(client, delay_seconds=None, remind_at=local.isoformat())
    assert datetime.fromisoformat(body["remind_at"]) == local
    assert body["remind_at"].endswith("Z")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"delay_seconds": 0}, "delay_seconds"),
        ({"delay_seconds": "soon"}, "delay_seconds"),
        ({"delay_seconds": None, "remind_at": "2030-01-01T09:00:00"}, "remind_at"),
        ({"delay_seconds": None, "remind_at": "2001-01-01T09:00:00Z"}, "remind_at"),
        ({"delay_seconds": None, "remind_at": "2999-01-01T09:00:00Z"}, "remind_at"),
        ({"delay_seconds": 367 * 86400}, "delay_seconds"),
        ({"delay_seconds": None}, "remind_at"),
        ({"subject": "a\nb"}, "subject"),
        ({"message": "m" * 5001}, "message"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    client: TestClient, fields: dict[str, Any], field: str
) -> None:
    body = {"email": "ada@example.com", "delay_seconds": 60, **fields}
    response = client.post("/subscribe", json=body)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["body", field] in [loc[:2] for loc in locations]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [("not json", "application/json"), ("[1, 2]", "application/json"), ("", "text/plain")],
)
def test_a_body_that_is_not_a_json_object_is_422(
    client: TestClient, content: str, content_type: str
) -> None:
    response = client.post("/subscribe", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 422
    assert response.json()["detail"]


# Each body is posted twice: as `application/json`, the media type clients send, and with a
# charset parameter, which always takes the declared route. Both must be answered alike.
SAME_ANSWER_BODIES = {
    "valid": b'{"email": "ada@example.com", "delay_seconds": 60, "subject": "Tea"}',
    "normalized-domain": b'{"email": "Ada@EXAMPLE.com", "delay_seconds": 60}',
    "unicode-domain": '{"email": "ada@bücher.example", "delay_seconds": 60}'.encode(),
    "encoded-word-address": b'{"email": "a=?b?=@example.com", "delay_seconds": 60}',
    "encoded-word-subject": b'{"email": "a@example.com", "delay_seconds": 6, "subject": "=?a?="}',
    "remind-at": b'{"email": "ada@example.com", "remind_at": "2999-01-01T09:00:00+01:00"}',
    "remind-at-in-the-past": b'{"email": "ada@example.com", "remind_at": "2001-01-01T09:00Z"}',
    "both-times": b'{"email": "ada@example.com", "delay_seconds": 6, "remind_at": "2999-01-01Z"}',
    "number-as-string": b'{"email": "ada@example.com", "delay_seconds": "60"}',
    "bool-as-number": b'{"email": "ada@example.com", "delay_seconds": true}',
    "invalid-email": b'{"email": "ada@", "delay_seconds": 60}',
    "missing-email": b'{"delay_seconds": 60}',
    "extra-field": b'{"email": "ada@example.com", "delay_seconds": 60, "cc": "x"}',
    "duplicate-key": b'{"email": "x@example.com", "email": "ada@example.com", "delay_seconds": 6}',
    "nan": b'{"email": "ada@example.com", "delay_seconds": NaN}',
    "lone-surrogate": b'{"email": "ada@example.com", "delay_seconds": 6, "subject": "\\ud800"}',
    "line-break": b'{"email": "ada@example.com", "delay_seconds": 60, "subject": "a\\nb"}',
    "not-json": b"email=ada@example.com",
    "empty": b"",
}
# Differ from one reminder to the next whatever the route.
OWN_FIELDS = {"id", "cancel_token", "created_at", "remind_at"}


def test_only_the_usual_request_takes_the_shorter_way() -> None:
    # Otherwise both posts of the test below would take one way, and it would prove nothing.
    def scope(*headers: tuple[bytes, bytes], method: str = "POST") -> dict[str, Any]:
        return {"method": method, "headers": list(headers)}

    usual = (b"content-type", b"application/json")
    assert _plain_json_post(scope(usual))
    assert not _plain_json_post(scope((b"content-type", b"application/json; charset=utf-8")))
    assert not _plain_json_post(scope(usual, (b"idempotency-key", b"order-1")))
    assert not _plain_json_post(scope(usual, method="GET"))
    assert not _plain_json_post(scope())


@pytest.mark.parametrize("body", SAME_ANSWER_BODIES.values(), ids=SAME_ANSWER_BODIES.keys())
def test_subscribe_answers_alike_whatever_way_the_request_takes(
    client: TestClient, body: bytes
) -> None:
    answers = []
    for content_type in ("application/json", "application/json; charset=utf-8"):
        response = client.post("/subscribe", content=body, headers={"Content-Type": content_type})
        answer = response.json()
        if response.status_code == 201:
            assert response.headers["Location"] == f"/reminders/{answer['id']}"
            answer = {name: value for name, value in answer.items() if name not in OWN_FIELDS}
        answers.append((response.status_code, answer))
    assert answers[0] == answers[1]


def test_the_same_idempotency_key_returns_the_first_reminder(client: TestClient) -> None:
    headers = {"Idempotency-Key": "order-1234"}
    body = {"email": "ada@example.com", "delay_seconds": 600}
    first = client.post("/subscribe", json=body, headers=headers)
    again = client.post("/subscribe", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"

    token = first.json()["cancel_token"]
    shown = client.get(f"/reminders/{first.json()['id']}", headers=bearer(token))
    assert shown.status_code == 200

    other = client.post("/subscribe", json=body, headers={"Idempotency-Key": "order-1235"})
    assert other.json()["id"] != first.json()["id"]
    assert other.json()["cancel_token"] != token


def test_reusing_a_key_for_another_request_is_422(client: TestClient) -> None:
    headers = {"Idempotency-Key": "k-1"}
    client.post(
        "/subscribe", json={"email": "ada@example.com", "delay_seconds": 60}, headers=headers
    )
    response = client.post(
        "/subscribe", json={"email": "bob@example.com", "delay_seconds": 60}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_an_idempotency_key_with_control_characters_is_422(client: TestClient) -> None:
    response = client.post(
        "/subscribe",
        json={"email": "ada@example.com", "delay_seconds": 60},
        headers={"Idempotency-Key": "a b"},
    )
    assert response.status_code == 422


def test_the_cancel_token_and_the_admin_token_can_read_it(client: TestClient) -> None:
    created = subscribe(client)
    for headers in (bearer(created["cancel_token"]), ADMIN):
        response = client.get(f"/reminders/{created['id']}", headers=headers)
        assert response.status_code == 200
        assert response.json()["status"] == "scheduled"
        assert "cancel_token" not in response.json()


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_access_needs_a_token_of_this_reminder(client: TestClient, method: str) -> None:
    mine = subscribe(client)
    theirs = subscribe(client, email="bob@example.com")
    url = f"/reminders/{mine['id']}"

    missing = client.request(method, url)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert client.request(method, url, headers=bearer("")).status_code == 401
    assert client.request(method, url, headers=bearer("guess")).status_code == 403
    assert client.request(method, url, headers=bearer(theirs["cancel_token"])).status_code == 403
    unknown = client.request(method, "/reminders/no-such-id", headers=ADMIN)
    assert unknown.status_code == 404
    assert client.get(url, headers=ADMIN).json()["status"] == "scheduled"


def test_cancel_marks_it_cancelled_and_is_idempotent(client: TestClient) -> None:
    created = subscribe(client)
    url = f"/reminders/{created['id']}"
    first = client.delete(url, headers=bearer(created["cancel_token"]))
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert first.json()["finished_at"] is not None
    again = client.delete(url, headers=ADMIN)
    assert again.status_code == 200
    assert again.json()["finished_at"] == first.json()["finished_at"]
    assert client.get(url, headers=ADMIN).json()["status"] == "cancelled"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"scheduler": "running", "database": "ok"}


def test_the_openapi_document_describes_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/subscribe", "/reminders/{reminder_id}", "/healthz", "/readyz"} <= set(paths)
    assert "422" in paths["/subscribe"]["post"]["responses"]
