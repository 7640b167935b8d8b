"""Hostile input: oversized bodies, wrong content types, unicode, header injection, NUL bytes.

Every rejection is a JSON error whose `detail` says what is wrong (for 422: `loc` names the
field); nothing rejected is stored; what is accepted is stored and delivered exactly as sent, and
no CR or LF from a request reaches a message header. Errors from the database are 503 or 500,
JSON too, and never log the SQL parameters (they hold e-mail addresses).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DataError, OperationalError
from starlette.types import Message

from scheduler_app.api.limits import MAX_BODY_BYTES
from scheduler_app.app import create_app
from scheduler_app.settings import Settings
from tests.support import (
    ADMIN,
    fresh_postgres_database,
    live_server,
    make_settings,
    postgres_refusing_connections,
    show_reminder,
    wait_for_status,
    wait_until,
)

TOO_LARGE = {"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}
VALID = {"email": "ada@example.com", "delay_seconds": 3600}
VALID_JSON = b'{"email": "ada@example.com", "delay_seconds": 3600}'
SECRET_EMAIL = "secret.person@example.com"

# Stored unchanged; escaped where the eye cannot tell the characters apart.
UNICODE_SUBJECT = (
    "Ünïcödé 🎉 "
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 "  # a ZWJ sequence
    "\U0001f44d\U0001f3fd "  # a skin tone modifier
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 "  # Hebrew, Arabic
    "\u202eevil\u202c "  # a right-to-left override
    "日本語 e\u0301 \u200b"  # CJK, a combining accent, a zero-width space
)
# Short enough for one RFC 2047 encoded-word: delivered unfolded.
SHORT_UNICODE_SUBJECT = "🎉 \u202eevil\u202c e\u0301 \U0001f44d\U0001f3fd \u05e9\u05dc\u05d5\u05dd"
UNICODE_MESSAGE = (
    "Zeile 1 🎉\n"
    "\u05e9\u05d5\u05e8\u05d4 2 \u202e\u2067mixed\u2069\n"  # RTL, override, isolate
    "line 3: \U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522\ttab"
)
ASTRAL_SUBJECT = "🎉" * 200  # 200 characters, 800 UTF-8 bytes: the column counts characters

# A literal "%0d%0a" is not a line break anywhere: not in JSON, not in a header.
PERCENT_EMAIL = "ada%0d%0abcc%3aevil@example.com"
PERCENT_SUBJECT = "Hi%0d%0aBcc: evil@example.com%0D%0A%0a"


def problems(response: Response) -> list[dict[str, Any]]:
    body = response.json()
    assert isinstance(body["detail"], list), body
    return list(body["detail"])


def assert_json_error(response: Response, status: int) -> Any:
    """The response is status with a JSON body whose `detail` is not empty; return the detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    detail = response.json()["detail"]
    assert detail
    if isinstance(detail, list):
        assert all(problem["msg"] and isinstance(problem["loc"], list) for problem in detail)
    return detail


def assert_names_field(response: Response, *location: str) -> None:
    """A 422 whose problems include one at location (e.g. "body", "email")."""
    assert_json_error(response, 422)
    locations = [tuple(problem["loc"][: len(location)]) for problem in problems(response)]
    assert location in locations, response.text


def eml_messages(directory: Path) -> list[EmailMessage]:
    """The outbox's messages, parsed with the modern policy (headers decoded)."""
    if not directory.is_dir():
        return []
    parsed = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        parsed.append(message)
    return parsed


def raw_header_block(directory: Path, reminder_id: str) -> bytes:
    for path in directory.glob("*.eml"):
        data = path.read_bytes()
        if reminder_id.encode() in data:
            return data.split(b"\n\n", 1)[0]
    raise AssertionError(f"no message for reminder {reminder_id} in {directory}")


def delivered(directory: Path, reminder_id: str) -> EmailMessage:
    found = [m for m in eml_messages(directory) if m["X-Reminder-Id"] == reminder_id]
    assert len(found) == 1, f"{len(found)} messages for {reminder_id}"
    return found[0]


def stored_reminders(database_url: str) -> dict[str, tuple[str, str, str]]:
    """id -> (email, subject, message), read from the table itself."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, args FROM tasks"))
            stored = {row.id: json.loads(row.args) for row in rows}
            return {rid: (a["email"], a["subject"], a["message"]) for rid, a in stored.items()}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def rejecting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app on SQLite for the cases rejected before any storage (cheaper than one per test)."""
    tmp_path = tmp_path_factory.mktemp("rejecting")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in [name for name in os.environ if name.startswith("SCHEDULER_")]:
            monkeypatch.delenv(name)
        settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'scheduler.db'}")
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app on each database; a 500 is an answer to check, not an exception in the test."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


# --- Request size ------------------------------------------------------------------------------


def test_a_body_declared_too_large_is_413(rejecting: TestClient) -> None:
    body = b'{"email": "ada@example.com", "message": "' + b"m" * MAX_BODY_BYTES + b'"}'
    response = rejecting.post(
        "/subscribe", content=body, headers={"Content-Type": "application/json"}
    )
    assert_json_error(response, 413)
    assert response.json() == TOO_LARGE


def test_a_chunked_body_growing_too_large_is_413(rejecting: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "ada@example.com", "message": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 1):
            yield b"m" * 4096
        yield b'"}'

    # A generator body goes out without Content-Length (Transfer-Encoding: chunked).
    response = rejecting.post(
        "/subscribe", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_json_error(response, 413)
    assert response.json() == TOO_LARGE


def test_a_chunked_upload_to_a_real_server_is_cut_off_with_a_json_413(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'scheduler.db'}"))
    with live_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /subscribe HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(MAX_BODY_BYTES // 8192 + 1):  # one chunk past the limit, no end
                sock.sendall(b"2000\r\n" + b"m" * 8192 + b"\r\n")
            answer = b""
            while b"}" not in answer:
                received = sock.recv(4096)
                assert received, answer
                answer += received
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == TOO_LARGE


def test_a_body_at_the_limit_is_read(rejecting: TestClient) -> None:
    prefix = b'{"email": "ada@example.com", "delay_seconds": 60, "message": "'
    body = prefix + b"m" * (MAX_BODY_BYTES - len(prefix) - 2) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = rejecting.post(
        "/subscribe", content=body, headers={"Content-Type": "application/json"}
    )
    assert_names_field(response, "body", "message")  # too long for a message, but it was read


@dataclass
class Exchange:
    """What a raw ASGI request got back, and how many body chunks the app asked for."""

    status: int
    headers: dict[str, str]
    body: bytes
    chunks_read: int


def asgi_post(
    app: FastAPI, headers: list[tuple[bytes, bytes]], chunks: list[bytes], path: str = "/subscribe"
) -> Exchange:
    """POST to app at the ASGI level: headers exactly as given, the body in these chunks."""

    async def run() -> Exchange:
        pending = list(chunks)
        read = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> Message:
            nonlocal read
            if not pending:
                return {"type": "http.disconnect"}
            read += 1
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message: Message) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        return Exchange(
            status=start["status"],
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]},
            body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
            chunks_read=read,
        )

    return anyio.run(run)


@pytest.fixture(scope="module")
def bare_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The app without its lifespan: enough for what is answered before any route runs."""
    tmp_path = tmp_path_factory.mktemp("bare")
    return create_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'scheduler.db'}"))


def test_a_declared_length_over_the_limit_is_answered_before_reading(bare_app: FastAPI) -> None:
    exchange = asgi_post(
        bare_app,
        [(b"content-type", b"application/json"), (b"content-length", b"1000000000")],
        [b"x" * 1024] * 4,
    )
    assert exchange.status == 413
    assert exchange.headers["content-type"] == "application/json"
    assert exchange.chunks_read == 0
    assert json.loads(exchange.body) == TOO_LARGE


def test_reading_stops_once_a_chunked_body_passes_the_limit(bare_app: FastAPI) -> None:
    chunk = b"m" * 8192
    count = 100  # 800 KiB offered
    exchange = asgi_post(
        bare_app,
        [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        [b'{"message": "', *([chunk] * count), b'"}'],
    )
    assert exchange.status == 413
    assert json.loads(exchange.body) == TOO_LARGE
    assert exchange.chunks_read <= 1 + MAX_BODY_BYTES // len(chunk) + 1


def test_a_body_that_lies_about_its_length_is_413(bare_app: FastAPI) -> None:
    exchange = asgi_post(
        bare_app,
        [(b"content-type", b"application/json"), (b"content-length", b"10")],
        [b"x" * 8192] * 10,
    )
    assert exchange.status == 413


@pytest.mark.parametrize(
    "values",
    [[b"abc"], [b"-1"], [b"1e3"], [b""], [b"12, 13"], [b"12", b"13"], [b"\xff"], [b"+5"]],
    ids=[
        "word",
        "negative",
        "exponent",
        "empty",
        "list-disagreeing",
        "two-disagreeing",
        "latin1",
        "plus",
    ],
)
def test_a_malformed_content_length_is_a_json_400(bare_app: FastAPI, values: list[bytes]) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(b"content-length", value) for value in values]
    exchange = asgi_post(bare_app, headers, [b"{}"])
    assert exchange.status == 400
    assert exchange.headers["content-type"] == "application/json"
    assert exchange.chunks_read == 0
    assert json.loads(exchange.body)["detail"].startswith("malformed Content-Length header")


def test_agreeing_content_lengths_pass(bare_app: FastAPI) -> None:
    exchange = asgi_post(
        bare_app,
        [(b"content-type", b"application/json"), (b"content-length", b"2, 2")],
        [b"{}"],
        path="/healthz",
    )
    assert exchange.status == 405  # past the size check, to the router


# --- Content types and bodies that are not a JSON object ---------------------------------------

MULTIPART = (
    b'--xyz\r\nContent-Disposition: form-data; name="email"\r\n\r\nada@example.com\r\n'
    b'--xyz\r\nContent-Disposition: form-data; name="delay_seconds"\r\n\r\n60\r\n--xyz--\r\n'
)


@pytest.mark.parametrize(
    ("content_type", "content", "location"),
    [
        ("text/plain", VALID_JSON, ("body",)),
        ("text/plain; charset=utf-8", b"\xff\xfe not utf-8", ("body",)),
        (
            "application/x-www-form-urlencoded",
            b"email=ada%40example.com&delay_seconds=60",
            ("body",),
        ),
        ("multipart/form-data; boundary=xyz", MULTIPART, ("body",)),
        ("application/xml", b"<reminder><email>ada@example.com</email></reminder>", ("body",)),
        ("application/octet-stream", b"\x00\x01\x02\xff", ("body",)),
        (None, VALID_JSON, ("body",)),
        ("application/json", b"", ("body",)),
        ("application/json", b"[]", ("body",)),
        ("application/json", b'"ada@example.com"', ("body",)),
        ("application/json", b"null", ("body",)),
        ("application/json", b"3600", ("body",)),
        ("application/json", b'{"email": "ada@example.com", "delay_seconds": 3600', ("body",)),
        ("application/json", b'\xef\xbb\xbf{"email": "ada@example.com"}', ("body",)),
        ("application/json", b'{"email": "\xff\xfe@example.com", "delay_seconds": 60}', ("body",)),
        (
            "application/json; charset=latin-1",
            '{"email": "jörg@example.com"}'.encode("latin-1"),
            ("body",),
        ),
        ("application/json", b"[" * 10_000 + b"]" * 10_000, ("body",)),
        ("application/json", b'{"email": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", ("body",)),
        (
            "application/json",
            b'{"email": "ada@example.com", "delay_seconds": ' + b"9" * 5000 + b"}",
            ("body",),
        ),
        (
            "application/json",
            b'{"email": "ada@example.com", "delay_seconds": NaN}',
            ("body", "delay_seconds"),
        ),
        (
            "application/json",
            b'{"email": "ada@example.com", "delay_seconds": -Infinity}',
            ("body", "delay_seconds"),
        ),
        (
            "application/json",
            b'{"email": "ada@example.com", "delay_seconds": 60, "subject": 1e999}',
            ("body", "subject"),
        ),
        (
            "application/json",
            b'{"email": "ada@example.com", "email": ["x"], "delay_seconds": 60}',
            ("body", "email"),
        ),
        (
            "application/json",
            b'{"email": "ada@example.com", "delay_seconds": 60, "subject": "\\ud800"}',
            ("body", "subject"),
        ),
    ],
    ids=[
        "text-plain-json",
        "text-plain-not-utf8",
        "form",
        "multipart",
        "xml",
        "octet-stream",
        "no-content-type",
        "empty",
        "array",
        "string",
        "null",
        "number",
        "truncated",
        "bom",
        "not-utf8",
        "latin1-charset",
        "deeply-nested",
        "deeply-nested-field",
        "5000-digit-number",
        "nan",
        "minus-infinity",
        "overflowing-float-as-subject",
        "duplicate-key",
        "lone-surrogate",
    ],
)
def test_a_body_that_is_not_a_valid_json_object_is_422_with_a_message(
    rejecting: TestClient, content_type: str | None, content: bytes, location: tuple[str, ...]
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = rejecting.post("/subscribe", content=content, headers=headers)
    assert_names_field(response, *location)


# --- Header injection --------------------------------------------------------------------------

BREAKS = {"cr": "\r", "lf": "\n", "crlf": "\r\n", "lf-space": "\n ", "crlf-tab": "\r\n\t"}


@pytest.mark.parametrize("brk", BREAKS.values(), ids=BREAKS.keys())
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "ada@example.com{brk}Bcc: evil@example.com"),
        ("email", "ada{brk}@example.com"),
        ("email", "Ada{brk}Bcc: evil@example.com <ada@example.com>"),
        ("subject", "Hi{brk}Bcc: evil@example.com"),
        ("subject", "Hi{brk}{brk}<html>body injection</html>"),
        ("subject", "{brk}"),
    ],
)
def test_a_line_break_in_a_header_field_is_422_naming_it(
    rejecting: TestClient, field: str, value: str, brk: str
) -> None:
    body = {**VALID, field: value.format(brk=brk)}
    response = rejecting.post("/subscribe", json=body)
    assert_names_field(response, "body", field)


@pytest.mark.parametrize(
    "email_address",
    ["a" * 64 + "@example.com", "ada@" + ".".join(["d" * 63] * 3) + ".com"],
    ids=["64-character-local-part", "long-domain"],
)
def test_a_long_but_valid_address_is_kept_intact(client: TestClient, email_address: str) -> None:
    created = client.post("/subscribe", json={**VALID, "email": email_address})
    assert created.status_code == 201, created.text
    assert show_reminder(client, created.json()["id"])["email"] == email_address


@pytest.mark.parametrize(
    "email_address",
    [
        "a" * 1000 + "@example.com",
        "ada@" + "d" * 64 + ".com",
        "ada@" + ".".join(["d" * 63] * 5) + ".com",
        "a" * 300,
        "@example.com",
        "ada@",
        "ada@@example.com",
        "ada@example..com",
        "",
    ],
    ids=[
        "1000-character-local-part",
        "64-character-label",
        "domain-over-255",
        "no-at",
        "no-local-part",
        "no-domain",
        "two-ats",
        "empty-label",
        "empty",
    ],
)
def test_an_invalid_address_is_422_naming_email(rejecting: TestClient, email_address: str) -> None:
    response = rejecting.post("/subscribe", json={**VALID, "email": email_address})
    assert_names_field(response, "body", "email")


def test_a_nul_byte_in_the_address_is_422_naming_email(rejecting: TestClient) -> None:
    response = rejecting.post("/subscribe", json={**VALID, "email": "ada\x00@example.com"})
    assert_names_field(response, "body", "email")


@pytest.mark.parametrize("field", ["subject", "message"])
def test_a_nul_byte_in_subject_or_message_is_422_naming_it(client: TestClient, field: str) -> None:
    response = client.post("/subscribe", json={**VALID, field: "before\x00after"})
    assert_names_field(response, "body", field)


@pytest.mark.parametrize(
    "path", ["/reminders/%00", "/jobs/%00", "/jobs/%00/runs", "/jobs?q=%00", "/reminders?email=%00"]
)
def test_a_nul_byte_in_a_path_or_query_is_422(client: TestClient, path: str) -> None:
    response = client.get(path, headers=ADMIN)
    assert_json_error(response, 422)
    assert response.json()["detail"][0]["msg"] == "must not contain NUL characters"


@pytest.mark.parametrize("field", ["email", "error_contains"])
def test_a_nul_byte_in_a_retry_filter_is_422_naming_it(client: TestClient, field: str) -> None:
    response = client.post("/reminders/retry", json={field: "a\x00b"}, headers=ADMIN)
    assert_names_field(response, "body", field)


@pytest.mark.parametrize(
    "separator",
    ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"],
    ids=["VT", "FF", "FS", "GS", "RS", "NEL", "LS", "PS"],
)
def test_a_unicode_line_separator_in_the_subject_is_422(
    rejecting: TestClient, separator: str
) -> None:
    response = rejecting.post("/subscribe", json={**VALID, "subject": f"Hi{separator}there"})
    assert_names_field(response, "body", "subject")


# --- Text without a UTF-8 form, dates beyond UTC, forged cursors -------------------------------


def json_bytes(body: dict[str, Any]) -> bytes:
    # json.dumps writes a lone surrogate as its escape ("\ud800"), as a hostile client would.
    return json.dumps(body).encode()


@pytest.mark.parametrize("key", [None, "surrogate-key"], ids=["no-key", "key"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "ada\ud800@example.com"),
        ("subject", "Hi \ud83c"),  # the first half of an emoji's pair
        ("message", "\ud800"),
        ("message", "low \udfff alone"),
    ],
)
def test_a_lone_surrogate_in_a_reminder_is_422_naming_it(
    rejecting: TestClient, field: str, value: str, key: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = json_bytes({**VALID, field: value})
    assert_names_field(rejecting.post("/subscribe", content=body, headers=headers), "body", field)


@pytest.mark.parametrize("field", ["email", "error_contains"])
def test_a_lone_surrogate_in_a_retry_filter_is_422_naming_it(
    rejecting: TestClient, field: str
) -> None:
    headers = {**ADMIN, "Content-Type": "application/json"}
    body = json_bytes({field: "a\udc00b"})
    response = rejecting.post("/reminders/retry", content=body, headers=headers)
    assert_names_field(response, "body", field)


def test_a_url_or_header_cannot_carry_a_lone_surrogate(rejecting: TestClient) -> None:
    # The UTF-8 form a surrogate would have (ED A0 80) is no UTF-8: percent-decoding replaces
    # it with U+FFFD, and a header's bytes are read as Latin-1.
    surrogate = "%ED%A0%80"
    assert rejecting.get(f"/jobs?q={surrogate}", headers=ADMIN).status_code == 200
    assert rejecting.get(f"/reminders?email={surrogate}", headers=ADMIN).status_code == 200
    assert_json_error(rejecting.get(f"/jobs/{surrogate}", headers=ADMIN), 404)
    assert_names_field(rejecting.get(f"/runs?cursor={surrogate}", headers=ADMIN), "query", "cursor")
    keyed = rejecting.post("/subscribe", json=VALID, headers={b"Idempotency-Key": b"\xed\xa0\x80"})
    assert_names_field(keyed, "header", "Idempotency-Key")


BEYOND_UTC = {
    "year-1-east": "0001-01-01T00:00:00+14:00",
    "year-1-a-minute-east": "0001-01-01T00:00:59.999999+00:01",
    "year-9999-west": "9999-12-31T23:59:59-14:00",
    "year-9999-a-minute-west": "9999-12-31T23:59:00-00:01",
}


@pytest.mark.parametrize("moment", BEYOND_UTC.values(), ids=BEYOND_UTC.keys())
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/subscribe", "remind_at"),
        ("/reminders/retry", "finished_after"),
        ("/reminders/retry", "finished_before"),
    ],
)
def test_a_date_beyond_utc_is_422_naming_it(
    rejecting: TestClient, path: str, field: str, moment: str
) -> None:
    body = {"email": "ada@example.com"} if path == "/subscribe" else {}
    response = rejecting.post(path, json={**body, field: moment}, headers=ADMIN)
    assert_names_field(response, "body", field)


def test_dates_at_the_ends_of_utc_are_valid_filters(client: TestClient) -> None:
    for moment in [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00-14:00",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59+14:00",
    ]:
        for field in ["finished_after", "finished_before"]:
            response = client.post("/reminders/retry", json={field: moment}, headers=ADMIN)
            assert response.status_code == 200, (field, moment, response.text)
            assert response.json() == {"requeued": []}


def cursor_of(position: object) -> str:
    raw = position if isinstance(position, bytes) else json.dumps(position).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_CURSORS: dict[str, object] = {
    "bool-phase": [True, None, "x"],
    "false-phase": [False, 1.5, "x"],
    "phase-2": [2, 1.5, "x"],
    "scheduled-without-time": [0, None, "x"],
    "paused-with-time": [1, 1.5, "x"],
    "text-time": [0, "1.5", "x"],
    "infinite-time": b'[0, 1e999, "x"]',
    "nan-time": b'[0, NaN, "x"]',
    "huge-int-time": b"[0, 1" + b"0" * 400 + b', "x"]',
    "nested-time": [0, [1.5], "x"],
    "object-id": [0, 1.5, {"id": "x"}],
    "number-id": [0, 1.5, 7],
    "empty-id": [0, 1.5, ""],
    "nul-id": [0, 1.5, "x\x00"],
    "surrogate-id": [0, 1.5, "\ud800"],
    "too-long": [0, 1.5, "x", "y"],
    "too-short": ["x"],
    "time-underflow": ["0001-01-01T00:00:00+14:00", "x"],
    "time-overflow": ["9999-12-31T23:59:59-14:00", "x"],
    "naive-time": ["2026-01-01T00:00:00", "x"],
    "epoch-time": [1767225600, "x"],
    "null-id-after-time": ["2026-01-01T00:00:00+00:00", None],
    "list-id-after-time": ["2026-01-01T00:00:00+00:00", ["x"]],
    "surrogate-id-after-time": ["2026-01-01T00:00:00+00:00", "\udc00"],
    "object": {"phase": 0},
    "not-json": b"[0, 1.5,",
    "not-base64": "***",
}


@pytest.mark.parametrize("position", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
def test_a_forged_cursor_is_422_naming_it_on_every_paged_route(
    rejecting: TestClient, position: object
) -> None:
    cursor = position if isinstance(position, str) else cursor_of(position)
    created = rejecting.post("/subscribe", json=VALID).json()["id"]
    for path in ["/jobs", "/runs", f"/jobs/reminder:{created}/runs", "/reminders"]:
        response = rejecting.get(path, params={"cursor": cursor}, headers=ADMIN)
        assert_names_field(response, "query", "cursor")
        assert problems(response)[0]["msg"] == "is not a cursor from a previous page"


def test_a_cursor_at_the_extremes_of_its_types_is_answered(client: TestClient) -> None:
    # Forged too, but of the right types: each database compares them without a complaint.
    created = client.post("/subscribe", json=VALID).json()["id"]
    by_time = ["0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59.999999+00:00"]
    routes: dict[str, list[list[object]]] = {
        "/jobs": [
            [0, 1.7976931348623157e308, "~"],
            [0, -1.7976931348623157e308, "!"],
            [1, None, "~"],
        ],
        "/runs": [[moment, "~"] for moment in by_time],
        f"/jobs/reminder:{created}/runs": [[moment, "~"] for moment in by_time],
        "/reminders": [[moment, "~"] for moment in by_time],
    }
    for path, positions in routes.items():
        for position in positions:
            response = client.get(path, params={"cursor": cursor_of(position)}, headers=ADMIN)
            assert response.status_code == 200, (path, position, response.text)


def test_unicode_is_stored_intact(client: TestClient, database_url: str) -> None:
    created = client.post(
        "/subscribe", json={**VALID, "subject": UNICODE_SUBJECT, "message": UNICODE_MESSAGE}
    )
    assert created.status_code == 201, created.text
    reminder_id = created.json()["id"]
    assert created.json()["subject"] == UNICODE_SUBJECT
    assert show_reminder(client, reminder_id)["subject"] == UNICODE_SUBJECT
    stored = stored_reminders(database_url)[reminder_id]
    assert stored == (VALID["email"], UNICODE_SUBJECT, UNICODE_MESSAGE)


def test_unicode_is_delivered_intact(client: TestClient, settings: Settings) -> None:
    created = client.post(
        "/subscribe",
        json={
            "email": "ada@example.com",
            "delay_seconds": 0.2,
            "subject": SHORT_UNICODE_SUBJECT,
            "message": UNICODE_MESSAGE,
        },
    )
    assert created.status_code == 201, created.text
    reminder_id = created.json()["id"]
    wait_for_status(client, reminder_id, "sent")
    message = delivered(settings.mail.outbox_dir, reminder_id)
    assert message["Subject"] == SHORT_UNICODE_SUBJECT
    assert message.get_content().rstrip("\n") == UNICODE_MESSAGE
    assert raw_header_block(settings.mail.outbox_dir, reminder_id).isascii()


def test_a_long_unicode_subject_is_delivered_with_its_spaces(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'scheduler.db'}")
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/subscribe", json={**VALID, "delay_seconds": 0.2, "subject": UNICODE_SUBJECT}
        )
        reminder_id = created.json()["id"]
        wait_for_status(client, reminder_id, "sent")
    assert delivered(settings.mail.outbox_dir, reminder_id)["Subject"] == UNICODE_SUBJECT


def test_a_subject_of_200_astral_characters_fits(client: TestClient) -> None:
    created = client.post("/subscribe", json={**VALID, "subject": ASTRAL_SUBJECT})
    assert created.status_code == 201, created.text
    assert show_reminder(client, created.json()["id"])["subject"] == ASTRAL_SUBJECT
    too_long = client.post("/subscribe", json={**VALID, "subject": ASTRAL_SUBJECT + "🎉"})
    assert_names_field(too_long, "body", "subject")


def test_percent_encoded_line_breaks_stay_literal_and_harmless(
    client: TestClient, settings: Settings
) -> None:
    created = client.post(
        "/subscribe",
        json={"email": PERCENT_EMAIL, "delay_seconds": 0.2, "subject": PERCENT_SUBJECT},
    )
    assert created.status_code == 201, created.text
    reminder_id = created.json()["id"]
    shown = show_reminder(client, reminder_id)
    assert (shown["email"], shown["subject"]) == (PERCENT_EMAIL, PERCENT_SUBJECT)

    wait_for_status(client, reminder_id, "sent")
    message = delivered(settings.mail.outbox_dir, reminder_id)
    assert message.get_all("To") == [PERCENT_EMAIL]
    assert message["Subject"] == PERCENT_SUBJECT
    assert message.get_all("Bcc") is None
    assert len(message.get_all("Subject") or []) == 1
    header_lines = raw_header_block(settings.mail.outbox_dir, reminder_id).split(b"\n")
    assert not any(line.lower().startswith(b"bcc") for line in header_lines)
    assert b"\r" not in b"\n".join(header_lines)


# --- Every error is JSON -----------------------------------------------------------------------


def test_unknown_routes_and_methods_are_json(rejecting: TestClient) -> None:
    assert assert_json_error(rejecting.get("/no/such/route"), 404) == "Not Found"
    not_allowed = rejecting.put("/subscribe", json=VALID)
    assert assert_json_error(not_allowed, 405) == "Method Not Allowed"
    assert not_allowed.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/reminders/some-id", "DELETE, GET"), ("/jobs/daily-report", "DELETE, GET")],
)
def test_a_405_lists_every_method_of_the_resource(
    rejecting: TestClient, path: str, allowed: str
) -> None:
    response = rejecting.request("OPTIONS", path, headers=ADMIN)
    assert_json_error(response, 405)
    assert response.headers["Allow"] == allowed


def test_a_missing_or_wrong_token_is_a_json_401_or_403(rejecting: TestClient) -> None:
    missing = rejecting.get("/jobs")
    assert "Bearer" in assert_json_error(missing, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    basic = rejecting.get("/jobs", headers={"Authorization": "Basic YWRhOnNlY3JldA=="})
    assert_json_error(basic, 401)
    assert_json_error(rejecting.get("/jobs", headers={"Authorization": "Bearer wrong"}), 401)
    created = rejecting.post("/subscribe", json=VALID).json()
    other = {"Authorization": "Bearer not-the-cancel-token"}
    assert_json_error(rejecting.get(f"/reminders/{created['id']}", headers=other), 403)


def test_query_and_path_problems_are_422_naming_the_parameter(rejecting: TestClient) -> None:
    assert_names_field(rejecting.get("/jobs?limit=0", headers=ADMIN), "query", "limit")
    assert_names_field(rejecting.get("/jobs?limit=1e999", headers=ADMIN), "query", "limit")
    assert_names_field(rejecting.get("/jobs?kind=%00", headers=ADMIN), "query", "kind")
    assert_names_field(rejecting.get("/runs?cursor=%00", headers=ADMIN), "query", "cursor")
    long_id = "j" * 201
    assert_names_field(rejecting.get(f"/jobs/{long_id}", headers=ADMIN), "path", "job_id")
    nul = rejecting.get("/reminders/%00", headers=ADMIN)
    assert assert_json_error(nul, 422)[0]["loc"] == ["path"]


def failing_app(settings: Settings) -> FastAPI:
    """The app plus routes that fail the way a broken database or a bug would."""
    app = create_app(settings)
    statement = "INSERT INTO reminders (email) VALUES (?)"

    def unavailable() -> None:
        raise OperationalError(statement, {"email": SECRET_EMAIL}, Exception("database is locked"))

    def refused() -> None:
        raise DataError(statement, {"email": SECRET_EMAIL}, Exception("value too long"))

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test/unavailable", unavailable)
    app.add_api_route("/test/refused", refused)
    app.add_api_route("/test/broken", broken)
    return app


def test_a_database_that_is_unavailable_is_503_and_its_parameters_stay_out_of_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'scheduler.db'}")
    with TestClient(failing_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/test/unavailable")
    assert assert_json_error(response, 503) == "database unavailable, retry shortly"
    assert response.headers["Retry-After"] == "5"
    [record] = [r for r in caplog.records if r.name == "scheduler_app.api.errors"]
    assert record.levelno == logging.WARNING
    assert "database is locked" in record.getMessage()
    assert SECRET_EMAIL not in caplog.text


@pytest.mark.parametrize("path", ["/test/refused", "/test/broken"])
def test_other_failures_are_a_json_500_and_sql_parameters_stay_out_of_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'scheduler.db'}")
    with TestClient(failing_app(settings), raise_server_exceptions=False) as client:
        response = client.get(path)
    assert assert_json_error(response, 500) == "internal error; the details are in the service log"
    assert [r.levelno for r in caplog.records if r.name == "scheduler_app.api.errors"] == [
        logging.ERROR
    ]
    assert SECRET_EMAIL not in caplog.text


def test_a_held_sqlite_write_lock_answers_503_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "scheduler.db"
    settings = make_settings(tmp_path, f"sqlite:///{database}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        kept = client.post("/subscribe", json={**VALID, "subject": UNICODE_SUBJECT}).json()
        before = show_reminder(client, kept["id"])
        # Another process, in the same WAL mode as the engine, holds the write lock.
        blocker = sqlite3.connect(database, timeout=10, isolation_level=None)
        try:
            blocker.execute("PRAGMA journal_mode=WAL")
            blocker.execute("BEGIN EXCLUSIVE")
            response = client.post("/subscribe", json={**VALID, "email": SECRET_EMAIL})
            assert show_reminder(client, kept["id"]) == before  # readers go on under WAL
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert assert_json_error(response, 503) == "database unavailable, retry shortly"
        assert response.headers["Retry-After"] == "5"
        warnings = [r for r in caplog.records if r.name == "scheduler_app.api.errors"]
        assert [r.levelno for r in warnings] == [logging.WARNING]
        assert "locked" in warnings[0].getMessage()
        assert SECRET_EMAIL not in caplog.text

        again = client.post("/subscribe", json={**VALID, "email": SECRET_EMAIL})
        assert again.status_code == 201, again.text
        assert show_reminder(client, kept["id"]) == before
    assert set(stored_reminders(f"sqlite:///{database}")) == {kept["id"], again.json()["id"]}


@pytest.mark.postgres
def test_postgresql_refusing_connections_answers_503_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        fresh_postgres_database() as url,
        TestClient(create_app(make_settings(tmp_path, url))) as client,
    ):
        kept = client.post("/subscribe", json=VALID).json()
        before = show_reminder(client, kept["id"])
        with postgres_refusing_connections(url):
            read = client.get(f"/reminders/{kept['id']}", headers=ADMIN)
            write = client.post("/subscribe", json={**VALID, "email": SECRET_EMAIL})
        for response in (read, write):
            assert assert_json_error(response, 503) == "database unavailable, retry shortly"
            assert response.headers["Retry-After"] == "5"
        assert SECRET_EMAIL not in caplog.text

        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=30)
        assert show_reminder(client, kept["id"]) == before
        assert client.post("/subscribe", json=VALID).status_code == 201


# --- After all of it ---------------------------------------------------------------------------

BARRAGE: list[tuple[str, dict[str, Any]]] = [
    ("oversized", {"content": b"x" * (MAX_BODY_BYTES + 1)}),
    ("text/plain", {"content": VALID_JSON, "headers": {"Content-Type": "text/plain"}}),
    ("form", {"data": {"email": "ada@example.com", "delay_seconds": "60"}}),
    (
        "not utf-8",
        {"content": b'{"email": "\xff"}', "headers": {"Content-Type": "application/json"}},
    ),
    ("nested", {"content": b"[" * 10_000, "headers": {"Content-Type": "application/json"}}),
    ("array", {"json": [VALID]}),
    ("crlf email", {"json": {**VALID, "email": "ada@example.com\r\nBcc: evil@example.com"}}),
    ("crlf subject", {"json": {**VALID, "subject": "Hi\r\nBcc: evil@example.com"}}),
    ("lf subject", {"json": {**VALID, "subject": "Hi\nX-Injected: yes"}}),
    ("long local part", {"json": {**VALID, "email": "a" * 1000 + "@example.com"}}),
    (
        "nan",
        {
            "content": b'{"email": "a@example.com", "delay_seconds": NaN}',
            "headers": {"Content-Type": "application/json"},
        },
    ),
    ("extra field", {"json": {**VALID, "status": "sent", "id": "x"}}),
    ("both due times", {"json": {**VALID, "remind_at": "2030-01-01T00:00:00Z"}}),
]


def test_bad_input_neither_corrupts_nor_loses_stored_data(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    kept = client.post(
        "/subscribe",
        json={
            "email": "keep@example.com",
            "delay_seconds": 3,
            "subject": SHORT_UNICODE_SUBJECT,
            "message": UNICODE_MESSAGE,
        },
    )
    assert kept.status_code == 201, kept.text
    kept_id = kept.json()["id"]
    before = show_reminder(client, kept_id)

    for name, request in BARRAGE:
        response = client.post("/subscribe", **request)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert response.json()["detail"], name
        # The same, aimed at the stored reminder.
        aimed = client.request("DELETE", f"/reminders/{kept_id}", **request)
        assert 400 <= aimed.status_code < 500, (name, aimed.status_code, aimed.text)
        assert aimed.json()["detail"], name
    accepted = client.post(
        "/subscribe", json={"email": PERCENT_EMAIL, "delay_seconds": 3, "subject": PERCENT_SUBJECT}
    )
    assert accepted.status_code == 201, accepted.text

    stored = stored_reminders(database_url)
    assert set(stored) == {kept_id, accepted.json()["id"]}
    assert stored[kept_id] == ("keep@example.com", SHORT_UNICODE_SUBJECT, UNICODE_MESSAGE)
    now = show_reminder(client, kept_id)
    unchanged = ("email", "subject", "remind_at", "created_at")
    assert {k: now[k] for k in unchanged} == {k: before[k] for k in unchanged}

    wait_for_status(client, kept_id, "sent", timeout_s=30)
    message = delivered(settings.mail.outbox_dir, kept_id)
    assert message.get_all("To") == ["keep@example.com"]
    assert message["Subject"] == SHORT_UNICODE_SUBJECT
    assert message.get_content().rstrip("\n") == UNICODE_MESSAGE
