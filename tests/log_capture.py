"""The service's log handler (its filter and formatter, as `scheduler-app serve` sets them up),
on the root logger for the length of a test, writing into memory."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from scheduler_app.logs import FORMATTERS, QUIET_LOGGERS, ContextFilter, LogFormat


class CapturedLog:
    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def text(self) -> str:
        return self._stream.getvalue()

    def entries(self) -> list[dict[str, Any]]:
        """Every line, parsed: fails the test on a line that is not one JSON object."""
        parsed = []
        for line in self.text().splitlines():
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            parsed.append(entry)
        return parsed

    def find(self, message_part: str) -> list[dict[str, Any]]:
        return [entry for entry in self.entries() if message_part in entry["message"]]


@contextlib.contextmanager
def captured_log(
    log_format: LogFormat = "json", level: int = logging.DEBUG
) -> Iterator[CapturedLog]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(FORMATTERS[log_format]())
    root = logging.getLogger()
    quiet = {name: logging.getLogger(name) for name in QUIET_LOGGERS}
    saved = root.level, {name: logger.level for name, logger in quiet.items()}
    root.addHandler(handler)
    root.setLevel(level)
    for name, logger in quiet.items():
        logger.setLevel(QUIET_LOGGERS[name])
    try:
        yield CapturedLog(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, logger in quiet.items():
            logger.setLevel(saved[1][name])
