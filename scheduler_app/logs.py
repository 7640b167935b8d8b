"""The service's log lines: one format (text or JSON) for its own lines and uvicorn's, each
line naming the request it was logged for and the job and task it concerns.

The request id and the job being run are context variables: set by `RequestIdMiddleware`
(api/request_id.py) for the duration of a request and by the executor for a job's run (the
task runner adds the task's id), they reach every line logged meanwhile, also from code that
knows nothing of them (a job function, SQLAlchemy, uvicorn's access line). `ContextFilter`, on
the service's handler, copies them onto each record; the formatters write them.

The JSON formatter writes a fixed set of fields, never whatever else a record carries: a
record's `extra` attributes (uvicorn's `color_message`, any library's) stay out of the log, so
no value reaches it that nobody chose to write.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

LogFormat = Literal["text", "json"]

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being served, set by RequestIdMiddleware."""


class JobFields:
    """The job a run is of and, for a task's attempt, the task: one object per run, which the
    task runner completes with the task's id once it knows it, so that the executor's own
    lines about the run's outcome name the task too."""

    __slots__ = ("job", "task_id")

    def __init__(self, job: str) -> None:
        self.job = job
        self.task_id: str | None = None


_JOB: ContextVar[JobFields | None] = ContextVar("log_job", default=None)


JobLogged = tuple[Token[JobFields | None], Token[str | None]]


def start_job(job: str) -> JobLogged:
    """Name the job of the run starting in this context (each job runs in a context of its
    own); `end_job(...)` with what this returns when it ends.

    A run is no request's, even when its context was copied from one (a run started from a
    request: run-now, or the jobs waiting for a slot that it started): its lines have no
    request id.
    """
    return _JOB.set(JobFields(job)), REQUEST_ID.set(None)


def end_job(logged: JobLogged) -> None:
    job, request = logged
    REQUEST_ID.reset(request)
    _JOB.reset(job)


def in_task(task_id: str) -> None:
    """Name the task whose attempt the current run is; nothing outside a job's run."""
    fields = _JOB.get()
    if fields is not None:
        fields.task_id = task_id


# Context fields, in the order the text format shows them.
CONTEXT_FIELDS = ("request_id", "job", "task_id")


class ContextFilter(logging.Filter):
    """Copies the request id, job and task of the current context onto each record (a value
    given in a call's `extra` is kept). A filter, not the formatter's work: it runs in the
    thread and context that logs, whichever handler formats later."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        fields = _JOB.get()
        if not hasattr(record, "job"):
            record.job = fields.job if fields is not None else None
        if not hasattr(record, "task_id"):
            record.task_id = fields.task_id if fields is not None else None
        return True


ACCESS_LOGGER = "uvicorn.access"
# Query parameters whose values never reach the log: e-mail addresses (GET /reminders?email=)
# and, should one ever be sent that way, anything named like a credential.
_HIDDEN_QUERY = re.compile(r"email|token|secret|password|key|auth", re.IGNORECASE)
HIDDEN = "***"


def hide_query_values(path: str) -> str:
    """path with the values of its sensitive query parameters replaced by ***."""
    base, mark, query = path.partition("?")
    if not mark or not _HIDDEN_QUERY.search(query):
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = "&".join(
        f"{quote(name, safe='')}={HIDDEN if _HIDDEN_QUERY.search(name) else quote(value, safe='')}"
        for name, value in pairs
    )
    return f"{base}?{shown}"


def _access_args(record: logging.LogRecord) -> tuple[str, str, str, str, int] | None:
    """uvicorn's access line's (client, method, path, HTTP version, status), the path's
    sensitive query values hidden; None for any other record."""
    if record.name != ACCESS_LOGGER or not isinstance(record.args, tuple):
        return None
    if len(record.args) != 5:
        return None
    client, method, path, version, status = record.args
    if not isinstance(status, int):
        return None
    return str(client), str(method), hide_query_values(str(path)), str(version), status


def _message(record: logging.LogRecord) -> str:
    access = _access_args(record)
    if access is not None:
        return str(record.msg) % access
    return record.getMessage()


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger> [request_id=… job=… task_id=…]: <message>`, the brackets only
    when the line has context; time in ISO 8601, UTC."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        where = f"{record.name} [{context}]" if context else record.name
        line = f"{_time(record)} {record.levelname} {where}: {_message(record).rstrip()}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message; request_id, job
    and task_id when known; client, method, path and status for uvicorn's access lines;
    exc_info (the traceback as text) for a line logged with an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record).rstrip(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        access = _access_args(record)
        if access is not None:
            client, method, path, _, status = access
            entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {
    "text": TextFormatter,
    "json": JsonFormatter,
}

# Libraries whose own levels stay above the service's: alembic logs the set-up of each plugin
# at every start; SQLAlchemy's engine and pool loggers, at info and debug, write every statement
# with its parameters and every row read (e-mail addresses, the stored secrets). SQLAlchemy sets
# its own to WARNING when imported; stated here so that log_level: debug never lowers it.
QUIET_LOGGERS = {
    "alembic.runtime.plugins": "WARNING",
    "sqlalchemy": "WARNING",
}


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """The logging configuration (logging.config.dictConfig) of a service process: one handler
    on stderr with the chosen format, which uvicorn's loggers reach by propagation.

    Plain data, so that uvicorn can hand it to each worker process of `serve --workers N`,
    which applies it before anything there logs.
    """
    level = level.upper()
    uvicorn_loggers = {
        name: {"level": level, "handlers": [], "propagate": True}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    }
    quiet = {name: {"level": quiet_level} for name, quiet_level in QUIET_LOGGERS.items()}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.ContextFilter"}},
        "formatters": {
            "service": {"()": f"{__name__}.{FORMATTERS[log_format].__name__}"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "service",
                "filters": ["context"],
            }
        },
        "loggers": {**uvicorn_loggers, **quiet},
        "root": {"level": level, "handlers": ["stderr"]},
    }
