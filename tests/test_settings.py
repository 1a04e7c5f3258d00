"""Bad settings fail at start, naming the setting; good ones are read from OPSFLOW_*."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.environment import SettingsError
from client.settings import load_settings

OPSFLOW = str(Path(sys.executable).parent / "opsflow")


def test_defaults_use_sqlite_in_the_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPSFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("OPSFLOW_DATA_DIR", "/tmp/somewhere")
    settings = load_settings()
    assert settings.database.get_backend_name() == "sqlite"
    assert settings.database.database == "/tmp/somewhere/opsflow.db"


def test_postgres_url_gets_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", "postgresql://ops:secret@db.internal/opsflow")
    assert load_settings().database.drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OPSFLOW_DATABASE_URL", "not a url at all", "OPSFLOW_DATABASE_URL: not a database URL"),
        ("OPSFLOW_DATABASE_URL", "mysql://root@localhost/x", "unsupported database 'mysql'"),
        ("OPSFLOW_DEV_PORT", "seventy", "OPSFLOW_DEV_PORT: Input should be a valid integer"),
        ("OPSFLOW_DEV_UI_PORT", "70000", "OPSFLOW_DEV_UI_PORT: Input should be less than"),
        ("OPSFLOW_LOG_FORMAT", "xml", "OPSFLOW_LOG_FORMAT: Input should be 'auto'"),
        ("OPSFLOW_DEV_IP", "0.0.0.0", "OPSFLOW_DEV_IP: the embedded dev server binds"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("url", "reason", "status"),
    [
        # A bad setting is a usage error (2); a database that cannot be reached, a failure (1).
        ("postgres//no-scheme-separator", "not a database URL", 2),
        ("postgresql://ops@no-such-host.invalid/opsflow", "failed to resolve host", 1),
    ],
)
def test_command_line_reports_bad_database_in_one_line(
    tmp_path: Path, url: str, reason: str, status: int
) -> None:
    env = {**os.environ, "OPSFLOW_DATABASE_URL": url, "NO_COLOR": "1"}
    result = subprocess.run(
        [OPSFLOW, "migrate"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == status
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "OPSFLOW_DATABASE_URL" in lines[0]
    assert reason in lines[0]
    assert "Traceback" not in result.stderr
