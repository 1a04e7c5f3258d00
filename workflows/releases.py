"""Which changes a run takes: one patch marker per run for all of them, not one per change.

A change to the commands a workflow issues is guarded by a patch: a run recorded before the
change replays the old path. Every patch a new run takes costs it a marker and sdk-core's
upsert of `TemporalChangeVersion` (two history events, one of them a billable action), and
the changes add up: a new recovery run took eleven, 22 of its 52 events. So the changes are
gathered into releases. A run that starts on a release's code takes every change the release
lists under one marker, the release's id; a run recorded before the release has no such
marker, so it asks for each change where it always did and replays as it was recorded.

Guard a new change with `has_change("its-id")`; the next release lists it (a new release
lists every change before it, and goes first in RELEASES)."""

from __future__ import annotations

from temporalio import workflow

RELEASES: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "opsflow-release-2026-12",
        frozenset(
            {
                "approval-notices",
                "consecutive-failures",
                "deliver-sla-breach",
                "escalation-action-failures",
                "escalation-concurrent-actions",
                "escalation-due-at-stuck",
                "escalation-ledger-in-batches",
                "escalation-one-timer-per-deadline",
                "escalation-sla-metrics",
                "exposure-record",
                "handoff-case-acknowledged",
                "handoff-case-closed",
                "handoff-due-at",
                "handoff-first-come-first-served",
                "handoff-ticket-searchable",
                "handoff-transcript-by-size",
                "handoff-triggers-by-meaning",
                "notify-level-moment",
                "phase-scoped-revert",
                "recovery-approval-notices",
                "recovery-chunks-in-one-task",
                "recovery-continue-mid-stream",
                "recovery-contract-names",
                "recovery-end-when-quiet",
                "recovery-episode-contact",
                "recovery-events-in-chunks",
                "recovery-recall-with-profile",
                "recovery-remember-across-runs",
                "recovery-stalls-in-hours",
                "recovery-upsert-on-change",
                "recovery-wake-flag-at-pass-start",
                "retry-fresh-approvals",
                "rollout-due-at-stuck",
            }
        ),
    ),
)
"""Newest first: a run asks for the newest release that lists the change, then older ones
(a run recorded on an older release's code has that release's marker only)."""


def has_change(change: str) -> bool:
    """Whether this run takes `change`: by a release's marker when one lists it, else by the
    change's own patch (a run recorded before every release that lists it). Workflow code
    only, and at the same point on every replay, as `workflow.patched`."""
    for release, changes in RELEASES:
        if change in changes and workflow.patched(release):
            return True
    return workflow.patched(change)
