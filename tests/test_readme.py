"""The README's configuration table lists every setting opsflow reads."""

from __future__ import annotations

from pathlib import Path

from activities.environment import ENV_PREFIX
from activities.settings import AdapterSettings
from client.settings import Settings

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
