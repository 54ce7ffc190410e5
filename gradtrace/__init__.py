"""gradtrace: make PyTorch autograd visible — record, check and draw what backward does."""

from __future__ import annotations

from .version import __version__
from .config import Config  # noqa: E402
from .errors import GradtraceError, RenderError, TraceFileError, UsageError  # noqa: E402

__all__ = [
    "__version__", "trace", "load", "Trace", "Config", "GradtraceError", "TraceFileError",
    "UsageError", "RenderError", "Step", "Op", "Backward", "GradNode", "Event", "Value",
    "Stats", "Source", "TensorInfo", "RunInfo", "RankedRun",
]

#: Names imported on first use (PEP 562), so `import gradtrace` and `gradtrace --help` do
#: not import torch: name -> the module that defines it.
_LAZY = {
    "trace": ".record.session",
    "load": ".tracefile.ranks", "Trace": ".tracefile.reader", "RankedRun": ".tracefile.ranks",
    **{name: ".tracefile.model" for name in (
        "Backward", "Event", "GradNode", "Op", "RunInfo", "Source", "Stats", "Step",
        "TensorInfo", "Value")},
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


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

