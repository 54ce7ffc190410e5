"""The HTML report: the explorer page (one self-contained file, no network) with the checks,
every step of the run, and the animations and figures made next to the trace."""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import CHECK_MAX_STEPS
from ..errors import GradtraceError, RenderError, TraceFileError
from ..tracefile.outputs import Outputs, outputs_of
from .explorer import page_of
from .explorer_data import DEFAULT_BUDGET

__all__ = ["build_report", "write_report", "report_html"]

def _img_data(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def report_html(trace, *, check_result=None, animations: Mapping[str, Path] | None = None,
                figures: list[Path] | None = None, missing_animations: Mapping[str, str] | None = None,
                budget: int = DEFAULT_BUDGET, warn: Callable[[str], None] | None = None) -> str:
    """The report page: the explorer of ``trace`` (see :mod:`gradtrace.render.explorer`).
    ``check_result``: its :class:`~gradtrace.analysis.check.CheckReport` (None: no checks);
    ``animations``: title -> GIF path; ``missing_animations``: title -> why that animation is
    not there; ``figures``: the script's PNG figures; ``budget``: bytes of per-step data."""
    return page_of(trace, check_result, budget=budget, warn=warn,
                   animations={k: _img_data(Path(v), "image/gif") for k, v in (animations or {}).items()},
                   missing_animations=missing_animations,
                   figures=[_img_data(Path(f), "image/png") for f in figures or []])


def write_report(trace, path, **sections) -> Path:
    """Write the report page to ``path``; see :func:`report_html` for the sections."""
    path = Path(path)
    try:
        text = report_html(trace, **sections)
    except GradtraceError:
        raise
    except (OSError, ValueError) as e:
        raise RenderError(f"cannot build the report ({e})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        with contextlib.suppress(OSError):  # no half-written page (a full disk)
            if path.is_file():
                path.unlink()
        raise RenderError(f"cannot write {path} ({e.strerror}); choose another path with -o") from None
    return path


NOT_MADE_YET = "not made yet: `gradtrace animate TRACE` or `gradtrace report --animate TRACE` makes it"


def build_report(trace, out, *, outputs: Outputs | None = None, animations: bool = True,
                 render_missing: bool = True, progress: Callable[[int, int], None] | bool | None = None,
                 warn: Callable[[str], None] | None = None, check_result: Any = None,
                 missing_animations: Mapping[str, str] | None = None) -> Path:
    """Gather the sections (checks, both animations, the script's figures) and write the
    explorer page. What the caller has made already is used instead of being made again:
    ``check_result``, the :class:`~gradtrace.analysis.check.CheckReport` of
    ``check_trace(trace, max_steps=CHECK_MAX_STEPS)`` (what `gradtrace check` makes).
    Only this trace's files are embedded (``outputs``, by default those named after
    ``trace.path``): an animation next to it is reused if it is not older than the trace
    file, a figure if it was written during or after the run;
    missing animations are rendered only if ``render_missing`` (``progress`` as in
    :class:`~gradtrace.render.animate.AnimateOptions`); otherwise the page says how to make
    them. A section that cannot be made is left
    out, with a line to ``warn`` (the CLI prints it on stderr); an animation left out says
    why on the page: the reason in ``missing_animations`` (kind -> reason, from the caller
    that tried to make it) or the error that stopped its rendering here."""
    from ..analysis.check import check_trace
    from ..analysis.distributed import check_ranks
    from ..tracefile.ranks import RankedRun
    from .animate import animation_of_trace

    warn = warn or (lambda message: None)
    out = Path(out)
    outputs = outputs or outputs_of(trace.path)
    sections: dict = {}
    try:
        if check_result is None:  # a distributed run: every rank's checks and those across ranks
            check_result = (check_ranks(trace, max_steps=CHECK_MAX_STEPS) if isinstance(trace, RankedRun)
                            else check_trace(trace, max_steps=CHECK_MAX_STEPS))
        sections["check_result"] = check_result
    except TraceFileError:
        raise  # the file itself is bad: one line for the whole report, not one per section
    except GradtraceError as e:
        warn(f"report: checks left out ({e})")
    steps = trace.steps
    if animations and len(steps):
        anims = {}
        missing = {}
        told = missing_animations or {}
        for kind, title in (("backprop", "Back-propagation, one step"), ("training", "Training over time")):
            path = outputs.current_animation(kind)
            if path is None:
                if not render_missing:  # the page says how to make it
                    missing[title] = told.get(kind, NOT_MADE_YET)
                    continue
                path = outputs.animation(kind)
                try:
                    animation_of_trace(trace, kind=kind).save(path, progress=progress or False)
                except TraceFileError:
                    raise
                except GradtraceError as e:
                    warn(f"report: {kind} animation left out ({e})")
                    missing[title] = f"skipped: {e}"
                    continue
                except Exception as e:  # a bug of ours: the rest of the report still comes
                    why = f"failed (a gradtrace bug, please report it): {type(e).__name__}: {e}"
                    warn(f"report: {kind} animation {why}")
                    missing[title] = why
                    continue
            anims[title] = path
        sections["animations"] = anims
        sections["missing_animations"] = missing
    sections["figures"] = outputs.figures(since=_started(trace))
    return write_report(trace, out, warn=warn, **sections)


def _started(trace) -> float | None:
    """When the run began (its trace's ``created``, to the second), as a time stamp."""
    try:
        return _dt.datetime.fromisoformat(trace.info.created).timestamp()
    except (GradtraceError, ValueError, TypeError):
        return None

