"""Helpers every test module shares: waiting for something that happens in real time, and
reading a run's history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import WorkflowHistory

from workflows.releases import RELEASES

NEWEST_RELEASE = RELEASES[0][0]

T = TypeVar("T")


async def assert_eventually(
    read: Callable[[], Awaitable[T]],
    holds: Callable[[T], bool],
    what: str,
    *,
    within: float = 60.0,
    every: float = 0.05,
) -> T:
    """Read until `holds(value)`, then return the value; fail naming `what` and the last value
    read if it does not hold `within` seconds (generous: the machine is shared). Never returns
    a value that does not hold."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        value = await read()
        if holds(value):
            return value
        if loop.time() > end:
            raise AssertionError(f"not within {within:.0f} s: {what}; last read: {value!r}")
        await asyncio.sleep(every)


def patches_taken(history: WorkflowHistory) -> list[str]:
    """The patch ids a run has markers for, in order (sdk-core's `core_patch` markers): a new
    run should have its release's alone (workflows/releases.py)."""
    taken: list[str] = []
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_patch":
            taken.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return taken
