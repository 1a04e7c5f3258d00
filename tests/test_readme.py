"""The README's configuration table lists every setting opsflow reads."""

from __future__ import annotations

from pathlib import Path

from activities.settings import AdapterSettings
from worker.settings import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"{ENV_PREFIX}{name.upper()}"
        for model in (Settings, AdapterSettings)
        for name in model.model_fields
        if f"`{ENV_PREFIX}{name.upper()}`" not in README
    ]
    assert missing == []


def test_readme_shows_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
