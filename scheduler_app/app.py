"""The application factory: `create_app(settings)` builds the FastAPI app; nothing at import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from scheduler_app.api import admin, errors, health, jobs, reminders, runs
from scheduler_app.api.limits import MAX_BODY_BYTES, BodySizeLimit
from scheduler_app.clock import Clock, utcnow
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.runtime import Runtime
from scheduler_app.settings import Settings, load_settings


class State(TypedDict):
    runtime: Runtime


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = utcnow,
    registry: Mapping[str, RegisteredJob] | None = None,
) -> FastAPI:
    """Build the app; its lifespan starts the scheduler and stops it cleanly.

    Args:
        settings: the settings; loaded from config.yaml, .env and the environment when None.
        clock: the time source, injectable for tests.
        registry: the job functions stored jobs may name; scheduler_app.builtin by default.
    """
    resolved = settings if settings is not None else load_settings()
    if registry is None:
        from scheduler_app.builtin import REGISTRY

        registry = REGISTRY

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        runtime = await Runtime.start(resolved, clock, registry)
        try:
            yield {"runtime": runtime}
        finally:
            await runtime.stop()

    app = FastAPI(
        title="scheduler_app",
        summary="Durable reminders and recurring jobs for Python web backends.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.include_router(reminders.router)
    app.include_router(jobs.router)
    app.include_router(runs.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    return app
