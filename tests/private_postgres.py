"""A PostgreSQL server of a test's own, which the test may stop and start again.

The shared server named by TEST_POSTGRES_URL serves every test at once and must never be
stopped; a test that takes the database away from a service runs one of these instead: a fresh
cluster (initdb) in a folder of its own, listening on a free loopback port, started and stopped
with pg_ctl. PostgreSQL refuses to run as root, so under root every command runs as the
`postgres` user (runuser), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import free_port

# Looked in first; then `pg_config --bindir`, then where Debian and Ubuntu install the server.
BINDIR_VARIABLE = "TEST_POSTGRES_BINDIR"
DEBIAN_BINDIRS = Path("/usr/lib/postgresql")
PROGRAMS = ("initdb", "pg_ctl", "postgres")
SERVER_USER = "postgres"
# Starts tried on fresh ports when another process took the free port meanwhile.
PORT_TRIES = 3


class PrivatePostgres:
    """One cluster; `url` connects to its `postgres` database as the `postgres` superuser."""

    def __init__(self, bindir: Path, folder: Path, run_as: str | None) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.log_path = folder / "postgres.log"
        self._run_as = run_as
        self.port = 0
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """Create the cluster: trust authentication, loopback TCP, its socket in its folder."""
        self._check(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server, on the port it had if it ran before, and wait until it accepts
        connections."""
        first = not self.port
        for _ in range(PORT_TRIES if first else 1):
            if first:
                self._listen_on(free_port())
            log = str(self.log_path)
            started = self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "start")
            if started.returncode == 0:
                self.running = True
                return
        self.fail(f"pg_ctl start failed: {started.stderr.strip()}")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m mode (smart, fast or immediate); returns once the server is gone."""
        self._check("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def kill(self) -> None:
        """Stop the server whatever state it is in: an immediate stop, else SIGQUIT to it."""
        if not self.running:
            return
        self.running = False
        if self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop").returncode == 0:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n--- PostgreSQL log (tail) ---\n{self.log_tail()}")

    def _listen_on(self, port: int) -> None:
        self.port = port
        # The last setting in the file wins: a port chosen after a failed start replaces the
        # one before.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\nshared_buffers = 16MB\n"
            )

    def _check(self, program: str, *arguments: str) -> None:
        result = self._run(program, *arguments)
        if result.returncode != 0:
            self.fail(f"{program} {' '.join(arguments)} failed: {result.stderr.strip()}")

    def _run(self, program: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        command: Sequence[str] = [str(self.bindir / program), *arguments]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        # pg_ctl waits up to 60 s (PGCTLTIMEOUT) for the server to start or stop.
        return subprocess.run(command, capture_output=True, text=True, check=False)


def postgres_bindir() -> Path:
    """The folder of initdb, pg_ctl and postgres; skips the test without them (fails it
    under CI=true)."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_VARIABLE):
        candidates.append(Path(os.environ[BINDIR_VARIABLE]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))
    # The newest version first.
    candidates.extend(sorted(DEBIAN_BINDIRS.glob("*/bin"), key=_version, reverse=True))
    usable = [path for path in candidates if all((path / p).is_file() for p in PROGRAMS)]
    if not usable:
        _unavailable(
            f"the PostgreSQL server programs ({', '.join(PROGRAMS)}) are not in "
            f"{[str(path) for path in candidates]}: install the server (apt-get install "
            f"postgresql) or set {BINDIR_VARIABLE}"
        )
    return usable[0]


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster, started; stopped and deleted when the block ends, however it ends."""
    bindir = postgres_bindir()
    run_as = _server_user()
    # Not under pytest's tmp_path: under root, that folder is closed to the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="scheduler-test-pg-"))
    server = PrivatePostgres(bindir, folder, run_as)
    try:
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            os.chown(folder, user.pw_uid, user.pw_gid)
        server.init()
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)


def _version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in bindir.parent.name.split(".") if part.isdigit())


def _server_user() -> str | None:
    """Who runs the PostgreSQL programs: the `postgres` user under root, else the caller."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        _unavailable(f"running as root, and there is no '{SERVER_USER}' user to run initdb as")
    if shutil.which("runuser") is None:
        _unavailable("running as root, and runuser (util-linux) is missing")
    return SERVER_USER


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but no private PostgreSQL can run: {reason}")
    pytest.skip(f"no private PostgreSQL: {reason}")
