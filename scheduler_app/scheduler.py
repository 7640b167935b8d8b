"""Scheduler: scheduler_app inside your own FastAPI app.

    scheduler = Scheduler(load_settings("config.yaml"))
    app = FastAPI(lifespan=scheduler.lifespan)
    app.include_router(scheduler.router, prefix="/scheduler")

    @app.post("/register")
    async def register(user: UserIn, tasks: DurableTasks):
        await tasks.add_task(send_welcome_email, user.email)

The service itself (`scheduler-app serve`, create_app) is built the same way.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import ModuleType, TracebackType
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI

from scheduler_app.api import (
    admin,
    audit,
    cluster,
    health,
    jobs,
    metrics,
    reminders,
    runs,
    tasks,
)
from scheduler_app.api.deps import get_tasks
from scheduler_app.clock import Clock, utcnow
from scheduler_app.dashboard import routes as dashboard
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.runtime import Runtime
from scheduler_app.settings import Settings
from scheduler_app.tasks.service import Tasks

# Every route of the service, in the order they are matched.
ROUTERS = (
    reminders.router,
    tasks.router,
    jobs.router,
    runs.router,
    admin.router,
    audit.router,
    cluster.router,
    health.router,
    metrics.router,
    dashboard.router,
)

DurableTasks = Annotated[Tasks, Depends(get_tasks)]
"""A route's durable BackgroundTasks: `await tasks.add_task(func, *args, **kwargs)` stores the
task before the response leaves; it then runs, is retried and survives a crash."""


class Scheduler:
    """scheduler_app's scheduler, routes and tasks, for a FastAPI app of your own."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        registry: Mapping[str, RegisteredJob] | None = None,
        job_module: ModuleType | None = None,
    ) -> None:
        """Args:
        settings: the settings (load_settings("config.yaml"), or Settings(...)).
        clock: the time source, injectable for tests.
        registry: the jobs stored tasks and config.yaml may name; by default the built-in
            jobs, those of settings.job_modules and the @job functions of job_module.
        job_module: a module whose @job functions are registered too; by default the module
            that creates this Scheduler (your app's), so that jobs defined beside it work.
        """
        self.settings = settings
        self._clock = clock
        self._registry = registry
        self._job_module = job_module if job_module is not None else _caller_module()
        self._runtime: Runtime | None = None
        self.router = APIRouter()
        for router in ROUTERS:
            # The routes themselves, not the routers: FastAPI looks an included router's routes
            # up again on each request (a walk over every nested router), which cost POST
            # /subscribe a seventh of its CPU once the dashboard's routes came (194 against
            # 153-164 us a request in-process with the routes flat).
            self.router.routes.extend(router.routes)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the scheduler is not running (see Scheduler.lifespan)")
        return self._runtime

    @property
    def tasks(self) -> Tasks:
        """The tasks service: add_task, schedule, add_task_in, schedule_in ..."""
        return self.runtime.tasks

    def registry(self) -> Mapping[str, RegisteredJob]:
        if self._registry is not None:
            return self._registry
        from scheduler_app.builtin import REGISTRY
        from scheduler_app.discovery import job_registry

        extra = (self._job_module,) if self._job_module is not None else ()
        return job_registry(self.settings, REGISTRY, *extra)

    async def start(self) -> Runtime:
        if self._runtime is not None:
            raise RuntimeError("the scheduler is running already")
        self._runtime = await Runtime.start(self.settings, self._clock, self.registry())
        return self._runtime

    async def stop(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await runtime.stop()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI | None = None) -> AsyncIterator[dict[str, Any]]:
        """Run the scheduler while the app runs: FastAPI(lifespan=scheduler.lifespan), or
        `async with scheduler.lifespan(app):` inside the app's own lifespan."""
        runtime = await self.start()
        if app is not None:
            # For routes of an app whose lifespan state this one does not provide.
            app.state.scheduler_app = runtime
        try:
            yield {"runtime": runtime}
        finally:
            if app is not None:
                app.state.scheduler_app = None
            await self.stop()

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _caller_module() -> ModuleType | None:
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame is not None and frame.f_back else None
        name = caller.f_globals.get("__name__") if caller is not None else None
    finally:
        del frame
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None or module.__name__.startswith("scheduler_app."):
        return None
    return module
