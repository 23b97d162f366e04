"""The command line's expected failures: one line ``<file>: <problem>`` and an exit status."""

from __future__ import annotations

EXIT_INPUT, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 1, 2, 3, 130


class CliError(Exception):
    """An expected failure: one line ``<file>: <problem>``, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code
