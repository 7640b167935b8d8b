"""The wheel installs scheduler_app only: the built-in jobs and the migrations inside it, and no
top-level `jobs` package (this repository's own jobs) to shadow a user's module of that name."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_package_and_nothing_beside_it(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("scheduler_app-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"scheduler_app"}
    for shipped in (
        "scheduler_app/builtin.py",
        "scheduler_app/reminders/job.py",
        "scheduler_app/maintenance/daily_report.py",
        "scheduler_app/maintenance/token_cleanup.py",
        "scheduler_app/db/migrations/env.py",
        "scheduler_app/db/migrations/versions/0006_tasks.py",
        "scheduler_app/py.typed",
    ):
        assert shipped in names
