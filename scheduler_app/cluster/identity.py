"""Who this process is: an id of its own, its host and pid, and what tells whether a pid seen in
the database is one of this machine's."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from scheduler_app.ids import new_id


@dataclass(frozen=True)
class ProcessIdentity:
    id: str
    host: str
    pid: int
    version: str
    # The machine's boot and pid namespace: equal only where a pid names the same process.
    node: str

    @classmethod
    def of_this_process(cls) -> ProcessIdentity:
        return cls(
            id=new_id(),
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            version=package_version(),
            node=_node(),
        )

    def sees_dead(self, node: str | None, pid: int | None) -> bool:
        """Whether the process node/pid is known dead: it ran on this machine, in this pid
        namespace, and no process has that pid now. False whenever that cannot be told."""
        if node is None or pid is None or node != self.node or not self.node:
            return False
        if pid == self.pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # it exists, under another user
        return False


def package_version() -> str:
    try:
        return version("scheduler-app")
    except PackageNotFoundError:
        return "unknown"


def _node() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"[:128]
