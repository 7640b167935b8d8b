"""Start-up errors of `scheduler-app serve`: one line naming the problem, exit code 2."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from tests.support import free_port


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    return subprocess.run(
        [sys.executable, "-m", "scheduler_app", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**clean, **env},
        timeout=30,
        check=False,
    )


def test_a_bad_config_value_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("mail:\n  backend: pigeon\n")
    result = serve(tmp_path, "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "mail.backend: Input should be 'outbox' or 'smtp'" in lines[0]
    assert str(config) in lines[0]


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://app:hunter2-secret@127.0.0.1:{free_port()}/app"
    result = serve(tmp_path, SCHEDULER_DATABASE_URL=url)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Connection refused" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


def check_config(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    return subprocess.run(
        [sys.executable, "-m", "scheduler_app", "check-config", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
        timeout=30,
        check=False,
    )


def test_check_config_describes_each_job_and_the_plan(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "timezone: Europe/Berlin\njobs:\n"
        "  - {id: daily-report, job: daily_report, cron: '0 8 * * *'}\n"
        "  - {id: token-cleanup, job: token_cleanup, cron: '*/15 * * * *',"
        " timezone: America/New_York}\n"
    )
    result = check_config(tmp_path, "--config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "daily-report: job daily_report, cron '0 8 * * *' (Europe/Berlin)" in out
    assert "At 08:00, every day" in out
    assert "Every 15 minutes" in out
    assert "(America/New_York)" in out
    [berlin_runs] = [line for line in out.splitlines() if "next runs" in line][:1]
    assert berlin_runs.count("T08:00+01:00") == 3
    assert "(no database yet)" in out
    assert "added: daily-report, token-cleanup" in out
    assert not (tmp_path / "var").exists()  # looking did not create a database


def test_check_config_accepts_a_seconds_field_and_shows_the_seconds(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("jobs:\n  - {id: tick, job: token_cleanup, cron: '*/2 * * * * *'}\n")
    result = check_config(tmp_path, "--config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tick: job token_cleanup, cron '*/2 * * * * *' (UTC)" in out
    assert "Every 2 seconds, every minute, every hour, every day" in out
    [runs] = [line for line in out.splitlines() if "next runs" in line][:1]
    moments = [datetime.fromisoformat(text) for text in runs.split(": ", 1)[1].split(", ")]
    assert [later - earlier for earlier, later in itertools.pairwise(moments)] == [
        timedelta(seconds=2)
    ] * 2
    assert {moment.second % 2 for moment in moments} == {0}


def test_check_config_plans_against_a_database(tmp_path: Path, database_url: str) -> None:
    from scheduler_app.db.engine import create_db_engine
    from scheduler_app.db.migrate import upgrade_database

    engine = create_db_engine(database_url)
    upgrade_database(engine)
    engine.dispose()
    config = tmp_path / "config.yaml"
    config.write_text("jobs:\n  - {id: daily-report, job: daily_report, cron: '0 8 * * *'}\n")
    result = check_config(tmp_path, "--config", str(config), "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert "added: daily-report" in result.stdout


def test_check_config_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "jobs:\n"
        "  - {id: daily-report, job: daily_reprt, cron: '0 8 * * *'}\n"
        "  - {id: cleanup, job: token_cleanup, cron: '0 24 * * *', kwargs: {batch: 5}}\n"
        "  - {id: cleanup, job: token_cleanup, cron: '0 1 * * *', timezone: Nowhere/City}\n"
        "  - {id: small, job: token_cleanup, cron: '0 2 * * *', kwargs: {batch_size: -5}}\n"
    )
    result = check_config(tmp_path, "--config", str(config))
    assert result.returncode == 1
    errors = result.stderr
    assert f"{config}: jobs[0] 'daily-report': unknown job 'daily_reprt'" in errors
    assert "known jobs: daily_report, token_cleanup" in errors
    assert "jobs[1] 'cleanup': hour field '24' is invalid: allowed 0-23" in errors
    assert "unknown keyword argument 'batch'" in errors
    assert "duplicate id 'cleanup'" in errors
    assert "unknown time zone 'Nowhere/City'" in errors
    assert "jobs[3] 'small': argument batch_size: Input should be greater than or equal to 1" in (
        errors
    )


def test_a_bad_jobs_list_stops_serve_naming_file_and_entry(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("jobs:\n  - {id: nightly, job: import_path.to.func, cron: '0 3 * * *'}\n")
    result = serve(tmp_path, "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: jobs[0] 'nightly': unknown job 'import_path.to.func'" in result.stderr
    assert "Traceback" not in result.stderr
