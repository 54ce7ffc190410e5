"""`gradtrace report TRACE`: the self-contained HTML page of a recorded run."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from ..errors import GradtraceError, TraceFileError
from ..tracefile.outputs import Outputs, outputs_of
from .common import info, load_trace, trace_argument


def build_report(trace, out: Path, *, outputs: Outputs | None = None, animations: bool = True,
                 render_missing: bool = True, progress: bool = False) -> Path:
    """Gather the sections (checks, graphs of the first and last step, both animations, the
    script's figures) and write the page. Only this trace's files are embedded (``outputs``,
    by default those named after ``trace.path``): an animation next to it is reused if it is
    not older than the trace file, a figure if it was written during or after the run;
    missing animations are rendered only if ``render_missing``. A section that cannot be
    made is left out with a line on stderr."""
    from ..render.report import write_report

    outputs = outputs or outputs_of(trace.path)
    sections: dict = {}
    try:
        sections["check_result"] = trace.check()
    except TraceFileError:
        raise  # the file itself is bad: one line for the whole report, not one per section
    except GradtraceError as e:
        info(f"report: checks left out ({e})")
    graphs = {}
    steps = trace.steps
    if len(steps):
        from ..render.graph import graph_of_step

        picks = [("first", steps[0])]
        with_bw = [i for i in range(len(steps)) if steps[i].backward is not None]
        if with_bw and with_bw[-1] != 0:
            picks.append(("last", steps[with_bw[-1]]))
        for label, step in picks:
            try:
                graphs[f"Step {step.index} ({label}), forward values and gradients"] = \
                    graph_of_step(step, view="both").svg()
            except TraceFileError:
                raise
            except GradtraceError as e:
                info(f"report: graph of step {step.index} left out ({e})")
    sections["graphs"] = graphs
    if animations and len(steps):
        anims = {}
        for kind, title in (("backprop", "Back-propagation, one step"), ("training", "Training over time")):
            path = outputs.current_animation(kind)
            if path is None:
                if not render_missing:
                    continue
                path = outputs.animation(kind)
                try:
                    trace.animate(kind=kind).save(path, progress=progress)
                except TraceFileError:
                    raise
                except GradtraceError as e:
                    info(f"report: {kind} animation left out ({e})")
                    continue
            anims[title] = path
        sections["animations"] = anims
    sections["figures"] = outputs.figures(since=_started(trace))
    return write_report(trace, out, **sections)


def _started(trace) -> float | None:
    """When the run began (its trace's ``created``, to the second), as a time stamp."""
    try:
        return datetime.datetime.fromisoformat(trace.info.created).timestamp()
    except (GradtraceError, ValueError, TypeError):
        return None


@click.command()
@trace_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the page [default: report.html next to the trace, "
                   "NAME.report.html for NAME.gtrace].")
@click.option("--animations/--no-animations", default=True, show_default=True,
              help="Include both animations (rendered if they are not next to the trace yet).")
def report(trace_path, output, animations):
    """Write one self-contained HTML page: summary, checks and findings, graphs of the first
    and last step, both animations, the loss curve and the zero/accumulate/update timeline."""
    trace = load_trace(trace_path)
    out = Path(output) if output else outputs_of(trace.path).report
    path = build_report(trace, out, animations=animations, progress=True)
    info(f"report: {path}")
