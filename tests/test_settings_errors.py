"""Every OPSFLOW_* setting with a bad value, at every kind of command: one line on stderr
naming the variable and what is wrong, exit 2, never a traceback (issue 16, item 2).

Running the console script once per setting and command would cost ~1.3 s of interpreter
start-up and imports each (140 runs); the sweep instead imports the command line and what the
commands need once in a helper process and forks a child per run, which then runs the real
`entry()` with the bad environment, its stdout and stderr captured from the file descriptors.
The cases the issue names also run through the installed `opsflow` script itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.settings import AdapterSettings
from client.settings import Settings

OPSFLOW = str(Path(sys.executable).parent / "opsflow")

# variable -> (a bad value, words the error must contain)
BAD_VALUES: dict[str, tuple[str, str]] = {
    "OPSFLOW_DATA_DIR": ("", "must not be empty"),
    "OPSFLOW_DATABASE_URL": ("mysql://root@localhost/x", "unsupported database 'mysql'"),
    "OPSFLOW_TEMPORAL_ADDRESS": ("temporal.internal", "not host:port"),
    "OPSFLOW_TEMPORAL_NAMESPACE": ("  ", "must not be empty"),
    "OPSFLOW_TEMPORAL_PROFILE": ("no-such-profile", "Profile 'no-such-profile' not found"),
    "OPSFLOW_TASK_QUEUE": ("", "must not be empty"),
    "OPSFLOW_DEV_IP": ("0.0.0.0", "loopback address only"),
    "OPSFLOW_DEV_PORT": ("seventy", "valid integer"),
    "OPSFLOW_DEV_UI_PORT": ("70000", "less than or equal to 65535"),
    "OPSFLOW_UI_URL": ("localhost:8233", "not an http(s) URL"),
    "OPSFLOW_LOG_FORMAT": ("xml", "'auto', 'json' or 'console'"),
    "OPSFLOW_LOG_LEVEL": ("loud", "'debug', 'info', 'warning' or 'error'"),
    "OPSFLOW_MAX_CONCURRENT_ACTIVITIES": ("0", "greater than or equal to 1"),
    "OPSFLOW_WORKFLOW_RELEASES": ("later", "valid boolean"),
    "OPSFLOW_METRICS_ADDRESS": ("9464", "not host:port"),
    "OPSFLOW_INTAKE_HOST": ("\x1b[31m127.0.0.1", "control character U+001B at position 1"),
    "OPSFLOW_INTAKE_PORT": ("-1", "greater than or equal to 1"),
    "OPSFLOW_INTAKE_SOURCES": ('{"crm": "whsec_', "not valid JSON"),
    "OPSFLOW_PAYLOAD_KEYS": ("k1=c2hvcnQ=", "entry 1: the key is 5 bytes; AES-256 needs 32"),
    "OPSFLOW_CODEC_HOST": (" ", "must not be empty"),
    "OPSFLOW_CODEC_PORT": ("80808", "less than or equal to 65535"),
    "OPSFLOW_CODEC_TOKEN": ("secret", "must be 16 to 256 letters"),
    "OPSFLOW_CODEC_CORS_ORIGIN": ("http://127.0.0.1:8233/ui", "not an origin"),
    "OPSFLOW_CRM_BACKEND": ("salesforce", "'sandbox' or 'hubspot'"),
    "OPSFLOW_CREDITS_BACKEND": ("hubspot", "'sandbox'"),
    "OPSFLOW_TICKETING_BACKEND": ("jira", "'sandbox' or 'zendesk'"),
    "OPSFLOW_EMAIL_BACKEND": ("sendmail", "'sandbox' or 'smtp'"),
    "OPSFLOW_CHAT_BACKEND": ("teams", "'sandbox' or 'slack'"),
    "OPSFLOW_PAGER_BACKEND": ("opsgenie", "'sandbox' or 'pagerduty'"),
    "OPSFLOW_WEBHOOK_BACKEND": ("http", "'sandbox' or 'webhook'"),
    "OPSFLOW_CHANGES_BACKEND": ("launchdarkly", "'sandbox' or 'webhook'"),
    "OPSFLOW_METRICS_BACKEND": ("datadog", "'sandbox' or 'prometheus'"),
    "OPSFLOW_ZENDESK_SUBDOMAIN": ("acme\x7f", "control character U+007F"),
    "OPSFLOW_ZENDESK_URL": ("acme.zendesk.com", "not an http(s) URL"),
    "OPSFLOW_ZENDESK_EMAIL": ("ana@example.com\r\nBcc: x", "control character U+000D"),
    "OPSFLOW_ZENDESK_API_TOKEN": ("token\x85", "control character U+0085"),
    "OPSFLOW_HUBSPOT_URL": ("ftp://api.hubapi.com/[/path]", "not an http(s) URL"),
    "OPSFLOW_HUBSPOT_TOKEN": ("\x1b[0mpat-na1", "control character U+001B"),
    "OPSFLOW_SMTP_HOST": ("", "must not be empty"),
    "OPSFLOW_SMTP_PORT": ("25x", "valid integer"),
    "OPSFLOW_SMTP_USER": ("ops\nuser", "control character U+000A"),
    "OPSFLOW_SMTP_PASSWORD": ("pass\x9b", "control character U+009B"),
    "OPSFLOW_SMTP_FROM": (" ", "must not be empty"),
    "OPSFLOW_SMTP_STARTTLS": ("maybe", "valid boolean"),
    "OPSFLOW_SMTP_SSL": ("2", "valid boolean"),
    "OPSFLOW_SMTP_TIMEOUT_SECONDS": ("0", "greater than 0"),
    "OPSFLOW_SLACK_WEBHOOK_URL": ("https://hooks.slack.com/x\x1b", "control character U+001B"),
    "OPSFLOW_SLACK_BOT_TOKEN": ("xoxb-1\x1b", "control character U+001B"),
    "OPSFLOW_SLACK_CHANNEL": ("C0123\n", "control character U+000A"),
    "OPSFLOW_PAGERDUTY_URL": ("events.pagerduty.com", "not an http(s) URL"),
    "OPSFLOW_PAGERDUTY_ROUTING_KEY": ("\x1bR0UT1NG", "control character U+001B"),
    "OPSFLOW_PAGERDUTY_SOURCE": ("", "must not be empty"),
    "OPSFLOW_WEBHOOK_URL": ("http://", "not an http(s) URL"),
    "OPSFLOW_WEBHOOK_SECRET": ("whsec_\x7f", "control character U+007F"),
    "OPSFLOW_PROMETHEUS_URL": ("prometheus:9090", "not an http(s) URL"),
    "OPSFLOW_PROMETHEUS_BEARER_TOKEN": ("tok\x1b", "control character U+001B"),
    "OPSFLOW_PROMETHEUS_QUERIES": ('[{"csat"', "not valid JSON"),
    "OPSFLOW_PROMETHEUS_SAMPLE_QUERY": ("sum({metric)", "malformed PromQL template"),
    "OPSFLOW_HTTP_TIMEOUT_SECONDS": ("soon", "valid number"),
}

COMMANDS: dict[str, list[str]] = {
    "worker": ["worker"],
    "data": ["sandbox", "customers", "--json"],
    "defs": ["defs", "list"],
}

# Imports the command line once, then forks a child per case that runs the real entry point.
HARNESS = r"""
import json, os, sys, time, signal
import worker.cli
# worker.cli imports a command's module, and the command what it needs, only when it runs:
# import what these commands need once here rather than in every child.
import store.registry, worker.cli_defs, worker.cli_sandbox, worker.metrics, worker.runner
import client.settings

cases = json.load(sys.stdin)
results = []
for case in cases:
    out_path, err_path = case["out"], case["err"]
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.environ.clear()
        os.environ.update(case["env"])
        for fd, path in ((1, out_path), (2, err_path)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["opsflow", *case["args"]]
        worker.cli.entry()
        os._exit(99)  # entry() always ends the process itself
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = "timeout"
            break
        time.sleep(0.01)
    with open(out_path) as out, open(err_path) as err:
        results.append({"code": code, "stdout": out.read(), "stderr": err.read()})
json.dump(results, sys.stdout)
"""


def all_variables() -> set[str]:
    return {
        f"OPSFLOW_{name.upper()}"
        for model in (Settings, AdapterSettings)
        for name in model.model_fields
    }


@pytest.fixture
def silent_temporal() -> Iterator[socket.socket]:
    """A listening socket standing in for Temporal: anything that connects shows up in it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    yield listener
    listener.close()


def base_environment(tmp_path: Path, temporal: socket.socket) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSFLOW_", "TEMPORAL_"))}
    host, port = temporal.getsockname()
    env.update(
        NO_COLOR="1",
        COLUMNS="400",  # a long message stays on one line, whatever the terminal would wrap
        OPSFLOW_DATA_DIR=str(tmp_path / "data"),
        OPSFLOW_TEMPORAL_ADDRESS=f"{host}:{port}",
        TEMPORAL_CONFIG_FILE=str(tmp_path / "no-temporal.toml"),
    )
    return env


def assert_one_line_naming(result: dict[str, Any], variable: str, words: str, where: str) -> None:
    assert "Traceback" not in result["stderr"] + result["stdout"], (where, result["stderr"])
    assert result["code"] == 2, (where, result)
    assert result["stdout"] == "", where
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, (where, result["stderr"])
    assert variable in lines[0] and words in lines[0], (where, lines[0])


def test_every_setting_has_a_bad_value_here() -> None:
    assert all_variables() - set(BAD_VALUES) == set(), "add a bad value for the new setting"


def test_every_bad_setting_is_one_line_at_every_command(
    tmp_path: Path, silent_temporal: socket.socket
) -> None:
    base = base_environment(tmp_path, silent_temporal)
    cases: list[dict[str, Any]] = []
    settings = sorted(all_variables())
    for n, variable in enumerate(settings):
        value = BAD_VALUES[variable][0]
        for m, args in enumerate([*COMMANDS.values(), ["dev", "--help"]]):
            cases.append(
                {
                    "variable": variable,
                    "env": {**base, variable: value},
                    "args": args,
                    "out": str(tmp_path / f"{n}-{m}.out"),
                    "err": str(tmp_path / f"{n}-{m}.err"),
                }
            )
    sweep = subprocess.run(
        [sys.executable, "-c", HARNESS],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=base,
    )
    assert sweep.returncode == 0, sweep.stderr
    results = json.loads(sweep.stdout)
    assert len(results) == len(cases)
    for case, result in zip(cases, results, strict=True):
        variable = case["variable"]
        words = BAD_VALUES[variable][1]
        where = f"{variable} at `opsflow {' '.join(case['args'])}`"
        if case["args"] == ["dev", "--help"]:
            # Help reads no settings: it is shown as usual, whatever the environment holds.
            assert result["code"] == 0, (where, result)
            assert "Usage: opsflow dev" in result["stdout"], where
            assert result["stderr"] == "", (where, result["stderr"])
        else:
            assert_one_line_naming(result, variable, words, where)
    # The worker refused before connecting anywhere, and nothing touched the app database.
    with pytest.raises(BlockingIOError):
        silent_temporal.accept()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("command", "variable", "value", "words"),
    [
        # The issue: a malformed OPSFLOW_INTAKE_SOURCES broke every command ...
        *[
            (command, "OPSFLOW_INTAKE_SOURCES", "{not json", "not valid JSON")
            for command in COMMANDS
        ],
        # ... and these `opsflow worker`.
        ("worker", "OPSFLOW_INTAKE_SOURCES", '{"crm": 7}', "INTAKE_SOURCES: crm: Input should"),
        ("worker", "OPSFLOW_SMTP_STARTTLS", "maybe", "valid boolean"),
        ("worker", "OPSFLOW_PROMETHEUS_QUERIES", "[1", "not valid JSON"),
        ("worker", "OPSFLOW_PROMETHEUS_QUERIES", '{"csat": "avg(x{"}', "csat: malformed PromQL"),
    ],
)
def test_the_reported_cases_through_the_installed_script(
    tmp_path: Path,
    silent_temporal: socket.socket,
    variable: str,
    value: str,
    words: str,
    command: str,
) -> None:
    env = {**base_environment(tmp_path, silent_temporal), variable: value}
    run = subprocess.run(
        [OPSFLOW, *COMMANDS[command]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    result = {"code": run.returncode, "stdout": run.stdout, "stderr": run.stderr}
    assert_one_line_naming(result, variable, words, command)
    with pytest.raises(BlockingIOError):
        silent_temporal.accept()
