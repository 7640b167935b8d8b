"""Helpers shared by the test layers: real databases, a real SMTP server, bounded polling."""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from threading import Event, Lock
from typing import Any, TypeVar

import pytest
import yaml
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from scheduler_app.app import create_app
from scheduler_app.db.models import Task
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.settings import Settings, load_settings

POSTGRES_URL_VARIABLE = "TEST_POSTGRES_URL"
RELEASE_POLL_S = 0.01
T = TypeVar("T")


@dataclass(frozen=True)
class SentStatement:
    text: str
    parameters: Any
    executemany: bool


def sent_statements(engine: Engine) -> list[SentStatement]:
    """Every statement the engine sends from now on, as the driver receives it."""
    sent: list[SentStatement] = []

    def record(_conn: Any, _cursor: Any, sql: str, parameters: Any, _ctx: Any, many: bool) -> None:
        sent.append(SentStatement(sql, parameters, many))

    event.listen(engine, "before_cursor_execute", record)
    return sent


async def until_released(release: Event, timeout_s: float = 10.0) -> None:
    """Keep the calling job running until the test sets release: the test sees it running
    however slow the machine, and a test that fails before releasing it hangs nothing for
    longer than timeout_s."""
    # Polled: the test sets a threading.Event from its own thread, not the service's loop.
    for _ in range(round(timeout_s / RELEASE_POLL_S)):
        if release.is_set():
            return
        await asyncio.sleep(RELEASE_POLL_S)


def wait_until(
    probe: Callable[[], T | None], timeout_s: float = 10.0, interval_s: float = 0.05
) -> T:
    """Poll probe until it returns something truthy; fail the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s (last value: {result!r})")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The limits on POST /subscribe switched off: most tests post many reminders from one client to
# one address. The limits have tests of their own (tests/api/test_subscribe_limits.py).
UNLIMITED = {"per_client_per_minute": 0, "max_pending_per_address": 0}


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for a test: everything under tmp_path, no .env, no config file."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "state_dir": tmp_path / "var",
        "admin_token": ADMIN_TOKEN,
        "mail": {"outbox_dir": tmp_path / "outbox", "from_address": "Tests <tests@example.com>"},
        "reminders": UNLIMITED,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(_env_file=None, **values)


def smtp_mail(host: str, port: int, **smtp: Any) -> dict[str, Any]:
    """The `mail` settings for delivering to a plain SMTP server on loopback."""
    return {"backend": "smtp", "smtp": {"host": host, "port": port, "starttls": False, **smtp}}


def postgres_server_url() -> str | None:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {POSTGRES_URL_VARIABLE} is not set: PostgreSQL tests cannot run")
    pytest.skip(f"set {POSTGRES_URL_VARIABLE} (e.g. postgresql+psycopg://postgres@127.0.0.1/test)")


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database on the test server for one test and drop it afterwards."""
    server = make_url(postgres_server_url() or "")
    name = f"scheduler_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL at {server.render_as_string()} is not usable: {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def outbox_messages(directory: Path) -> list[Message]:
    if not directory.is_dir():
        return []
    return [email.message_from_bytes(path.read_bytes()) for path in sorted(directory.glob("*.eml"))]


@dataclass
class SmtpSink:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Message] = field(default_factory=list)
    # The client address of each accepted message: one per SMTP connection it came over.
    peers: list[Any] = field(default_factory=list)
    # Replies for the next messages, in order (e.g. "451 try later"); then "250 OK".
    replies: list[str] = field(default_factory=list)
    # Seconds to wait before answering DATA: a slow server.
    delay_s: float = 0.0
    # DATA commands received so far, answered or not: messages on their way.
    data_started: int = 0
    _lock: Lock = field(default_factory=Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.data_started += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self._lock:
            reply = self.replies.pop(0) if self.replies else "250 OK"
            if reply.startswith("250"):
                self.messages.append(email.message_from_bytes(envelope.content))
                self.peers.append(session.peer)
        return reply

    def received(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def sending_started(self) -> int:
        with self._lock:
            return self.data_started

    def connections_used(self) -> int:
        with self._lock:
            return len(set(self.peers))


SinkT = TypeVar("SinkT", bound="SmtpSink")


@contextlib.contextmanager
def running_smtp_sink(kind: type[SinkT], **server: Any) -> Iterator[SinkT]:
    """Run an SmtpSink (or a subclass) on a free loopback port until the block ends; server:
    aiosmtpd's SMTP options, such as enable_SMTPUTF8=False."""
    sink = kind(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port, **server)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def reminder_ids(messages: list[Message]) -> list[str]:
    return [str(message["X-Reminder-Id"]) for message in messages]


ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def show_reminder(client: Any, reminder_id: str) -> dict[str, Any]:
    """GET /reminders/{id} with the admin token (client: a TestClient or an httpx client)."""
    response = client.get(f"/reminders/{reminder_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_status(
    client: Any, reminder_id: str, status: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Poll the reminder until it has the status; return it."""

    def probe() -> dict[str, Any] | None:
        shown = show_reminder(client, reminder_id)
        return shown if shown["status"] == status else None

    return wait_until(probe, timeout_s=timeout_s)


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve app with uvicorn on a loopback port in a thread (lifespan included); yield its URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout_s=30)
        if not server.started:
            pytest.fail("the live server did not start (see the log above)")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def seed_reminder_jobs(
    database_url: str, due_times: list[datetime | None], email: str = "seed@example.com"
) -> list[str]:
    """Store scheduled reminders with their jobs in bulk (None: a paused job); return job ids.

    Rows are written as the service writes them, without going through the API one by one.
    """
    from sqlalchemy import insert

    from scheduler_app.engine.scheduler import JOBS, task_job_row

    now = datetime.now(UTC)
    reminder_rows, job_rows = [], []
    for due in due_times:
        reminder_id = str(uuid.uuid4())
        remind_at = due or now + timedelta(days=1)
        task = reminder_task(
            id=reminder_id, email=email, subject="Seeded", remind_at=remind_at, created_at=now
        )
        reminder_rows.append({c.key: getattr(task, c.key) for c in Task.__table__.columns})
        job_rows.append(
            task_job_row("deliver_reminder", "reminder", reminder_id, remind_at, paused=due is None)
        )
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(Task), reminder_rows)
            connection.execute(insert(JOBS), job_rows)
    finally:
        engine.dispose()
    return [str(row["id"]) for row in job_rows]


class Deployment:
    """A config file on disk and the settings read from it, as a user's service has."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        registry: Mapping[str, RegisteredJob] | None = None,
    ) -> None:
        self.path = tmp_path / "config.yaml"
        self.registry = registry
        self.overrides: dict[str, Any] = {
            "database_url": database_url,
            "state_dir": tmp_path / "var",
            "admin_token": ADMIN_TOKEN,
            "mail": {"outbox_dir": tmp_path / "outbox"},
            "reports": {"dir": tmp_path / "reports"},
            "reminders": UNLIMITED,
        }

    def write(self, jobs: list[Any]) -> None:
        self.path.write_text(yaml.safe_dump({"timezone": "UTC", "jobs": jobs}))

    def settings(self) -> Settings:
        return load_settings(self.path, **self.overrides)

    def client(self) -> TestClient:
        return TestClient(self.app())

    def app(self) -> FastAPI:
        return create_app(self.settings(), registry=self.registry)


@contextlib.contextmanager
def postgres_refusing_connections(database_url: str) -> Iterator[None]:
    """What a PostgreSQL restart looks like to the service: every connection to its database
    cut and none accepted, until the block ends."""
    name = make_url(database_url).database
    server = create_engine(postgres_server_url() or "", isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as admin:
            admin.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            try:
                yield
            finally:
                admin.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    finally:
        server.dispose()


def reminder_task(
    *,
    id: str,
    email: str = "ada@example.com",
    subject: str = "Reminder",
    message: str = "",
    remind_at: datetime,
    status: str = "scheduled",
    attempts: int = 0,
    created_at: datetime,
    updated_at: datetime | None = None,
    sent_at: datetime | None = None,
    finished_at: datetime | None = None,
    **columns: Any,
) -> Task:
    """A reminder's task row, given as a reminder is described ("sent" and sent_at included)."""
    import json

    status = "succeeded" if status == "sent" else status
    return Task(
        id=id,
        job="deliver_reminder",
        args=json.dumps({"email": email, "subject": subject, "message": message}),
        run_at=remind_at,
        recipient=email,
        status=status,
        attempts=attempts,
        created_at=created_at,
        updated_at=updated_at or finished_at or created_at,
        finished_at=finished_at or sent_at,
        **columns,
    )


# Jobs of a user's module for operators' actions on tasks: one whose automatic retry waits an
# hour after its first attempt fails, one that fails for good at once. {tag} keeps the names of
# one test's jobs apart from another's.
RETRYING_JOBS_MODULE = '''
    from pathlib import Path

    from scheduler_app import job


    @job("fails_once_{tag}", max_attempts=3, retry_base_s=3600, retry_max_s=3600)
    def fails_once(path: str) -> None:
        """Fails on its first attempt; its automatic retry would wait an hour."""
        marker = Path(path)
        if not marker.exists():
            marker.write_text("tried")
            raise RuntimeError("first attempt fails")


    @job("always_fails_{tag}", max_attempts=1)
    def always_fails() -> None:
        raise RuntimeError("boom")
'''


@contextlib.contextmanager
def app_with_retrying_jobs(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, str]]:
    """The service with RETRYING_JOBS_MODULE's jobs registered: its client and the jobs' tag."""
    import sys
    import textwrap

    tag = uuid.uuid4().hex[:8]
    folder = tmp_path / "deployment"
    folder.mkdir()
    name = f"retrying_jobs_{tag}"
    (folder / f"{name}.py").write_text(textwrap.dedent(RETRYING_JOBS_MODULE.format(tag=tag)))
    settings = make_settings(
        tmp_path, database_url, job_modules=[name], config_file=folder / "config.yaml"
    )
    try:
        with TestClient(create_app(settings)) as client:
            yield client, tag
    finally:
        sys.modules.pop(name, None)


def show_task(client: TestClient, task_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = client.get(f"/tasks/{task_id}", headers=ADMIN).json()
    return shown


def finished_task(client: TestClient, task_id: str) -> dict[str, Any] | None:
    """The task once it has finished, else None (for wait_until)."""
    shown = show_task(client, task_id)
    return None if shown["finished_at"] is None else shown


@contextlib.contextmanager
def reminder_waiting_for_its_retry(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> Iterator[tuple[TestClient, str]]:
    """The service and a reminder whose first delivery the sink refused for now: it waits an
    hour for its automatic retry (scheduled, one attempt, next_attempt_at set)."""
    sink.replies = ["451 4.3.0 try again later"]
    settings = make_settings(
        tmp_path,
        database_url,
        mail=smtp_mail(sink.host, sink.port, timeout_s=2),
        reminders={"max_attempts": 3, "retry_base_s": 3600, "retry_max_s": 3600},
    )
    with TestClient(create_app(settings)) as client:
        created = client.post("/subscribe", json={"email": "ada@example.com", "delay_seconds": 0.1})
        reminder_id: str = created.json()["id"]

        def waiting() -> dict[str, Any] | None:
            shown: dict[str, Any] = client.get(f"/reminders/{reminder_id}", headers=ADMIN).json()
            return shown if shown["attempts"] == 1 and shown["next_attempt_at"] else None

        assert wait_until(waiting)["status"] == "scheduled"
        yield client, reminder_id
