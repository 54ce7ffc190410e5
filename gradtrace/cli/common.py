"""Helpers shared by the commands: loading a trace, paths as the user types them, echo to stderr."""

from __future__ import annotations

import os

import click

from ..tracefile.store import Trace, load

__all__ = ["load_trace", "info", "shown_path", "trace_argument"]

trace_argument = click.argument("trace_path", metavar="TRACE", type=click.Path(dir_okay=True))


def load_trace(path: str) -> Trace:
    return load(path)


def info(message: str) -> None:
    """A `gradtrace:` line on stderr (stdout belongs to the user's script)."""
    click.echo(f"gradtrace: {message}", err=True)


def shown_path(path) -> str:
    """A path as the user would type it: relative to the current directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
