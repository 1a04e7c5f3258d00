"""Errors a person can act on: the command line prints their message as one line."""


class OpsflowError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class TemporalUnreachable(OpsflowError):
    """Temporal could not be reached (refused, timed out, TLS or DNS failure): a condition
    that passes, so whoever holds work for Temporal keeps it and tries again later."""
