from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.acceptance.service import Service, service_environment

ServiceFactory = Callable[..., Service]


@pytest.fixture
def make_service(tmp_path: Path, database_url: str) -> Iterator[ServiceFactory]:
    """Build (not start) a service on this test's database; every process dies at teardown.

    Depending on database_url makes this finalizer run before the PostgreSQL database is dropped.
    """
    services: list[Service] = []

    def make(extra: Mapping[str, str] | None = None) -> Service:
        service = Service(tmp_path, service_environment(tmp_path, database_url, extra))
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()
