"""The files made next to a trace (graph, animations, figures, report): one naming rule for all.

A trace named ``trace.gtrace`` (the default of `gradtrace run`) keeps the short names in its
folder: ``graph.svg``, ``backprop.gif``, ``training.gif``, ``figure-1.png``, ``report.html``.
Any other trace puts its stem in front, so that traces sharing a folder never share an
output: ``runs/a.gtrace`` -> ``runs/a.graph.svg``, ``runs/a.backprop.gif``,
``runs/a.training.gif``, ``runs/a.figure-1.png``, ``runs/a.report.html``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

__all__ = ["Outputs", "outputs_of", "DEFAULT_NAME"]

#: The trace name whose outputs have no prefix.
DEFAULT_NAME = "trace.gtrace"
ANIMATION_KINDS = ("backprop", "training")


class Outputs:
    """The paths of one trace's outputs (whether they exist or not)."""

    def __init__(self, trace_path):
        self.trace = Path(trace_path)
        self.folder = self.trace.parent
        self.prefix = "" if self.trace.name == DEFAULT_NAME else f"{self.trace.stem}."
        self._figure = re.compile(re.escape(self.prefix) + r"figure-([1-9][0-9]*)\.png")

    def _named(self, name: str) -> Path:
        return self.folder / f"{self.prefix}{name}"

    @property
    def graph(self) -> Path:
        return self._named("graph.svg")

    @property
    def report(self) -> Path:
        return self._named("report.html")

    def animation(self, kind: str) -> Path:
        return self._named(f"{kind}.gif")

    def figure(self, n: int) -> Path:
        """The ``n``-th figure the script showed (from 1)."""
        return self._named(f"figure-{n}.png")

    def figures(self, since: float | None = None) -> list[Path]:
        """This trace's figure files, in the order they were shown; with ``since`` (a time
        stamp) only those written at or after it."""
        found = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.folder):
                m = self._figure.fullmatch(entry.name)
                if m and entry.is_file() and (since is None or entry.stat().st_mtime >= since):
                    found.append((int(m[1]), Path(entry.path)))
        return [p for _, p in sorted(found)]

    def all(self) -> list[Path]:
        """Every output of this trace that is there now."""
        fixed = [self.graph, self.report, *(self.animation(k) for k in ANIMATION_KINDS)]
        return [p for p in fixed if p.is_file()] + self.figures()

    def remove(self) -> list[Path]:
        """Delete this trace's outputs (those of an earlier run that a new run replaces, so
        that none of them can pass for the new run's); the paths removed."""
        removed = []
        for p in self.all():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
        return removed

    def current_animation(self, kind: str) -> Path | None:
        """The animation file of ``kind`` if it was made from the trace as it is now (not
        older than the trace file); None otherwise."""
        path = self.animation(kind)
        try:
            return path if path.stat().st_mtime_ns >= self.trace.stat().st_mtime_ns else None
        except OSError:
            return None

    def __repr__(self) -> str:
        return f"<Outputs of {self.trace}>"


def outputs_of(trace_path) -> Outputs:
    """The outputs of the trace at ``trace_path`` (see the module docstring for the rule)."""
    return Outputs(trace_path)
