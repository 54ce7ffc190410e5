"""The one exception family gradtrace raises for problems a user can cause."""

from __future__ import annotations

__all__ = ["GradtraceError", "TraceFileError", "UsageError", "RenderError"]


class GradtraceError(Exception):
    """Base class: a message that says what went wrong and what to do about it."""

    exit_code = 2


class TraceFileError(GradtraceError):
    """A trace file is missing, foreign, newer, truncated or corrupt."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}")


class UsageError(GradtraceError):
    """Bad options or arguments (a missing script, an unwritable output path...)."""


class RenderError(GradtraceError):
    """A picture or animation could not be produced."""
