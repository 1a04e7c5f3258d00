"""The base of every error a person can act on (a bad argument, a definition that does not
exist, a server out of reach): the command line and the intake print its message as one line.

It lives in the bottom layer so that every part (the registry in store/, the intake, the
process in worker/) may raise it without importing a layer above it.
"""

from __future__ import annotations


class OpsflowError(Exception):
    """A problem with the user's input or environment, explained in the message."""
