"""Ticketing activities: create, read and update tickets, add comments."""

from __future__ import annotations

from temporalio import activity

from activities.deps import ActivityDeps
from activities.models import (
    AddComment,
    CommentAdded,
    CreateTicket,
    GetTicket,
    Ticket,
    UpdateTicket,
)
from activities.outbox import Outbox


class TicketingActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps
        self._outbox = Outbox(deps.sessions)

    @activity.defn(name="ticketing.create_ticket")
    async def create_ticket(self, request: CreateTicket) -> Ticket:
        ticketing = self._deps.resolved_backends.ticketing
        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="ticketing",
            operation="create_ticket",
            backend=ticketing,
            result_type=Ticket,
            act=lambda effect: ticketing.create_ticket(effect, request),
        )

    @activity.defn(name="ticketing.get_ticket")
    async def get_ticket(self, request: GetTicket) -> Ticket:
        return await self._deps.resolved_backends.ticketing.get_ticket(request.ticket_id)

    @activity.defn(name="ticketing.update_ticket")
    async def update_ticket(self, request: UpdateTicket) -> Ticket:
        ticketing = self._deps.resolved_backends.ticketing
        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="ticketing",
            operation="update_ticket",
            backend=ticketing,
            result_type=Ticket,
            act=lambda effect: ticketing.update_ticket(effect, request),
        )

    @activity.defn(name="ticketing.add_comment")
    async def add_comment(self, request: AddComment) -> CommentAdded:
        ticketing = self._deps.resolved_backends.ticketing
        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="ticketing",
            operation="add_comment",
            backend=ticketing,
            result_type=CommentAdded,
            act=lambda effect: ticketing.add_comment(effect, request),
        )
