"""Heartbeat helper usable from code that also runs outside an activity (the CLI, tests)."""

from __future__ import annotations

from temporalio import activity


def heartbeat(*details: object) -> None:
    """Tell Temporal this attempt is alive (no-op outside an activity)."""
    if activity.in_activity():
        activity.heartbeat(*details)
