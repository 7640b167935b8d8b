"""Deliver over SMTP with aiosmtplib, reusing connections.

A burst of reminders goes out over a few long-lived SMTP sessions instead of one connection,
greeting and goodbye per message: `mail.smtp.pool_size` sessions at most, each closed after
`idle_timeout_s` without use or after `max_messages_per_connection` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import SMTPStatus

from scheduler_app.channels.email.backend import DeliveryError
from scheduler_app.channels.email.message import OutgoingMessage
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
            await _greet(client)
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
            await _transfer(session.client, message, self.settings.timeout_s)
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


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO (HELO from an older server) once per session, so that its extensions are known
    before the first message: connect() greets only when it has STARTTLS or a login to do."""
    if not client.is_ehlo_or_helo_needed:
        return
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


async def _transfer(client: aiosmtplib.SMTP, message: OutgoingMessage, timeout_s: float) -> None:
    """Hand one message over on an open session, within timeout_s in all."""
    try:
        async with asyncio.timeout(timeout_s):
            await _mail_rcpt_data(client, message)
    except TimeoutError as exc:
        raise aiosmtplib.SMTPTimeoutError(
            f"the server did not take the message within timeout_s={timeout_s:g} s"
        ) from exc


async def _mail_rcpt_data(client: aiosmtplib.SMTP, message: OutgoingMessage) -> None:
    """MAIL, RCPT and DATA, each command without a timeout of its own (the caller has one).

    `sendmail` parses every address three times with the stdlib's address parser, and waits for
    each reply under a timeout of its own: together half of the client's work per message.
    Plain addresses, which cannot smuggle anything onto a command line, go straight into the
    commands; any other address takes `sendmail`.
    """
    # RFC 6531: a server that offers SMTPUTF8 takes 8-bit headers with it.
    utf8_options = ["SMTPUTF8", "BODY=8BITMIME"] if message.smtputf8 else []
    if any(_UNSAFE_ON_COMMAND_LINE.search(address) for address in message.envelope):
        await client.sendmail(
            message.sender,
            message.recipients,
            message.data,
            mail_options=utf8_options,
            timeout=None,
        )
        return
    if message.smtputf8 and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    encoding = "utf-8" if message.smtputf8 else "ascii"
    options = [option.encode("ascii") for option in utf8_options]
    if client.supports_extension("size"):
        options.insert(0, b"SIZE=%d" % len(message.data))
    sender = f"<{message.sender}>".encode(encoding)
    reply = await client.execute_command(b"MAIL", b"FROM:" + sender, *options, timeout=None)
    if reply.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, message.sender)
    refused = []
    for recipient in message.recipients:
        to = f"<{recipient}>".encode(encoding)
        reply = await client.execute_command(b"RCPT", b"TO:" + to, timeout=None)
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            refused.append(aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient))
    if len(refused) == len(message.recipients):
        raise aiosmtplib.SMTPRecipientsRefused(refused)
    await client.data(message.data, timeout=None)


# Whitespace, angle brackets and quotes could add parameters or commands to MAIL and RCPT.
_UNSAFE_ON_COMMAND_LINE = re.compile(r'[\s<>"]')


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
