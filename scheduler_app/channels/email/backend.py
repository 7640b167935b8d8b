"""The mail backend interface and the registry that maps `mail.backend` names to backends."""

from __future__ import annotations

from typing import Protocol

from scheduler_app.channels.email.message import OutgoingMessage
from scheduler_app.settings import MailSettings


class DeliveryError(Exception):
    """A message was not handed over; `transient` says whether trying again may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class MailBackend(Protocol):
    """Hands a finished message to its transport; raises DeliveryError on failure."""

    name: str

    async def send(self, message: OutgoingMessage) -> None: ...

    async def close(self) -> None:
        """Release what the backend holds open (connections), at shutdown."""


def build_mail_backend(settings: MailSettings) -> MailBackend:
    # Imported here so that the SMTP client is only loaded when it is configured.
    if settings.backend == "smtp":
        from scheduler_app.channels.email.smtp import SmtpBackend

        return SmtpBackend(settings.smtp)
    from scheduler_app.channels.email.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir)
