"""An update that reached a run as it continued as new.

A run that continues as new while an update waits to be accepted aborts that update
(`NOT_FOUND`, "workflow update was aborted by closing workflow"): it never ran, and the
workflow id now names the new run, so whoever sent it (the CLI, the intake, an activity)
sends it again rather than report the workflow gone.
"""

from __future__ import annotations

from temporalio.service import RPCError, RPCStatusCode

ABORTED_BY_CLOSE = "aborted by closing workflow"


def aborted_by_close(exc: RPCError) -> bool:
    """The update reached a run that closed (continued as new) before accepting it."""
    return exc.status == RPCStatusCode.NOT_FOUND and ABORTED_BY_CLOSE in exc.message
