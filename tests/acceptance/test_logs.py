"""The log of a real `scheduler-app serve`: uvicorn's lines and the service's in one format, in
every worker process; access lines naming the request id the answer carries; and no secret in
any line, at debug level, in either format."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url

from tests.acceptance.conftest import ServiceFactory
from tests.acceptance.service import ADMIN_TOKEN, Service, smtp_environment
from tests.support import SmtpSink

HARNESS_LINE = "===== start #"


def json_entries(service: Service) -> list[dict[str, Any]]:
    """Every line the service wrote, parsed; fails on a line that is not one JSON object."""
    entries = []
    for line in service.log_text().splitlines():
        if not line or line.startswith(HARNESS_LINE):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            service.fail(f"not a JSON line: {line!r}")
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def access_line(service: Service, request_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        for entry in json_entries(service):
            if entry["logger"] == "uvicorn.access" and entry.get("request_id") == request_id:
                return entry
        return None

    return service.wait_until(f"the access line of request {request_id}", probe)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_process_of_serve_workers_logs_uvicorns_lines_and_its_own_as_json(
    make_service: ServiceFactory,
) -> None:
    service = make_service({"SCHEDULER_LOG__FORMAT": "json"})
    service.options = ["--workers", "2"]
    service.start()
    with service.client() as client:
        chosen = client.get("/readyz", headers={"X-Request-ID": "probe-1"})
        made = client.get("/jobs?limit=5")
        missing = client.get("/no-such-page", headers={"X-Request-ID": "bad id"})
    assert chosen.headers["X-Request-ID"] == "probe-1"
    assert missing.status_code == 404
    assert missing.headers["X-Request-ID"] != "bad id"

    ready = access_line(service, "probe-1")
    assert (ready["method"], ready["path"], ready["status"]) == ("GET", "/readyz", 200)
    assert ready["message"].endswith('"GET /readyz HTTP/1.1" 200')
    assert ready["level"] == "INFO"
    assert ready["time"].endswith("Z")
    listed = access_line(service, made.headers["X-Request-ID"])
    assert (listed["path"], listed["status"]) == ("/jobs?limit=5", 401)
    assert access_line(service, missing.headers["X-Request-ID"])["status"] == 404

    assert service.terminate() == 0
    entries = json_entries(service)
    uvicorn_lines = [entry["message"] for entry in entries if entry["logger"] == "uvicorn.error"]
    started = [line for line in uvicorn_lines if line.startswith("Started server process")]
    assert len(started) == 2, uvicorn_lines
    assert any(line.startswith("Started parent process") for line in uvicorn_lines)
    own = [entry for entry in entries if entry["logger"].startswith("scheduler_app.")]
    assert sum("scheduler-app started" in entry["message"] for entry in own) == 2
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry


def _with_password(database_url: str, password: str) -> str:
    """The URL with a password: the test server trusts loopback and ignores it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return database_url
    return url.set(password=password).render_as_string(hide_password=False)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_the_log_at_debug_level(
    make_service: ServiceFactory, database_url: str, smtp_sink: SmtpSink, log_format: str
) -> None:
    secret = {
        "admin token": ADMIN_TOKEN,
        "secret key": secrets.token_urlsafe(32),
        "subscribe token": secrets.token_urlsafe(16),
        "metrics token": secrets.token_urlsafe(16),
        "smtp password": secrets.token_urlsafe(16),
        "database password": secrets.token_urlsafe(16),
        "wrong bearer token": secrets.token_urlsafe(16),
    }
    service = make_service(
        {
            **smtp_environment(smtp_sink.host, smtp_sink.port),
            # A login the SMTP server does not offer: every delivery fails, with its error logged.
            "SCHEDULER_MAIL__SMTP__USERNAME": "mailer",
            "SCHEDULER_MAIL__SMTP__PASSWORD": secret["smtp password"],
            "SCHEDULER_DATABASE_URL": _with_password(database_url, secret["database password"]),
            "SCHEDULER_SECRET_KEY": secret["secret key"],
            "SCHEDULER_REMINDERS__SUBSCRIBE_TOKEN": secret["subscribe token"],
            "SCHEDULER_METRICS__TOKEN": secret["metrics token"],
            "SCHEDULER_LOG__FORMAT": log_format,
            "SCHEDULER_LOG_LEVEL": "debug",
        }
    )
    service.start()
    admin = service.admin_headers()
    subscriber = {"Authorization": f"Bearer {secret['subscribe token']}"}
    with service.client() as client:
        due = _subscribe(client, subscriber, delay_seconds=0.2)
        later = _subscribe(client, subscriber, delay_seconds=3600)
        secret["cancel token (delivered)"] = due["cancel_token"]
        secret["cancel token (cancelled)"] = later["cancel_token"]
        owner = {"Authorization": f"Bearer {later['cancel_token']}"}
        assert client.get(f"/reminders/{later['id']}", headers=owner).status_code == 200
        assert client.delete(f"/reminders/{later['id']}", headers=owner).status_code == 200
        wrong = {"Authorization": f"Bearer {secret['wrong bearer token']}"}
        assert client.get("/jobs", headers=wrong).status_code == 401
        for path in ("/jobs", "/tasks", "/runs", "/admin/cluster", "/reminders?email=a@b.example"):
            assert client.get(path, headers=admin).status_code == 200, path
        client.get("/metrics", headers={"Authorization": f"Bearer {secret['metrics token']}"})
        # The dashboard: a wrong token typed in, then the admin token; its session cookie is a
        # secret too.
        refused = client.post("/dashboard/login", data={"token": secret["wrong bearer token"]})
        assert refused.status_code == 401
        client.post("/dashboard/login", data={"token": ADMIN_TOKEN})
        secret["dashboard session cookie"] = client.cookies["dashboard_session"]
        assert client.get("/dashboard/jobs").status_code == 200

        def attempted() -> bool:
            shown = client.get(f"/reminders/{due['id']}", headers=admin).json()
            return bool(shown["last_error"])

        service.wait_until("the failed delivery", attempted)
    assert service.terminate() == 0

    log = service.log_text()
    assert "mail backend smtp" in log  # the service did log, at debug level
    assert "DEBUG" in log
    for name, value in secret.items():
        assert value not in log, f"the {name} is in the log"
    assert "a@b.example" not in log
    if log_format == "json":
        entries = json_entries(service)
        tasks = [entry for entry in entries if entry.get("task_id") == due["id"]]
        assert tasks, "no line names the delivered reminder's task"
        assert {entry["job"] for entry in tasks} == {"deliver_reminder"}


def _subscribe(
    client: httpx.Client, headers: dict[str, str], *, delay_seconds: float
) -> dict[str, Any]:
    body = {"email": "ann@example.com", "delay_seconds": delay_seconds, "subject": "Hi"}
    created = client.post("/subscribe", json=body, headers=headers)
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    return answer
