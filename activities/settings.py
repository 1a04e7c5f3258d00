"""Adapter settings: which backend each system uses, and the vendors' endpoints and secrets.

Every value comes from an `OPSFLOW_*` environment variable; secrets are `SecretStr` so they
never appear in a repr or a log line. With nothing set, every system uses the sandbox.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from activities.environment import (
    EnvironmentSettings,
    HttpUrlText,
    NonEmptyText,
    StandardWebhooksSecret,
    read_environment,
)

DEFAULT_PROMQL = {
    "csat": 'avg_over_time(opsflow_csat{{cohort="{cohort}"}}[{window}])',
    "complaint_rate": 'avg_over_time(opsflow_complaint_rate{{cohort="{cohort}"}}[{window}])',
    "handle_time": 'avg_over_time(opsflow_handle_time_seconds{{cohort="{cohort}"}}[{window}])',
    "repeat_contacts": 'avg_over_time(opsflow_repeat_contacts{{cohort="{cohort}"}}[{window}])',
    "error_rate": 'avg_over_time(opsflow_error_rate{{cohort="{cohort}"}}[{window}])',
}
DEFAULT_PROMQL_SAMPLES = 'sum(count_over_time(opsflow_{metric}{{cohort="{cohort}"}}[{window}]))'


class AdapterSettings(EnvironmentSettings):
    model_config = SettingsConfigDict(env_prefix="OPSFLOW_", extra="ignore", frozen=True)

    # --- backend per system -----------------------------------------------------------------
    crm_backend: Literal["sandbox", "hubspot"] = Field(
        "sandbox", description="Customer profiles, cohorts and timeline notes."
    )
    credits_backend: Literal["sandbox"] = Field(
        "sandbox", description="Service credits (HubSpot has no credit ledger)."
    )
    ticketing_backend: Literal["sandbox", "zendesk"] = Field("sandbox")
    email_backend: Literal["sandbox", "smtp"] = Field("sandbox")
    chat_backend: Literal["sandbox", "slack"] = Field("sandbox")
    pager_backend: Literal["sandbox", "pagerduty"] = Field("sandbox")
    webhook_backend: Literal["sandbox", "webhook"] = Field(
        "sandbox", description="Where `notify` messages on the webhook channel go."
    )
    changes_backend: Literal["sandbox", "webhook"] = Field(
        "sandbox", description="Flag changes: the sandbox flag store or a signed webhook."
    )
    metrics_backend: Literal["sandbox", "prometheus"] = Field("sandbox")

    # --- Zendesk Support API v2 --------------------------------------------------------------
    zendesk_subdomain: str | None = Field(None, description="<subdomain>.zendesk.com")
    zendesk_url: HttpUrlText | None = Field(
        None, description="Base URL instead of the subdomain (tests, proxies)."
    )
    zendesk_email: str | None = Field(None, description="Agent email for API-token auth.")
    zendesk_api_token: SecretStr | None = None

    # --- HubSpot CRM v3 ----------------------------------------------------------------------
    hubspot_url: HttpUrlText = "https://api.hubapi.com"
    hubspot_token: SecretStr | None = Field(None, description="Private app access token.")

    # --- SMTP ----------------------------------------------------------------------------------
    smtp_host: NonEmptyText | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: NonEmptyText = "opsflow <opsflow@localhost>"
    smtp_starttls: bool = Field(True, description="Upgrade with STARTTLS before logging in.")
    smtp_ssl: bool = Field(False, description="Implicit TLS (port 465) instead of STARTTLS.")
    smtp_timeout_seconds: float = Field(20.0, gt=0)

    # --- Slack incoming webhooks --------------------------------------------------------------
    slack_webhook_url: SecretStr | None = Field(
        None, description="The webhook URL is itself the credential."
    )
    slack_bot_token: SecretStr | None = Field(
        None, description="Web API bot token (with slack_channel: exactly-once posting)."
    )
    slack_channel: str | None = Field(None, description="Channel id for the Web API mode.")

    # --- PagerDuty Events API v2 --------------------------------------------------------------
    pagerduty_url: HttpUrlText = "https://events.pagerduty.com"
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_source: NonEmptyText = "opsflow"

    # --- generic webhook, signed per Standard Webhooks (notify and changes) -------------------
    webhook_url: HttpUrlText | None = None
    webhook_secret: StandardWebhooksSecret | None = Field(
        None,
        description="Standard Webhooks signing secret: `whsec_` + base64 of a key of at least "
        "24 bytes (receivers verify with the same secret).",
    )

    # --- Prometheus HTTP API -------------------------------------------------------------------
    prometheus_url: HttpUrlText | None = None
    prometheus_bearer_token: SecretStr | None = None
    prometheus_queries: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PROMQL),
        description="PromQL per metric (JSON), with {cohort} and {window} placeholders.",
    )
    prometheus_sample_query: str = Field(
        DEFAULT_PROMQL_SAMPLES,
        description="PromQL for the sample size, with {metric}, {cohort} and {window}.",
    )

    http_timeout_seconds: float = Field(10.0, gt=0, description="Per vendor HTTP request.")

    @field_validator("prometheus_queries", "prometheus_sample_query")
    @classmethod
    def _promql_templates_format(cls, value: dict[str, str] | str) -> dict[str, str] | str:
        # Checked at start with the placeholders the Prometheus adapter fills in, so a typo
        # is a setting error instead of a failed health check in the middle of a rollout.
        fields = {"metric": "m", "cohort": '"c"', "selector": "{}", "window": "60s"}
        templates = value.items() if isinstance(value, dict) else [("", value)]
        for metric, template in templates:
            try:
                template.format(**fields)
            except (KeyError, IndexError, ValueError) as exc:
                where = f"{metric}: " if metric else ""
                raise ValueError(
                    f"{where}malformed PromQL template ({type(exc).__name__}: {exc}); "
                    "placeholders are {metric}, {cohort}, {selector}, {window}, "
                    "literal braces are doubled"
                ) from None
        return value

    @model_validator(mode="after")
    def _selected_backends_are_configured(self) -> AdapterSettings:
        missing: list[str] = []

        def need(selected: bool, **values: object) -> None:
            if selected:
                missing.extend(
                    f"OPSFLOW_{name.upper()}" for name, value in values.items() if not value
                )

        need(
            self.ticketing_backend == "zendesk",
            zendesk_email=self.zendesk_email,
            zendesk_api_token=self.zendesk_api_token,
        )
        if self.ticketing_backend == "zendesk" and not (self.zendesk_subdomain or self.zendesk_url):
            missing.append("OPSFLOW_ZENDESK_SUBDOMAIN")
        need(self.crm_backend == "hubspot", hubspot_token=self.hubspot_token)
        need(self.email_backend == "smtp", smtp_host=self.smtp_host)
        web_api = bool(self.slack_bot_token and self.slack_channel)
        need(self.chat_backend == "slack" and not web_api, slack_webhook_url=self.slack_webhook_url)
        need(self.pager_backend == "pagerduty", pagerduty_routing_key=self.pagerduty_routing_key)
        uses_webhook = "webhook" in (self.webhook_backend, self.changes_backend)
        need(uses_webhook, webhook_url=self.webhook_url, webhook_secret=self.webhook_secret)
        need(self.metrics_backend == "prometheus", prometheus_url=self.prometheus_url)
        if missing:
            raise ValueError("the selected backends need " + ", ".join(dict.fromkeys(missing)))
        return self

    @property
    def zendesk_base_url(self) -> str:
        return self.zendesk_url or f"https://{self.zendesk_subdomain}.zendesk.com"


def load_adapter_settings() -> AdapterSettings:
    """Read the adapter settings, or raise SettingsError naming the variables at fault."""
    return read_environment(AdapterSettings)
