"""Helpers shared by the commands: loading a trace, step selection, echo to stderr."""

from __future__ import annotations

import click

from ..errors import UsageError
from ..trace.store import Trace, load

__all__ = ["load_trace", "info", "pick_step", "trace_argument"]

trace_argument = click.argument("trace_path", metavar="TRACE", type=click.Path(dir_okay=True))


def load_trace(path: str) -> Trace:
    return load(path)


def info(message: str) -> None:
    """A `gradtrace:` line on stderr (stdout belongs to the user's script)."""
    click.echo(f"gradtrace: {message}", err=True)


def pick_step(trace: Trace, spec: str | int | None):
    """A step by run step number, or 'first' / 'last' (None = first)."""
    steps = trace.steps
    if len(steps) == 0:
        raise UsageError(f"{trace.path} has no recorded steps (did the script call backward()?)")
    if spec is None or spec == "first":
        return steps[0]
    if spec == "last":
        with_bw = [i for i in range(len(steps)) if steps[i].backward is not None]
        return steps[with_bw[-1] if with_bw else -1]
    try:
        n = int(spec)
    except (TypeError, ValueError):
        raise UsageError(f"--step takes a step number, 'first' or 'last', not {spec!r}") from None
    try:
        return trace.step(n)
    except KeyError:
        idx = steps.indices
        raise UsageError(f"step {n} was not recorded; recorded steps are {idx[0]}..{idx[-1]}"
                         + (f" ({len(idx)} of them)" if len(idx) != idx[-1] - idx[0] + 1 else "")) from None
