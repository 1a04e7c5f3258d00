"""Where a process serves its Prometheus metrics (`OPSFLOW_METRICS_ADDRESS`).

`opsflow worker` and `opsflow intake` serve them only when the setting is given; `opsflow dev`
always does, on the dev server's loopback address. See client/metrics.py for what is served.
"""

from __future__ import annotations

import socket

from temporalio.runtime import Runtime

from client.logging import core_logging
from client.metrics import metrics_runtime
from client.settings import Settings

DEV_METRICS_PORT = 9464
"""The port `opsflow dev` serves metrics on when free (OpenTelemetry's Prometheus default)."""


def runtime_for(settings: Settings, address: str | None) -> Runtime | None:
    """The metrics runtime for `address`, its Core logs as the process's; None: metrics off."""
    if address is None:
        return None
    return metrics_runtime(address, logging=core_logging(settings.log_level))


def dev_metrics_address(settings: Settings) -> str:
    """OPSFLOW_METRICS_ADDRESS if set; else DEV_METRICS_PORT on the dev IP, or any free port
    there when something else holds it (a second `opsflow dev`, another exporter)."""
    if settings.metrics_address:
        return settings.metrics_address
    ip = settings.dev_ip
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, DEV_METRICS_PORT))
            port = DEV_METRICS_PORT
        except OSError:
            probe.bind((ip, 0))
            port = probe.getsockname()[1]
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}"


def metrics_url(address: str) -> str:
    return f"http://{address}/metrics"
