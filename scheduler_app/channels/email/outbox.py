"""The zero-setup backend: one .eml file per delivered message in a folder."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from scheduler_app.channels.email.backend import DeliveryError
from scheduler_app.channels.email.message import OutgoingMessage
from scheduler_app.files import PRIVATE_FILE, private_dir


class OutboxBackend:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def close(self) -> None:
        return None

    async def send(self, message: OutgoingMessage) -> None:
        try:
            await asyncio.to_thread(self._write, _unix_lines(message.data))
        except OSError as exc:  # a full disk or a permission can be fixed: try again later
            raise DeliveryError(f"{type(exc).__name__}: {exc}", transient=True) from exc

    def _write(self, data: bytes) -> Path:
        private_dir(self.directory)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.directory / f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
        # Written aside, flushed, then renamed: a reader never sees half a message.
        partial = final.with_suffix(".eml.part")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(final)
        return final


def _unix_lines(data: bytes) -> bytes:
    # .eml files on disk use the platform's line ends; only the SMTP wire needs CRLF. A message's
    # bytes hold no bare CR (bodies are split into lines before they are encoded).
    return data.replace(b"\r\n", b"\n")
