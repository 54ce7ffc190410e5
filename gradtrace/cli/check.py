"""`gradtrace check TRACE`: are the recorded gradients right, and what went wrong in training."""

from __future__ import annotations

from typing import Any

import click

from ..config import CHECK_MAX_STEPS
from .common import info, load_trace, trace_argument


@click.command()
@trace_argument
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON document: {"checks": [...], "findings": [...], "optimum": ...}.')
@click.option("--steps", "step_range", metavar="A:B", default=None,
              help="Check only steps A to B-1 (e.g. 0:10, 100:).")
@click.option("--numeric/--no-numeric", default=None,
              help="Finite-difference check of every selected step / of none "
                   "[default: a sample of 8 steps, first and last included].")
@click.option("--max-steps", type=click.IntRange(min=0), default=CHECK_MAX_STEPS, show_default=True,
              help="Steps recorded in full that get the per-step checks, at most (0: all): the "
                   "first, the last, those the scalars point at (a non-finite value, a "
                   "forgotten zero_grad(), a loss jump, a new accumulation pattern) with the "
                   "step before each, then evenly spaced ones. Findings the scalars decide "
                   "come from every step.")
@click.option("--strict", is_flag=True,
              help="Findings fail too: exit with 3 when there is one (a failed check always does).")
@click.pass_context
def check(ctx, trace_path, as_json, step_range, numeric, max_steps, strict):
    """Check autograd's gradients and diagnose the training run recorded in TRACE.

    Analytic check: for linear models under a squared-error or softmax cross-entropy loss,
    the closed-form gradient against autograd's, per step and parameter. Numeric check:
    central finite differences of the step's forward, replayed in float64. Findings: a
    forgotten zero_grad(), the first non-finite value, an unstable learning rate, an
    ill-conditioned problem, parameters that never got a gradient, updates through .data.

    Each comparison passes when autograd's gradient is within the bound of an error model
    worked out from the arithmetic that produced it (the dtype each op ran in, autocast
    included; the number of terms summed; their magnitudes; the finite differences' own
    error): a gradient that is zero by symmetry passes as float32 noise, a backward off by
    2 % fails where float32 can tell. Each check shows its bound and the tolerance it
    amounts to (docs/gradients.md). A check that does not apply says why and which
    recording option would make it apply.

    Exits with 0 when every check passed (or none applied), 3 when one failed (and under
    --strict when there is a finding), 2 for a bad option or a file that is not a readable
    trace.
    """
    from ..analysis.check import CheckOptions  # torch, numpy: not for --help

    trace = load_trace(trace_path)
    options = CheckOptions(steps=step_range, numeric={True: "all", False: "none", None: "sample"}[numeric],
                           max_steps=max_steps)
    report = _check(trace, options)
    if as_json:
        click.echo(report.to_json())
    else:
        for line in report.summary_lines():
            click.echo(line)
    ctx.exit(report.exit_code(strict))


def _check(trace, options=None):
    """The check of a trace; of a distributed run, every rank's and the checks across ranks
    (``options`` by default: the command's defaults, at most
    :data:`~gradtrace.config.CHECK_MAX_STEPS` steps read)."""
    from ..analysis.check import CheckOptions, check_trace
    from ..tracefile.ranks import RankedRun

    options = options if options is not None else CheckOptions(max_steps=CHECK_MAX_STEPS)
    if isinstance(trace, RankedRun):
        from ..analysis.distributed import check_ranks

        return check_ranks(trace, options=options)
    return check_trace(trace, options)


def after_run(trace, outputs, ctx, made: dict[str, Any] | None = None) -> None:
    """`gradtrace run`: the one-line verdict and the findings, on stderr; the report is left
    in ``made["check"]`` for the HTML report."""
    report = _check(trace)
    if made is not None:
        made["check"] = report
    info(f"check: {report.verdict()}")
    for c in report.failed[:3]:
        info(f"  FAIL {c}")
    for f in report.findings:
        info(f"  {f}")
