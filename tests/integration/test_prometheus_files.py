"""docs/prometheus.yml and docs/alerts.yml as Prometheus reads them: promtool checks both, and
runs the alerts' unit tests (tests/promtool/alerts_test.yml: each alert fires on what should
trigger it). promtool comes with Debian's prometheus package (`make test` installs it); where
it is missing these tests skip, except in CI, where they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian package prometheus; make test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: required under CI=true")
        pytest.skip(reason)
    return found


@pytest.mark.parametrize(
    "arguments",
    [
        ("check", "rules", "docs/alerts.yml"),
        ("check", "config", "docs/prometheus.yml"),
        ("test", "rules", "tests/promtool/alerts_test.yml"),
    ],
    ids=["rules", "config", "alert-tests"],
)
def test_promtool_accepts(promtool: str, arguments: tuple[str, ...]) -> None:
    done = subprocess.run(
        [promtool, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
