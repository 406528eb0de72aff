"""Errors users see: each names what is wrong and, where it can, what to do."""


class EdgezooError(Exception):
    """Base of the project's expected failures (the CLI prints one line and exits non-zero)."""

    exit_code = 2
