"""The service's secrets, each from settings or generated once: the admin token (kept owner-only
in the state folder) and the secret key (kept in the database)."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import tempfile
from pathlib import Path

from sqlalchemy import Engine, Insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from scheduler_app.db.models import ServiceSecret
from scheduler_app.files import private_dir
from scheduler_app.settings import Settings

ADMIN_TOKEN_FILE = "admin_token"  # noqa: S105 (a file name)
SECRET_KEY = "secret_key"  # noqa: S105 (the name it is kept under)


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


def resolve_secret_key(settings: Settings, engine: Engine) -> bytes:
    """Return the configured secret key, or the one kept in the database, generating it on the
    first start of the first process.

    It signs what the service hands out and must recognise later (cancel tokens): nobody
    without it can derive one. Kept in the database, so that every process on it signs alike.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    with engine.begin() as connection:
        # The first process to insert wins; the others read what it wrote.
        connection.execute(
            _insert_new_secret(connection.dialect.name),
            {"name": SECRET_KEY, "value": secrets.token_urlsafe(32)},
        )
        value = connection.scalar(
            select(ServiceSecret.value).where(ServiceSecret.name == SECRET_KEY)
        )
    if value is None:
        raise RuntimeError("the secret key could not be stored")
    return value.encode()


def _insert_new_secret(dialect: str) -> Insert:
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    return insert(ServiceSecret).on_conflict_do_nothing(index_elements=["name"])


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


def hash_token(token: str) -> str:
    """SHA-256 of a token, as stored: a leaked database does not give the token away."""
    return hashlib.sha256(token.encode()).hexdigest()
