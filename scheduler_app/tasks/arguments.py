"""A job function's arguments: checked against its type hints, stored as JSON, loaded back.

A task's arguments are checked when the task is created (a wrong or missing one is refused
there, named) and stored as a JSON object of parameter name to value: never pickled, readable
without the code. When the task runs, each value is converted back to its parameter's type.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError

from scheduler_app.errors import InvalidField

Location = tuple[str, ...]
_NO_HINT = TypeAdapter(Any)


class InvalidArguments(InvalidField, TypeError):
    """The arguments do not fit the job function: `location` names the first one that does not
    (e.g. ("body", "args", "order_id"))."""


@dataclass(frozen=True)
class _Parameter:
    name: str
    kind: inspect._ParameterKind
    required: bool
    adapter: TypeAdapter[Any]


@dataclass(frozen=True)
class Arguments:
    """The arguments a job function takes, as JSON."""

    job: str
    parameters: tuple[_Parameter, ...]
    # The parameter that receives the TaskContext, if the function asks for it.
    context_parameter: str | None

    @classmethod
    def of(cls, job: str, func: Callable[..., Any], context_type: type) -> Arguments:
        """Read the function's signature and type hints.

        Raises TypeError for a signature that JSON arguments cannot fill (*args, **kwargs,
        positional-only parameters).
        """
        signature = inspect.signature(func)
        hints = type_hints(func)
        parameters: list[_Parameter] = []
        context_parameter = None
        for parameter in signature.parameters.values():
            hint = hints.get(parameter.name, Any)
            if hint is context_type:
                context_parameter = parameter.name
                continue
            if parameter.kind in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
                inspect.Parameter.POSITIONAL_ONLY,
            ):
                raise TypeError(
                    f"job {job!r}: parameter {parameter.name!r} cannot be given by name in a "
                    "task's JSON arguments (no *args, **kwargs or positional-only parameters)"
                )
            required = parameter.default is inspect.Parameter.empty
            parameters.append(
                _Parameter(parameter.name, parameter.kind, required, adapter_for(hint))
            )
        return cls(job, tuple(parameters), context_parameter)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON object of a Python call's arguments (as BackgroundTasks.add_task takes
        them), or InvalidArguments naming the first that does not fit."""
        if len(args) > len(self.parameters):
            raise InvalidArguments(
                ("args",), f"{self.job} takes {len(self.parameters)} arguments, got {len(args)}"
            )
        named: dict[str, Any] = {}
        for parameter, value in zip(self.parameters, args, strict=False):
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                raise InvalidArguments(("args", parameter.name), "is keyword-only: pass it by name")
            named[parameter.name] = value
        for name, value in kwargs.items():
            if name in named:
                raise InvalidArguments(("args", name), "is given twice")
            named[name] = value
        return self._check(named, ("args",), strict_json=False)

    def check(
        self, args: Mapping[str, Any], location: Location = ("body", "args")
    ) -> dict[str, Any]:
        """The JSON object of arguments sent as JSON (POST /tasks), checked and normalised."""
        return self._check(dict(args), location, strict_json=True)

    def load(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The stored JSON arguments as the function's typed values, by name."""
        loaded: dict[str, Any] = {}
        for parameter in self.parameters:
            if parameter.name in args:
                loaded[parameter.name] = parameter.adapter.validate_python(args[parameter.name])
        return loaded

    def _check(
        self, named: dict[str, Any], location: Location, *, strict_json: bool
    ) -> dict[str, Any]:
        known = {parameter.name: parameter for parameter in self.parameters}
        for name in named:
            if name not in known:
                accepted = ", ".join(known) or "no arguments"
                raise InvalidArguments(
                    (*location, name), f"is not an argument of {self.job} (it takes: {accepted})"
                )
        stored: dict[str, Any] = {}
        for parameter in self.parameters:
            if parameter.name not in named:
                if parameter.required:
                    raise InvalidArguments((*location, parameter.name), "is required")
                continue
            value = named[parameter.name]
            try:
                typed = (
                    parameter.adapter.validate_json(_json(value))
                    if strict_json
                    else parameter.adapter.validate_python(value)
                )
                stored[parameter.name] = parameter.adapter.dump_python(typed, mode="json")
            except (ValidationError, ValueError, TypeError) as exc:
                raise InvalidArguments((*location, parameter.name), _reason(exc)) from None
        return stored


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors(include_url=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        return f"{error['msg']}{f' (at {where})' if where else ''}"
    return f"cannot be stored as JSON: {exc}"


def adapter_for(hint: Any) -> TypeAdapter[Any]:
    """A validator for hint; for a type pydantic cannot check, one that accepts anything."""
    # Models and dataclasses refuse a config; arbitrary classes need one for isinstance checks.
    for config in (None, ConfigDict(arbitrary_types_allowed=True)):
        try:
            return TypeAdapter(hint, config=config)
        except PydanticUserError:
            continue
    return _NO_HINT


def type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotation of each parameter that has a resolvable one."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except (NameError, SyntaxError, TypeError, AttributeError):
        pass
    # Some annotation (often one imported only for type checking) does not resolve at run time:
    # resolve the others one by one.
    namespace = getattr(inspect.unwrap(func), "__globals__", {})
    hints: dict[str, Any] = {}
    for parameter in inspect.signature(func).parameters.values():
        if parameter.annotation is inspect.Parameter.empty:
            continue

        def probe() -> None: ...

        probe.__annotations__ = {parameter.name: parameter.annotation}
        try:
            resolved = typing.get_type_hints(probe, globalns=namespace, include_extras=True)
        except (NameError, SyntaxError, TypeError, AttributeError):
            continue
        hints[parameter.name] = resolved[parameter.name]
    return hints
