"""Errors a user can cause and fix: the CLI prints them as one line and exits."""


class XaiError(Exception):
    """A runtime failure with a message that names the problem and the fix (exit 1)."""

    exit_code = 1


class XaiUsageError(XaiError):
    """A bad option or argument combination (exit 2, like Click's usage errors)."""

    exit_code = 2
