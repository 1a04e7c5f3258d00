"""Errors of the process a person can act on (the base, `OpsflowError`, is in definitions/)."""

from definitions.errors import OpsflowError


class TemporalUnreachable(OpsflowError):
    """Temporal could not be reached (refused, timed out, TLS or DNS failure): a condition
    that passes, so whoever holds work for Temporal keeps it and tries again later."""
