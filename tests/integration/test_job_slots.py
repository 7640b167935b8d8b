"""A job whose work is done gives its slot to the next job while it records its outcome, up to
max_concurrent_jobs such jobs at once; it still counts as running until it returns."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler_app.builtin import REGISTRY
from scheduler_app.engine.executor import JobContext, RegisteredJob
from scheduler_app.runtime import Runtime
from tests.support import Deployment, until_released, wait_until

STARTED: list[str] = []
# Jobs stay running until the test has seen what it waits for, however slow the machine.
RELEASE = threading.Event()
# Long enough for a job that could start to have started.
SETTLE_S = 0.3


async def hand_over_then_linger(ctx: JobContext, label: str) -> None:
    STARTED.append(label)
    ctx.work_done()
    await until_released(RELEASE)


async def hand_over_from_another_task(ctx: JobContext, label: str) -> None:
    STARTED.append(label)

    async def done() -> None:
        ctx.work_done()

    await asyncio.create_task(done())
    await until_released(RELEASE)


async def linger(ctx: JobContext, label: str) -> None:
    STARTED.append(label)
    await until_released(RELEASE)


SLOT_REGISTRY = {
    **REGISTRY,
    "hand_over": RegisteredJob("hand_over", hand_over_then_linger, "Give up the slot, linger."),
    "hand_over_elsewhere": RegisteredJob(
        "hand_over_elsewhere", hand_over_from_another_task, "Say so from a task of its own."
    ),
    "linger": RegisteredJob("linger", linger, "Linger in the slot."),
}
LABELS = ("a", "b", "c")


@pytest.fixture(autouse=True)
def _forget_starts() -> Iterator[None]:
    STARTED.clear()
    RELEASE.clear()
    yield
    RELEASE.set()
    STARTED.clear()


@pytest.mark.parametrize(
    ("job", "started_at_once"),
    [
        # The first gives up its slot and the second takes it; the second's hand-over is refused,
        # since one job (max_concurrent_jobs) already records its outcome without a slot.
        ("hand_over", 2),
        ("linger", 1),
        # Only the job's own task can give up its slot, not one that the job started.
        ("hand_over_elsewhere", 1),
    ],
)
def test_a_job_that_is_done_working_lets_one_more_start(
    tmp_path: Path, database_url: str, job: str, started_at_once: int
) -> None:
    deployment = Deployment(tmp_path, database_url, registry=SLOT_REGISTRY)
    deployment.overrides["scheduler"] = {"max_concurrent_jobs": 1}
    deployment.write(
        [{"id": label, "job": job, "cron": "0 8 * * *", "args": [label]} for label in LABELS]
    )
    with deployment.client() as client:
        runtime: Runtime = client.app_state["runtime"]
        now = datetime.now(UTC)
        for label in LABELS:
            runtime.scheduler.modify_job(label, next_run_time=now)

        wait_until(lambda: len(STARTED) >= started_at_once)
        time.sleep(SETTLE_S)
        assert len(STARTED) == started_at_once, STARTED
        # A job that gave up its slot still runs: the same job cannot start again meanwhile.
        assert set(STARTED) <= runtime.executor.running_job_ids()
        assert runtime.executor.waiting() == len(LABELS) - started_at_once

        RELEASE.set()
        wait_until(lambda: len(STARTED) == len(LABELS))
        wait_until(lambda: not runtime.executor.running_job_ids())
    assert sorted(STARTED) == sorted(LABELS)
