"""The admin token: from settings, or generated once and kept in the state folder."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from scheduler_app.settings import Settings

ADMIN_TOKEN_FILE = "admin_token"  # noqa: S105 (a file name)


def resolve_admin_token(settings: Settings) -> str:
    """Return the configured admin token, or the stored one, generating it on first start."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.state_dir / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    try:
        _write_private(path, token)
    except FileExistsError:  # another process generated it first
        return path.read_text().strip()
    # Printed once, on the console only: it is never written to a log.
    print(
        f"scheduler-app: generated an admin token (kept in {path}, owner-only):\n  {token}",
        file=sys.stderr,
        flush=True,
    )
    return token


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(content + "\n")
