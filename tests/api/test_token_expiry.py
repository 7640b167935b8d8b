from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from scheduler_app.app import create_app
from scheduler_app.settings import Settings
from tests.support import ADMIN


class MovableClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_cancel_token_expires_after_its_reminder_ended(settings: Settings) -> None:
    clock = MovableClock()
    with TestClient(create_app(settings, clock=clock)) as client:
        created = client.post(
            "/subscribe", json={"email": "a@example.com", "delay_seconds": 3600}
        ).json()
        url = f"/reminders/{created['id']}"
        own = {"Authorization": f"Bearer {created['cancel_token']}"}

        clock.now += timedelta(days=30)  # a scheduled reminder's token does not expire
        assert client.get(url, headers=own).status_code == 200
        assert client.delete(url, headers=own).status_code == 200

        clock.now += timedelta(days=7) - timedelta(seconds=1)
        assert client.get(url, headers=own).status_code == 200
        clock.now += timedelta(seconds=2)
        expired = client.get(url, headers=own)
        assert expired.status_code == 403
        assert "expired" in expired.json()["detail"]
        assert client.get(url, headers=ADMIN).status_code == 200
