"""Find your @job functions: import the modules that the `job_modules` setting names.

Names are resolved as uvicorn's --app-dir does: the configuration file's folder (or the working
directory, without one) comes first on the import path, so `job_modules: [jobs]` finds the
`jobs` package beside config.yaml. A package's modules are imported too.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.errors import ConfigError
from scheduler_app.registry import build_registry, options_of
from scheduler_app.settings import Settings

DEFAULT_MODULE = "jobs"


def job_registry(
    settings: Settings, builtin: Mapping[str, RegisteredJob], *extra: ModuleType
) -> Mapping[str, RegisteredJob]:
    """The built-in jobs, those of settings.job_modules and those of the extra modules, or
    ConfigError in one line naming the module and the problem."""
    found = [*discovered(settings), *(f for module in extra for f in marked_in(module))]
    return build_registry(builtin, found)


def discovered(settings: Settings) -> list[tuple[str, Callable[..., Any]]]:
    folder = settings.config_file.parent if settings.config_file else Path.cwd()
    names = list(settings.job_modules)
    if names == [DEFAULT_MODULE] and not _beside(folder, DEFAULT_MODULE):
        # The default names the repository's own jobs package: a deployment without one (a pip
        # install, an app of its own) has no jobs of its own to find.
        return []
    _first_on_path(folder)
    found: list[tuple[str, Callable[..., Any]]] = []
    for name in names:
        for module in _modules(name):
            found += marked_in(module)
    return found


def marked_in(module: ModuleType) -> list[tuple[str, Callable[..., Any]]]:
    """The @job functions of a module (also those it imported: the registry counts each
    function once)."""
    return [
        (module.__name__, value)
        for value in list(vars(module).values())
        if callable(value) and options_of(value) is not None
    ]


def _beside(folder: Path, name: str) -> bool:
    return (folder / name / "__init__.py").exists() or (folder / f"{name}.py").exists()


def _first_on_path(folder: Path) -> None:
    path = str(folder.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def _modules(name: str) -> Iterator[ModuleType]:
    module = _import(name)
    yield module
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
        yield _import(info.name)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ConfigError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split()) or "no detail"
        raise ConfigError(
            f"job_modules: {name}: cannot be imported: {type(exc).__name__}: {detail}"
        ) from None
