"""Errors a person can act on: the command line prints their message as one line."""


class OpsflowError(Exception):
    """A problem with the user's input or environment, explained in the message."""
