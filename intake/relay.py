"""The relay: delivers inbox events to Temporal, in order per subject, until none wait.

Events of one subject go one after another (an update never overtakes the start it needs);
subjects go in parallel. When Temporal is unreachable the events stay `pending` and the
relay retries with backoff; the request path never waits for Temporal.

Outcomes are written in groups: every settled event of a pass is marked by one UPDATE
transaction per `mark_every` seconds (or `mark_batch` events), and all of them before the
pass ends, so the next pass never sees an event the previous one settled. A crash between a
delivery and its mark only delivers that event again, which every route takes as a repeat
(start ids, update ids, event ids the workflows remember).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import structlog

from intake import inbox
from intake.router import Router, TemporalUnavailable

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
        mark_every: float = 0.1,
        mark_batch: int = 200,
    ) -> None:
        self.sessions = sessions
        self.router = router
        self.concurrency = concurrency
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self.mark_every = mark_every
        self.mark_batch = mark_batch
        self._wake = asyncio.Event()
        self.temporal_reachable = True
        # How outcomes are written; the intake points this at its inbox writer's thread.
        self.marks: Callable[[Sequence[inbox.Settled]], Awaitable[None]] = partial(
            inbox.mark_many, sessions
        )

    def wake(self) -> None:
        self._wake.set()

    async def drain_once(self) -> tuple[int, bool]:
        """One pass over the waiting events: (how many were settled, Temporal reachable)."""
        rows = await inbox.waiting(self.sessions, self.batch)
        by_subject: OrderedDict[str, list[inbox.Waiting]] = OrderedDict()
        for row in rows:
            by_subject.setdefault(row.subject, []).append(row)
        gate = asyncio.Semaphore(self.concurrency)
        outcomes: list[inbox.Settled] = []
        full = asyncio.Event()
        settled = 0
        reachable = True

        def done(row: inbox.Waiting, status: str, outcome: str, target: str | None) -> None:
            outcomes.append(inbox.Settled(row.id, status, outcome, target))
            if len(outcomes) >= self.mark_batch:
                full.set()

        async def one_subject(events: list[inbox.Waiting]) -> None:
            nonlocal settled, reachable
            async with gate:
                for row in events:
                    if not reachable:
                        return
                    try:
                        result = await self.router.deliver(inbox.envelope_of(row))
                    except TemporalUnavailable as exc:
                        reachable = False
                        done(row, "pending", str(exc)[:500], None)
                        return
                    except Exception as exc:  # a bug must not stop the other subjects
                        log.exception("routing failed", event_type=row.type)
                        done(row, "rejected", f"routing failed: {exc!r}"[:500], None)
                        settled += 1
                        continue
                    done(row, result.status, result.outcome, result.target)
                    settled += 1

        async def flush() -> None:
            taken = outcomes[:]
            del outcomes[: len(taken)]
            full.clear()
            await self.marks(taken)

        async def marker(finished: asyncio.Event) -> None:
            while not finished.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(full.wait(), timeout=self.mark_every)
                if outcomes:
                    await flush()

        finished = asyncio.Event()
        marking = asyncio.create_task(marker(finished))
        try:
            await asyncio.gather(*(one_subject(events) for events in by_subject.values()))
        finally:
            finished.set()
            full.set()
            await marking
            if outcomes:
                await flush()
        return settled, reachable

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            self._wake.clear()
            try:
                if await inbox.any_waiting(self.sessions):
                    _settled, reachable = await self.drain_once()
                    self.temporal_reachable = reachable
                    if not reachable:
                        await self._sleep(stop, backoff)
                        backoff = min(backoff * 2, self.max_backoff)
                        continue
                    backoff = 0.5
                    if await inbox.any_waiting(self.sessions):
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
