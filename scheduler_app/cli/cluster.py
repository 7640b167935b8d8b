"""`scheduler-app cluster`: who leads and which processes run, read from the database."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler_app.errors import ConfigError
from scheduler_app.settings import load_settings


def cluster(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML configuration file (default: $SCHEDULER_CONFIG or ./config.yaml).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what GET /admin/cluster answers.")
    ] = False,
) -> None:
    """Show the leader (process, term, lease) and the processes on the database, with roles."""
    from sqlalchemy.exc import SQLAlchemyError

    from scheduler_app.cluster.service import read_cluster
    from scheduler_app.cluster.timing import Timing
    from scheduler_app.db.engine import create_db_engine, describe_url

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"scheduler-app: {exc.message}", err=True)
        raise typer.Exit(2) from None
    engine = create_db_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            view = read_cluster(connection, Timing(settings.scheduler.lease_s))
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        where = describe_url(settings.database_url)
        typer.echo(f"scheduler-app: database {where}: {reason}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    leader: dict[str, Any] | None = None
    if view.leader is not None:
        leader = {
            "id": view.leader.id,
            "term": view.leader.term,
            "lease_expires": _text(view.leader.lease_expires),
        }
    processes = [
        {
            "id": p.id,
            "host": p.host,
            "pid": p.pid,
            "role": p.role,
            "version": p.version,
            "started_at": _text(p.started_at),
            "last_seen": _text(p.last_seen),
        }
        for p in view.processes
    ]
    if as_json:
        typer.echo(json.dumps({"leader": leader, "processes": processes}, indent=2))
        return
    if leader is None:
        typer.echo("leader: none (no process holds the lease)")
    else:
        typer.echo(
            f"leader: {leader['id']}  term {leader['term']}  lease expires "
            f"{leader['lease_expires']}"
        )
    typer.echo(f"processes: {len(processes)}")
    for p in processes:
        typer.echo(
            f"  {p['role']:<8} {p['id']}  {p['host']} pid {p['pid']}  v{p['version']}  "
            f"started {p['started_at']}  last seen {p['last_seen']}"
        )


def _text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
