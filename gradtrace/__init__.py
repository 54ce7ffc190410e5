"""gradtrace: make PyTorch autograd visible — record, check and draw what backward does."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config  # noqa: E402
from .errors import GradtraceError, RenderError, TraceFileError, UsageError  # noqa: E402

__all__ = [
    "__version__", "trace", "load", "Trace", "Config", "GradtraceError", "TraceFileError",
    "UsageError", "RenderError", "Step", "Op", "Backward", "GradNode", "Event", "Value",
    "Stats", "Source", "TensorInfo", "RunInfo",
]

#: Names imported on first use (PEP 562), so `import gradtrace` and `gradtrace --help` do
#: not import torch: name -> the module that defines it.
_LAZY = {
    "trace": ".record.session",
    "load": ".tracefile.store", "Trace": ".tracefile.store",
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
