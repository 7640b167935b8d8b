"""The e-mail channel's backends (outbox, SMTP), chosen by `mail.backend`."""

from __future__ import annotations

from typing import TypeAlias

from scheduler_app.channels import Channel
from scheduler_app.channels.email.message import OutgoingMessage
from scheduler_app.settings import MailSettings
from scheduler_app.tasks.policy import JobFailure


class DeliveryError(JobFailure):
    """A message was not handed over; `transient` says whether trying again may succeed."""


# The e-mail channel: hands a finished message to its transport; raises DeliveryError.
MailBackend: TypeAlias = Channel[OutgoingMessage]


def build_mail_backend(settings: MailSettings) -> MailBackend:
    # Imported here so that the SMTP client is only loaded when it is configured.
    if settings.backend == "smtp":
        from scheduler_app.channels.email.smtp import SmtpBackend

        return SmtpBackend(settings.smtp)
    from scheduler_app.channels.email.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir)
