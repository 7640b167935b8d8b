"""The service's secrets, each from settings or generated once and kept in the database, which
every process on it shares: the admin token (also kept owner-only in the state folder, for the
command line) and the secret key."""

from __future__ import annotations

import hashlib
import logging
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
ADMIN_TOKEN = "admin_token"  # noqa: S105 (the name it is kept under)
SECRET_KEY = "secret_key"  # noqa: S105 (the name it is kept under)
logger = logging.getLogger(__name__)


def resolve_admin_token(settings: Settings, engine: Engine) -> str:
    """Return the configured admin token, or the one kept in the database, generating it on the
    first start of the first process.

    Kept in the database, so that every process on it accepts the same token; and in the state
    folder's file (owner-only), so that `scheduler-app jobs` finds it on every host. A file from
    before the token was shared is offered to the database first: the first process to start
    keeps its token. Blocking: call it in a worker thread.
    """
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.state_dir / ADMIN_TOKEN_FILE
    kept = _read_secret(path)
    offered = kept or secrets.token_urlsafe(32)
    token = _stored_secret(engine, ADMIN_TOKEN, offered)
    if kept != token:
        _write_private(path, token)
    if kept and kept != token:
        # Never the tokens themselves: a log is read by more people than the file.
        logger.warning(
            "%s held an admin token other than the one kept in the database for every process; "
            "it now holds the database's",
            path,
        )
    elif kept is None and token == offered:
        # Printed once, by the process that generated it, on the console only: never to a log.
        print(
            "scheduler-app: generated an admin token (kept in the database and in "
            f"{path}, owner-only):\n  {token}",
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
    return _stored_secret(engine, SECRET_KEY, secrets.token_urlsafe(32)).encode()


def _stored_secret(engine: Engine, name: str, offered: str) -> str:
    """The secret kept in the database under name, storing offered if there is none yet."""
    with engine.begin() as connection:
        # The first process to insert wins; the others read what it wrote.
        connection.execute(
            _insert_new_secret(connection.dialect.name), {"name": name, "value": offered}
        )
        value = connection.scalar(select(ServiceSecret.value).where(ServiceSecret.name == name))
    if value is None:
        raise RuntimeError(f"the {name.replace('_', ' ')} could not be stored")
    return value


def _insert_new_secret(dialect: str) -> Insert:
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    return insert(ServiceSecret).on_conflict_do_nothing(index_elements=["name"])


def _read_secret(path: Path) -> str | None:
    """The secret kept in path; None if there is no such file or it is empty."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_private(path: Path, content: str) -> None:
    """Write path, readable by the owner only, whole or not at all (processes of one host that
    write it at the same moment write the same content: the last one's stays)."""
    private_dir(path.parent)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:  # mkstemp creates it owner-only
            handle.write(content + "\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def hash_token(token: str) -> str:
    """SHA-256 of a token, as stored: a leaked database does not give the token away."""
    return hashlib.sha256(token.encode()).hexdigest()
