"""Helpers every test module shares: waiting for something that happens in real time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
