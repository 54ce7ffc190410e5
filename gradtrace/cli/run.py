"""`gradtrace run SCRIPT [ARGS]...`: run a script as python would, recording autograd."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import click

from ..config import Config, parse_step_range
from ..errors import GradtraceError, UsageError
from ..tracefile.lock import TraceLock
from ..tracefile.outputs import outputs_of
from .common import info, shown_path


def default_output(script: str | None, module: str | None) -> Path:
    stem = Path(script).stem if script else (module or "module").rsplit(".", 1)[-1]
    return Path("gradtrace-out") / stem / "trace.gtrace"


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-m", "module", metavar="MODULE", help="Run a library module as a script (like python -m).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The trace file to write [default: gradtrace-out/<script>/trace.gtrace]; a "
                   "file there that is not a trace is never overwritten.")
@click.option("--values", type=click.Choice(["full", "stats"]), default="full", show_default=True,
              help="Keep full tensor values (up to --max-numel elements) or statistics only.")
@click.option("--max-numel", type=click.IntRange(min=0), default=Config.max_value_numel,
              show_default=True, help="Largest tensor, in elements, whose full value is kept.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Record every N-th step only (the others run at near full speed).")
@click.option("--steps", "step_range", metavar="A:B", default=None,
              help="Record only steps A to B-1 (e.g. 0:10, 100:).")
@click.option("--report/--no-report", "write_report", default=True, show_default=True,
              help="Write report.html (summary, checks, graphs, animations) next to the trace "
                   "(NAME.report.html for a trace NAME.gtrace).")
@click.option("--animate/--no-animate", default=True, show_default=True,
              help="Write backprop.gif and training.gif next to the trace (NAME.backprop.gif... "
                   "for NAME.gtrace; runs of up to 5000 steps).")
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, module, output, values, max_numel, every, step_range, write_report, script, args,
        **feature_options):
    """Run SCRIPT with ARGS exactly as `python SCRIPT ARGS` would, recording what autograd does.

    The script's stdout and exit code are its own; gradtrace's lines go to stderr. The
    trace file is written step by step, so an interrupted run keeps every finished step
    (and a full disk every step written before it filled).

    The files made next to the trace are named after it: graph.svg, backprop.gif,
    training.gif, figure-N.png and report.html for a trace named trace.gtrace,
    NAME.graph.svg and so on for NAME.gtrace. Those of an earlier run of the same trace
    are removed first, and one run at a time writes a trace: a second run with the same
    -o stops at once.
    """
    if module is None and script is None:
        raise UsageError("give a script to run (gradtrace run SCRIPT [ARGS]...) or -m MODULE")
    if module is not None and script is not None:
        args = (script, *args)  # with -m everything after the module goes to it
        script = None
    out = Path(output) if output else default_output(script, module)
    if out.exists() and out.is_dir():
        raise UsageError(f"-o {out} is a directory; give a file path such as {out}/trace.gtrace")
    config = Config(output=out, values=values, max_value_numel=max_numel, every=every,
                    step_range=parse_step_range(step_range))
    outputs = outputs_of(out)
    # One run per trace, from before anything is replaced until its report is written: a
    # second run on the same path stops here with one line, before its script starts.
    with TraceLock(out):
        code = _run(ctx, config, outputs, script, module, args, write_report)
    ctx.exit(code)


def _run(ctx, config: Config, outputs, script, module, args, write_report) -> int:
    """The run and what is made from it; the script's exit code."""
    from ..record.session import run_script  # torch: only a run needs it, not --help

    out = outputs.trace
    try:
        result = run_script(config, script, module, list(args), outputs=outputs)
    except SyntaxError as e:  # the script's own error, shown as python shows it
        traceback.print_exception(type(e), e, None)
        return 1
    session = result.session
    totals = session.totals
    sys.stdout.flush()
    acc = totals.get("accumulate_fresh", 0) + totals.get("accumulate_added", 0)
    on_top = totals.get("accumulate_on_top", 0)
    added = f"{totals.get('accumulate_added', 0)} added"
    if on_top:
        added += f", {on_top} of them on top of a gradient that was not zeroed"
    info(f"{totals.get('steps', 0)} steps, {totals.get('ops', 0)} ops, {totals.get('backward', 0)} "
         f"backward passes, {acc} accumulations ({totals.get('accumulate_fresh', 0)} fresh, "
         f"{added}), {totals.get('zero', 0)} zeroings, {totals.get('update', 0)} updates")
    if result.status != "completed":
        info(f"the script {result.status} (exit code {result.exit_code}); the trace keeps every "
             "finished step")
    from ..record import mplbackend

    for fig in mplbackend.SAVED:
        info(f"figure saved: {shown_path(fig)}")
    for line in mplbackend.FAILED:
        info(f"figure not saved: {line}")
    shown = shown_path(out)
    if result.fault is not None:
        # The script's exit code stays its own: the fault is said, on one line, and the
        # steps the file keeps are still checked and drawn below (each failure one line).
        info(f"error: {result.fault}")
    else:
        info(f"trace saved: {shown}")
    try:
        trace = session.result
    except GradtraceError:
        return result.exit_code  # the file could not be read back: the line above says why
    if result.status == "interrupted":
        # Ctrl-C means stop now: the checks, pictures and report can be made later.
        info(f"interrupted: no checks, graph or report; `gradtrace report {shown}` makes them")
        return result.exit_code
    made = _after_run(trace, outputs, ctx)
    info(f"next: gradtrace summary {shown}")
    if write_report:
        from ..render.report import build_report

        try:
            # what the steps above made is reused, not made again: the check, step 0's graph
            path = build_report(trace, outputs.report, outputs=outputs, render_missing=False, warn=info,
                                check_result=made.get("check"), step_graphs=made.get("graphs"),
                                missing_animations=made.get("animations_missing"))
            info(f"report: {shown_path(path)}")  # last: the page to open
        except GradtraceError as e:
            info(f"report skipped: {e}")
        except Exception as e:
            info(f"report failed (a gradtrace bug, please report it): {type(e).__name__}: {e}")
    return result.exit_code


def _after_run(trace, outputs, ctx) -> dict[str, Any]:
    """What `run` makes from the trace once the script has finished, named by ``outputs``
    (the trace's). A failure here is reported on one line and never changes the script's
    exit code. Returns what the actions left for the report (``made``: ``"check"``, the
    check report; ``"graphs"``, step number -> picture drawn in the ``both`` view)."""
    made: dict[str, Any] = {}
    for name, action in _AFTER_RUN:
        try:
            action(trace, outputs, ctx, made)
        except GradtraceError as e:
            info(f"{name} skipped: {e}")
        except Exception as e:  # a bug of ours must not change the script's exit code
            info(f"{name} failed (a gradtrace bug, please report it): {type(e).__name__}: {e}")
    return made


#: (name, action(trace, outputs, ctx, made)) run in order after the script; each feature adds
#: its own, and may leave in ``made`` what a later one (the report) would otherwise redo.
_AFTER_RUN: list = []
_AFTER_RUN.append(("graph", lambda trace, outputs, ctx, made: __import__("gradtrace.cli.graph", fromlist=["after_run"]).after_run(trace, outputs, ctx, made)))  # noqa: E501
_AFTER_RUN.append(("check", lambda trace, outputs, ctx, made: __import__("gradtrace.cli.check", fromlist=["after_run"]).after_run(trace, outputs, ctx, made)))  # noqa: E501
_AFTER_RUN.append(("animate", lambda trace, outputs, ctx, made: __import__("gradtrace.cli.animate", fromlist=["after_run"]).after_run(trace, outputs, ctx, made)))  # noqa: E501
