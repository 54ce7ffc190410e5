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
