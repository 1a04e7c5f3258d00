"""Pacing a customer's events to what its recovery workflow decides.

A workflow decides a customer's events one after another (each rule's CEL condition takes
milliseconds), while a sender can signal hundreds a second. Left alone, the undecided events
pile up in the run: past 10,000 signals the server refuses the next one, and a run cannot
continue as new while signals keep arriving during its workflow task (the server refuses
the continue-as-new, the worker replays the run and tries again, and meanwhile more arrive).
So every sender of recovery events (the intake's relay, `recovery.deliver_event`) asks the
run for its backlog after every CHECK_EVERY events it sent a customer, and holds that
customer's next events while HIGH_WATER or more wait undecided, or while no worker answers.
The pause it makes is the window in which the run continues as new; the events held are not
lost, only later. Each sender process counts on its own, so N senders may each send
CHECK_EVERY events between two looks: far below the server's 10,000 signals per run.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta

from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from activities.recovery_contracts import BACKLOG_QUERY

CHECK_EVERY = 200
HIGH_WATER = 1_000
"""Undecided events at which a customer's next events wait: minutes of work at the slowest
(catalog rules decide 16 to 100 events a second), small enough that a run carries them through
continue-as-new well under Temporal's 2 MB payload limit."""
REMEMBERED_CUSTOMERS = 10_000
_QUERY_TIMEOUT = timedelta(seconds=2)
_NO_ANSWER = {RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}
_UNREACHABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.UNKNOWN, RPCStatusCode.INTERNAL}


class CustomerBusy(Exception):
    """The customer's workflow has `backlog` events to decide; send the next one later."""

    def __init__(self, workflow_id: str, backlog: int | None) -> None:
        self.workflow_id = workflow_id
        self.backlog = backlog
        waiting = "did not answer" if backlog is None else f"has {backlog} events to decide"
        super().__init__(f"{workflow_id} {waiting}: its next events wait")


class CustomerPacing:
    """Counts the events sent to each customer's workflow (the most recent
    REMEMBERED_CUSTOMERS customers) and asks for the backlog every `check_every`."""

    def __init__(self, check_every: int = CHECK_EVERY, high_water: int = HIGH_WATER) -> None:
        self.check_every = check_every
        self.high_water = high_water
        self._sent: OrderedDict[str, int] = OrderedDict()

    async def before_sending(self, client: Client, workflow_id: str) -> None:
        """Return when an event may go to `workflow_id` now; raise CustomerBusy if not."""
        if self._sent.get(workflow_id, 0) < self.check_every:
            return
        try:
            backlog: int = await client.get_workflow_handle(workflow_id).query(
                BACKLOG_QUERY, result_type=int, rpc_timeout=_QUERY_TIMEOUT
            )
        except (WorkflowQueryRejectedError, WorkflowQueryFailedError):
            backlog = 0  # the run is closed or older than the query: nothing piles up there
        except RPCError as exc:
            if exc.status in _NO_ANSWER:  # no worker, or one busy: ask again later
                raise CustomerBusy(workflow_id, None) from exc
            if exc.status in _UNREACHABLE:
                raise  # the sender's own handling of an unreachable Temporal applies
            backlog = 0  # no such run, or another refusal: the event itself will tell
        if backlog >= self.high_water:
            raise CustomerBusy(workflow_id, backlog)
        self._sent[workflow_id] = 0

    def sent(self, workflow_id: str) -> None:
        self._sent[workflow_id] = self._sent.get(workflow_id, 0) + 1
        self._sent.move_to_end(workflow_id)
        if len(self._sent) > REMEMBERED_CUSTOMERS:
            self._sent.popitem(last=False)
