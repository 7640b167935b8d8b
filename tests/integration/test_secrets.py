"""The admin token and other secrets: generated safely, never logged or returned."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scheduler_app.app import create_app
from tests.support import SmtpSink, make_settings, smtp_mail, wait_until


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
