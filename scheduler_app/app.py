"""The application factory: `create_app(settings)` builds the FastAPI app; nothing at import."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from scheduler_app.api import errors
from scheduler_app.api.docs import install_docs
from scheduler_app.api.limits import MAX_BODY_BYTES, BodySizeLimit
from scheduler_app.api.openapi import document_service
from scheduler_app.api.request_id import RequestIdMiddleware
from scheduler_app.clock import Clock, utcnow
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.scheduler import Scheduler
from scheduler_app.settings import Settings, load_settings


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
        registry: the jobs stored jobs may name; the built-in ones and those of job_modules by
            default.
    """
    resolved = settings if settings is not None else load_settings()
    scheduler = Scheduler(resolved, clock=clock, registry=registry, job_module=None)
    app = FastAPI(
        title="scheduler_app",
        summary="Durable reminders, tasks and recurring jobs for Python web backends.",
        version="0.1.0",
        lifespan=scheduler.lifespan,
        # /docs is served by install_docs with files of its own; ReDoc would need the Internet.
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    # Added last, so outermost: the body limit's own answers (413, 400, 422) carry the id too.
    app.add_middleware(RequestIdMiddleware)
    # Added as routes, not as an included router, for the reason given in Scheduler.__init__.
    app.router.routes.extend(scheduler.router.routes)
    install_docs(app)
    document_service(app, max_body_bytes=MAX_BODY_BYTES)
    return app
