"""The Makefile's targets, as `make -n` prints them: what they would run, without running it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def planned(*arguments: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout


def test_run_serves_on_host_and_port_when_given() -> None:
    assert "serve --host 127.0.0.1 --port 8000" in planned("run")
    assert "serve --host 0.0.0.0 --port 8123" in planned("run", "HOST=0.0.0.0", "PORT=8123")


def test_clean_never_deletes_the_services_data() -> None:
    commands = planned("clean")
    assert ".venv" in commands
    assert "var" not in commands.split()


def test_wiping_local_state_is_a_target_of_its_own() -> None:
    assert "rm -rf var" in planned("wipe-local-state", "CONFIRM=yes")
