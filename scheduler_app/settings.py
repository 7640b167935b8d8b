"""Settings: defaults < config.yaml < .env < SCHEDULER_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from scheduler_app.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("config.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSettings(_Section):
    host: str = "localhost"
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = True
    use_tls: bool = False
    timeout_s: float = Field(30.0, gt=0, le=600)
    # Connections are reused: at most pool_size open at once, each closed after idle_timeout_s
    # unused or max_messages_per_connection messages. 32: each message takes four round trips,
    # and in a burst each reply waits its turn on a busy event loop, so 8 connections held a
    # storm of reminders to about two thirds of what 32 delivered.
    pool_size: int = Field(32, ge=1, le=256)
    idle_timeout_s: float = Field(30.0, gt=0, le=3600)
    max_messages_per_connection: int = Field(100, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpSettings:
        if self.starttls and self.use_tls:
            raise ValueError(
                "starttls and use_tls exclude each other: use_tls is TLS from the first byte "
                "(port 465), starttls upgrades a plain connection (port 587)"
            )
        return self


class MailSettings(_Section):
    backend: Literal["outbox", "smtp"] = "outbox"
    outbox_dir: Path = Path("var/outbox")
    from_address: str = "scheduler-app <reminders@localhost>"
    smtp: SmtpSettings = SmtpSettings()

    @field_validator("from_address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        # Imported here: the mail package imports this module. The check is the one every
        # message's From header is written with, so that a bad value stops the service at
        # start-up instead of failing every delivery.
        from scheduler_app.channels.email.message import check_from_address

        try:
            check_from_address(value)
        except ValueError as exc:
            raise ValueError(
                "must be an e-mail address such as 'Reminders <noreply@example.com>' "
                f"or 'noreply@example.com' ({exc})"
            ) from None
        return value


class ReminderSettings(_Section):
    max_delay_days: int = Field(366, ge=1, le=3660)
    late_window_s: float = Field(
        86_400.0, ge=1, description="How late a reminder may still be delivered."
    )
    default_subject: str = Field("Reminder", min_length=1, max_length=200)
    max_attempts: int = Field(8, ge=1, le=100, description="Delivery attempts before 'failed'.")
    retry_base_s: float = Field(30.0, gt=0, description="Wait after the first failed attempt.")
    retry_max_s: float = Field(1800.0, gt=0, description="Longest wait between two attempts.")
    # POST /subscribe has the service e-mail any address it is given: these keep one client,
    # or many, from using it to flood someone's mailbox. 0 switches either off.
    per_client_per_minute: int = Field(60, ge=0, le=1_000_000)
    max_pending_per_address: int = Field(20, ge=0, le=1_000_000)
    # When set, POST /subscribe needs it as a bearer token (for backends that call it).
    subscribe_token: SecretStr | None = None

    @field_validator("subscribe_token")
    @classmethod
    def _strong_subscribe_token(cls, value: SecretStr | None) -> SecretStr | None:
        return _strong_token(value)


class SchedulerSettings(_Section):
    enabled: bool = Field(
        True, description="Let this process lead (run the scheduler); false: follow for ever."
    )
    recovery_interval_s: float = Field(60.0, gt=0)
    shutdown_timeout_s: float = Field(10.0, ge=0)
    # Each delivery waits on a few short database commits; with 128 in flight those commits carry
    # bigger batches (measured: a 5,000-reminder storm on PostgreSQL drained in 4.2-4.9 s instead
    # of 5.7-6.7 s at 32) while the event loop stays responsive. With 512 the SMTP sessions were
    # busier, but POST /subscribe answered about twice as slowly during a storm, and the drains
    # were no shorter over twelve alternating runs. A delivery gives up its slot once its
    # message is out (JobContext.work_done), which kept the sessions busy without that cost.
    max_concurrent_jobs: int = Field(128, ge=1, le=10_000)
    # Several processes on one database: one leads (runs the scheduler) under a lease of this
    # length on the database's clock, renewed well inside it. A leader that dies is replaced
    # within it (and a second or so).
    lease_s: float = Field(10.0, ge=1.0, le=600.0)
    # How often the leader looks for work stored by the other processes without notifying it
    # (always on SQLite; on PostgreSQL a fallback for a lost notification).
    poll_interval_s: float = Field(1.0, gt=0, le=60.0)
    # PostgreSQL: no LISTEN/NOTIFY, polling only (behind a pooler that drops notifications).
    poll_only: bool = False


class ServerSettings(_Section):
    """The HTTP server of `scheduler-app serve` (uvicorn): how it treats slow and many clients."""

    # Peers whose X-Forwarded-For and X-Forwarded-Proto are believed (a reverse proxy): the
    # client address they give is the one that rate limits count. "*" trusts every peer.
    forwarded_allow_ips: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # uvicorn's own default: an idle connection between requests is closed after this.
    timeout_keep_alive_s: int = Field(5, ge=1, le=3600)
    request_head_timeout_s: float = Field(10.0, gt=0, le=3600)
    # Connections and requests in progress at once, beyond which a request is answered 503;
    # 0: no limit.
    limit_concurrency: int = Field(1000, ge=0, le=1_000_000)


class ReportSettings(_Section):
    dir: Path = Path("var/reports")
    recipients: list[EmailStr] = Field(default_factory=list)


class TaskSettings(_Section):
    """Defaults for the tasks of your own jobs (a @job(...) option overrides each)."""

    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before 'failed'.")
    retry_base_s: float = Field(30.0, gt=0, description="Wait after the first failed attempt.")
    retry_max_s: float = Field(1800.0, gt=0, description="Longest wait between two attempts.")
    timeout_s: float | None = Field(None, gt=0, description="An attempt running longer fails.")
    # None: a task runs however late it is; else one later than this is 'missed'.
    late_window_s: float | None = Field(None, gt=0)
    max_delay_days: int = Field(366, ge=1, le=3660)


class RetentionSettings(_Section):
    """How long finished things are kept; token_cleanup enforces it in batches."""

    cancel_token_days: float = Field(
        7.0, ge=0, description="A cancel token stops working this long after its reminder ended."
    )
    idempotency_key_hours: float = Field(24.0, ge=0)
    reminder_days: float = Field(90.0, ge=1, description="Finished reminders are then deleted.")
    task_days: float = Field(
        90.0, ge=1, description="Finished tasks of your jobs are then deleted."
    )
    run_days: float = Field(30.0, ge=1, description="Run records are then deleted.")
    audit_days: float = Field(365.0, ge=1, description="Audit entries are then deleted.")
    batch_size: int = Field(1000, ge=1, le=100_000)


class LogSettings(_Section):
    # One format for the service's own lines and uvicorn's: text for a terminal, json (one object
    # per line) for a log collector.
    format: Literal["text", "json"] = "text"


class MetricsSettings(_Section):
    # GET /metrics answers without a token unless one is set; then it needs
    # "Authorization: Bearer <token>" (a scraper's token, not the admin token).
    token: SecretStr | None = None
    # Counts read from the database (tasks by status, next fire times) are read at most this
    # often: a scrape costs one query or none (0: one at every scrape).
    refresh_s: float = Field(10.0, ge=0, le=300)

    @field_validator("token")
    @classmethod
    def _strong_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        return _strong_token(value)


class DashboardSettings(_Section):
    enabled: bool = True
    # A login lasts this long; logging out ends it at once.
    session_hours: float = Field(12.0, gt=0, le=24 * 30)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCHEDULER_",
        env_nested_delimiter="__",
        env_file=".env",
        # .env files often hold other programs' variables too; unknown keys in the YAML file are
        # reported by load_settings, unknown nested keys by the sections themselves.
        extra="ignore",
        frozen=True,
    )

    # repr=False: a PostgreSQL URL may carry a password.
    database_url: str = Field("sqlite:///var/scheduler.db", repr=False)
    timezone: str = "UTC"
    admin_token: SecretStr | None = None
    # Signs what the service must recognise later (cancel tokens); generated once into the
    # database when unset, as the admin token is (which is also written into state_dir).
    secret_key: SecretStr | None = None
    state_dir: Path = Path("var")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    mail: MailSettings = MailSettings()
    reminders: ReminderSettings = ReminderSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    server: ServerSettings = ServerSettings()
    reports: ReportSettings = ReportSettings()
    retention: RetentionSettings = RetentionSettings()
    tasks: TaskSettings = TaskSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    dashboard: DashboardSettings = DashboardSettings()
    # Modules whose @job functions are registered, imported from the config file's folder first
    # (as uvicorn's --app-dir); the default "jobs" only where such a package is there.
    job_modules: list[str] = Field(default_factory=lambda: ["jobs"])
    # Raw entries; validated against the job registry by scheduler_app.cron.entries.
    jobs: list[Any] = Field(default_factory=list)
    # The YAML file these settings were read from, so that a reload reads it again.
    config_file: Path | None = None

    @field_validator("database_url")
    @classmethod
    def _valid_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        check_timezone(value)
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        return _strong_token(value)

    @field_validator("secret_key")
    @classmethod
    def _strong_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters long")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_values = getattr(settings_cls, "file_values", {})
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            InitSettingsSource(settings_cls, init_kwargs=file_values),
        )


# The drivers installed with the project, by database; the spellings users bring from other
# tools (Heroku's postgres://, SQLAlchemy's plain postgresql://, which means psycopg2) are
# mapped onto them.
DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}
_BACKEND_ALIASES = {"postgres": "postgresql"}


def normalize_database_url(value: str) -> str:
    """The URL with the driver the project ships, or ValueError naming the problem."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            "not a database URL (expected e.g. sqlite:///var/scheduler.db or "
            "postgresql://user@host/db)"
        ) from None
    backend, _, driver = url.drivername.partition("+")
    backend = _BACKEND_ALIASES.get(backend, backend)
    if backend not in DRIVERS:
        raise ValueError(f"unsupported database '{backend}' (use sqlite or postgresql)")
    if driver not in ("", DRIVERS[backend]):
        raise ValueError(
            f"unsupported driver '{driver}' for {backend}: the installed driver is "
            f"{DRIVERS[backend]}, written {backend}:// or {backend}+{DRIVERS[backend]}://"
        )
    if backend == "sqlite":
        return value
    return url.set(drivername=f"{backend}+{DRIVERS[backend]}").render_as_string(hide_password=False)


def _strong_token(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < 16:
        raise ValueError("must be at least 16 characters long")
    return value


def check_timezone(name: str) -> ZoneInfo:
    """Return the zone or raise ValueError naming the problem."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{name}' (use an IANA name such as 'Europe/Berlin')"
        ) from None


def config_file_path(config_file: Path | str | None = None) -> Path | None:
    """The YAML file to read: the argument, else $SCHEDULER_CONFIG, else ./config.yaml if any."""
    if config_file is not None:
        return Path(config_file)
    from_env = os.environ.get("SCHEDULER_CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from every source, or raise ConfigError naming every problem."""
    path = config_file_path(config_file)
    file_values = read_config_file(path) if path is not None else {}
    unknown = sorted(set(file_values) - set(Settings.model_fields))
    known = {key: value for key, value in file_values.items() if key in Settings.model_fields}

    class FileSettings(Settings):
        file_values: ClassVar[dict[str, Any]] = known

    problems = [f"{key}: unknown key" for key in unknown]
    try:
        settings = FileSettings(**{"config_file": path, **overrides})
    except ValidationError as exc:
        problems += describe_errors(exc)
    if problems:
        origin = f"{path}, .env or SCHEDULER_* environment" if path else ".env or SCHEDULER_*"
        raise ConfigError(f"invalid configuration ({origin}): " + "; ".join(problems))
    return settings


def read_config_file(path: Path) -> dict[str, Any]:
    """The YAML file as a mapping, or ConfigError naming the file and the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {exc.problem}{where}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def describe_errors(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{key}: {message}")
    return problems
