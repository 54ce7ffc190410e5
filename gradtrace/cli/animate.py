"""`gradtrace animate TRACE`: back-propagation step by step, or training over time, as GIF/MP4/HTML."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import click

from ..errors import GradtraceError, RenderError, UsageError
from ..render.animate import FORMATS, KINDS, AnimateOptions, animation_of_trace, mp4_available
from ..tracefile.outputs import Outputs, outputs_of
from .common import info, load_trace, problem, progress_bar, shown_path, trace_argument

__all__ = ["animate", "after_run", "RUN_MAX_STEPS"]

#: `gradtrace run` animates runs of up to this many recorded steps by itself (longer ones
#: are subsampled anyway, but reading every step to find the trajectory takes a while).
RUN_MAX_STEPS = 5000


@click.command()
@trace_argument
@click.option("--kind", type=click.Choice(KINDS), default="training", show_default=True,
              help="backprop: one step, op by op and node by node; training: the run over time.")
@click.option("--step", "step_spec", default=None, metavar="N|first|last",
              help="backprop: the step to explain [default: the second step, the first in which "
                   ".grad can already hold something].")
@click.option("-o", "--output", "outputs", multiple=True, metavar="OUT",
              help="OUT.gif, .mp4, .html (a self-contained player) or .png (one frame, see "
                   "--still); repeat for several [default: <kind>.gif next to the trace, "
                   "NAME.<kind>.gif for NAME.gtrace].")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True, max=100), default=None,
              help="Frames per second [default: 1 for backprop, 12 for training].")
@click.option("--frames", type=click.IntRange(min=2), default=None,
              help="Frame budget: longer runs are subsampled, bigger graphs show several ops per "
                   "frame [default: 80 for backprop, 180 for training].")
@click.option("--dpi", type=click.IntRange(20, 600), default=None,
              help="Pixels per inch [default: 80 for backprop, 72 for training].")
@click.option("--size", default=None, metavar="WxH",
              help="Frame size in pixels, e.g. 1920x1080 (a side over 40 is pixels), or in "
                   "inches, e.g. 12x6.75 (pixels = size x dpi) [default: 1920x1080 for "
                   "backprop, 12x6.75 inches for training].")
@click.option("--still", type=int, default=None, metavar="I",
              help="For .png output: the frame to write (negative counts from the end) "
                   "[default: the last].")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="A progress bar on stderr while rendering.")
def animate(trace_path, kind, step_spec, outputs, fps, frames, dpi, size, still, progress):
    """Animate a recorded run from its trace (nothing is re-run).

    \b
    --kind backprop   one step: the forward ops light up in order with their values, then
                      backward() from the loss in autograd's order with the gradient on
                      each edge, .grad accumulation (fresh / onto zeros / ADDED to an old
                      gradient), the update and the zeroing, with a caption per frame.
    --kind training   the run: loss, the parameters' path on the loss surface with the
                      optimum, the data and the fitted line, gradient norms, event strip.

    Examples:

    \b
      gradtrace animate gradtrace-out/linreg/trace.gtrace --kind backprop --step 1
      gradtrace animate TRACE -o training.gif -o training.html --frames 120
    """
    trace = load_trace(trace_path)
    paths = [Path(o) for o in outputs] or [outputs_of(trace.path).animation(kind)]
    bar = progress_bar(", ".join(p.name for p in paths if p.suffix.lower() in FORMATS)) if progress else False
    options = AnimateOptions(kind=kind, step=step_spec, fps=fps, frames=frames, dpi=dpi,
                             size=_inches(size, kind, dpi), progress=bar)
    for p in paths:
        if p.suffix.lower() not in (*FORMATS, ".png"):
            raise UsageError(f"-o {p}: unknown format; use .gif, .mp4, .html or .png")
    no_mp4 = [p for p in paths if p.suffix.lower() == ".mp4"] if not mp4_available() else []
    if no_mp4 and len(no_mp4) == len(paths):
        raise RenderError(f"{shown_path(no_mp4[0])}: MP4 needs ffmpeg, which matplotlib cannot find; "
                          "install ffmpeg, or ask for .gif or .html")
    for p in no_mp4:
        problem(f"{shown_path(p)} skipped: MP4 needs ffmpeg, which matplotlib cannot find")
    started = time.perf_counter()
    checks = None
    if kind == "backprop":  # a failed gradient check is shown on the frames it concerns
        from .check import _check

        checks = _check(trace)
    anim = animation_of_trace(trace, kind=kind, checks=checks, **_options_dict(options))
    if anim.note:
        info(f"note: {anim.note}")
    movies = [p for p in paths if p.suffix.lower() in FORMATS and p not in no_mp4]
    if movies:
        anim.save_all(movies)
        for p in movies:
            info(f"{kind} animation: {shown_path(p)} ({len(anim)} frames)")
    for p in paths:
        if p.suffix.lower() == ".png":
            i = len(anim) - 1 if still is None else still
            if not -len(anim) <= i < len(anim):
                raise UsageError(f"--still {i}: the animation has frames 0..{len(anim) - 1}")
            anim.save_frame(i, p)
            info(f"{kind} frame {i % len(anim)} (of frames 0-{len(anim) - 1}): {shown_path(p)}")
    info(f"rendered in {time.perf_counter() - started:.1f} s")


#: A side longer than this is in pixels: sizes in inches go up to 40 (AnimateOptions).
_MAX_INCHES = 40


def _inches(size: str | None, kind: str, dpi: int | None) -> tuple[float, float] | str | None:
    """``--size``: pixels (``1920x1080``) become inches at the frame's dpi; inches pass on
    to AnimateOptions, which checks them."""
    if size is None:
        return None
    parts = re.split(r"[x×,]", size.strip().lower().removesuffix("px"))
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        return size   # AnimateOptions says what is wrong with it
    if max(w, h) <= _MAX_INCHES and not size.strip().lower().endswith("px"):
        return (w, h)
    per_inch = dpi if dpi is not None else AnimateOptions(kind=kind).resolved().dpi
    assert per_inch is not None  # resolved() filled it in
    return (w / per_inch, h / per_inch)


def _options_dict(options: AnimateOptions) -> dict:
    return {k: getattr(options, k) for k in ("step", "fps", "frames", "dpi", "size", "progress")}


def after_run(trace, outputs: Outputs, ctx, made: dict[str, Any] | None = None) -> None:
    """`gradtrace run --animate` writes backprop.gif and training.gif next to the trace, named
    by ``outputs`` (small runs); without it one line says how to make them. Each kind is made on its own: one
    that cannot be made is one line, and its reason is left in ``made["animations_missing"]``
    (kind -> reason) for the report."""
    params = ctx.params if ctx is not None else {}
    missing: dict[str, str] = {} if made is None else made.setdefault("animations_missing", {})
    rows = trace.step_rows()
    if not any(r["has_backward"] for r in rows):
        # (with --animate or not: a command that would make nothing is not suggested)
        why = "no recorded step has a backward pass, so there is no gradient to animate"
        if params.get("animate", True):
            info(f"animations skipped: {why}")
        for kind in ("backprop", "training"):
            missing[kind] = f"skipped: {why}"
        return
    if not params.get("animate", True):
        # off the user's path: said once (unless --no-animate asked for none), with the
        # command that makes them from the trace
        shown = shown_path(Path(trace.path))
        source = ctx.get_parameter_source("animate") if ctx is not None else None
        if source is None or source.name != "COMMANDLINE":
            info(f"animations: gradtrace animate {shown} --kind backprop (or --kind training); "
                 "or run with --animate")
        for kind in ("backprop", "training"):
            missing[kind] = (f"gradtrace run makes it only with --animate; make it from the "
                             f"trace with: gradtrace animate {shown} --kind {kind}")
        return
    if len(rows) > RUN_MAX_STEPS:
        shown = shown_path(Path(trace.path))
        info(f"animations skipped: {len(rows)} steps recorded (more than {RUN_MAX_STEPS}); "
             f"make them with: gradtrace animate {shown}")
        for kind in ("backprop", "training"):
            missing[kind] = (f"skipped: {len(rows)} steps recorded (more than {RUN_MAX_STEPS}), "
                             f"use gradtrace animate {shown} --kind {kind}")
        return
    for kind in ("backprop", "training"):
        path = outputs.animation(kind)
        try:
            # the check computed once above it: the backprop frames show what failed
            checks = made.get("check") if made is not None and kind == "backprop" else None
            anim = animation_of_trace(trace, kind=kind, progress=progress_bar(path.name),
                                      checks=checks)
            anim.save(path)
        except GradtraceError as e:
            problem(f"{kind} animation skipped: {e}")
            missing[kind] = f"skipped: {e}"
            continue
        except Exception as e:  # a bug of ours: the other kind is still made
            problem(f"{kind} animation failed (a gradtrace bug, please report it): "
                 f"{type(e).__name__}: {e}")
            missing[kind] = f"failed (a gradtrace bug, please report it): {type(e).__name__}: {e}"
            continue
        info(f"{kind} animation: {shown_path(path)}")
