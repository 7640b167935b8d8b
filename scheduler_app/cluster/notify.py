"""Wake-ups between processes: PostgreSQL's LISTEN/NOTIFY, as hints only.

A notification makes the leader look at the job store at once (a job stored or changed by a
follower: "due"), or a follower look at the lease (the leader gave it up: "lease"). Nothing
depends on one arriving: the leader polls the job store every `scheduler.poll_interval_s` and
followers poll the lease, so a notification lost (a connection pooler in transaction mode drops
them; `scheduler.poll_only: true` stops sending and listening) only costs that delay. SQLite has
no notifications: its processes share one host and poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from sqlalchemy import Engine, text

from scheduler_app.db.engine import describe_unavailable

logger = logging.getLogger(__name__)

CHANNEL = "scheduler_app"
DUE = "due"
LEASE = "lease"
RECONNECT_S = 1.0
# How long one wait for notifications lasts before the listener looks whether it should stop.
WAIT_S = 0.25


def notifications_possible(engine: Engine, poll_only: bool) -> bool:
    return engine.dialect.name == "postgresql" and not poll_only


class Notifier:
    """Sends notifications from the event loop; those asked for together go in one statement."""

    def __init__(self, engine: Engine, enabled: bool) -> None:
        self._engine = engine
        self._enabled = enabled
        self._pending: set[str] = set()
        self._sending: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    def send(self, message: str) -> None:
        """Send message to every listening process soon (call on the event loop, or from a
        thread through it); a failure is logged only: polling covers for a lost one."""
        if not self._enabled:
            return
        self._pending.add(message)
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send_pending())

    def send_threadsafe(self, loop: asyncio.AbstractEventLoop, message: str) -> None:
        if self._enabled:
            loop.call_soon_threadsafe(self.send, message)

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                messages, self._pending = sorted(self._pending), set()
                try:
                    await asyncio.to_thread(self._notify, messages)
                except Exception as exc:
                    logger.warning("a notification was not sent (%s)", describe_unavailable(exc))
        finally:
            self._sending = None

    def _notify(self, messages: list[str]) -> None:
        with self._engine.begin() as connection:
            for message in messages:
                connection.execute(
                    text("SELECT pg_notify(:channel, :message)"),
                    {"channel": CHANNEL, "message": message},
                )

    async def close(self) -> None:
        if self._sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sending), 2.0)


class Listener:
    """Listens on a connection of its own and calls the handler of each message received;
    reconnects after RECONNECT_S when the connection is lost."""

    name = "notification listener"
    leader_only = False

    def __init__(self, engine: Engine, handlers: Mapping[str, Callable[[], None]]) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._handlers = handlers
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._listen(), name="notification-listener")

    async def stop(self) -> None:
        """Let the listening loop end by itself (within WAIT_S): cancelling psycopg's wait for
        notifications can leave the connection waiting for an answer that never comes."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        _, pending = await asyncio.wait({task}, timeout=2 * WAIT_S + 1)
        if pending:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _listen(self) -> None:
        import psycopg

        lost = False
        while not self._stopping.is_set():
            try:
                connecting = psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=int(WAIT_S * 4)
                )
                async with await connecting as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    if lost:
                        logger.info("listening for notifications again")
                        lost = False
                    self.listening.set()
                    # Whatever was notified while not listening: look now.
                    for handler in self._handlers.values():
                        handler()
                    while not self._stopping.is_set():
                        async for notification in connection.notifies(timeout=WAIT_S):
                            received = self._handlers.get(notification.payload)
                            if received is not None:
                                received()
            except Exception as exc:
                self.listening.clear()
                if not lost:
                    logger.warning(
                        "notifications lost (%s); polling meanwhile, reconnecting every %gs",
                        describe_unavailable(exc),
                        RECONNECT_S,
                    )
                    lost = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONNECT_S):
                    await self._stopping.wait()
