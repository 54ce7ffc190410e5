"""Helpers shared by the commands: loading a trace, paths as the user types them, echo to stderr."""

from __future__ import annotations

import os

import click

from ..tracefile.ranks import RankedRun, load
from ..tracefile.store import Trace

__all__ = ["load_trace", "info", "progress_bar", "shown_path", "trace_argument"]

trace_argument = click.argument("trace_path", metavar="TRACE", type=click.Path(dir_okay=True))


def load_trace(path: str) -> Trace | RankedRun:
    """The trace at ``path``; a distributed run's folder (or one rank's file) as all its ranks."""
    return load(path)


def info(message: str) -> None:
    """A `gradtrace:` line on stderr (stdout belongs to the user's script)."""
    click.echo(f"gradtrace: {message}", err=True)


def progress_bar(label: str):
    """A ``progress(done, total)`` callback for the render layer, drawn as a click progress bar
    on stderr; a new bar starts when ``done`` starts again (the next animation)."""
    state: dict = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None or done <= state["done"]:
            if bar is not None:
                bar.__exit__(None, None, None)
            bar = state["bar"] = click.progressbar(
                length=total, label=f"gradtrace: rendering {label}", file=click.get_text_stream("stderr"),
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
    """A path as the user would type it: relative to the current directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
