"""Client-side operations on escalation cases, shared by the command line and the intake.

One module per role, so a command imports only what its role needs: reading a case
(client/case_read.py: what `case show` and `case list` use), commanding it
(client/case_commands.py), opening it (client/case_open.py: the CRM, the policy's CEL match,
the registry, the workflow) and migrating it (client/case_migrate.py). This module gathers
them under their old names for the intake, the simulator and the tests; importing it imports
every role."""

from __future__ import annotations

from client.case_commands import ACTION_FAILED, CaseCommandRefused, command_case
from client.case_migrate import (
    DEFAULT_MIGRATION_RATE,
    CaseMigration,
    ClockMove,
    MigrationOutcome,
    MigrationPacer,
    PolicyVersions,
    cases_matching,
    migrate_case,
    migrate_cases,
    migration_target,
    plan_clocks,
)
from client.case_open import (
    OpenedCase,
    PolicyCandidate,
    check_customer,
    choose_policy,
    ensure_ticket,
    explain_policies,
    match_context,
    open_case,
    policies_in_order,
    policy_refusal,
)
from client.case_read import (
    BROKEN_STATES,
    CLOSED_STATES,
    QUERY_TIMEOUT,
    CaseView,
    close_reason,
    parse_policy_ref,
    read_case,
)

__all__ = [
    "ACTION_FAILED",
    "BROKEN_STATES",
    "CLOSED_STATES",
    "DEFAULT_MIGRATION_RATE",
    "QUERY_TIMEOUT",
    "CaseCommandRefused",
    "CaseMigration",
    "CaseView",
    "ClockMove",
    "MigrationOutcome",
    "MigrationPacer",
    "OpenedCase",
    "PolicyCandidate",
    "PolicyVersions",
    "cases_matching",
    "check_customer",
    "choose_policy",
    "close_reason",
    "command_case",
    "ensure_ticket",
    "explain_policies",
    "match_context",
    "migrate_case",
    "migrate_cases",
    "migration_target",
    "open_case",
    "parse_policy_ref",
    "plan_clocks",
    "policies_in_order",
    "policy_refusal",
    "read_case",
]
