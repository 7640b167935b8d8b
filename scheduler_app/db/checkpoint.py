"""SQLite WAL checkpoints in a thread of their own, off the path of every commit.

By default the connection whose commit takes the write-ahead log past 1,000 pages copies the log
into the database file and syncs both to disk before its commit returns. For the service that
connection is usually the database writer's, so every request and delivery waiting on that batch
waited for the disk: under about 1,100 POST /subscribe a second, the slowest answers took 0.18
to 1.02 s instead of under 60 ms. Here the service's connections never checkpoint; a thread does
it every `interval_s`, in passive mode, which copies what no reader still needs without blocking
anyone.

A passive checkpoint seldom lets the log start over while writes go on: SQLite rewinds it only when
a write begins with every frame copied, and under steady writes new frames nearly always arrive
during the copy. The log then grows with everything written: 0.6-0.7 GB a minute of POST /subscribe
at full speed. So once it holds more than `restart_frames`, the thread follows the passive
checkpoint with a restarting one: writers wait while it copies the few frames that came in
meanwhile, and the next write starts the log from its beginning, which keeps the file's size near
that mark. Readers still holding older frames would make it wait, with writers held up too, so it
gives up after `RESTART_WAIT_S` and tries again at a later interval.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from sqlalchemy import Engine, event

logger = logging.getLogger(__name__)
CHECKPOINT_INTERVAL_S = 0.5
# 1 GiB of SQLite's default 4 KiB pages. Each restart holds writers back for tens of ms; at
# 64 MiB, restarts every second or two at 1,000 POST /subscribe a second cost far more than that
# (p99 94-302 ms against 26-91 ms without restarts, three alternating runs each).
RESTART_FRAMES = 262_144
RESTART_WAIT_S = 0.1


class WalCheckpointer:
    """Checkpoints a SQLite engine's write-ahead log, in a daemon thread: every interval_s in
    which the log file changed.

    Attach it before the engine's first connection: from then on the engine's connections leave
    checkpoints to it, and the log grows until `start` is called. `stop` runs a last checkpoint.
    """

    def __init__(
        self,
        engine: Engine,
        interval_s: float = CHECKPOINT_INTERVAL_S,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError("WAL checkpoints concern SQLite databases only")
        self._engine = engine
        self._interval_s = interval_s
        self._restart_frames = restart_frames
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        event.listen(engine, "connect", _no_automatic_checkpoints)

    @classmethod
    def attach(
        cls,
        engine: Engine,
        interval_s: float = CHECKPOINT_INTERVAL_S,
        restart_frames: int = RESTART_FRAMES,
    ) -> WalCheckpointer | None:
        """A checkpointer for engine if it is SQLite's; None for other databases."""
        if engine.dialect.name != "sqlite":
            return None
        return cls(engine, interval_s, restart_frames)

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._work, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the thread after one last checkpoint."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(timeout_s)
        self._thread = None

    def checkpoint(self) -> tuple[int, int]:
        """Copy what the log holds into the database file, as far as readers allow; returns the
        log's frames and how many of them are now in the database file (-1, -1 if not in WAL
        mode)."""
        with self._engine.connect() as connection:
            row = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        _busy, log_frames, copied_frames = row
        return int(log_frames), int(copied_frames)

    def restart(self) -> bool:
        """Copy the whole log, holding writers back meanwhile, so that the next write starts it
        over; False if a writer or a reader held on for longer than RESTART_WAIT_S."""
        with self._engine.connect() as connection:
            sqlite = connection.connection.driver_connection
            assert sqlite is not None
            usual_ms = sqlite.execute("PRAGMA busy_timeout").fetchone()[0]
            sqlite.execute(f"PRAGMA busy_timeout={int(RESTART_WAIT_S * 1000)}")
            try:
                busy = sqlite.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
            finally:
                sqlite.execute(f"PRAGMA busy_timeout={int(usual_ms)}")
        return not busy

    def _work(self) -> None:
        checkpointed: tuple[int, int] | None = None
        while True:
            stopping = self._stopping.wait(self._interval_s)
            # An idle service writes nothing: a look at the log file, not a checkpoint, tells.
            log = self._log_file_state()
            if log != checkpointed or stopping:
                try:
                    log_frames, _ = self.checkpoint()
                    if log_frames > self._restart_frames and not self.restart():
                        logger.debug("the write-ahead log was held; restarting it later")
                    checkpointed = log
                except Exception:
                    # The next interval tries again; until then the log grows, nothing is lost.
                    logger.exception("SQLite checkpoint failed; retrying in %ss", self._interval_s)
            if stopping:
                return

    def _log_file_state(self) -> tuple[int, int] | None:
        """The write-ahead log file's modification time and size; None while there is none."""
        try:
            state = os.stat(f"{self._engine.url.database}-wal")
        except OSError:
            return None
        return state.st_mtime_ns, state.st_size


def _no_automatic_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()
