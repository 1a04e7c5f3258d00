"""opsflow's settings: every `OPSFLOW_*` environment variable, validated at start.

The Temporal connection itself follows Temporal's environment configuration
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS paths, `temporal.toml`
profiles); the `OPSFLOW_TEMPORAL_*` settings here only override it.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from activities.environment import (
    ENV_PREFIX,
    EnvironmentSettings,
    HostPortText,
    HttpUrlText,
    NonEmptyText,
    SettingsError,
    not_empty,
    read_environment,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from client.codec import PayloadKeys

_CODEC_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")


class Settings(EnvironmentSettings):
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
    temporal_address: HostPortText | None = Field(
        None,
        description="host:port of the Temporal frontend; overrides TEMPORAL_ADDRESS. "
        "Default 127.0.0.1:7233.",
    )
    temporal_namespace: NonEmptyText | None = Field(
        None, description="Temporal namespace; overrides TEMPORAL_NAMESPACE. Default `default`."
    )
    temporal_profile: NonEmptyText | None = Field(
        None, description="Profile to load from temporal.toml (Temporal's envconfig)."
    )
    task_queue: NonEmptyText = Field(
        "opsflow", description="Task queue every opsflow worker polls."
    )
    dev_ip: str = Field("127.0.0.1", description="Address the embedded dev server binds to.")
    dev_port: int = Field(7233, ge=1, le=65535, description="gRPC port of the embedded dev server.")
    dev_ui_port: int = Field(
        8233, ge=1, le=65535, description="Web UI port of the embedded dev server."
    )
    ui_url: HttpUrlText | None = Field(
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
    workflow_releases: bool = Field(
        True,
        description="New runs take the changes of the newest workflow release under one patch "
        "marker (workflows/releases.py). Turn off while a worker may go back to an opsflow "
        "from before releases: runs then record each change's own marker, which it replays.",
    )
    intake_host: NonEmptyText = Field(
        "127.0.0.1", description="Address the event intake listens on."
    )
    intake_port: int = Field(8787, ge=1, le=65535, description="Port of the event intake.")
    metrics_address: HostPortText | None = Field(
        None,
        description="host:port to serve Prometheus metrics on (http://<host:port>/metrics): "
        "the Temporal SDK's and opsflow's. Off when unset; `opsflow dev` then serves them on "
        "<dev_ip>:9464, or a free port when that one is taken.",
    )
    intake_sources: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object of event senders and their signing secrets, e.g. "
        '`{"crm": "whsec_...", "zendesk": "...", "hubspot": "..."}`; `zendesk` and `hubspot` '
        "hold those vendors' webhook secrets.",
    )

    payload_keys: SecretStr | None = Field(
        None,
        description="Encrypt every payload opsflow writes to Temporal (AES-256-GCM): "
        "comma-separated `key-id=<base64 of 32 bytes>` pairs, newest first; the first "
        "encrypts, all decrypt, so a new key goes first to rotate. Off when unset.",
    )
    codec_host: NonEmptyText = Field(
        "127.0.0.1", description="Address the codec server (`opsflow codec-server`) listens on."
    )
    codec_port: int = Field(8081, ge=1, le=65535, description="Port of the codec server.")
    codec_token: SecretStr | None = Field(
        None,
        description="Bearer token the codec server requires; default a token made once in "
        "<data_dir>/codec-token.",
    )
    codec_cors_origin: HttpUrlText | None = Field(
        None,
        description="Origin of the Temporal UI that may call the codec server from a browser; "
        "default the origin of OPSFLOW_UI_URL, else of the embedded UI.",
    )

    @field_validator("payload_keys")
    @classmethod
    def _check_payload_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from client.codec import PayloadKeys  # imported only when encryption is on

            PayloadKeys.parse(value.get_secret_value())  # PayloadKeyError, never showing a key
        return value

    @field_validator("codec_token")
    @classmethod
    def _check_codec_token(cls, value: SecretStr | None) -> SecretStr | None:
        # It travels in a header and, for the Temporal UI, as a URL path segment.
        if value is not None and not _CODEC_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "must be 16 to 256 letters, digits, '.', '_', '~' or '-' "
                "(make one with `openssl rand -hex 32`)"
            )
        return value

    @field_validator("codec_cors_origin")
    @classmethod
    def _check_codec_origin(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError("not an origin: expected scheme://host[:port], with no path")
        return value

    @field_validator("intake_sources")
    @classmethod
    def _check_intake_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        from activities.webhook_secrets import check_sources  # standard library only

        check_sources(value)  # BadSecret (a ValueError) naming each sender at fault
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_given(cls, value: Any) -> Any:
        return not_empty(value) if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from sqlalchemy.engine import make_url  # only here: commands without a database skip it
        from sqlalchemy.exc import ArgumentError

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

    @property
    def embedded_database(self) -> Path | None:
        """The embedded default's SQLite file; None when OPSFLOW_DATABASE_URL names one."""
        return self.data_dir / "opsflow.db" if self.database_url is None else None

    @cached_property
    def database(self) -> URL:
        """The app database URL, with the driver opsflow uses for each backend."""
        from sqlalchemy.engine import make_url

        if self.database_url is None:
            return make_url(f"sqlite:///{self.embedded_database}")
        url = make_url(self.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url

    @property
    def temporal_ui(self) -> str:
        return (self.ui_url or f"http://{self.dev_ip}:{self.dev_ui_port}").rstrip("/")

    @cached_property
    def payload_keyring(self) -> PayloadKeys | None:
        """The parsed OPSFLOW_PAYLOAD_KEYS (validated at start); None: no encryption."""
        if self.payload_keys is None:
            return None
        from client.codec import PayloadKeys

        return PayloadKeys.parse(self.payload_keys.get_secret_value())

    @property
    def codec_origin(self) -> str:
        """The browser origin allowed to call the codec server: the UI's."""
        parts = urlsplit(self.codec_cors_origin or self.temporal_ui)
        return f"{parts.scheme}://{parts.netloc}"


def load_settings() -> Settings:
    """Read the settings from the environment, or raise SettingsError naming the variable."""
    return read_environment(Settings)


def check_temporal_config(settings: Settings) -> None:
    """Load the Temporal connection profile now, so a missing profile or a broken temporal.toml
    is a setting error at start rather than a traceback at the first connection."""
    from temporalio.envconfig import ClientConfig

    try:
        ClientConfig.load_client_connect_config(profile=settings.temporal_profile)
    except RuntimeError as exc:  # temporal_sdk_bridge.ConfigError
        variable = (
            f"{ENV_PREFIX}TEMPORAL_PROFILE"
            if settings.temporal_profile
            else "TEMPORAL_PROFILE / TEMPORAL_CONFIG_FILE"
        )
        raise SettingsError(f"{variable}: {' '.join(str(exc).split())}") from None


def load_all_settings() -> Settings:
    """Validate every setting a command may use (opsflow's, the adapters', Temporal's profile)
    before it does anything, so a bad one is one line at start, never a traceback later."""
    from activities.settings import AdapterSettings  # activities.settings imports this module

    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings()
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        read_environment(AdapterSettings)
    except SettingsError as exc:
        problems.append(str(exc))
    if settings is not None:
        try:
            check_temporal_config(settings)
        except SettingsError as exc:
            problems.append(str(exc))
    if problems or settings is None:
        raise SettingsError("; ".join(problems))
    return settings
