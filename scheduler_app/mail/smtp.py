"""Deliver over SMTP with aiosmtplib."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib

from scheduler_app.mail.backend import DeliveryError
from scheduler_app.settings import SmtpSettings


class SmtpBackend:
    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
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
            await client.send_message(message)
        except asyncio.CancelledError:
            # Drop the connection without QUIT: a QUIT would wait for the server to finish an
            # unfinished DATA and accept the message, which a later retry would send again.
            client.close()
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise DeliveryError(
                f"{type(exc).__name__}: {exc}", transient=is_transient(exc)
            ) from exc
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()  # the message was accepted already; a rude goodbye changes nothing


def is_transient(exc: BaseException) -> bool:
    """SMTP 4xx replies and connection trouble may pass; 5xx replies (unknown mailbox,
    rejected sender, failed login) will not, so they are not retried."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return any(not 500 <= refusal.code < 600 for refusal in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return not 500 <= exc.code < 600
    return True  # connection refused or reset, timeouts, disconnects
