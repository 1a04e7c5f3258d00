"""The Temporal client, configured the way the `temporal` CLI is (temporalio.envconfig)."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from client.codec import data_converter
from client.errors import TemporalUnreachable
from client.settings import Settings


def connect_config(settings: Settings, *, address: str | None = None) -> dict[str, Any]:
    """Connection options: temporal.toml profile and TEMPORAL_* variables, then OPSFLOW_*."""
    config: dict[str, Any] = dict(
        ClientConfig.load_client_connect_config(profile=settings.temporal_profile)
    )
    if address or settings.temporal_address:
        config["target_host"] = address or settings.temporal_address
    config.setdefault("target_host", f"{settings.dev_ip}:{settings.dev_port}")
    if settings.temporal_namespace:
        config["namespace"] = settings.temporal_namespace
    return config


async def connect(
    settings: Settings, *, address: str | None = None, runtime: Runtime | None = None
) -> Client:
    """A client for the configured Temporal; TemporalUnreachable (an OpsflowError) in one line
    when it cannot connect. `runtime`: the metrics runtime (worker/metrics.py), else the
    process's default."""
    config = connect_config(settings, address=address)
    try:
        return await Client.connect(
            **config,
            # Encrypting when OPSFLOW_PAYLOAD_KEYS is set: every client opsflow makes is this one.
            data_converter=data_converter(settings.payload_keyring),
            runtime=runtime,
        )
    except RuntimeError as exc:
        text = str(exc)
        reason = (
            "connection refused" if "Connection refused" in text else text.splitlines()[0][:160]
        )
        raise TemporalUnreachable(
            f"cannot reach Temporal at {config['target_host']} ({reason}): start it with "
            "`opsflow dev`, or set TEMPORAL_ADDRESS / OPSFLOW_TEMPORAL_ADDRESS"
        ) from None


def workflow_ui_url(settings: Settings, namespace: str, workflow_id: str) -> str:
    """The Temporal UI address of a workflow, for commands to print."""
    return f"{settings.temporal_ui}/namespaces/{namespace}/workflows/{workflow_id}"
