"""`gradtrace report TRACE`: the self-contained HTML page of a recorded run."""

from __future__ import annotations

from pathlib import Path

import click

from ..tracefile.outputs import outputs_of
from ..tracefile.ranks import RankedRun
from .common import info, load_trace, progress_bar, shown_path, trace_argument


@click.command()
@trace_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the page [default: report.html next to the trace, "
                   "NAME.report.html for NAME.gtrace].")
@click.option("--animations/--no-animations", default=True, show_default=True,
              help="Include both animations: those already next to the trace (from `gradtrace "
                   "run --animate` or `gradtrace animate`), and the others with --animate.")
@click.option("--animate/--no-animate", default=False, show_default=True,
              help="Render the animations that are not next to the trace yet (seconds to tens of "
                   "seconds on a long run); without it the page says how to make them.")
def report(trace_path, output, animations, animate):
    """Write the explorer: one self-contained HTML page (works offline) with the verdict, a
    step scrubber over every step, the loss curve and zero/accumulate/update timeline, each
    step's graph with an inspector, backward in autograd's order, the script line by line,
    the findings and checks, and both animations."""
    from ..render.report import build_report  # numpy and the renderers: only when a page is made

    trace = load_trace(trace_path)
    # a distributed run's outputs are named after the run's path, beside its rank files
    outputs = outputs_of(trace.run_path if isinstance(trace, RankedRun) else trace.path)
    out = Path(output) if output else outputs.report
    path = build_report(trace, out, outputs=outputs, animations=animations,
                        render_missing=animate,
                        progress=progress_bar("report animations"), warn=info)
    info(f"report: {shown_path(path)}")
