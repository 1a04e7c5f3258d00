"""Reading `OPSFLOW_*` environment variables: the base every settings class extends (no
value may hold a control character), the typed values they share, and one error line naming
every variable at fault. The adapters' settings (activities/settings.py) and the process's
(client/settings.py) both build on it.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "OPSFLOW_"

# C0 controls, DEL and C1 controls: in an environment value always a paste or quoting accident
# (a terminal colour code, a stray newline from `$(cat file)`), and in a header or secret an
# injection. JSON settings may be pretty-printed, so they may hold layout whitespace.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LAYOUT = frozenset("\t\n\r")


class SettingsError(Exception):
    """A setting has a bad value; the message names the environment variable."""


def _check_text(value: str, *, layout_allowed: bool = False) -> None:
    for match in _CONTROL.finditer(value):
        if layout_allowed and match.group() in _LAYOUT:
            continue
        raise ValueError(
            f"contains the control character U+{ord(match.group()):04X} "
            f"at position {match.start() + 1}"
        )


def not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not an http(s) URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL: expected http://host[:port][/path] or https://...")
    return value


def _host_port(value: str) -> str:
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not host:port ({exc})") from None
    if not parts.hostname or port is None or parts.path or parts.query or parts.fragment:
        raise ValueError("not host:port, e.g. temporal.internal:7233")
    return value


def _standard_webhooks_secret(value: SecretStr) -> SecretStr:
    # The rule of the intake's own senders (activities/webhook_secrets.py): `whsec_` + base64
    # of a key of at least MIN_KEY_BYTES bytes. An empty or short key would let anyone sign.
    from activities.webhook_secrets import MIN_KEY_BYTES, standard_key  # standard library only

    key = standard_key(value.get_secret_value())  # BadSecret (a ValueError) says why
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the key is {len(key)} bytes after base64 decoding; at least {MIN_KEY_BYTES} are "
            "needed (echo whsec_$(openssl rand -base64 32))"
        )
    return value


NonEmptyText = Annotated[str, AfterValidator(not_empty)]
HttpUrlText = Annotated[str, AfterValidator(_http_url)]
HostPortText = Annotated[str, AfterValidator(_host_port)]
StandardWebhooksSecret = Annotated[SecretStr, AfterValidator(_standard_webhooks_secret)]
"""A Standard Webhooks signing secret: `whsec_` + base64 of the key (the prefix optional)."""


class EnvironmentSettings(BaseSettings):
    """Settings read from the environment: no value may hold a control character."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):  # a JSON object, already decoded by the settings source
            for key, item in value.items():
                for text in (key, item):
                    if isinstance(text, str):
                        _check_text(text)
        return value


def _problems(exc: ValidationError, prefix: str) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
        if not loc:  # a rule across settings: its message names the variables
            problems.append(message)
            continue
        # A key inside a JSON setting (OPSFLOW_INTAKE_SOURCES: crm: ...) is named after it.
        inner = "".join(f"{part}: " for part in loc[1:])
        problems.append(f"{prefix}{loc[0].upper()}: {inner}{message}")
    return problems


def _source_problem(exc: SourceError, prefix: str) -> str:
    """pydantic-settings' own error (a JSON setting that does not parse) as one line."""
    field = re.search(r'field "([^"]+)"', str(exc))
    variable = f"{prefix}{field.group(1).upper()}" if field else f"an {prefix}* setting"
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return (
            f"{variable}: not valid JSON ({cause.msg} at line {cause.lineno} column {cause.colno})"
        )
    reason = " ".join(str(cause or exc).split())
    return f"{variable}: {reason}"


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def read_environment(settings_class: type[SettingsT]) -> SettingsT:
    """Build a settings class from the environment, or raise SettingsError: one line naming
    every variable at fault and what is wrong with it."""
    prefix = str(settings_class.model_config.get("env_prefix") or "")
    try:
        return settings_class()
    except ValidationError as exc:
        raise SettingsError("; ".join(_problems(exc, prefix))) from None
    except SourceError as exc:
        raise SettingsError(_source_problem(exc, prefix)) from None
