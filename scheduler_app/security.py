"""The service's secrets: the admin token and the secret key, each from settings or generated
once and kept owner-only in the state folder."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

from scheduler_app.files import private_dir
from scheduler_app.settings import Settings

ADMIN_TOKEN_FILE = "admin_token"  # noqa: S105 (a file name)
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name)


def resolve_admin_token(settings: Settings) -> str:
    """Return the configured admin token, or the stored one, generating it on first start."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.state_dir / ADMIN_TOKEN_FILE
    token, generated = _kept_secret(path)
    if generated:
        # Printed once, on the console only: it is never written to a log.
        print(
            f"scheduler-app: generated an admin token (kept in {path}, owner-only):\n  {token}",
            file=sys.stderr,
            flush=True,
        )
    return token


def resolve_secret_key(settings: Settings) -> bytes:
    """Return the configured secret key, or the stored one, generating it on first start.

    It signs what the service hands out and must be able to recognise later (cancel tokens):
    nobody without it can derive one.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    key, _ = _kept_secret(settings.state_dir / SECRET_KEY_FILE)
    return key.encode()


def _kept_secret(path: Path) -> tuple[str, bool]:
    """The secret kept in path, generated (and written owner-only) if there is none; whether
    it was generated now."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32)
    try:
        _write_private(path, secret)
    except FileExistsError:  # another process generated it first
        return path.read_text().strip(), False
    return secret, True


def _write_private(path: Path, content: str) -> None:
    """Write path, readable by the owner only, whole or not at all; FileExistsError if it is
    there already (another process starting at the same moment wrote it first)."""
    private_dir(path.parent)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:  # mkstemp creates it owner-only
            handle.write(content + "\n")
        os.link(temporary, path)  # refuses an existing path: the first to link wins
    finally:
        os.unlink(temporary)
