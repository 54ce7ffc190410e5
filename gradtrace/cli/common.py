"""Helpers shared by the commands: loading a trace, paths as the user types them, echo to stderr."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

import click

from ..errors import UsageError
from ..tracefile.ranks import RankedRun, load
from ..tracefile.store import Trace

__all__ = ["load_trace", "info", "detail", "problem", "say", "own_stderr", "level", "progress_bar",
           "shown_path", "trace_argument", "OUT_FOLDER", "most_recent_trace", "SETTINGS", "VERBOSITY",
           "START_DIR", "STDERR"]

#: Where `gradtrace run` writes its traces by default, and where readers look for one.
OUT_FOLDER = Path("gradtrace-out")

#: Readers take TRACE, or the most recent trace under gradtrace-out/ when it is left out.
trace_argument = click.argument("trace_path", metavar="[TRACE]", required=False, default=None,
                                type=click.Path(dir_okay=True))

#: ``ctx.meta`` keys of the root context: the settings gathered (config.Settings), and the
#: --quiet / --verbose asked for, as (rank, "quiet"|"verbose") where a higher rank wins:
#: 1 the file, 2 the environment, 3 the command line before the command, 4 after it.
SETTINGS = "gradtrace.settings"
#: ``ctx.meta`` key of the root context: the stream gradtrace's own lines go to, the
#: ``sys.stderr`` the command started with (a script may replace it, or close it).
STDERR = "gradtrace.stderr"
#: ``ctx.meta`` key of the root context: the directory `gradtrace run` started in, set before
#: the script runs (it may ``os.chdir``); paths are shown from there, and made absolute.
START_DIR = "gradtrace.start_dir"
VERBOSITY = "gradtrace.verbosity"
_LEVEL = "gradtrace.level"


def load_trace(path: str | None) -> Trace | RankedRun:
    """The trace at ``path``; a distributed run's folder (or one rank's file) as all its
    ranks. Without a path, the most recent trace under gradtrace-out/, said on stderr."""
    if path is None:
        found = most_recent_trace()
        info(f"no TRACE given: reading the most recent trace, {shown_path(found)}")
        path = str(found)
    return load(path)


def most_recent_trace(folder: Path | None = None) -> Path:
    """The most recently written ``*.gtrace`` under ``folder`` (gradtrace-out/ here, and
    the trace that ``[tool.gradtrace.run] output`` names, when it is set and exists)."""
    folder = OUT_FOLDER if folder is None else folder
    found: list[tuple[float, str]] = []
    if folder.is_dir():
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
            if Path(root).relative_to(folder).parts.__len__() >= 4:
                dirs[:] = []
            for name in files:
                if name.endswith(".gtrace"):
                    p = os.path.join(root, name)
                    try:
                        found.append((os.stat(p).st_mtime, p))
                    except OSError:
                        continue
    configured = _setting_value("run.output")
    if configured is not None and Path(configured).is_file():
        found.append((os.stat(configured).st_mtime, str(configured)))
    if not found:
        raise UsageError(f"no TRACE given and no trace under {shown_path(folder)}/ here "
                         f"({shlex.quote(os.getcwd())}); give the trace's path, or record one "
                         "with: gradtrace run SCRIPT")
    return Path(max(found)[1])


def _setting_value(dotted: str):
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_root().meta.get(SETTINGS) if ctx is not None else None
    s = settings.get(dotted) if settings is not None else None
    return None if s is None else s.value


def level() -> str:
    """``quiet``, ``normal`` or ``verbose``: the --quiet / --verbose (or their settings)
    of the highest rank; on the command line the last one given; both set by the file,
    or both by the environment, is a usage error."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return "normal"
    root = ctx.find_root()
    if _LEVEL in root.meta:
        return root.meta[_LEVEL]
    notes = root.meta.get(VERBOSITY, [])
    result = "normal"
    if notes:
        top = max(rank for rank, _ in notes)
        names = {name for rank, name in notes if rank == top}
        if top >= 3:  # on the command line the last of them wins
            names = {[name for rank, name in notes if rank == top][-1]}
        if len(names) > 1:
            where = {1: "in the settings file", 2: "in the environment (GRADTRACE_QUIET and "
                     "GRADTRACE_VERBOSE)"}[top]
            raise UsageError(f"quiet and verbose both set {where}; choose one")
        result = names.pop()
    root.meta[_LEVEL] = result
    return result


def own_stderr():
    """Where gradtrace's own lines go: the ``sys.stderr`` the command started with
    (:data:`STDERR`), whatever a script under `gradtrace run` did to ``sys.stderr`` since."""
    ctx = click.get_current_context(silent=True)
    stream = ctx.find_root().meta.get(STDERR) if ctx is not None else None
    return stream if stream is not None else sys.stderr


def say(line: str, stream=None) -> None:
    """Write one line of gradtrace's on ``stream`` (:func:`own_stderr`). A stream the script
    closed (or one that fails) is passed by: the line goes to file descriptor 2, and no
    error of writing it ever reaches the user or the exit code."""
    stream = own_stderr() if stream is None else stream
    try:
        click.echo(line, file=stream)
        return
    except Exception:  # closed (ValueError), a broken pipe, a stream with no write
        pass
    with contextlib.suppress(OSError):
        os.write(2, f"{line}\n".encode("utf-8", "backslashreplace"))


def info(message: str) -> None:
    """A `gradtrace:` line on stderr (stdout belongs to the user's script); not under --quiet."""
    if level() != "quiet":
        say(f"gradtrace: {message}")


def detail(message: str) -> None:
    """A line for --verbose only."""
    if level() == "verbose":
        say(f"gradtrace: {message}")


def problem(message: str) -> None:
    """A line about something gradtrace could not do: shown even under --quiet."""
    say(f"gradtrace: {message}")


def progress_bar(label: str):
    """A ``progress(done, total)`` callback for the render layer, drawn as a click progress bar
    on stderr; a new bar starts when ``done`` starts again (the next animation). None on a
    stderr the script closed."""
    state: dict = {}
    if level() == "quiet" or getattr(own_stderr(), "closed", True):
        return lambda done, total: None

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None or done <= state["done"]:
            if bar is not None:
                bar.__exit__(None, None, None)
            bar = state["bar"] = click.progressbar(
                length=total, label=f"gradtrace: rendering {label}", file=own_stderr(),
                show_pos=True, show_eta=True)
            bar.__enter__()
            state["done"] = 0
        bar.update(done - state["done"])
        state["done"] = done
        if done >= total:
            bar.__exit__(None, None, None)
            state["bar"] = None

    return update


def shown_path(path) -> str:
    """A path as the user would type it, ready to paste into a shell: relative to the
    directory the command started in (:data:`START_DIR`; a script under `gradtrace run` may
    change directory) when inside it, and quoted (``'gradtrace-out/my run/trace.gtrace'``)
    when it has a space or another character a shell reads."""
    ctx = click.get_current_context(silent=True)
    start = ctx.find_root().meta.get(START_DIR) if ctx is not None else None
    try:
        text = os.path.relpath(path, start)
    except ValueError:
        text = str(path)
    return shlex.quote(text)
