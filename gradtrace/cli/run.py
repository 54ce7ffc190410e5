"""`gradtrace run SCRIPT [ARGS]...`: run a script as python would, recording autograd."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from ..config import DEFAULT_BUDGET, Config, parse_size, parse_step_range
from ..errors import GradtraceError, UsageError
from ..tracefile.lock import TraceLock
from ..tracefile.outputs import outputs_of
from ..tracefile.ranks import RankInfo, rank_files, rank_path
from ..tracefile.ranks import load as load_run
from .common import OUT_FOLDER, START_DIR, info, level, problem, shown_path
from .settings import not_a_setting


def default_output(script: str | None, module: str | None) -> Path:
    stem = Path(script).stem if script else (module or "module").rsplit(".", 1)[-1]
    return OUT_FOLDER / stem / "trace.gtrace"


class NotASetting(click.Option):
    """``-m MODULE`` names what to run, like SCRIPT: no setting of the file sets it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        not_a_setting(self, "what to run, like SCRIPT")


class _RunCommand(click.Command):
    """Parses like python: options of ours come first; the first word that is not one of
    them is the script, and ``-m MODULE`` ends our options too. Everything after the
    script or the module is the script's, options included; an unknown option before it
    is a usage error naming it (exit 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _module_ends_options(args, self.get_params(ctx)))


def _module_ends_options(args: list[str], params) -> list[str]:
    """``args`` with a ``--`` put after ``-m MODULE`` (or ``-mMODULE``), so that click
    parses nothing after it: what follows goes to the module, as after a script."""
    valued = {name for p in params if isinstance(p, click.Option) and not p.is_flag
              and not p.count for name in (*p.opts, *p.secondary_opts)}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break  # the script (or an explicit end of our options): click handles the rest
        if arg == "-m":
            if i + 1 == len(args):
                break  # click says that -m needs a value
            return [*args[:i + 2], "--", *args[i + 2:]]
        if arg.startswith("-m") and not arg.startswith("--"):
            return [*args[:i], "-m", arg[2:], "--", *args[i + 1:]]
        if arg.startswith("--"):
            i += 2 if "=" not in arg and arg in valued else 1
        else:
            i += 2 if arg[:2] in valued and len(arg) == 2 else 1
    return args


@click.command(cls=_RunCommand, context_settings={"allow_interspersed_args": False})
@click.option("-m", "module", metavar="MODULE",
              help="Run a library module as a script (like python -m): everything after "
                   "MODULE goes to it, as everything after SCRIPT goes to the script.",
              cls=NotASetting)
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
@click.option("--full", is_flag=True, default=False,
              help="Record every step in full, whatever the budget (every step keeps its loss "
                   "and norms anyway).")
@click.option("--budget", metavar="SIZE", default=f"{DEFAULT_BUDGET >> 20}MB", show_default=True,
              help="Bytes of trace for the steps recorded in full (e.g. 200MB, 2GB): the first "
                   "steps, then steps spaced ever wider, and the steps after something happens.")
@click.option("--report/--no-report", "write_report", default=True, show_default=True,
              help="Write report.html (the explorer: checks, every step's graph, animations) next to the trace "
                   "(NAME.report.html for a trace NAME.gtrace).")
@click.option("--animate/--no-animate", default=False, show_default=True,
              help="Also write backprop.gif and training.gif next to the trace "
                   "(NAME.backprop.gif... for NAME.gtrace; runs of up to 5000 steps). Off by "
                   "default: they take longer than a small run itself, and the report shows "
                   "every step without them; `gradtrace animate TRACE` makes them later.")
@click.option("--rank-wait", type=click.FloatRange(min=0), default=120.0, show_default=True,
              metavar="SECONDS",
              help="Under torchrun: how long rank 0 waits, once its script ended, for the other "
                   "ranks' traces to be finished before it checks and draws them.")
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, module, output, values, max_numel, every, step_range, full, budget, write_report,
        rank_wait,
        script, args, **feature_options):
    """Run SCRIPT with ARGS exactly as `python SCRIPT ARGS` would, recording what autograd does.

    The script's stdout and exit code are its own; gradtrace's lines go to stderr. Every
    step keeps its loss and norms; the first steps, then spaced ones and those after
    something happens are recorded in full, within --budget. The trace file is written
    step by step, so an interrupted run keeps every finished step (kill -9: all but the
    last 0.2 s), and a full disk every step written before it filled.

    The files made next to the trace are named after it: graph.svg, backprop.gif,
    training.gif, figure-N.png and report.html for a trace named trace.gtrace,
    NAME.graph.svg and so on for NAME.gtrace. Those of an earlier run of the same trace
    are removed first, and one run at a time writes a trace: a second run with the same
    -o stops at once.

    Under torchrun (RANK and WORLD_SIZE set) each rank writes its own trace,
    trace.rank<R>.gtrace next to where the trace would be; rank 0 waits for the others
    (--rank-wait) and writes the graph, checks, animations and report for all of them.
    """
    if module is None and script is None:
        raise UsageError("give a script to run (gradtrace run SCRIPT [ARGS]...) or -m MODULE")
    if module is not None and script is not None:
        args = (script, *args)  # with -m everything after the module goes to it
        script = None
    out = Path(output) if output else default_output(script, module)
    if out.exists() and out.is_dir():
        raise UsageError(f"-o {shown_path(out)} is a directory; give a file path such as "
                         f"{shown_path(out / 'trace.gtrace')}")
    ranks = RankInfo.from_env()
    path = out if ranks is None else rank_path(out, ranks.rank)
    config = Config(output=path, values=values, max_value_numel=max_numel, every=every,
                    step_range=parse_step_range(step_range), full=full, budget=parse_size(budget))
    # The script may change directory (os.chdir): everything made after it is named by its
    # absolute path, taken now, and shown from here.
    ctx.find_root().meta[START_DIR] = os.getcwd()
    out, path = Path(os.path.abspath(out)), Path(os.path.abspath(path))
    # The run's outputs are named after the run's path; under torchrun rank 0 makes them
    # (and a rank's figures carry its rank, so that ranks never share a file).
    outputs = outputs_of(out)
    if ranks is not None and ranks.rank != 0:
        outputs = outputs_of(path)
    # One run per trace, from before anything is replaced until its report is written: a
    # second run on the same path stops here with one line, before its script starts.
    with TraceLock(config.output):  # as given: a second run is told the path it gave
        if ranks is not None and ranks.rank == 0:
            _remove_stale_ranks(out, ranks.world_size)
        code = _run(ctx, config, outputs, script, module, args, write_report,
                    ranks=ranks, run_path=out, rank_wait=rank_wait)
    if ctx.meta.get(_KILLED_BY):
        raise ScriptKilled(ctx.meta[_KILLED_BY])  # the trace is saved and its lock let go
    ctx.exit(code)


#: ``ctx.meta`` key: the signal that stopped the script, when one did.
_KILLED_BY = "gradtrace.run.killed_by"


class ScriptKilled(BaseException):
    """The script was stopped by a signal (SIGINT, SIGTERM) that python would have died
    by: raised past click (a BaseException, not a KeyboardInterrupt, so click does not
    turn it into "Aborted!") to :func:`gradtrace.cli.main`, which calls :func:`die_by`."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def die_by(signum: int) -> None:
    """End this process the way python ends on ``signum``, so that whoever started it
    sees death by that signal (returncode -N, a shell's 128+N).

    SIGINT: python lets its KeyboardInterrupt reach the top, runs its exit handlers
    (atexit), then kills itself by SIGINT. So does this: a bare KeyboardInterrupt is
    raised to the interpreter with an excepthook that prints nothing for it (the script's
    traceback is already shown). Other signals (SIGTERM): python dies at once, exit
    handlers unrun; so does this, once stdout and stderr are flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the script may have closed them
            stream.flush()
    if signum == signal.SIGINT:
        hook = sys.excepthook

        def quiet(typ, value, tb):
            if typ is not KeyboardInterrupt:
                hook(typ, value, tb)

        sys.excepthook = quiet
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # only where the signal did not kill (a platform without it)


def _remove_stale_ranks(run_path: Path, world_size: int) -> None:
    """Rank traces of an earlier, bigger run of the same path (ranks this run does not
    have): removed, so that none of them passes for a rank of this run."""
    from ..tracefile.store import is_trace

    found = rank_files(run_path.parent) if run_path.parent.is_dir() else None
    if found is None or found[0] != run_path:
        return
    for rank, p in found[1].items():
        if rank >= world_size and is_trace(p, replacing=True):
            with contextlib.suppress(OSError):
                p.unlink()


def _run(ctx, config: Config, outputs, script, module, args, write_report, *,
         ranks: RankInfo | None = None, run_path: Path | None = None,
         rank_wait: float = 0.0) -> int:
    """The run and what is made from it; the script's exit code."""
    from ..record.session import run_script  # torch: only a run needs it, not --help

    out = Path(os.path.abspath(config.output)) if config.output is not None else outputs.trace
    try:
        result = run_script(config, script, module, list(args), outputs=outputs,
                            quiet=level() == "quiet")
    except SyntaxError as e:  # the script's own error, shown as python shows it
        traceback.print_exception(type(e), e, None)
        return 1
    ctx.meta[_KILLED_BY] = result.signal
    if result.forked:  # a child the script forked, ending as the script's child: not a word
        return result.exit_code
    session = result.session
    totals = session.totals
    with contextlib.suppress(Exception):  # the script's stdout first; it may have closed it
        sys.stdout.flush()
    acc = totals.get("accumulate_fresh", 0) + totals.get("accumulate_added", 0)
    on_top = totals.get("accumulate_on_top", 0)
    added = f"{totals.get('accumulate_added', 0)} added"
    if on_top:
        added += f", {on_top} of them on top of a gradient that was not zeroed"
    kept, seen = session.steps_kept, session.steps_seen
    # the counts are of the steps recorded in full: said so when that is not every step
    steps = f"{kept} steps" if kept >= seen else f"{seen} steps; in the {kept} recorded in full"
    info(f"{steps}, {totals.get('ops', 0)} ops, {totals.get('backward', 0)} "
         f"backward passes, {acc} accumulations ({totals.get('accumulate_fresh', 0)} fresh, "
         f"{added}), {totals.get('zero', 0)} zeroings, {totals.get('update', 0)} updates")
    if result.signal is not None:
        info(f"the script was stopped by {signal.Signals(result.signal).name}; the trace keeps "
             "every finished step")
    elif result.status != "completed":
        info(f"the script {result.status} (exit code {result.exit_code}); the trace keeps every "
             "finished step")
    from ..record import figures

    for fig in figures.SAVED:
        info(f"figure saved: {shown_path(fig)}")
    for line in figures.FAILED:
        problem(f"figure not saved: {line}")
    shown = shown_path(out)
    if result.fault is not None:
        # The script's exit code stays its own: the fault is said, on one line, and the
        # steps the file keeps are still checked and drawn below (each failure one line).
        problem(f"error: {result.fault}")
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
    if ranks is not None:
        if ranks.rank != 0:
            info(f"rank {ranks.rank} of {ranks.world_size}: rank 0 checks and draws the run")
            return result.exit_code
        assert run_path is not None
        info(_wait_for_ranks(run_path, ranks.world_size, rank_wait))
        shown = shown_path(run_path.parent)
        try:  # every rank's trace, read together: the checks look across them
            trace = load_run(run_path.parent)
        except GradtraceError as e:
            problem(f"the other ranks' traces could not be read ({e}); rank 0's alone is checked")
    made = _after_run(trace, outputs, ctx)
    info(f"next: gradtrace summary {shown}")
    if write_report:
        from ..render.report import build_report

        try:
            # what the steps above made is reused, not made again: the check, the animations
            path = build_report(trace, outputs.report, outputs=outputs, render_missing=False, warn=info,
                                check_result=made.get("check"),
                                missing_animations=made.get("animations_missing"))
            info(f"report: {shown_path(path)}")  # last: the page to open
        except GradtraceError as e:
            problem(f"report skipped: {e}")
        except Exception as e:
            problem(f"report failed (a gradtrace bug, please report it): {type(e).__name__}: {e}")
    return result.exit_code


def _wait_for_ranks(run_path: Path, world_size: int, timeout: float) -> str:
    """Wait until every rank's trace of this run is finished (or ``timeout`` seconds);
    the line that says how it went."""
    import time

    from ..tracefile.ranks import rank_finished

    started = time.time() - 5.0  # the ranks start together; a file older than this is stale
    deadline = time.monotonic() + timeout
    waiting = set(range(world_size))
    while True:
        waiting = {r for r in waiting if not rank_finished(rank_path(run_path, r), started)}
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not waiting:
        return f"all {world_size} ranks' traces are finished: {shown_path(run_path.parent)}"
    missing = ", ".join(str(r) for r in sorted(waiting))
    return (f"ranks not finished after {timeout:g} s: {missing} (still running, or killed); what "
            "the others recorded is checked and drawn; --rank-wait SECONDS waits longer")


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
            problem(f"{name} skipped: {e}")
        except Exception as e:  # a bug of ours must not change the script's exit code
            problem(f"{name} failed (a gradtrace bug, please report it): {type(e).__name__}: {e}")
    return made


#: (name, action(trace, outputs, ctx, made)) run in order after the script; each feature adds
#: its own, and may leave in ``made`` what a later one (the report) would otherwise redo.
_AFTER_RUN: list = []
_AFTER_RUN.append(("graph", lambda trace, outputs, ctx, made: __import__("gradtrace.cli.graph", fromlist=["after_run"]).after_run(trace, outputs, ctx, made)))  # noqa: E501
_AFTER_RUN.append(("check", lambda trace, outputs, ctx, made: __import__("gradtrace.cli.check", fromlist=["after_run"]).after_run(trace, outputs, ctx, made)))  # noqa: E501
_AFTER_RUN.append(("animate", lambda trace, outputs, ctx, made: __import__("gradtrace.cli.animate", fromlist=["after_run"]).after_run(trace, outputs, ctx, made)))  # noqa: E501
