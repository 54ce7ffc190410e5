"""gradtrace: make PyTorch autograd visible — record, check and draw what backward does."""

from __future__ import annotations

from .version import __version__
from .config import Config  # noqa: E402
from .errors import GradtraceError, RenderError, TraceFileError, UsageError  # noqa: E402
from .record.session import trace  # noqa: E402
from .tracefile.model import (  # noqa: E402
    Backward, Event, GradNode, Op, RunInfo, Source, Stats, Step, TensorInfo, Value,
)
from .tracefile.store import Trace, load  # noqa: E402

__all__ = [
    "__version__", "trace", "load", "Trace", "Config", "GradtraceError", "TraceFileError",
    "UsageError", "RenderError", "Step", "Op", "Backward", "GradNode", "Event", "Value",
    "Stats", "Source", "TensorInfo", "RunInfo",
]


# -- conveniences: trace.check(), trace.animate(), step.graph() --------------------------------
# The trace file layer cannot import the layers above it, so the facade lends them these
# implementations; each imports its layer on first use.
def _check(trace, **options):
    from .analysis.check import check_trace

    return check_trace(trace, **options)


def _animate(trace, kind="training", **options):
    from .render.animate import animation_of_trace

    return animation_of_trace(trace, kind=kind, **options)


def _graph(step, view="both", **options):
    from .render.graph import graph_of_step

    return graph_of_step(step, view=view, **options)


def _register_conveniences() -> None:
    from .tracefile import conveniences

    conveniences.register("check", _check)
    conveniences.register("animate", _animate)
    conveniences.register("graph", _graph)


_register_conveniences()

