from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_app.errors import ConfigError
from scheduler_app.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _in_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_give_sqlite_and_the_outbox() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/scheduler.db"
    assert settings.mail.backend == "outbox"
    assert settings.mail.outbox_dir == Path("var/outbox")
    assert settings.reminders.late_window_s == 86_400
    assert settings.admin_token is None


def test_yaml_then_dotenv_then_environment_take_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path,
        "timezone: Europe/Berlin\nmail:\n  backend: smtp\n  smtp:\n    host: yaml-host\n"
        "    port: 2525\nreminders:\n  max_delay_days: 10\n",
    )
    (tmp_path / ".env").write_text(
        "SCHEDULER_MAIL__SMTP__HOST=dotenv-host\nSCHEDULER_TIMEZONE=UTC\n"
    )
    monkeypatch.setenv("SCHEDULER_TIMEZONE", "America/New_York")

    settings = load_settings(config)

    assert settings.timezone == "America/New_York"  # environment beats .env and YAML
    assert settings.mail.smtp.host == "dotenv-host"  # .env beats YAML
    assert settings.mail.smtp.port == 2525  # YAML beats defaults
    assert settings.mail.backend == "smtp"
    assert settings.reminders.max_delay_days == 10


def test_config_path_comes_from_scheduler_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "elsewhere.yaml"
    other.write_text("timezone: Asia/Tokyo\n")
    monkeypatch.setenv("SCHEDULER_CONFIG", str(other))
    assert load_settings().timezone == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("timezone: Mars/Olympus\n", "timezone: unknown time zone 'Mars/Olympus'"),
        ("mail:\n  smtp:\n    port: 70000\n", "mail.smtp.port: Input should be less than"),
        ("mail:\n  backend: pigeon\n", "mail.backend: Input should be 'outbox' or 'smtp'"),
        ("databse_url: sqlite:///x.db\n", "databse_url: unknown key"),
        ("database_url: mysql://x/y\n", "database_url: unsupported database 'mysql'"),
        (
            "database_url: postgresql+asyncpg://u@h/db\n",
            "database_url: unsupported driver 'asyncpg' for postgresql",
        ),
        ("database_url: sqlite+aiosqlite:///x.db\n", "unsupported driver 'aiosqlite' for sqlite"),
        ("database_url: not a url\n", "database_url: not a database URL"),
        ("admin_token: short\n", "admin_token: must be at least 16 characters long"),
        ("mail:\n  from_address: nobody\n", "mail.from_address: must be an e-mail address"),
        (
            "mail:\n  from_address: a@example.com, b@example.com\n",
            "mail.from_address: must be an e-mail address",
        ),
        ("reminders:\n  max_delay_days: 0\n", "reminders.max_delay_days: Input should be greater"),
        (
            "mail:\n  smtp:\n    starttls: true\n    use_tls: true\n",
            "mail.smtp: starttls and use_tls exclude each other",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    config = write_config(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    message = raised.value.message
    assert expected in message
    assert str(config) in message
    assert "\n" not in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, "timezone: Nowhere/Land\nmail:\n  smtp:\n    port: 0\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert "timezone:" in raised.value.message
    assert "mail.smtp.port:" in raised.value.message


def test_a_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_MAIL__SMTP__TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match=r"mail\.smtp\.timeout_s: Input should be a valid number"):
        load_settings()


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "absent.yaml")


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, "mail: [unclosed\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert raised.value.message.startswith(str(config))


def test_secrets_stay_out_of_reprs_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDULER_ADMIN_TOKEN", "admin-secret-value-123")
    monkeypatch.setenv("SCHEDULER_MAIL__SMTP__PASSWORD", "smtp-secret-value")
    settings = load_settings()
    shown = repr(settings) + str(settings.model_dump())
    assert "admin-secret-value-123" not in shown
    assert "smtp-secret-value" not in shown

    monkeypatch.setenv("SCHEDULER_MAIL__SMTP__PORT", "-1")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "smtp-secret-value" not in raised.value.message


def test_other_programs_variables_in_dotenv_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OTHER_APP_KEY=1\nSCHEDULER_TIMEZONE=Europe/Paris\n")
    assert load_settings().timezone == "Europe/Paris"


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_settings(config)


def test_the_database_password_stays_out_of_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_DATABASE_URL", "postgresql+psycopg://app:pw-secret@db/app")
    assert "pw-secret" not in repr(load_settings())


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://ada:s3cret@db.example/app", "postgresql+psycopg://ada:s3cret@db.example/app"),
        (
            "postgresql://db.example:5433/app?sslmode=require",
            "postgresql+psycopg://db.example:5433/app?sslmode=require",
        ),
        ("postgresql+psycopg://db.example/app", "postgresql+psycopg://db.example/app"),
        ("sqlite:///var/x.db", "sqlite:///var/x.db"),
    ],
)
def test_common_postgresql_spellings_use_the_installed_driver(given: str, used: str) -> None:
    assert Settings(_env_file=None, database_url=given).database_url == used
