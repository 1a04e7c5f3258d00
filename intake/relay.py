"""The relay: delivers inbox events to Temporal, in order per subject, until none wait.

Events of one subject go one after another (an update never overtakes the start it needs);
subjects go in parallel. When Temporal is unreachable the events stay `pending` and the
relay retries with backoff; the request path never waits for Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

import structlog

from intake import inbox
from intake.router import Router, TemporalUnavailable
from store.models import InboxEvent

log = structlog.get_logger(__name__)


class Relay:
    def __init__(
        self,
        sessions: inbox.Sessions,
        router: Router,
        *,
        concurrency: int = 32,
        batch: int = 1000,
        poll_seconds: float = 2.0,
        max_backoff: float = 10.0,
    ) -> None:
        self.sessions = sessions
        self.router = router
        self.concurrency = concurrency
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self.temporal_reachable = True

    def wake(self) -> None:
        self._wake.set()

    async def drain_once(self) -> tuple[int, bool]:
        """One pass over the waiting events: (how many were settled, Temporal reachable)."""
        rows = await inbox.waiting(self.sessions, self.batch)
        by_subject: OrderedDict[str, list[InboxEvent]] = OrderedDict()
        for row in rows:
            by_subject.setdefault(row.subject, []).append(row)
        gate = asyncio.Semaphore(self.concurrency)
        settled = 0
        reachable = True

        async def one_subject(events: list[InboxEvent]) -> None:
            nonlocal settled, reachable
            async with gate:
                for row in events:
                    if not reachable:
                        return
                    try:
                        result = await self.router.deliver(inbox.envelope_of(row))
                    except TemporalUnavailable as exc:
                        reachable = False
                        await inbox.mark(self.sessions, row.id, "pending", str(exc)[:500], None)
                        return
                    except Exception as exc:  # a bug must not stop the other subjects
                        log.exception("routing failed", event_type=row.type)
                        outcome = f"routing failed: {exc!r}"[:500]
                        await inbox.mark(self.sessions, row.id, "rejected", outcome, None)
                        settled += 1
                        continue
                    await inbox.mark(
                        self.sessions, row.id, result.status, result.outcome, result.target
                    )
                    settled += 1

        await asyncio.gather(*(one_subject(events) for events in by_subject.values()))
        return settled, reachable

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            self._wake.clear()
            try:
                rows_before = await inbox.waiting(self.sessions, 1)
                if rows_before:
                    _settled, reachable = await self.drain_once()
                    self.temporal_reachable = reachable
                    if not reachable:
                        await self._sleep(stop, backoff)
                        backoff = min(backoff * 2, self.max_backoff)
                        continue
                    backoff = 0.5
                    if await inbox.waiting(self.sessions, 1):
                        continue
            except Exception:
                log.exception("relay pass failed")
                await self._sleep(stop, backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            await self._sleep(stop, self.poll_seconds, wakeable=True)

    async def _sleep(self, stop: asyncio.Event, seconds: float, wakeable: bool = False) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
