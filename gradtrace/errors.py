"""The one exception family gradtrace raises for problems a user can cause."""

from __future__ import annotations

from typing import Any

__all__ = ["GradtraceError", "TraceFileError", "TraceWriteError", "UsageError", "ConfigError", "RenderError",
           "NoSuchModuleError", "NothingToDrawError", "NotRecordedError", "FrameIndexError", "NotApplicableError",
           "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_CHECK_FAILED"]

# The exit codes of the `gradtrace` command (docs/cli.md lists them; `gradtrace run` is
# the exception: it exits with the script's own code once the script has started).
#: Everything went well.
EXIT_OK = 0
#: gradtrace could not do its job: an internal error, a full disk, an unwritable folder or
#: output file, out of memory, a missing program (graphviz's dot, ffmpeg).
EXIT_FAILURE = 1
#: Usage or bad input: a missing script, an unknown option, a file that is not a trace, a
#: corrupt trace, a step that was not recorded.
EXIT_USAGE = 2
#: `gradtrace check`: a gradient check failed (or, under --strict, there is a finding).
EXIT_CHECK_FAILED = 3


class GradtraceError(Exception):
    """Base class: a message that says what went wrong and what to do about it.

    ``exit_code`` is what the `gradtrace` command exits with when this error stops it."""

    exit_code = EXIT_USAGE


class TraceFileError(GradtraceError):
    """A trace file is missing, foreign, newer, truncated or corrupt."""

    exit_code = EXIT_USAGE

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}")


class TraceWriteError(TraceFileError):
    """A trace file could not be written: an unwritable folder, a full disk."""

    exit_code = EXIT_FAILURE


class UsageError(GradtraceError):
    """Bad options or arguments (a missing script, a step that does not exist...)."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A setting in ``[tool.gradtrace]`` or a ``GRADTRACE_*`` variable that gradtrace does
    not know, or whose value is bad: one line naming the key and where it was set."""

    exit_code = EXIT_USAGE

    def __init__(self, where: str, key: str, problem: str):
        self.where = where
        self.key = key
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{where}: {key}: {self.problem}")


class NoSuchModuleError(UsageError):
    """`gradtrace run -m MODULE` cannot run MODULE (not found, a package without
    ``__main__``...): python's own message, and python's exit code 1."""

    exit_code = EXIT_FAILURE


class RenderError(GradtraceError):
    """A picture or animation could not be produced or written (a full disk, no `dot`)."""

    exit_code = EXIT_FAILURE


class NothingToDrawError(UsageError, RenderError):
    """The picture asked for has nothing to show (a step without a backward pass)."""

    exit_code = EXIT_USAGE


class _LookupMessage:
    """``str()`` is the message itself (``KeyError`` would quote it)."""

    args: tuple[Any, ...]  # from the exception class it is mixed into

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotRecordedError(_LookupMessage, UsageError, KeyError):
    """A step or op asked for by number is not in the trace; still a ``KeyError``."""


class FrameIndexError(_LookupMessage, UsageError, IndexError):
    """A frame number outside an animation; still an ``IndexError``."""


class NotApplicableError(GradtraceError):
    """Asked a fit for something its model does not have (the optimum of a softmax...)."""
