"""Deliver over SMTP with aiosmtplib, reusing connections.

A burst of reminders goes out over a few long-lived SMTP sessions instead of one connection,
greeting and goodbye per message: `mail.smtp.pool_size` sessions at most, each closed after
`idle_timeout_s` without use or after `max_messages_per_connection` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

import aiosmtplib

from scheduler_app.mail.backend import DeliveryError
from scheduler_app.mail.message import OutgoingMessage
from scheduler_app.settings import SmtpSettings


@dataclass
class _Session:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0


class SmtpBackend:
    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: deque[_Session] = deque()
        self._slots = asyncio.Semaphore(settings.pool_size)

    async def send(self, message: OutgoingMessage) -> None:
        async with self._slots:
            session = self._take_idle()
            if session is not None:
                try:
                    await self._send_on(session, message)
                except _StaleConnection:
                    # The server closed the idle session as we took it: the first command
                    # failed, so one new connection is tried at once instead of a retry later.
                    pass
                else:
                    return
            await self._send_on(await self._connect(), message)

    async def close(self) -> None:
        """Say goodbye on every idle session (at shutdown)."""
        while self._idle:
            await _quit(self._idle.popleft().client)

    def _take_idle(self) -> _Session | None:
        now = time.monotonic()
        while self._idle:
            session = self._idle.pop()  # the most recently used is the most likely alive
            fresh = now - session.idle_since < self.settings.idle_timeout_s
            if fresh and session.client.is_connected:
                return session
            session.client.close()
        return None

    async def _connect(self) -> _Session:
        smtp = self.settings
        client = aiosmtplib.SMTP(
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=smtp.password.get_secret_value() if smtp.password else None,
            start_tls=smtp.starttls,
            use_tls=smtp.use_tls,
            timeout=smtp.timeout_s,
        )
        try:
            await client.connect()
        except asyncio.CancelledError:
            client.close()
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise _delivery_error(exc) from exc
        return _Session(client)

    async def _send_on(self, session: _Session, message: OutgoingMessage) -> None:
        reused = session.sent > 0
        try:
            await session.client.sendmail(
                message.sender,
                message.recipients,
                message.data,
                # RFC 6531: a server that offers SMTPUTF8 takes 8-bit headers with it.
                mail_options=["SMTPUTF8", "BODY=8BITMIME"] if message.smtputf8 else None,
            )
        except asyncio.CancelledError:
            # Drop the connection without QUIT: a QUIT would wait for the server to finish an
            # unfinished DATA and accept the message, which a later retry would send again.
            session.client.close()
            raise
        except aiosmtplib.SMTPServerDisconnected as exc:
            session.client.close()
            if reused:
                raise _StaleConnection(_delivery_error(exc)) from exc
            raise _delivery_error(exc) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            # A refused recipient or message leaves the session usable, but a session that saw
            # an error is not worth trusting with the next message.
            session.client.close()
            raise _delivery_error(exc) from exc
        session.sent += 1
        if session.sent >= self.settings.max_messages_per_connection:
            await _quit(session.client)
            return
        session.idle_since = time.monotonic()
        self._idle.append(session)


class _StaleConnection(Exception):
    def __init__(self, error: DeliveryError) -> None:
        super().__init__(str(error))
        self.error = error


def _delivery_error(exc: BaseException) -> DeliveryError:
    return DeliveryError(f"{type(exc).__name__}: {exc}", transient=is_transient(exc))


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        await client.quit()
    client.close()


def is_transient(exc: BaseException) -> bool:
    """SMTP 4xx replies and connection trouble may pass; 5xx replies (unknown mailbox,
    rejected sender, failed login) and a missing extension (SMTPUTF8 for a non-ASCII address)
    will not, so they are not retried."""
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return False
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return any(not 500 <= refusal.code < 600 for refusal in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return not 500 <= exc.code < 600
    return True  # connection refused or reset, timeouts, disconnects
