"""@job registration and the checking of a task's arguments against the function's hints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler_app.builtin import REGISTRY
from scheduler_app.errors import ConfigError
from scheduler_app.registry import build_registry, job, options_of
from scheduler_app.settings import Settings
from scheduler_app.tasks.arguments import Arguments, InvalidArguments
from scheduler_app.tasks.runner import TaskContext


@job("send_invoice", max_attempts=3, timeout_s=5)
async def send_invoice(order_id: int, email: str, due: datetime | None = None) -> None:
    """Send the invoice of an order."""


@job("plain_job")
def plain_job(ctx: TaskContext, items: list[int], *, note: str = "") -> int:
    return len(items)


def test_the_decorator_returns_the_function_marked_with_its_options() -> None:
    options = options_of(send_invoice)
    assert options is not None
    assert (options.name, options.max_attempts, options.timeout_s) == ("send_invoice", 3, 5)
    policy = options.policy(Settings(_env_file=None))
    assert (policy.max_attempts, policy.retry_base_s, policy.late_window) == (3, 30.0, None)
    assert policy.retry_unexpected


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("", {}, "job name ''"),
        ("9lives", {}, "not starting with a digit"),
        ("ok", {"max_attempts": 0}, "max_attempts must be from 1 to 100"),
        ("ok", {"timeout_s": -1}, "timeout_s must be greater than 0"),
    ],
)
def test_bad_names_and_options_are_refused_where_they_are_written(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        job(name, **options)


def arguments(func: Any) -> Arguments:
    options = options_of(func)
    assert options is not None
    return Arguments.of(options.name, func, TaskContext)


def test_arguments_are_checked_and_stored_as_json() -> None:
    due = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    stored = arguments(send_invoice).bind((42, "ada@example.com"), {"due": due})
    assert stored == {"order_id": 42, "email": "ada@example.com", "due": "2030-01-02T03:04:00Z"}
    assert arguments(send_invoice).load(stored) == {
        "order_id": 42,
        "email": "ada@example.com",
        "due": due,
    }


def test_the_context_parameter_is_not_an_argument() -> None:
    plain = arguments(plain_job)
    assert plain.context_parameter == "ctx"
    assert plain.bind(([1, 2],), {"note": "n"}) == {"items": [1, 2], "note": "n"}
    with pytest.raises(InvalidArguments) as keyword_only:
        plain.bind(([1], "n"), {})
    assert keyword_only.value.location == ("args", "note")


@pytest.mark.parametrize(
    ("args", "location", "message"),
    [
        ({"email": "a@example.com"}, ("body", "args", "order_id"), "is required"),
        ({"order_id": "x", "email": "e"}, ("body", "args", "order_id"), "valid integer"),
        ({"order_id": 1, "email": "e", "x": 1}, ("body", "args", "x"), "not an argument"),
        (
            {"order_id": 1, "email": "e", "due": "tomorrow"},
            ("body", "args", "due"),
            "datetime",
        ),
    ],
)
def test_json_arguments_that_do_not_fit_are_refused_naming_them(
    args: dict[str, Any], location: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InvalidArguments, match=message) as refused:
        arguments(send_invoice).check(args)
    assert refused.value.location == location


def test_a_name_registered_twice_or_a_built_in_name_stops_start_up() -> None:
    @job("send_invoice")
    async def other(order_id: int) -> None: ...

    @job("deliver_reminder")
    async def clash() -> None: ...

    registry = build_registry(REGISTRY, [("shop", send_invoice), ("shop.reexport", send_invoice)])
    assert registry["send_invoice"].function is send_invoice
    with pytest.raises(ConfigError, match=r"^job_modules: b: job 'send_invoice' is registered"):
        build_registry(REGISTRY, [("a", send_invoice), ("b", other)])
    with pytest.raises(ConfigError, match="is a built-in job's name"):
        build_registry(REGISTRY, [("a", clash)])


def test_args_and_kwargs_cannot_be_json_arguments() -> None:
    @job("variadic")
    async def variadic(*items: int) -> None: ...

    with pytest.raises(ConfigError, match="no \\*args, \\*\\*kwargs"):
        build_registry(REGISTRY, [("m", variadic)])
