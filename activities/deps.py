"""What activities need from the process: the app database and the configured backends."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

if TYPE_CHECKING:
    from activities.backends import Backends
    from activities.settings import AdapterSettings


@dataclass(frozen=True)
class ActivityDeps:
    sessions: async_sessionmaker[AsyncSession]
    adapter_settings: AdapterSettings | None = None
    """Which backend each system uses; None reads the `OPSFLOW_*` environment."""
    backends: Backends | None = None
    """Ready-made backends (tests); None builds them from `adapter_settings`."""
    template_folder: Path | None = None
    """Message templates; None is definitions/catalog/templates."""

    @cached_property
    def resolved_backends(self) -> Backends:
        if self.backends is not None:
            return self.backends
        from activities.backends import Backends
        from activities.settings import AdapterSettings

        settings = self.adapter_settings or AdapterSettings()
        return Backends.from_settings(settings, self.sessions)
