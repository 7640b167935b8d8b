"""Files that hold people's data (addresses, messages, reports) are the owner's only."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Create path if needed (owner-only when created here); return it."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    return path


def create_private_file(path: Path) -> None:
    """Create path empty and owner-only, unless it exists (then it is left as it is).

    Files that the process creates follow its umask, commonly 0o022: readable by everyone.
    """
    private_dir(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    os.close(descriptor)
