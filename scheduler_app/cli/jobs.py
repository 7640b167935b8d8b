"""`scheduler-app jobs ...`: the operator API from a terminal, with the admin token from the
environment (SCHEDULER_ADMIN_TOKEN, else the generated var/admin_token)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from scheduler_app.audit import CLI_USER_AGENT
from scheduler_app.cluster.identity import package_version
from scheduler_app.security import ADMIN_TOKEN_FILE

app = typer.Typer(help="Inspect and operate scheduled jobs through the API.", no_args_is_help=True)

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="SCHEDULER_URL", help="Base URL of the running service."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
JobIdArgument = Annotated[str, typer.Argument(help="e.g. daily-report or reminder:<uuid>")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _token() -> str:
    token = os.environ.get("SCHEDULER_ADMIN_TOKEN")
    if token:
        return token
    generated = Path(os.environ.get("SCHEDULER_STATE_DIR", "var")) / ADMIN_TOKEN_FILE
    if generated.is_file():
        return generated.read_text().strip()
    typer.echo("scheduler-app: set SCHEDULER_ADMIN_TOKEN to the service's admin token", err=True)
    raise typer.Exit(2)


def _call(method: str, url: str, path: str, **params: Any) -> Any:
    query = {key: value for key, value in params.items() if value is not None}
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            params=query,
            timeout=30,
            headers={
                "Authorization": f"Bearer {_token()}",
                "User-Agent": f"{CLI_USER_AGENT}/{package_version()}",
            },
        )
    except httpx.HTTPError as exc:
        typer.echo(f"scheduler-app: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        typer.echo(f"scheduler-app: {response.status_code}: {detail}", err=True)
        raise typer.Exit(1)
    return response.json() if response.content else None


def _when(value: str | None) -> str:
    return "-" if value is None else value.replace("T", " ")[:19]


def _table(items: list[dict[str, Any]]) -> None:
    header = ("ID", "KIND", "NEXT RUN (UTC)", "LAST RUN", "SCHEDULE")
    rows = [
        (
            item["id"],
            item["kind"],
            "paused" if item["paused"] else _when(item["next_run_time"]),
            item["last_run"]["outcome"] if item["last_run"] else "-",
            item["schedule_text"],
        )
        for item in items
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, str(row[-1])]))


@app.command("list")
def list_jobs(
    url: UrlOption = DEFAULT_URL,
    kind: Annotated[str | None, typer.Option(help="cron or reminder.")] = None,
    q: Annotated[str | None, typer.Option(help="Part of the id or description.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Jobs per page.")] = 50,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List scheduled jobs by next run time."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _call("GET", url, "/jobs", kind=kind, q=q, limit=limit, cursor=cursor)
        items += page["items"]
        cursor = page["next_cursor"]
        if not (all_pages and cursor):
            break
    if as_json:
        typer.echo(json.dumps({"items": items, "next_cursor": cursor}, indent=2))
        return
    _table(items)
    if cursor:
        typer.echo(f"... more: --all, or the API with cursor={cursor}")


@app.command()
def show(job_id: JobIdArgument, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Show one job and its recent runs."""
    detail = _call("GET", url, f"/jobs/{job_id}")
    if as_json:
        typer.echo(json.dumps(detail, indent=2))
        return
    for key in ("id", "kind", "job", "description", "trigger", "schedule_text", "source"):
        typer.echo(f"{key + ':':15} {detail[key]}")
    typer.echo(f"{'next run:':15} {'paused' if detail['paused'] else detail['next_run_time']}")
    typer.echo("recent runs:" if detail["recent_runs"] else "recent runs:   none")
    for run in detail["recent_runs"]:
        manual = " (manual)" if run["manual"] else ""
        error = f"  {run['error']}" if run["error"] else ""
        typer.echo(f"  {_when(run['scheduled_for'])}  {run['outcome']}{manual}{error}")


_ACTIONS = {
    "pause": ("POST", "/jobs/{}/pause", "Pause a job."),
    "resume": ("POST", "/jobs/{}/resume", "Resume a paused job."),
    "run": ("POST", "/jobs/{}/run", "Run a job once now, outside its schedule."),
    "cancel": ("DELETE", "/jobs/{}", "Cancel a reminder's job (config jobs: pause or edit)."),
}


def _add_action(action: str) -> None:
    method, path, summary = _ACTIONS[action]

    def command(
        job_id: JobIdArgument, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
    ) -> None:
        answer = _call(method, url, path.format(job_id))
        if as_json:
            typer.echo(json.dumps(answer, indent=2))
        elif action == "run":
            typer.echo(f"{job_id}: run {answer['run_id']} started")
        elif action == "cancel":
            typer.echo(f"{job_id}: cancelled")
        else:
            state = "paused" if answer["paused"] else f"next run {answer['next_run_time']}"
            typer.echo(f"{job_id}: {state}")

    command.__doc__ = summary
    app.command(action)(command)


for _action in _ACTIONS:
    _add_action(_action)
