"""The admin token and other secrets: generated safely, never logged or returned."""

from __future__ import annotations

import hmac
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, update

from scheduler_app.app import create_app
from scheduler_app.db.models import ServiceSecret, Task
from scheduler_app.maintenance.reports import DailyReport, LagStats, ReminderCounts, write_report
from scheduler_app.security import hash_token
from scheduler_app.settings import Settings
from tests.support import SmtpSink, make_settings, smtp_mail, wait_for_status, wait_until


def test_an_unset_admin_token_is_generated_once_and_kept_private(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, database_url, admin_token=None)
    with TestClient(create_app(settings)) as client:
        token_file = settings.state_dir / "admin_token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        created = client.post(
            "/subscribe", json={"email": "a@example.com", "delay_seconds": 60}
        ).json()
        shown = client.get(
            f"/reminders/{created['id']}", headers={"Authorization": f"Bearer {token}"}
        )
        assert shown.status_code == 200
    assert token in capsys.readouterr().err

    with TestClient(create_app(settings)):
        pass
    assert token not in capsys.readouterr().err
    assert settings.state_dir.joinpath("admin_token").read_text().strip() == token
    assert stored_secrets(settings.database_url)["admin_token"] == token


def test_every_process_on_a_database_accepts_the_same_generated_admin_token(
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Two hosts: each with a state folder of its own, neither with a token yet.
    first = make_settings(tmp_path / "first", database_url, admin_token=None)
    second = make_settings(
        tmp_path / "second", database_url, admin_token=None, scheduler={"enabled": False}
    )
    with TestClient(create_app(first)) as one, TestClient(create_app(second)) as other:
        token = read_token_file(first)
        assert read_token_file(second) == token
        for client in (one, other):
            assert client.get("/jobs", headers=bearer(token)).status_code == 200
    assert stored_secrets(database_url)["admin_token"] == token
    printed = capsys.readouterr().err
    assert printed.count("generated an admin token") == 1
    assert printed.count(token) == 1
    assert token not in caplog.text


def test_an_admin_token_file_from_before_the_database_kept_it_is_adopted(
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Each host generated a token of its own into its state folder before the upgrade.
    first = make_settings(tmp_path / "first", database_url, admin_token=None)
    second = make_settings(tmp_path / "second", database_url, admin_token=None)
    old_first, old_second = "first-host-token-0123456789", "second-host-token-0123456789"
    write_token_file(first, old_first)
    write_token_file(second, old_second)

    # The first process to start after the upgrade keeps its token for every process.
    with TestClient(create_app(first)) as client:
        assert client.get("/jobs", headers=bearer(old_first)).status_code == 200
    assert read_token_file(first) == old_first
    assert stored_secrets(database_url)["admin_token"] == old_first
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    caplog.clear()
    with TestClient(create_app(second)) as client:
        assert client.get("/jobs", headers=bearer(old_first)).status_code == 200
        assert client.get("/jobs", headers=bearer(old_second)).status_code == 401
    # The database wins: the other host's file now holds its token, and one line says so.
    assert read_token_file(second) == old_first
    assert stat.S_IMODE((second.state_dir / "admin_token").stat().st_mode) == 0o600
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{second.state_dir / 'admin_token'} held an admin token other than the one kept in "
        "the database for every process; it now holds the database's"
    ]
    assert "generated an admin token" not in capsys.readouterr().err
    assert old_first not in caplog.text
    assert old_second not in caplog.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def read_token_file(settings: Settings) -> str:
    return (settings.state_dir / "admin_token").read_text().strip()


def write_token_file(settings: Settings, token: str) -> None:
    settings.state_dir.mkdir(mode=0o700, parents=True)
    path = settings.state_dir / "admin_token"
    path.write_text(token + "\n")
    path.chmod(0o600)


def stored_secrets(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(ServiceSecret.name, ServiceSecret.value))
            return {row.name: row.value for row in rows}
    finally:
        engine.dispose()


def test_secrets_never_reach_logs_or_responses(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    admin_token = "admin-token-never-logged-42"
    settings = make_settings(
        tmp_path,
        database_url,
        admin_token=admin_token,
        mail=smtp_mail(smtp_sink.host, smtp_sink.port, password="smtp-pass-never-logged"),
    )
    caplog.set_level(logging.DEBUG)
    bodies = []
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": f"Bearer {admin_token}"}
        created = client.post("/subscribe", json={"email": "a@example.com", "delay_seconds": 0.1})
        bodies.append(created.text)
        reminder_url = f"/reminders/{created.json()['id']}"
        # No username: the server is not asked to authenticate, the password stays configured.
        wait_until(lambda: client.get(reminder_url, headers=auth).json()["status"] != "scheduled")
        bodies += [client.get(reminder_url, headers=auth).text, client.get("/readyz").text]
        bodies.append(client.get("/openapi.json").text)
    everything = caplog.text + "".join(bodies)
    assert admin_token not in everything
    assert "smtp-pass-never-logged" not in everything


def test_a_cancel_token_cannot_be_derived_from_the_idempotency_key_alone(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    key = "order-1"
    request = {"email": "a@example.com", "delay_seconds": 3600}
    with TestClient(create_app(settings)) as client:
        created = client.post("/subscribe", json=request, headers={"Idempotency-Key": key}).json()
        reminder_id, token = created["id"], created["cancel_token"]
        # What anyone could compute before the secret key signed the token.
        guessed = hmac.new(key.encode(), f"cancel:{reminder_id}".encode(), "sha256").hexdigest()
        assert token != guessed
        denied = client.get(
            f"/reminders/{reminder_id}", headers={"Authorization": f"Bearer {guessed}"}
        )
        assert denied.status_code == 403

    # Generated once and kept in the database, which every process on it shares: after a
    # restart, and in another process with a state folder of its own, the replay still
    # returns the token that works.
    secret = stored_secret_key(settings.database_url)
    elsewhere = make_settings(tmp_path / "elsewhere", settings.database_url)
    for restarted in (settings, elsewhere):
        with TestClient(create_app(restarted)) as client:
            replay = client.post("/subscribe", json=request, headers={"Idempotency-Key": key})
            assert replay.json()["cancel_token"] == token
            allowed = client.get(
                f"/reminders/{reminder_id}", headers={"Authorization": f"Bearer {token}"}
            )
            assert allowed.status_code == 200
    assert stored_secret_key(settings.database_url) == secret
    assert not list(settings.state_dir.glob("secret*"))


def stored_secret_key(database_url: str) -> str:
    return stored_secrets(database_url)["secret_key"]


def test_a_configured_secret_key_signs_the_tokens(tmp_path: Path, database_url: str) -> None:
    request = {"email": "a@example.com", "delay_seconds": 3600}
    tokens = []
    for name, secret in (("one", "s" * 32), ("two", "t" * 32)):
        settings = make_settings(
            tmp_path / name, f"sqlite:///{tmp_path / name}.db", secret_key=secret
        )
        with TestClient(create_app(settings)) as client:
            answer = client.post("/subscribe", json=request, headers={"Idempotency-Key": "k"})
            tokens.append(answer.json()["cancel_token"])
    assert tokens[0] != tokens[1]


def test_a_replay_of_a_reminder_from_before_the_secret_key_gets_its_token(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    key = "order-7"
    request = {"email": "a@example.com", "delay_seconds": 3600}
    with TestClient(create_app(settings)) as client:
        reminder_id = client.post(
            "/subscribe", json=request, headers={"Idempotency-Key": key}
        ).json()["id"]
    # The token as the code before the secret key stored it.
    legacy = hmac.new(key.encode(), f"cancel:{reminder_id}".encode(), "sha256").hexdigest()
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(
            update(Task).where(Task.id == reminder_id).values(cancel_token_hash=hash_token(legacy))
        )
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        replay = client.post("/subscribe", json=request, headers={"Idempotency-Key": key})
        assert replay.json()["cancel_token"] == legacy
        shown = client.get(
            f"/reminders/{reminder_id}", headers={"Authorization": f"Bearer {legacy}"}
        )
        assert shown.status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_files_holding_addresses_and_messages_are_the_owners_only(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    previous = os.umask(0o022)  # the usual umask: new files readable by everyone
    try:
        with TestClient(create_app(settings)) as client:
            created = client.post(
                "/subscribe", json={"email": "a@example.com", "delay_seconds": 0.1}
            )
            wait_for_status(client, created.json()["id"], "sent")
            database = Path(settings.database_url.removeprefix("sqlite:///"))
            files = [database, *database.parent.glob(f"{database.name}-*")]
            files += list(settings.mail.outbox_dir.iterdir())
            assert len(files) >= 4  # the database, its -wal and -shm, one message
            written = write_report(tmp_path / "reports", collect_empty_report(), "# report\n")
            files += list(written)
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
            assert set(modes.values()) == {0o600}, modes
            folders = (settings.mail.outbox_dir, tmp_path / "reports")
            assert {stat.S_IMODE(folder.stat().st_mode) for folder in folders} == {0o700}
    finally:
        os.umask(previous)


def collect_empty_report() -> DailyReport:
    end = datetime(2026, 12, 4, 8, tzinfo=UTC)
    return DailyReport(
        date=end.date(),
        timezone="UTC",
        start=end - timedelta(days=1),
        end=end,
        reminders=ReminderCounts(),
        lag=LagStats(),
        runs={},
    )
