"""The `jobs:` list of config.yaml: registered jobs run on crontab schedules."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError

from scheduler_app.cron.crontab import CrontabTrigger, parse_crontab
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.errors import ConfigError
from scheduler_app.settings import check_timezone
from scheduler_app.tasks.arguments import type_hints

# No ':' so that these ids never collide with the reminder jobs' ids.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
REQUIRED_KEYS = ("id", "job", "cron")
OPTIONAL_KEYS = (
    "timezone",
    "args",
    "kwargs",
    "enabled",
    "misfire_grace_s",
    "coalesce",
    "description",
)
ALLOWED_KEYS = frozenset((*REQUIRED_KEYS, *OPTIONAL_KEYS))
DEFAULT_MISFIRE_GRACE_S = 3600.0
MAX_DESCRIPTION_LENGTH = 500

_Parameter = inspect.Parameter
_POSITIONAL = (_Parameter.POSITIONAL_ONLY, _Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (_Parameter.POSITIONAL_OR_KEYWORD, _Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class CronJobSpec:
    """One validated entry of the `jobs:` list."""

    id: str
    job: str
    cron: str
    timezone: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    enabled: bool
    misfire_grace_s: float
    coalesce: bool
    description: str
    # "config": an entry of the file; "builtin": a registered job's default entry.
    source: str = "config"

    @property
    def fingerprint(self) -> str:
        """Return a SHA-256 hex digest of every field: it changes when anything changes."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        text = json.dumps(_canonical(fields), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def trigger(self) -> CrontabTrigger:
        """Build the crontab trigger in the entry's time zone."""
        return parse_crontab(self.cron, ZoneInfo(self.timezone))


def parse_job_specs(
    entries: list[Any],
    *,
    source: str,
    default_timezone: str,
    registry: Mapping[str, RegisteredJob],
) -> list[CronJobSpec]:
    """Validate every entry, or raise ConfigError with one line per problem of every entry."""
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: jobs: must be a list")
    specs: list[CronJobSpec] = []
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        reader = _EntryReader(index, entry, default_timezone, registry, first_index)
        spec = reader.read()
        problems += [f"{source}: {reader.label}: {_one_line(p)}" for p in reader.problems]
        if spec is not None:
            specs.append(spec)
    named = {
        entry["job"]
        for entry in entries
        if isinstance(entry, Mapping) and isinstance(entry.get("job"), str)
    }
    for name, registered in registry.items():
        if registered.default_entry is None or name in named:
            continue
        default = {**registered.default_entry, "job": name}
        reader = _EntryReader(len(entries), default, default_timezone, registry, first_index)
        reader.label = f"built-in job {default.get('id')!r} (runs {name} unless an entry does)"
        spec = reader.read()
        problems += [f"{source}: {reader.label}: {_one_line(p)}" for p in reader.problems]
        if spec is not None:
            specs.append(dataclasses.replace(spec, source="builtin"))
    if problems:
        raise ConfigError("\n".join(problems))
    return specs


class _EntryReader:
    """Check one entry, collecting every problem rather than stopping at the first."""

    def __init__(
        self,
        index: int,
        entry: Any,
        default_timezone: str,
        registry: Mapping[str, RegisteredJob],
        first_index: dict[str, int],
    ) -> None:
        self.entry = entry
        self.index = index
        self.default_timezone = default_timezone
        self.registry = registry
        self.first_index = first_index
        self.problems: list[str] = []
        job_id = entry.get("id") if isinstance(entry, Mapping) else None
        self.label = f"jobs[{index}]"
        if isinstance(job_id, str) and job_id:
            self.label += f" {job_id!r}"

    def read(self) -> CronJobSpec | None:
        entry = self.entry
        if not isinstance(entry, Mapping):
            self.problems.append(
                f"must be a mapping of keys to values, not {_kind(entry)} "
                "(start each entry with '- id: ...')"
            )
            return None
        allowed = ", ".join(sorted(ALLOWED_KEYS))
        self.problems += [
            f"unknown key {key!r} (allowed keys: {allowed})"
            for key in entry
            if key not in ALLOWED_KEYS
        ]
        self.problems += [
            f"missing required key '{key}'" for key in REQUIRED_KEYS if key not in entry
        ]
        job_id = self._id(entry.get("id"))
        registered = self._job(entry.get("job"))
        timezone = self._timezone(entry.get("timezone", self.default_timezone))
        cron = self._cron(entry.get("cron"), timezone)
        args = entry.get("args", [])
        if not isinstance(args, list):
            self.problems.append(f"args must be a list, not {_kind(args)}")
        kwargs = entry.get("kwargs", {})
        kwargs_ok = isinstance(kwargs, Mapping) and all(isinstance(key, str) for key in kwargs)
        if not kwargs_ok:
            self.problems.append("kwargs must be a mapping of argument names to values")
        enabled = self._flag("enabled", entry.get("enabled", True))
        coalesce = self._flag("coalesce", entry.get("coalesce", True))
        misfire_grace_s = entry.get("misfire_grace_s", DEFAULT_MISFIRE_GRACE_S)
        if (
            isinstance(misfire_grace_s, bool)
            or not isinstance(misfire_grace_s, int | float)
            or not math.isfinite(misfire_grace_s)
            or misfire_grace_s <= 0
        ):
            self.problems.append(
                f"misfire_grace_s must be a number of seconds greater than 0, "
                f"not {misfire_grace_s!r}"
            )
        description = self._description(entry.get("description"), registered)
        if registered is not None and isinstance(args, list) and kwargs_ok:
            self.problems += _argument_problems(registered, args, kwargs)
        if self.problems or job_id is None or registered is None:
            return None
        if cron is None or timezone is None or description is None:
            return None
        return CronJobSpec(
            id=job_id,
            job=entry["job"],  # the registry key, which the executor looks the job up by
            cron=cron,
            timezone=timezone,
            args=tuple(args),
            kwargs=dict(kwargs),
            enabled=enabled,
            misfire_grace_s=float(misfire_grace_s),
            coalesce=coalesce,
            description=description,
        )

    def _id(self, value: Any) -> str | None:
        if value is None and "id" not in self.entry:
            return None
        if not isinstance(value, str):
            self.problems.append(f"id must be a string, not {_kind(value)}")
            return None
        if not ID_PATTERN.fullmatch(value):
            self.problems.append(
                f"id {value!r} is invalid: use 1-100 letters, digits, '_', '.' and '-', "
                "starting with a letter or digit"
            )
            return None
        first = self.first_index.setdefault(value, self.index)
        if first != self.index:
            self.problems.append(f"duplicate id {value!r} (already used by jobs[{first}])")
            return None
        return value

    def _job(self, value: Any) -> RegisteredJob | None:
        if value is None and "job" not in self.entry:
            return None
        if not isinstance(value, str):
            self.problems.append(f"job must be the name of a registered job, not {_kind(value)}")
            return None
        registered = self.registry.get(value)
        if registered is not None and registered.configurable:
            return registered
        if registered is not None:
            self.problems.append(
                f"job {value!r} is internal to the service and cannot be scheduled here"
            )
            return None
        known = sorted(name for name, job in self.registry.items() if job.configurable)
        hint = "; name a registered job, not an import path" if re.search("[.:]", value) else ""
        self.problems.append(
            f"unknown job {value!r} (known jobs: {', '.join(known) or 'none'}{hint})"
        )
        return None

    def _timezone(self, value: Any) -> str | None:
        if not isinstance(value, str):
            self.problems.append(
                f"timezone must be an IANA name such as 'Europe/Berlin', not {_kind(value)}"
            )
            return None
        try:
            check_timezone(value)
        except ValueError as exc:
            self.problems.append(str(exc))
            return None
        return value

    def _cron(self, value: Any, timezone: str | None) -> str | None:
        if value is None and "cron" not in self.entry:
            return None
        if not isinstance(value, str):
            self.problems.append(
                f"cron must be a crontab expression such as '0 8 * * *', not {_kind(value)}"
            )
            return None
        try:
            # The fields do not depend on the zone: a bad zone is reported on its own.
            parse_crontab(value, ZoneInfo(timezone or "UTC"))
        except ValueError as exc:
            self.problems.append(str(exc))
            return None
        return value

    def _description(self, value: Any, registered: RegisteredJob | None) -> str | None:
        if value is None and "description" not in self.entry:
            return registered.description if registered else None
        if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
            self.problems.append(
                f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters"
            )
            return None
        return value

    def _flag(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.problems.append(f"{key} must be true or false, not {value!r}")
            return False
        return value


def _argument_problems(
    registered: RegisteredJob, args: list[Any], kwargs: Mapping[str, Any]
) -> list[str]:
    """Check args and kwargs against the job function's signature and parameter types."""
    try:
        signature = inspect.signature(registered.func)
    except (TypeError, ValueError):
        return []
    # The first parameter receives the JobContext, which the configuration never supplies.
    parameters = list(signature.parameters.values())[1:]
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    named = {p.name: p for p in parameters if p.kind in _NAMED}
    var_positional = next((p for p in parameters if p.kind is _Parameter.VAR_POSITIONAL), None)
    var_keyword = next((p for p in parameters if p.kind is _Parameter.VAR_KEYWORD), None)

    problems: list[str] = []
    values: list[tuple[str, _Parameter, Any]] = []
    if len(args) > len(positional) and var_positional is None:
        problems.append(
            f"too many positional arguments: {registered.name} takes at most "
            f"{len(positional)}, got {len(args)}"
        )
    values += [(p.name, p, value) for p, value in zip(positional, args, strict=False)]
    if var_positional is not None:
        extra = args[len(positional) :]
        values += [(f"{var_positional.name}[{i}]", var_positional, v) for i, v in enumerate(extra)]
    bound = {p.name for p in positional[: len(args)]}
    for name, value in kwargs.items():
        parameter = named.get(name)
        if name in bound:
            problems.append(f"argument {name} is given twice, in args and in kwargs")
        elif parameter is not None:
            values.append((name, parameter, value))
            bound.add(name)
        elif var_keyword is not None:
            values.append((name, var_keyword, value))
        else:
            accepted = ", ".join(named) or "no keyword arguments"
            problems.append(
                f"unknown keyword argument {name!r} ({registered.name} accepts: {accepted})"
            )
    problems += [
        f"missing required argument {p.name!r}"
        for p in parameters
        if p.kind in (*_POSITIONAL, _Parameter.KEYWORD_ONLY)
        and p.default is _Parameter.empty
        and p.name not in bound
    ]

    hints = type_hints(registered.func)
    for where, parameter, value in values:
        adapter = _adapter(hints[parameter.name]) if parameter.name in hints else None
        if adapter is None:
            continue
        try:
            # Strict, because the job receives the value exactly as written, never converted.
            adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
                problems.append(f"argument {where}{path}: {error['msg']}")
    return problems


def _adapter(hint: Any) -> TypeAdapter[Any] | None:
    """Return a validator for hint, or None for a type pydantic cannot check."""
    # Models and dataclasses refuse a config; arbitrary classes need one for isinstance checks.
    for config in (None, ConfigDict(arbitrary_types_allowed=True)):
        try:
            return TypeAdapter(hint, config=config)
        except PydanticUserError:
            continue
    return None


def _canonical(value: Any) -> Any:
    """Return value as JSON-ready data that differs whenever value does."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return {key: _canonical(item) for key, item in value.items()}
        # json would turn 1 and "1" into the same key: keep the keys as values instead.
        pairs = [[_canonical(key), _canonical(item)] for key, item in value.items()]
        return {"__mapping__": sorted(pairs, key=_sort_key)}
    if isinstance(value, set | frozenset):
        return {"__set__": sorted((_canonical(item) for item in value), key=_sort_key)}
    # YAML dates, timestamps and binary data: their repr is stable and tells values apart.
    return {f"__{type(value).__qualname__}__": repr(value)}


def _sort_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def _kind(value: Any) -> str:
    """Name a YAML value's type the way the configuration's author would."""
    names = {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), type(value).__name__)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")
