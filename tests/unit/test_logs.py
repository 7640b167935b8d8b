"""The log formats: JSON lines with their fields, the text line with its context, uvicorn's
access line with its sensitive query values hidden, and the context a job's run gives."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime, timedelta

from scheduler_app.logs import (
    REQUEST_ID,
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    end_job,
    hide_query_values,
    in_task,
    start_job,
)


def _record(
    name: str = "scheduler_app.test",
    msg: str = "hello %s",
    args: tuple[object, ...] = ("world",),
    level: int = logging.INFO,
    exc_info: logging._SysExcInfoType | None = None,
) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    ContextFilter().filter(record)
    return record


def test_a_json_line_has_time_level_logger_and_message_and_no_context_outside_one() -> None:
    line = JsonFormatter().format(_record())
    entry = json.loads(line)
    assert entry.keys() == {"time", "level", "logger", "message"}
    assert entry["level"] == "INFO"
    assert entry["logger"] == "scheduler_app.test"
    assert entry["message"] == "hello world"
    moment = datetime.fromisoformat(entry["time"])
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(seconds=5)


def test_a_json_line_names_the_request_job_and_task_of_its_context() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        request_line = json.loads(JsonFormatter().format(_record()))
        logged_as = start_job("deliver_reminder")
        try:
            in_task("task-7")
            job_line = json.loads(JsonFormatter().format(_record()))
        finally:
            end_job(logged_as)
        after = json.loads(JsonFormatter().format(_record()))
    finally:
        REQUEST_ID.reset(token)
    assert request_line["request_id"] == "req-1"
    assert "job" not in request_line
    assert "task_id" not in request_line
    # A run is no request's, even in a context copied from one.
    assert job_line["job"] == "deliver_reminder"
    assert job_line["task_id"] == "task-7"
    assert "request_id" not in job_line
    assert after["request_id"] == "req-1"
    assert "job" not in after


def test_naming_a_task_outside_a_run_changes_nothing() -> None:
    in_task("task-8")
    assert "task_id" not in json.loads(JsonFormatter().format(_record()))


def test_an_exception_is_one_string_field_of_the_one_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = _record(level=logging.ERROR, exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: broken")


def test_extra_attributes_of_a_record_stay_out_of_the_json_line() -> None:
    record = _record()
    record.color_message = "colours"
    record.password = "hunter2-hunter2"
    entry = json.loads(JsonFormatter().format(record))
    assert "color_message" not in entry
    assert "password" not in entry


def test_an_access_line_has_its_fields_and_hides_email_and_credential_values() -> None:
    access = (
        "127.0.0.1:5000",
        "GET",
        "/reminders?email=ann%40example.com&limit=5&api_key=abc",
        "1.1",
        200,
    )
    record = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', access)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["path"] == "/reminders?email=***&limit=5&api_key=***"
    assert entry["message"] == f'127.0.0.1:5000 - "GET {entry["path"]} HTTP/1.1" 200'
    assert (entry["client"], entry["method"], entry["status"]) == ("127.0.0.1:5000", "GET", 200)
    assert "ann" not in TextFormatter().format(record)


def test_query_values_are_kept_unless_sensitive() -> None:
    assert hide_query_values("/jobs?limit=5&cursor=abc") == "/jobs?limit=5&cursor=abc"
    assert hide_query_values("/healthz") == "/healthz"
    assert hide_query_values("/x?Token=1&a=%20b") == "/x?Token=***&a=%20b"


def test_a_text_line_shows_its_context_in_brackets() -> None:
    token = REQUEST_ID.set("req-2")
    try:
        line = TextFormatter().format(_record())
    finally:
        REQUEST_ID.reset(token)
    stamp, level, rest = line.split(" ", 2)
    assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert level == "INFO"
    assert rest == "scheduler_app.test [request_id=req-2]: hello world"
    logged_as = start_job("daily_report")
    try:
        assert (
            TextFormatter()
            .format(_record())
            .endswith("scheduler_app.test [job=daily_report]: hello world")
        )
    finally:
        end_job(logged_as)
    assert TextFormatter().format(_record()).endswith(" INFO scheduler_app.test: hello world")
