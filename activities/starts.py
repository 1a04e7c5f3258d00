"""`start` actions: a workflow hands its subject's customer to another definition's workflow.

A workflow cannot signal-with-start another, so this activity does it with the worker's own
client. The named definition must be a deployed recovery definition (a customer's recovery
workflow, `customer-<id>`, runs every deployed rule set; lint refuses other kinds); the
event it is signalled with has a fixed id, so a retried or repeated start counts once.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from activities.models import StartDefinition
from activities.recovery_events import RecoveryEventActivities
from store.registry import DefinitionNotFound, latest


class StartActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._sessions = deps.sessions
        self._recovery = RecoveryEventActivities(deps)

    @activity.defn(name="definitions.start")
    async def start(self, request: StartDefinition) -> str:
        """Signal-with-start the named definition's workflow; returns its workflow id."""
        try:
            pinned = await latest(self._sessions, request.definition)
        except DefinitionNotFound as exc:
            raise ApplicationError(str(exc), type="NotFound", non_retryable=True) from None
        if pinned.kind != "recovery":
            raise ApplicationError(
                f"{pinned.ref} is a {pinned.kind} definition: `start` hands a customer to a "
                "recovery definition only",
                type="InvalidRequest",
                non_retryable=True,
            )
        workflow_id = await self._recovery.deliver_event(request.event)
        activity.logger.info("started %s for %s", pinned.ref, workflow_id)
        return workflow_id
