"""Dashboard logins: the admin token exchanged for a session cookie and its CSRF token.

The cookie holds a random value; its row (`dashboard_sessions`) holds only the value's SHA-256,
so a leaked database gives no working cookie away. Each method owns its transaction.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete

from scheduler_app.db.engine import SessionFactory
from scheduler_app.db.models import DashboardSession
from scheduler_app.security import hash_token

# Longest client text kept with a session (the column's size).
_CLIENT_CHARS = 200


@dataclass(frozen=True)
class Login:
    """A session as its request sees it: the cookie value, the form token, who, until when."""

    cookie: str = field(repr=False)
    csrf_token: str = field(repr=False)
    client: str
    expires_at: datetime


@dataclass(frozen=True)
class DashboardLogins:
    sessions: SessionFactory
    clock: Callable[[], datetime]
    admin_token: str = field(repr=False)
    session_hours: float

    def login(self, token: str, client: str) -> Login | None:
        """A new session when token is the admin token (compared in constant time), else None.
        Expired sessions are deleted on the way."""
        if not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return None
        now = self.clock()
        login = Login(
            cookie=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            client=client[:_CLIENT_CHARS],
            expires_at=now + timedelta(hours=self.session_hours),
        )
        with self.sessions() as session:
            session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
            session.add(
                DashboardSession(
                    token_hash=hash_token(login.cookie),
                    csrf_token=login.csrf_token,
                    created_at=now,
                    expires_at=login.expires_at,
                    client=login.client,
                )
            )
            session.commit()
        return login

    def find(self, cookie: str) -> Login | None:
        """The live session this cookie value opens, if any."""
        with self.sessions() as session:
            row = session.get(DashboardSession, hash_token(cookie))
            if row is None or row.expires_at <= self.clock():
                return None
            return Login(cookie, row.csrf_token, row.client, row.expires_at)

    def logout(self, cookie: str) -> None:
        with self.sessions() as session:
            session.execute(
                delete(DashboardSession).where(DashboardSession.token_hash == hash_token(cookie))
            )
            session.commit()
