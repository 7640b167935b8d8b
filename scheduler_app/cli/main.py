"""The `scheduler-app` command line."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scheduler_app.cli.cluster import cluster
from scheduler_app.cli.jobs import app as jobs_app
from scheduler_app.clock import utcnow
from scheduler_app.errors import ConfigError
from scheduler_app.settings import Settings, load_settings

if TYPE_CHECKING:
    from scheduler_app.cron.entries import CronJobSpec

app = typer.Typer(
    help="Durable reminders and recurring jobs for Python web backends.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.command("cluster")(cluster)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="YAML configuration file (default: $SCHEDULER_CONFIG or ./config.yaml)."
    ),
]


def _settings(config: Path | None, exit_code: int = 2) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"scheduler-app: {exc.message}", err=True)
        raise typer.Exit(exit_code) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    config: ConfigOption = None,
    workers: Annotated[
        int,
        typer.Option(help="Processes serving on the one address, each a whole service process."),
    ] = 1,
) -> None:
    """Serve the API and run the scheduler."""
    import uvicorn

    from scheduler_app.cli.serve import (
        ListenError,
        configure_logging,
        listen,
        run_workers,
        service_app,
        uvicorn_config,
        worker_app,
    )

    if workers < 1:
        typer.echo(f"scheduler-app: --workers must be at least 1, not {workers}", err=True)
        raise typer.Exit(2)
    settings = _settings(config)
    try:
        sock = listen(host, port)
    except ListenError as exc:
        typer.echo(f"scheduler-app: {exc}", err=True)
        raise typer.Exit(1) from None
    configure_logging(settings)
    # Checking the jobs and migrating here first turns a bad jobs list or an unreachable
    # database into a clear message instead of a traceback from inside the server. With
    # several workers, it also migrates once, before any of them starts.
    _job_specs(settings, exit_code=2)
    _migrate(settings)
    options = {
        "host": host,
        "port": port,
        "workers": workers,
        "timeout_graceful_shutdown": int(settings.scheduler.shutdown_timeout_s) + 5,
    }
    if workers > 1:
        # Each worker builds its app from the configuration file this process read; an
        # absolute path, whatever a worker's working folder.
        config_file = settings.config_file.absolute() if settings.config_file else None
        factory = partial(worker_app, config_file, os.getpid())
        worker = uvicorn_config(factory, settings, factory=True, **options)
        raise typer.Exit(run_workers(worker, sock))
    # uvicorn re-raises the SIGTERM or SIGINT it handled once it has shut down; a no-op
    # handler turns that into a normal exit (status 0) instead of death by signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    server = uvicorn.Server(uvicorn_config(service_app(settings), settings, **options))
    server.run(sockets=[sock])


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply every pending schema migration."""
    from scheduler_app.db.engine import describe_url

    settings = _settings(config)
    before, after = _migrate(settings)
    where = describe_url(settings.database_url)
    if before == after:
        typer.echo(f"{where}: already at revision {after}")
    else:
        typer.echo(f"{where}: upgraded from {before or 'empty'} to {after}")


def _job_specs(settings: Settings, exit_code: int) -> list[CronJobSpec]:
    from scheduler_app.builtin import REGISTRY
    from scheduler_app.discovery import job_registry
    from scheduler_app.runtime import job_specs

    try:
        return job_specs(settings, job_registry(settings, REGISTRY))
    except ConfigError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(exit_code) from None


def _migrate(settings: Settings) -> tuple[str | None, str | None]:
    from sqlalchemy.exc import SQLAlchemyError

    from scheduler_app.db.engine import create_db_engine, describe_url
    from scheduler_app.db.migrate import current_revision, upgrade_database

    engine = create_db_engine(settings.database_url)
    try:
        before = current_revision(engine)
        upgrade_database(engine)
        return before, current_revision(engine)
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        typer.echo(
            f"scheduler-app: database {describe_url(settings.database_url)}: {reason}", err=True
        )
        raise typer.Exit(2) from None
    finally:
        engine.dispose()


@app.command("check-config")
def check_config(
    config: ConfigOption = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Database to plan against (default: the configured)."),
    ] = None,
) -> None:
    """Validate the configuration, show each cron job's schedule and what applying it changes."""
    from scheduler_app.cli.check import describe_jobs, describe_plan

    settings = _settings(config, exit_code=1)
    specs = _job_specs(settings, exit_code=1)
    for line in describe_jobs(specs, settings, now=utcnow()):
        typer.echo(line)
    for line in describe_plan(specs, database_url or settings.database_url):
        typer.echo(line)


def main() -> None:
    app()
