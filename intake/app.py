"""The intake's HTTP API (FastAPI): signed senders, vendor webhooks, health.

Order of checks on every POST: known sender (401), body at most 1 MiB (413), signature and
timestamp over the raw bytes (401), not a replay of an already recorded request (401),
nesting depth, then strict JSON (400), media type (415), envelope and data (422). Only then
is anything written: 202 once every new event is committed to the inbox, 200 when all of
them were already there (with their recorded outcome). The replay check and the insert are
one transaction, shared by the requests that arrive together (`inbox.Writer`). Delivery to
workflows happens after the answer, in the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException

from activities.webhook_secrets import check_sources
from definitions.events import EventEnvelope
from intake import inbox
from intake.body import parse_json, read_body
from intake.envelope import parse_events
from intake.metrics import IntakeMetrics
from intake.problems import Problem, problem_response, unauthorized
from intake.relay import Relay
from intake.router import TemporalLink
from intake.signatures import (
    Signed,
    replayed,
    verify_hubspot,
    verify_standard,
    verify_zendesk,
)
from intake.vendors import hubspot_events, zendesk_events

log = structlog.get_logger(__name__)
_SOURCE = re.compile(r"^[\w.-]{1,100}$")


@dataclass
class Intake:
    sessions: inbox.Sessions
    sources: dict[str, str]
    link: TemporalLink
    relay: Relay | None = None
    run_relay: bool = True
    metrics: IntakeMetrics = field(default_factory=IntakeMetrics)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    writer: inbox.Writer = field(init=False)

    def __post_init__(self) -> None:
        # Every sender's secret must be usable before anything is served (BadSecret names
        # the sender): an empty or short key would let anyone sign.
        check_sources(self.sources)
        self.writer = inbox.Writer(self.sessions)
        if self.relay is not None:
            self.relay.marks = self.writer.mark_many

    def secret(self, source: str) -> str:
        secret = self.sources.get(source) if _SOURCE.match(source) else None
        if not secret:
            raise unauthorized(f"unknown sender {source[:100]!r}")
        return secret


def _answer(recorded: Sequence[inbox.Recorded]) -> JSONResponse:
    new = any(r.new for r in recorded)
    body: dict[str, Any] = {
        "events": [{**inbox.describe(r.row), "duplicate": not r.new} for r in recorded]
    }
    return JSONResponse(body, status_code=202 if new else 200)


def create_app(intake: Intake) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if intake.run_relay and intake.relay is not None:
            intake._stop.clear()
            intake._tasks.append(asyncio.create_task(intake.relay.run(intake._stop)))
        try:
            yield
        finally:
            intake._stop.set()
            for task in intake._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=15)
            intake._tasks.clear()
            await intake.writer.close()

    app = FastAPI(
        title="opsflow event intake",
        version="1",
        description="CloudEvents in, workflow starts and signals out, each event exactly once.",
        lifespan=lifespan,
    )
    app.state.intake = intake

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        intake.metrics.request_refused(exc.kind)
        return problem_response(exc, request)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem_response(
            Problem(exc.status_code, title.lower().replace(" ", "-"), title, str(exc.detail)),
            request,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        intake.metrics.request_refused("invalid-request")
        return problem_response(
            Problem(422, "invalid-request", "Invalid request", "the request is invalid", errors),
            request,
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("intake request failed", path=request.url.path)
        return problem_response(
            Problem(500, "internal", "Internal error", "the intake failed; nothing was recorded"),
            request,
        )

    async def accept(
        request: Request,
        source: str,
        signed: Signed,
        events: list[EventEnvelope],
    ) -> JSONResponse:
        if not events:
            if await inbox.seen_request(
                intake.sessions, source, signed.message_id, signed.timestamp
            ):
                raise replayed()
            return JSONResponse({"events": [], "ignored": True}, status_code=200)
        try:
            recorded = await intake.writer.accept(
                source, signed.message_id, signed.timestamp, events
            )
        except inbox.Replayed:
            raise replayed() from None
        for one in recorded:
            intake.metrics.event_received(source, new=one.new)
        if intake.relay is not None and any(r.new for r in recorded):
            intake.relay.wake()
        return _answer(recorded)

    @app.post(
        "/v1/events/{source}",
        status_code=202,
        summary="Send CloudEvents, signed with Standard Webhooks",
        responses={
            200: {"description": "already received: the recorded outcome"},
            401: {},
            413: {},
            415: {},
            422: {},
        },
    )
    async def post_events(source: str, request: Request) -> JSONResponse:
        secret = intake.secret(source)
        body = await read_body(request)
        signed = verify_standard(secret, request.headers, body)
        events = parse_events(
            request.headers.get("content-type", ""), request.headers, body, source
        )
        return await accept(request, source, signed, events)

    @app.post("/v1/webhooks/zendesk", summary="Zendesk event subscription webhooks")
    async def post_zendesk(request: Request) -> JSONResponse:
        secret = intake.secret("zendesk")
        body = await read_body(request)
        signed = verify_zendesk(secret, request.headers, body)
        return await accept(request, "zendesk", signed, zendesk_events(parse_json(body)))

    @app.post("/v1/webhooks/hubspot", summary="HubSpot webhooks (signature v3)")
    async def post_hubspot(request: Request) -> JSONResponse:
        secret = intake.secret("hubspot")
        body = await read_body(request)
        signed = verify_hubspot(secret, request.method, str(request.url), request.headers, body)
        return await accept(request, "hubspot", signed, hubspot_events(parse_json(body)))

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Temporal and the app database are reachable")
    async def readyz() -> JSONResponse:
        database = True
        try:
            async with intake.sessions() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            database = False
        temporal = await intake.link.ping()
        ready = database and temporal
        return JSONResponse(
            {
                "status": "ready" if ready else "not ready",
                "database": database,
                "temporal": temporal,
            },
            status_code=200 if ready else 503,
        )

    return app


Factory = Callable[[], Intake]
