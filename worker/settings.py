"""opsflow's settings: every `OPSFLOW_*` environment variable, validated at start.

The Temporal connection itself follows Temporal's environment configuration
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS paths, `temporal.toml`
profiles); the `OPSFLOW_TEMPORAL_*` settings here only override it.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "OPSFLOW_"


class SettingsError(Exception):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path(".opsflow"),
        description="Folder for the embedded stack's state (Temporal dev server and SQLite files).",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the app database; default SQLite at <data_dir>/opsflow.db. "
        "Use postgresql+psycopg://user:pass@host/db for PostgreSQL.",
    )
    temporal_address: str | None = Field(
        None,
        description="host:port of the Temporal frontend; overrides TEMPORAL_ADDRESS. "
        "Default 127.0.0.1:7233.",
    )
    temporal_namespace: str | None = Field(
        None, description="Temporal namespace; overrides TEMPORAL_NAMESPACE. Default `default`."
    )
    temporal_profile: str | None = Field(
        None, description="Profile to load from temporal.toml (Temporal's envconfig)."
    )
    task_queue: str = Field("opsflow", description="Task queue every opsflow worker polls.")
    dev_ip: str = Field("127.0.0.1", description="Address the embedded dev server binds to.")
    dev_port: int = Field(7233, ge=1, le=65535, description="gRPC port of the embedded dev server.")
    dev_ui_port: int = Field(
        8233, ge=1, le=65535, description="Web UI port of the embedded dev server."
    )
    ui_url: str | None = Field(
        None,
        description="Temporal UI base address that commands print links to; default the "
        "embedded UI, http://<dev_ip>:<dev_ui_port>.",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`auto`: readable in a terminal, JSON otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level that is logged."
    )
    max_concurrent_activities: int = Field(
        100, ge=1, description="Activities one worker process runs at once."
    )
    intake_host: str = Field("127.0.0.1", description="Address the event intake listens on.")
    intake_port: int = Field(8787, ge=1, le=65535, description="Port of the event intake.")
    intake_sources: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object of event senders and their signing secrets, e.g. '
        '`{"crm": "whsec_...", "zendesk": "...", "hubspot": "..."}`; `zendesk` and `hubspot` '
        "hold those vendors' webhook secrets.",
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database {url.get_backend_name()!r}: use sqlite or postgresql"
            )
        return value

    @field_validator("dev_ip")
    @classmethod
    def _check_dev_ip(cls, value: str) -> str:
        if not value.startswith("127.") and value not in ("localhost", "::1"):
            raise ValueError("the embedded dev server binds to a loopback address only")
        return value

    @cached_property
    def database(self) -> URL:
        """The app database URL, with the driver opsflow uses for each backend."""
        if self.database_url is None:
            return make_url(f"sqlite:///{self.data_dir / 'opsflow.db'}")
        url = make_url(self.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url


    @property
    def temporal_ui(self) -> str:
        return (self.ui_url or f"http://{self.dev_ip}:{self.dev_ui_port}").rstrip("/")


def load_settings() -> Settings:
    """Read the settings from the environment, or raise SettingsError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{ENV_PREFIX}{field.upper()}: {message}")
        raise SettingsError("; ".join(problems)) from None
