"""Delivery channels: how a task's message leaves the service (e-mail today).

The task machinery knows nothing of any channel: a job function reaches the channels through
its JobContext, by name. A new channel (webhooks, say) is one module that implements Channel
and is added to the runtime's channels under its name.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

Message = TypeVar("Message", contravariant=True)


class Channel(Protocol[Message]):
    """Hands a finished message to its transport.

    A failure raises scheduler_app.tasks.policy.JobFailure (or a subclass) with `transient`
    saying whether trying again may succeed.
    """

    name: str

    async def send(self, message: Message) -> None: ...

    async def close(self) -> None:
        """Release what the channel holds open (connections), at shutdown."""


EMAIL = "email"
