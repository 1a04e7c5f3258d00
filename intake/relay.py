"""The relay: delivers inbox events to Temporal, in order per subject, until none wait.

Events of one subject go one after another (an update never overtakes the start it needs);
subjects go in parallel. When Temporal is unreachable (connecting fails, unavailable,
deadline exceeded, resource exhausted, ...) the events stay `pending` and the relay retries
with backoff, without counting the attempt; the request path never waits for Temporal. Only
a refusal by Temporal or the target workflow settles an event as `rejected`.

When a customer's recovery workflow has a long backlog or does not answer (`CustomerBusy`),
that customer's events wait `pending`, uncounted, for `busy_backoff` seconds (doubling while
it does not answer, up to `max_busy_backoff`); other subjects go on, and a held subject's
events are left out of the next passes' reads so they cannot fill the batch.

An unexpected exception while routing (a bug, a database hiccup) keeps the event `pending`,
counts the attempt and holds back its subject (the events after it wait, so order holds)
for a backoff that doubles per attempt; other subjects go on. After `max_failures` counted
attempts the event is `rejected` with the last error, so one bad event cannot hold its
subject forever; `opsflow events requeue` sends it again once the cause is fixed.

Outcomes are written in groups: every settled event of a pass is marked by one UPDATE
transaction per `mark_every` seconds (or `mark_batch` events), and all of them before the
pass ends, so the next pass never sees an event the previous one settled. A crash between a
delivery and its mark only delivers that event again, which every route takes as a repeat
(start ids, update ids, event ids the workflows remember).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import structlog

from activities.recovery_pacing import CustomerBusy
from intake import inbox
from intake.metrics import IntakeMetrics
from intake.router import Router, TemporalUnavailable

log = structlog.get_logger(__name__)

MAX_SKIPPED_SUBJECTS = 500
"""Held subjects left out of a read (the soonest due first); more are read and skipped."""


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
        max_failures: int = 10,
        failure_backoff: float = 1.0,
        busy_backoff: float = 1.0,
        max_busy_backoff: float = 30.0,
        max_failure_backoff: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: IntakeMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.metrics = metrics or IntakeMetrics()
        self.router = router
        self.concurrency = concurrency
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self.mark_every = mark_every
        self.mark_batch = mark_batch
        self.max_failures = max_failures
        self.failure_backoff = failure_backoff
        self.busy_backoff = busy_backoff
        self.max_busy_backoff = max_busy_backoff
        self.max_failure_backoff = max_failure_backoff
        self._clock = clock
        # subject → until when it is held (after a failed, counted attempt, or busy): none of
        # its events is tried meanwhile, nor read while a read can leave them out. And how many
        # times in a row a subject was found busy.
        self._held: dict[str, float] = {}
        self._busy_in_a_row: dict[str, int] = {}
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
        now = self._clock()
        for subject in [s for s, until in self._held.items() if until <= now]:
            del self._held[subject]
        held_subjects = sorted(self._held, key=self._held.__getitem__)[:MAX_SKIPPED_SUBJECTS]
        rows = await inbox.waiting(self.sessions, self.batch, held_subjects)
        self.metrics.waiting(len(rows))
        by_subject: OrderedDict[str, list[inbox.Waiting]] = OrderedDict()
        for row in rows:
            if row.subject not in self._held:  # a held subject's events all wait, in order
                by_subject.setdefault(row.subject, []).append(row)
        gate = asyncio.Semaphore(self.concurrency)
        outcomes: list[inbox.Settled] = []
        full = asyncio.Event()
        settled = 0
        reachable = True

        def done(
            row: inbox.Waiting,
            status: str,
            outcome: str,
            target: str | None,
            counted: bool = True,
        ) -> None:
            outcomes.append(inbox.Settled(row.id, status, outcome, target, counted))
            self.metrics.delivery(status)
            if len(outcomes) >= self.mark_batch:
                full.set()

        def failed(row: inbox.Waiting, exc: Exception) -> bool:
            """Record an unexpected failure; True when the event is given up (rejected)."""
            attempt = row.attempts + 1
            log.exception(
                "routing failed",
                event_type=row.type,
                event_id=row.event_id,
                source=row.source,
                attempt=attempt,
                max_attempts=self.max_failures,
            )
            if attempt >= self.max_failures:
                self._held.pop(row.subject, None)
                done(row, "rejected", f"routing failed {attempt} times: {exc!r}"[:500], None)
                return True
            delay = min(self.failure_backoff * 2 ** (attempt - 1), self.max_failure_backoff)
            self._held[row.subject] = self._clock() + delay
            done(
                row,
                "pending",
                f"routing failed (attempt {attempt} of {self.max_failures}, next in "
                f"{delay:g}s): {exc!r}"[:500],
                None,
            )
            return False

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
                        done(row, "pending", f"waiting for Temporal: {exc}"[:500], None, False)
                        return
                    except CustomerBusy as exc:
                        # A backlog going down: look again soon. No answer (no worker, or a
                        # stuck one): wait longer each time.
                        times = (
                            self._busy_in_a_row.get(row.subject, 0) if exc.backlog is None else 0
                        )
                        self._busy_in_a_row[row.subject] = times + 1
                        delay = min(self.busy_backoff * 2**times, self.max_busy_backoff)
                        self._held[row.subject] = self._clock() + delay
                        done(row, "pending", str(exc)[:500], exc.workflow_id, False)
                        return  # the rest of this subject waits behind it, in order
                    except Exception as exc:  # a bug must not stop the other subjects
                        if failed(row, exc):
                            settled += 1
                            continue
                        return  # the rest of this subject waits behind it, in order
                    self._busy_in_a_row.pop(row.subject, None)
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
                    if not _settled and self._held:
                        # nothing could move: every waiting subject is held (after a failure,
                        # or busy); wait for the first one due (or a new event)
                        due = min(self._held.values()) - self._clock()
                        await self._sleep(stop, min(max(due, 0.05), self.poll_seconds), True)
                        continue
                    if await inbox.any_waiting(self.sessions):
                        continue
                else:
                    self.metrics.waiting(0)
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
