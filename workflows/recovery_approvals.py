"""The approval gate of the recovery core: a credit above a rule's `approval_above` waits for
its approvers (told at once and reminded before the deadline, N of M when the gate asks for
more than one), and on timeout is skipped, escalated once or approved at a reduced amount.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from activities.models import SendMessage
from definitions.common import Action, CreditAction
from workflows.recovery_context import LoadedRule, Plan, RecoveryBasis, action_class
from workflows.recovery_model import ApprovalStatus, Decision, Episode, PendingApproval

APPROVAL_TEMPLATE = "credit-approval"
# The definitions language names chat channels by product; the notify activity by kind.
NOTICE_CHANNELS = {
    "email": "email",
    "slack": "chat",
    "chat": "chat",
    "pager": "pager",
    "webhook": "webhook",
}


class ApprovalDecisions(RecoveryBasis):
    """Requesting, counting, deciding and timing out approvals."""

    def _use_caps(
        self, rule_id: str, actions: list[Action], now: datetime, class_name: str | None = None
    ) -> None:
        for action in actions:
            name = action_class(action) or class_name
            if name is not None:
                self.state.caps.setdefault(name, []).append(now)

    def _request_approval(
        self,
        loaded: LoadedRule,
        episode: Episode,
        credit: CreditAction,
        decision: Decision,
        now: datetime,
    ) -> Plan:
        gate = loaded.rule.approval
        assert gate is not None
        s = self.state
        s.approval_count += 1
        approval = PendingApproval(
            id=s.approval_count,
            rule=loaded.id,
            ref=loaded.ref,
            episode=episode.id,
            step=f"d{decision.seq}-credit-{s.approval_count}",
            amount=credit.amount,
            currency=credit.currency,
            reason=credit.reason,
            group=gate.approvers,
            members=list(gate.members),
            requested_by=gate.requester or loaded.owner,
            requested_at=now,
            deadline=now + gate.timeout,
            on_timeout=gate.on_timeout,
            escalate_to=gate.escalate_to,
            reduced_amount=gate.reduced_amount,
            timeout=gate.timeout,
            required=gate.required,
            channel=gate.channel,
            remind_at=now + gate.timeout - (gate.remind_before or gate.timeout / 4)
            if self.approver_notices
            else None,
        )
        s.approvals.append(approval)
        detail = approval.model_dump(mode="json")
        return Plan(
            "approval",
            f"approval-{approval.id}-requested",
            detail,
            loaded.ref,
            notice="request" if self.approver_notices else None,
            approval=approval,
        )

    def _approval_timeout(self, approval: PendingApproval, now: datetime) -> list[Plan]:
        if approval.on_timeout == "escalate" and not approval.escalated:
            approval.escalated = True
            approval.group = approval.escalate_to or approval.group
            approval.members = []
            approval.approved_by = []
            approval.deadline = now + approval.timeout
            approval.remind_at = (
                now + (approval.remind_at - approval.requested_at) if (approval.remind_at) else None
            )
            approval.reminded = False
            detail = {"approval": approval.id, "escalated_to": approval.group}
            return [
                Plan(
                    "approval",
                    f"approval-{approval.id}-escalated",
                    detail,
                    approval.ref,
                    notice="request" if self.approver_notices else None,
                    approval=approval,
                )
            ]
        if approval.on_timeout == "approve_reduced" and approval.reduced_amount is not None:
            amount = min(approval.reduced_amount, approval.amount)
            return self.decide_approval(
                approval, "approved_reduced", "timeout", now, amount, "timed out"
            )
        return self.decide_approval(approval, "skipped", "timeout", now, None, "timed out")

    def approval_refusal(self, approval_id: int | None, by: str) -> str | None:
        """Why `by` may not decide the approval (None: they may)."""
        approval = self.state.approval(approval_id)
        if approval is None:
            which = f"approval {approval_id}" if approval_id is not None else "approval"
            return f"no {which} is waiting for customer {self.state.customer_id}"
        if by == approval.requested_by:
            return f"{by} requested this credit and cannot approve it"
        if approval.members and by not in approval.members:
            return f"{by} is not in the approver group {approval.group}"
        if by in approval.approved_by:
            return f"{by} has already approved; it needs {approval.required} different approvers"
        return None

    def add_approval(
        self,
        approval: PendingApproval,
        by: str,
        now: datetime,
        amount: Decimal | None,
        note: str | None,
    ) -> list[Plan] | None:
        """Count `by`'s approval; the plans when more approvers are still needed, None when
        this one completes it (the caller then decides the approval)."""
        if len(approval.approved_by) + 1 >= approval.required:
            approval.approved_by.append(by)
            return None
        approval.approved_by.append(by)
        detail = {
            "approval": approval.id,
            "approved_by": by,
            "approvals": len(approval.approved_by),
            "required": approval.required,
            "note": note,
        }
        step = f"approval-{approval.id}-approved-{len(approval.approved_by)}"
        return [Plan("approval", step, detail, approval.ref)]

    def decide_approval(
        self,
        approval: PendingApproval,
        status: ApprovalStatus,
        by: str,
        now: datetime,
        amount: Decimal | None,
        note: str | None,
    ) -> list[Plan]:
        approval.status, approval.decided_by, approval.decided_at = status, by, now
        approval.note = note
        detail: dict[str, Any] = {
            "approval": approval.id,
            "rule": approval.rule,
            "status": status,
            "by": by,
            "requested": f"{approval.amount} {approval.currency}",
        }
        if status not in ("approved", "approved_reduced") or amount is None:
            return [Plan("approval", f"approval-{approval.id}-{status}", detail, approval.ref)]
        approval.applied_amount = amount
        detail["applied"] = f"{amount} {approval.currency}"
        credit = CreditAction(
            type="credit", amount=amount, currency=approval.currency, reason=approval.reason
        )
        self._use_caps(approval.rule, [credit], now, class_name="credit")
        episode = next((e for e in self.state.episodes if e.id == approval.episode), None)
        context = self.template_context(
            {"type": "approval"}, episode, {"amount": str(amount), "currency": approval.currency}
        )
        return [Plan("credit", approval.step, detail, approval.ref, [credit], context)]

    def approver_messages(
        self,
        approval: PendingApproval,
        notice: Literal["request", "reminder"],
        step: str,
        context: dict[str, Any],
        workflow_id: str,
    ) -> list[SendMessage]:
        """What the approvers are told (one message each, or one to the group): what is
        asked, how much, for whom, until when, and the exact command to answer."""
        customer = self.state.customer_id
        command = f"opsflow recovery approve {customer} --approval {approval.id} --by <you>"
        told = dict(context)
        told["action"] = {
            "notice": notice,
            "approval": approval.id,
            "amount": str(approval.amount),
            "currency": approval.currency,
            "reason": approval.reason,
            "customer": customer,
            "group": approval.group,
            "required": approval.required,
            "approvals": len(approval.approved_by),
            "deadline": self.local_time(approval.deadline),
            "on_timeout": approval.on_timeout,
            "command": command,
            "reject": f"opsflow recovery reject {customer} --approval {approval.id} --by <you>",
        }
        recipients = [f"agent:{m}" for m in approval.members] or [f"team:{approval.group}"]
        return [
            SendMessage(
                idempotency_key=f"{workflow_id}/{step}/notice/{n}",
                channel=NOTICE_CHANNELS.get(approval.channel, "chat"),
                recipient=recipient,
                template=APPROVAL_TEMPLATE,
                context=told,
                severity="info",
            )
            for n, recipient in enumerate(recipients)
        ]
