"""The project's expected errors: bad input from outside the program (a params file, a model or
photo file, a name that is not registered). Entry points (``stages.run``, the CLI) print these as
one line naming the file or name and exit non-zero; any other exception is a bug and keeps its
traceback.

The subclasses also derive from the built-in error a caller would expect (``FileNotFoundError``,
``KeyError``, ``ValueError``), so ``except KeyError`` around a registry lookup still works.
"""


class InputError(Exception):
    """Base class: bad input, reported as one line (``str(exc)``)."""


class MissingFileError(InputError, FileNotFoundError):
    """A file the program needs is not there (with what to run or install to make it)."""


class UnknownNameError(InputError, KeyError, ValueError):
    """A name that is not registered (or not a valid value); the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BadValueError(InputError, ValueError):
    """A file or setting that exists but is malformed or inconsistent."""
