"""Mail delivery channels: compose an RFC 5322 message, hand it to a backend."""

from __future__ import annotations

from scheduler_app.channels.email.backend import DeliveryError, MailBackend, build_mail_backend
from scheduler_app.channels.email.message import OutgoingMessage, compose_message

__all__ = [
    "DeliveryError",
    "MailBackend",
    "OutgoingMessage",
    "build_mail_backend",
    "compose_message",
]
