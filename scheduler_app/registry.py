"""Job functions by name: the built-in ones and yours, marked with @job.

    from scheduler_app import job

    @job("send_invoice", max_attempts=5, timeout_s=30)
    async def send_invoice(order_id: int, email: str) -> None: ...

Stored tasks and config.yaml name a job by this name, never by import path, so a function can
move between modules without orphaning what is stored.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, TypeVar

from scheduler_app.engine.executor import JobContext, RegisteredJob
from scheduler_app.errors import ConfigError
from scheduler_app.settings import Settings
from scheduler_app.tasks.arguments import Arguments
from scheduler_app.tasks.policy import JobFailure, TaskPolicy
from scheduler_app.tasks.runner import TaskContext, TaskJob

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__scheduler_app_job__"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class JobOptions:
    """A @job's name and its own policy; None takes the `tasks.*` setting."""

    name: str
    max_attempts: int | None = None
    retry_base_s: float | None = None
    retry_max_s: float | None = None
    timeout_s: float | None = None
    late_window_s: float | None = None

    def policy(self, settings: Settings) -> TaskPolicy:
        defaults = settings.tasks
        late_window_s = _pick(self.late_window_s, defaults.late_window_s)
        return TaskPolicy(
            max_attempts=_pick(self.max_attempts, defaults.max_attempts),
            retry_base_s=_pick(self.retry_base_s, defaults.retry_base_s),
            retry_max_s=_pick(self.retry_max_s, defaults.retry_max_s),
            late_window=None if late_window_s is None else timedelta(seconds=late_window_s),
            # Your function's exceptions are what it raises when something went wrong: worth
            # another attempt, as in every task queue. Raise JobFailure(transient=False) to stop.
            retry_unexpected=True,
        )

    def timeout(self, settings: Settings) -> float | None:
        return settings.tasks.timeout_s if self.timeout_s is None else self.timeout_s


def _pick(own: Any, default: Any) -> Any:
    return default if own is None else own


def job(
    name: str,
    *,
    max_attempts: int | None = None,
    retry_base_s: float | None = None,
    retry_max_s: float | None = None,
    timeout_s: float | None = None,
    late_window_s: float | None = None,
) -> Callable[[F], F]:
    """Register the decorated function (async or not) as the job `name`.

    Args:
        name: the job's name in tasks, config.yaml and the API.
        max_attempts: attempts before a task is 'failed' (default tasks.max_attempts).
        retry_base_s: wait after the first failed attempt, doubling (tasks.retry_base_s).
        retry_max_s: the longest wait between attempts (tasks.retry_max_s).
        timeout_s: an attempt running longer fails and is retried (tasks.timeout_s).
        late_window_s: a task that can only start later than this after its time is 'missed'
            (tasks.late_window_s; by default it runs however late).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"job name {name!r}: 1 to 100 letters, digits, '_', '.' or '-', not starting with a "
            "digit"
        )
    options = JobOptions(name, max_attempts, retry_base_s, retry_max_s, timeout_s, late_window_s)
    _check_options(options)

    def mark(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@job({name!r}) decorates a function")
        setattr(func, MARK, options)
        return func

    return mark


def _check_options(options: JobOptions) -> None:
    if options.max_attempts is not None and not 1 <= options.max_attempts <= 100:
        raise ValueError(f"job {options.name!r}: max_attempts must be from 1 to 100")
    for field in ("retry_base_s", "retry_max_s", "timeout_s", "late_window_s"):
        value = getattr(options, field)
        if value is not None and not value > 0:
            raise ValueError(f"job {options.name!r}: {field} must be greater than 0")


def options_of(func: Callable[..., Any]) -> JobOptions | None:
    options = getattr(func, MARK, None)
    return options if isinstance(options, JobOptions) else None


def user_job(func: Callable[..., Any], options: JobOptions) -> RegisteredJob:
    """The RegisteredJob of a @job function: run as a task (TaskJob), or by a cron entry."""
    arguments = Arguments.of(options.name, func, TaskContext)
    is_async = inspect.iscoroutinefunction(func)

    async def invoke(ctx: JobContext, values: dict[str, Any]) -> Any:
        if arguments.context_parameter is not None:
            values[arguments.context_parameter] = ctx
        # A plain function runs in a thread: it may block (requests, a database driver) without
        # holding up the event loop that answers the API and runs every other job.
        work = func(**values) if is_async else asyncio.to_thread(func, **values)
        timeout_s = options.timeout(ctx.settings)
        if timeout_s is None:
            return await work
        try:
            return await asyncio.wait_for(work, timeout_s)
        except TimeoutError:
            # A thread cannot be stopped: a plain function that overruns finishes in the
            # background, its result ignored.
            raise JobFailure(f"timed out after {timeout_s:g} s", transient=True) from None

    async def run_task(ctx: TaskContext, **stored: Any) -> Any:
        return await invoke(ctx, arguments.load(stored))

    @functools.wraps(func)
    async def run_cron(ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
        values = arguments.load(arguments.bind(args, kwargs))
        context = TaskContext.of(ctx, None) if arguments.context_parameter else ctx
        return await invoke(context, values)

    # config.yaml's arguments are checked against your function's own parameters.
    own = [
        parameter
        for parameter in inspect.signature(func).parameters.values()
        if parameter.name != arguments.context_parameter
    ]
    context_parameter = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_ONLY)
    run_cron.__signature__ = inspect.Signature([context_parameter, *own])  # type: ignore[attr-defined]
    run_cron.__annotations__ = {
        name: hint
        for name, hint in getattr(func, "__annotations__", {}).items()
        if name != arguments.context_parameter
    }
    doc = inspect.getdoc(func) or ""
    return RegisteredJob(
        options.name,
        run_cron,
        doc.splitlines()[0] if doc else f"{func.__module__}.{func.__qualname__}",
        configurable=True,
        task=TaskJob(run_task, options.policy),
        arguments=arguments,
        function=func,
    )


def missing_job(name: str) -> RegisteredJob:
    """What runs the stored tasks of a job that is not registered (any more): each attempt
    fails, retried under the tasks.* policy (a deployment may bring the job back), then the
    task is 'failed' with the reason."""

    async def unknown(ctx: TaskContext, **_: Any) -> None:
        raise JobFailure(
            f"no job named {name!r} is registered (is its module in job_modules?)", transient=True
        )

    async def unknown_cron(ctx: JobContext, *args: Any, **kwargs: Any) -> None:
        raise LookupError(f"no job named '{name}' is registered")

    return RegisteredJob(
        name,
        unknown_cron,
        "not registered",
        configurable=False,
        task=TaskJob(unknown, JobOptions(name).policy),
    )


def build_registry(
    builtin: Mapping[str, RegisteredJob], found: Iterable[tuple[str, Callable[..., Any]]]
) -> Mapping[str, RegisteredJob]:
    """The built-in jobs and the @job functions found (module name, function), or ConfigError
    naming the module of a name registered twice."""
    registry = dict(builtin)
    origin: dict[str, str] = {}
    seen: dict[str, Callable[..., Any]] = {}
    for module, func in found:
        options = options_of(func)
        if options is None:
            continue
        name = options.name
        if seen.get(name) is func:
            continue  # the same function, imported into another module too
        if name in builtin:
            raise ConfigError(f"job_modules: {module}: job {name!r} is a built-in job's name")
        if name in seen:
            raise ConfigError(
                f"job_modules: {module}: job {name!r} is registered twice (also in {origin[name]})"
            )
        try:
            registry[name] = user_job(func, options)
        except TypeError as exc:
            raise ConfigError(f"job_modules: {module}: {exc}") from None
        seen[name], origin[name] = func, module
    return MappingProxyType(registry)
