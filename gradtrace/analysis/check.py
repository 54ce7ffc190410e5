"""Gradient checks of a recorded trace (analytic and numeric) and its training findings.

``check_trace(trace)`` (also ``trace.check()``) returns a :class:`CheckReport`:

- ``checks``: one :class:`CheckResult` per step and parameter. ``analytic_mse`` /
  ``analytic_softmax`` compare autograd's gradient with the closed form of a recognised
  linear model (:mod:`gradtrace.analysis.linear`); ``numeric`` compares it with central
  finite differences of the step's forward replayed in float64
  (:mod:`gradtrace.analysis.numeric`) on a sample of steps. A step that is neither a
  linear model nor replayable is ``not_applicable``, with the reason.
- ``findings``: :class:`~gradtrace.analysis.diagnostics.Finding` s (forgot_zero_grad,
  non_finite, lr_unstable, ill_conditioned, no_grad_received, data_update).
- ``optimum``: for least squares, the optimum on the recorded data and each step's
  distance to it.

Errors are measured against what autograd had to work with: the analytic gradient is
computed in float64 from the recorded float forward values, and ``max_rel_err`` is the
largest ``|autograd - closed form|`` divided by the sum of the magnitudes of the terms
that gradient adds up (``2|c| |X|^T |y_hat - y|``). The numeric check's ``max_rel_err`` is
``max|diff| / max|fd|``. Neither is compared with a fixed number: each element must be
within the bound of the error model (:mod:`.errmodel`, docs/gradients.md), worked out from
the dtype each op ran in, the terms it summed and their magnitudes, and (numeric) the
finite differences' own error. ``bound`` is that bound at the element that decided the
check; ``tolerance`` is the relative error it allows, so that ``max_rel_err <= tolerance``
exactly when the check passed.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch

from ..config import parse_step_range
from ..errors import EXIT_CHECK_FAILED, EXIT_OK, UsageError
from ..tracefile import conveniences
from ..tracefile.model import Step
from .diagnostics import FINDING_KINDS, Diagnostics, Finding, OptimumTrack
from .timeline import Timeline, scalar_timeline, steps_to_check
from .linear import SOFTMAX_CE, SQUARED_ERROR, LinearFit, fit_of
from .errmodel import SAFETY, UNIT_ROUNDOFF, ErrorModel, gamma, unit_roundoff
from .numeric import (
    ReplayError, autograd_gradients, blame_functions, finite_differences, replay_of,
    sample_indices,
)

__all__ = ["CheckOptions", "CheckResult", "CheckReport", "Finding", "OptimumTrack",
           "check_trace", "CHECK_KINDS", "FINDING_KINDS", "STATUSES"]

CHECK_KINDS = ("analytic_mse", "analytic_softmax", "numeric", "allreduce")
STATUSES = ("pass", "fail", "not_applicable")

@dataclass(frozen=True)
class CheckOptions:
    """Every option of ``check_trace``; the CLI and the Python API both build one.

    - ``steps``: ``(first, stop)`` run step numbers to check (stop exclusive or None), or
      a string ``"A:B"``; None checks every recorded step.
    - ``numeric``: ``"sample"`` (default: ``numeric_sample`` steps spread over the run,
      first and last included), ``"all"`` or ``"none"``; True/False mean all/none.
    - ``numeric_elements``: elements per parameter differentiated in a numeric check
      (chosen by a generator seeded with the step, so runs agree).
    - ``ill_conditioned``: the condition number above which progress is called slow.
    - ``max_steps``: at most this many steps recorded in full get the per-step checks
      (None or 0, the default here: all; the CLI's is :data:`~gradtrace.config.CHECK_MAX_STEPS`): the first, the last, those every step's scalars point at (the first
      non-finite value, a forgotten zero_grad(), a loss jump, a new zeroing / accumulation
      pattern) with the step before each, then evenly spaced ones. What the scalars decide
      (forgot_zero_grad, the first non-finite value) is decided from every step either way.
    """

    steps: Any = None
    numeric: Any = "sample"
    numeric_sample: int = 8
    numeric_elements: int = 32
    analytic: bool = True
    diagnostics: bool = True
    ill_conditioned: float = 1e3
    max_steps: int | None = None

    def __post_init__(self):
        steps = self.steps
        if isinstance(steps, str):
            object.__setattr__(self, "steps", parse_step_range(steps))
        elif steps is not None:
            a, b = steps
            if a < 0 or (b is not None and b <= a):
                raise UsageError(f"step range {steps!r} is empty or negative; use (A, B) with 0 <= A < B")
        numeric = {True: "all", False: "none", None: "sample"}.get(self.numeric, self.numeric)
        if numeric not in ("sample", "all", "none"):
            raise UsageError(f"numeric must be 'sample', 'all' or 'none', not {self.numeric!r}")
        object.__setattr__(self, "numeric", numeric)
        if self.numeric_sample < 1 or self.numeric_elements < 1:
            raise UsageError("numeric_sample and numeric_elements must be 1 or more")
        if self.max_steps is not None and self.max_steps < 0:
            raise UsageError(f"max_steps must be 0 (every step) or more, not {self.max_steps}")
        if self.max_steps == 0:
            object.__setattr__(self, "max_steps", None)
        elif self.max_steps is not None and self.max_steps < 2:
            raise UsageError("max_steps must be 2 or more (the first and the last step), or 0 "
                             "for every step")

    def wants(self, index: int) -> bool:
        if self.steps is None:
            return True
        a, b = self.steps
        return index >= a and (b is None or index < b)


@dataclass(frozen=True)
class CheckResult:
    """One gradient check of one parameter at one step (``param`` None: the whole step)."""

    kind: str
    step: int | None
    param: str | None
    status: str
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    tolerance: float | None = None
    detail: str = ""
    tid: int | None = field(default=None, compare=False)
    #: the error bound of the model (docs/gradients.md), absolute, at the element that
    #: decided the check (the one whose error is the largest share of its bound)
    bound: float | None = None
    #: the rank of a distributed run whose gradient this checks (None: one process; the
    #: ``allreduce`` checks concern all ranks)
    rank: int | None = None
    #: the custom autograd.Functions (their op indices) whose backward the numeric check
    #: found to disagree with their forward: the likely cause of a failure
    blamed: tuple[int, ...] = field(default=(), compare=False)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "step": self.step, "param": self.param, "status": self.status,
             "max_abs_err": _json_num(self.max_abs_err), "max_rel_err": _json_num(self.max_rel_err),
             "tolerance": _json_num(self.tolerance), "bound": _json_num(self.bound),
             "detail": self.detail}
        if self.rank is not None:
            d["rank"] = self.rank
        return d

    def __str__(self) -> str:
        head = f"{self.kind} step {self.step}" + (f" {self.param}" if self.param else "")
        if self.rank is not None:
            head += f" (rank {self.rank})"
        if self.status == "not_applicable":
            return f"{head}: {self.detail}"
        bound = f", bound {self.bound:.2g}" if self.bound is not None else ""
        return (f"{head}: {self.status} (max rel err {self.max_rel_err:.2g}, tolerance "
                f"{self.tolerance:.2g}{bound}): {self.detail}")


def _json_num(x: float | None):
    if x is None:
        return None
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(f"{x:.6g}")


@dataclass
class CheckReport:
    """What ``gradtrace check`` found: checks, findings and (least squares) the optimum."""

    checks: list[CheckResult]
    findings: list[Finding]
    optimum: OptimumTrack | None = None
    steps_checked: int = 0
    #: Steps the run had (recorded in full or not): the checks read the ones in full.
    steps_run: int = 0
    #: Steps recorded in full (in the range checked): ``steps_checked`` of them were read.
    steps_full: int = 0
    #: The budget that chose them (:attr:`CheckOptions.max_steps`).
    max_steps: int | None = None
    #: Backward passes that ran in threads other than the one that started the trace.
    thread_backward: int = 0
    #: The run recorded only some steps (``--steps`` / ``--every``): what left the rest out.
    sampled_by: str | None = None
    #: What every step's scalars said (None: the trace has none), for the report to reuse.
    timeline: Timeline | None = field(default=None, repr=False)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    @property
    def ok(self) -> bool:
        """No check failed (findings do not count: they are advice)."""
        return not self.failed

    def of(self, kind: str) -> list[CheckResult]:
        return [c for c in self.checks if c.kind == kind]

    def to_dict(self) -> dict:
        return {"checks": [c.to_dict() for c in self.checks],
                "findings": [f.to_dict() for f in self.findings],
                "optimum": self.optimum.to_dict() if self.optimum is not None else None}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self) -> str:
        return f"<gradtrace.CheckReport: {self.verdict()}>"

    def _repr_html_(self) -> str | None:
        """Jupyter: the verdict in plain words, the checks by parameter, the findings."""
        return conveniences.html(self)

    def exit_code(self, strict: bool = False) -> int:
        """3 when a check failed (under ``strict`` also when there is a finding), else 0."""
        return EXIT_CHECK_FAILED if self.failed or (strict and self.findings) else EXIT_OK

    def verdict(self) -> str:
        """One line: what passed, what failed, how many findings."""
        parts = []
        for kind in CHECK_KINDS:
            cs = self.of(kind)
            if not cs:
                continue
            n_pass = sum(c.passed for c in cs)
            n_fail = sum(c.failed for c in cs)
            n_na = len(cs) - n_pass - n_fail
            s = f"{kind} {n_pass} passed"
            if n_fail:
                s += f", {n_fail} FAILED"
            if n_na:
                s += f", {n_na} not applicable"
            rel = [c.max_rel_err for c in cs if c.status != "not_applicable" and c.max_rel_err is not None]
            if rel:
                s += f" (max rel err {max(rel):.2g}"
                shares = [c.max_rel_err / c.tolerance for c in cs if c.passed
                          and c.max_rel_err is not None and c.tolerance]
                if max(rel) >= 1e-3 and shares and not n_fail:
                    # near-zero gradients (a converged run): a large relative error, within
                    # the bound rounding allows; the share says how far within
                    s += f", largest error {max(shares):.2g} of its bound"
                s += ")"
            parts.append(s)
        n_f = len(self.findings)
        kinds = sorted({f.kind for f in self.findings}, key=FINDING_KINDS.index)
        found = f"{n_f} finding{'s' if n_f != 1 else ''}" + (f" ({', '.join(kinds)})" if kinds else "")
        k = self.thread_backward
        if not parts and self.steps_full == 0 and k:
            head = (f"nothing to check: the run's {k} backward pass{'es' if k != 1 else ''} "
                    f"ran in {'threads' if k != 1 else 'a thread'} other than the one that "
                    "started the trace (gradtrace records that thread only)")
        elif not parts and self.steps_full == 0 and self.steps_run > 0:
            n = self.steps_run
            how = (f"{self.sampled_by} left {'them' if n != 1 else 'it'} out" if self.sampled_by
                   else "--full, or a larger --budget, records them")
            head = (f"nothing to check: {'none of the' if n != 1 else 'the'} {n} step"
                    f"{'s' if n != 1 else ''} {'was' if n != 1 else 'was not'} recorded in full "
                    f"({how})")
        elif not parts:
            head = "nothing to check (no backward pass in the checked steps)"
        elif self.failed:
            first = self.failed[0]
            head = (f"gradients WRONG at step {first.step}"
                    + (f" ({first.param})" if first.param else ""))
        elif all(c.status == "not_applicable" for c in self.checks):
            head = f"no check applies ({self._why_not('numeric') or self._why_not(None)})"
        else:
            head = "gradients ok"
            numeric = self.of("numeric")
            if not any(c.passed for c in numeric):
                analytic = [k for k in CHECK_KINDS[:2] if any(c.passed for c in self.of(k))]
                by = " and ".join(analytic)
                head = (f"gradients ok by the {by} check only (the numeric check did not apply: "
                        f"{self._why_not('numeric')})" if numeric else
                        f"gradients ok by the {by} check (the numeric check was not run)")
        line = f"{head}: " + "; ".join(parts + [found]) if parts else f"{head}; {found}"
        return line + self._coverage()

    def _coverage(self) -> str:
        """Which steps the checks read, when not every step of the run."""
        n, m, f = self.steps_checked, max(self.steps_run, self.steps_full), self.steps_full
        if m <= n:
            return ""
        scalars = ("forgot_zero_grad and non_finite from every step's scalars"
                   if self.timeline is not None and self.timeline.has_accumulation
                   and self.timeline.steps else "")
        if f == 0:  # the verdict says no step was recorded in full
            return f" ({scalars})" if scalars else ""
        if n < f:
            how = (f"{n} of the {f} recorded in full (--max-steps {self.max_steps}): the first, "
                   "the last, those the scalars point at and evenly spaced others")
        else:
            how = f"the {n} recorded in full"
        return f" (checked {n} of {m} steps: {how}{'; ' + scalars if scalars else ''})"

    def _why_not(self, kind: str | None) -> str:
        """The first reason a check of ``kind`` (None: any) did not apply, and how to make it."""
        for c in self.checks:
            if c.status == "not_applicable" and (kind is None or c.kind == kind):
                return c.detail.removeprefix("not applicable: ")
        return ""

    def summary_lines(self) -> list[str]:
        """The verdict, then per kind and parameter one line, then failures and findings."""
        lines = [self.verdict()]
        groups: dict[tuple[str, str | None], list[CheckResult]] = {}
        for c in self.checks:
            groups.setdefault((c.kind, c.param), []).append(c)
        for (kind, param), cs in groups.items():
            n = len(cs)
            st = {s: sum(c.status == s for c in cs) for s in STATUSES}
            rel = [c.max_rel_err for c in cs if c.status != "not_applicable" and c.max_rel_err is not None]
            steps = [c.step for c in cs if c.step is not None]
            rng = f"steps {min(steps)}-{max(steps)}" if len(steps) > 1 else (f"step {steps[0]}" if steps else "")
            if param is None:
                reasons = sorted({c.detail.removeprefix("not applicable: ") for c in cs})
                lines.append(f"  {kind}: {n} step(s) not applicable ({rng}): {reasons[0]}"
                             + (f" (+{len(reasons) - 1} other reasons)" if len(reasons) > 1 else ""))
                continue
            s = f"  {kind} {param}: {st['pass']}/{n} passed"
            if st["fail"]:
                s += f", {st['fail']} failed"
            if st["not_applicable"]:
                why = next(c.detail for c in cs if c.status == "not_applicable")
                s += f", {st['not_applicable']} not applicable ({why.removeprefix('not applicable: ')})"
            if rel:
                s += f", max rel err {max(rel):.2g}"
            shares = [c.max_rel_err / c.tolerance for c in cs if c.status != "not_applicable"
                      and c.max_rel_err is not None and c.tolerance]
            if shares:
                s += f", largest error {max(shares):.2g} of its bound"
            lines.append(s + f" ({rng})")
        for c in self.failed[:10]:
            lines.append(f"  FAIL {c}")
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more failures")
        for f in self.findings:
            lines.append(f"  {f}")
        return lines


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The tensors here are tiny: thread fan-out costs more than it gives (10x on 2 cores)."""
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        yield
    finally:
        torch.set_num_threads(n)


def check_trace(trace, options: CheckOptions | None = None, **kw) -> CheckReport:
    """Check the gradients of a recorded run and diagnose its training (see the module doc).

    Warnings are off while it runs: replaying the script's ops would say again what the
    script's run said (an implicit softmax dimension...), and a script's own filters (a
    test suite's ``simplefilter("error")``) still hold after it in ``gradtrace run``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _check_trace(trace, options, **kw)


def _check_trace(trace, options: CheckOptions | None = None, **kw) -> CheckReport:
    opts = options if options is not None else CheckOptions(**kw)
    if options is not None and kw:
        opts = replace(options, **kw)
    steps = trace.steps
    wanted = [idx for idx in steps.indices if opts.wants(idx)]
    if opts.steps is not None and not wanted and len(steps):
        idx = steps.indices
        raise UsageError(f"no recorded step in {opts.steps[0]}:{opts.steps[1] if opts.steps[1] is not None else ''}; "
                         f"recorded steps are {idx[0]}..{idx[-1]}")
    timeline, columns = _timeline(trace, opts)
    chosen = set(steps_to_check(wanted, timeline.pointed() if timeline is not None else [],
                                opts.max_steps))
    indices = [i for i, idx in enumerate(steps.indices) if idx in chosen]
    has_bw = {row["index"]: row["has_backward"] for row in trace.step_rows()}
    with_bw = [i for i in indices if has_bw.get(steps.indices[i])]
    numeric_at = _numeric_sample(with_bw, opts)
    checks: list[CheckResult] = []
    diag = Diagnostics(trace, opts.ill_conditioned) if opts.diagnostics else None
    if diag is not None and timeline is not None:
        diag.use_scalars(timeline, columns, steps.indices)
    with _one_thread():
        for i in indices:
            step = steps[i]
            fit = None
            if step.backward is not None and opts.analytic:
                results, fit = analytic_check(step)
                checks.extend(results)
            if i in numeric_at:
                checks.extend(numeric_check(step, opts.numeric_elements))
            if diag is not None:
                diag.see(step, fit)
        findings, optimum = diag.findings() if diag is not None else ([], None)
    info = getattr(trace, "info", None)
    run = getattr(info, "steps_seen", 0)
    threads = getattr(info, "unrecorded", {}).get("thread_backward", 0)
    config = getattr(info, "config", None) or {}
    sampled_by = ("--steps" if config.get("step_range") else
                  "--every" if isinstance(config.get("every"), int) and config["every"] > 1 else None)
    return CheckReport(checks, findings, optimum, steps_checked=len(indices),
                       steps_run=run if isinstance(run, int) and opts.steps is None else 0,
                       steps_full=len(wanted), max_steps=opts.max_steps, timeline=timeline,
                       thread_backward=threads if isinstance(threads, int) else 0,
                       sampled_by=sampled_by)


def _timeline(trace, opts: CheckOptions) -> tuple[Timeline | None, tuple[int, ...]]:
    """What every step's scalars in the checked range say, and the tid of each column
    (None: a trace without scalars)."""
    reader = getattr(trace, "scalars", None)
    if not callable(reader):
        return None, ()
    sc = reader()
    if opts.steps is not None:
        a, b = opts.steps
        keep = (sc.steps >= a) & (sc.steps < b if b is not None else True)
        sc = replace(sc, steps=sc.steps[keep], full=sc.full[keep], loss=sc.loss[keep],
                     grad_norm=sc.grad_norm[keep], value_norm=sc.value_norm[keep],
                     update_norm=sc.update_norm[keep], accumulation=sc.accumulation[keep])
    names = tuple(trace.name(t) for t in sc.params)
    return scalar_timeline(sc, names), tuple(sc.params)


def _numeric_sample(with_bw: list[int], opts: CheckOptions) -> set[int]:
    if opts.numeric == "none" or not with_bw:
        return set()
    if opts.numeric == "all" or len(with_bw) <= opts.numeric_sample:
        return set(with_bw)
    m = opts.numeric_sample
    return {with_bw[round(j * (len(with_bw) - 1) / (m - 1))] for j in range(m)} if m > 1 else {with_bw[0]}


#: What makes the analytic check apply, said with every step it does not apply to.
ANALYTIC_SCOPE = ("the closed form is known only for a linear model (X @ W + b) under squared "
                  "error or softmax cross-entropy; the numeric check covers any other step "
                  "(`gradtrace check --numeric` runs it on every step)")


# -- the analytic check -----------------------------------------------------------------------

def _finite(*ts: torch.Tensor | None) -> bool:
    return all(bool(np.isfinite(t.numpy()).all()) if t.dtype in (torch.float64, torch.float32)
               else bool(torch.isfinite(t).all()) for t in ts if t is not None and t.numel())


def analytic_check(step: Step) -> tuple[list[CheckResult], LinearFit | None]:
    """Closed-form gradients of a recognised linear model against autograd's, per parameter."""
    fit = fit_of(step)
    if not fit:
        kind = "analytic_softmax" if fit.family == SOFTMAX_CE else "analytic_mse"
        return [CheckResult(kind, step.index, None, "not_applicable",
                            detail=f"{fit}; {ANALYTIC_SCOPE}")], None
    kind = "analytic_mse" if fit.loss_kind == SQUARED_ERROR else "analytic_softmax"
    got = autograd_gradients(step)
    out = []
    if not _finite(fit.X, fit.y, fit.pred, *got.values()):
        return [CheckResult(kind, step.index, step.name(p.tid), "not_applicable", tid=p.tid,
                            detail="not applicable: non-finite values in this step (see the "
                                   "non_finite finding)") for p in fit.params], fit
    ref = fit.gradient()
    scale = fit.gradient_scale()
    bounds, terms = _analytic_bounds(fit, scale)
    base = _analytic_detail(fit)
    for p in fit.params:
        name = step.name(p.tid)
        if p.tid not in got:
            kept = any(e.tensor == p.tid and e.incoming is not None for e in step.accumulations)
            why = (f"was kept as statistics only, so there is nothing to compare; record with "
                   f"`gradtrace run --values full --max-numel {max(p.numel, 1)}` to check it" if kept else
                   "was not recorded in this step (no option brings it back: autograd gave it "
                   "no gradient that gradtrace saw)")
            out.append(CheckResult(kind, step.index, name, "not_applicable", tid=p.tid,
                                   detail=f"not applicable: autograd's gradient of {name} {why}"))
            continue
        g = got[p.tid].reshape(p.shape)
        diff = (g - ref[p.tid]).abs()
        bound = bounds[p.tid] + SAFETY * unit_roundoff(fit.dtype) * g.abs()
        max_abs = float(diff.max()) if diff.numel() else 0.0
        rel = diff / scale[p.tid].clamp_min(1e-300)
        rel = torch.where(diff == 0, torch.zeros_like(rel), rel)
        max_rel = float(rel.max()) if rel.numel() else 0.0
        ratio, at = _share_of_bound(diff, bound)
        status = "pass" if ratio <= 1 else "fail"
        tol = _tolerance(max_rel, ratio, float((bound / scale[p.tid].clamp_min(1e-300)).max())
                         if bound.numel() else 0.0)
        detail = base + f"; {_formula(fit, not fit.is_intercept(p.tid), name)}"
        detail += (f"; bound {SAFETY:g} gamma_{terms} |terms| in {fit.dtype} "
                   f"(largest error {ratio:.2g} of its bound)")
        note = _update_note(step, fit, p.tid)
        if note:
            detail += f"; {note}"
        if status == "fail":
            detail += (f"; autograd's gradient differs from the closed form (largest at element "
                       f"{tuple(int(x) for x in torch.nonzero(diff == diff.max())[0].tolist())})")
        out.append(CheckResult(kind, step.index, name, status, max_abs, max_rel, tol, detail, p.tid,
                               bound=float(bound.reshape(-1)[at]) if bound.numel() else 0.0))
    return out, fit


def _analytic_bounds(fit: LinearFit, scale: dict[int, torch.Tensor]) -> tuple[dict[int, torch.Tensor], int]:
    """The rounding bound of autograd's gradient of a linear model, elementwise.

    From the recorded forward values the backward computes ``G = 2c (y_hat - y)`` (or
    ``c (softmax(z) - Y)``) and then ``X^T G`` and the sum of ``G`` over the rows: at most
    ``n k + k + 6`` roundings in a row, each relative to the magnitudes of the terms. For
    squared error those are ``|X|^T |G|`` (``scale``); a softmax's probabilities are
    rounded relative to themselves, so its terms are ``|c| |X|^T (p + Y)``."""
    u = unit_roundoff(fit.dtype)
    terms = fit.n * fit.k + fit.k + 6
    g = SAFETY * gamma(terms, u)
    if fit.loss_kind == SQUARED_ERROR or fit.pred is None:
        return {t: g * v for t, v in scale.items()}, terms
    p = torch.softmax(fit.pred, 1)
    w = fit.row_weights.reshape(-1, 1).abs()
    G = w * (p * fit.y.sum(1, keepdim=True).abs() + fit.y.abs())
    return {t: g * v for t, v in fit.back(G, absolute=True).items()}, terms


def _share_of_bound(diff: torch.Tensor, bound: torch.Tensor) -> tuple[float, int]:
    """The largest ``diff / bound`` over the elements (0/0 counts as 0) and where it is."""
    if not diff.numel():
        return 0.0, 0
    d = diff.reshape(-1)
    b = bound.reshape(-1)
    share = torch.where(d == 0, torch.zeros_like(d), d / b.clamp_min(1e-300))
    at = int(share.argmax())
    return float(share[at]), at


def _tolerance(max_rel: float, ratio: float, fallback: float) -> float:
    """The relative tolerance that gives the same verdict as the bound: ``max_rel_err <=
    tolerance`` exactly when every element is within its bound."""
    return max_rel / ratio if ratio > 0 else fallback


def _analytic_detail(fit: LinearFit) -> str:
    return f"{fit.loss_desc} over {fit.n} row{'s' if fit.n != 1 else ''}, c = {fit.constant:.6g}; {fit.model_desc}"


def _formula(fit: LinearFit, weight: bool, name: str) -> str:
    g = "2c (y_hat - y)" if fit.loss_kind == SQUARED_ERROR else "c (softmax(z) - Y)"
    if weight:
        return f"dL/d{name} = X^T {g}"
    return f"dL/d{name} = sum over rows of {g}"


def _update_note(step: Step, fit: LinearFit, tid: int) -> str | None:
    """Seed 1 sums the loss over the batch and divides by the batch size in the update:
    the optimiser's business, said here so that nobody reads it as a wrong gradient."""
    summed = abs(fit.constant * fit.n - 1) > 1e-9 and abs(fit.constant * fit.n * fit.k - 1) > 1e-9
    if not summed:
        return None
    for e in step.updates:
        if e.tensor != tid or e.source is None or "/" not in (e.source.code or ""):
            continue
        code = e.source.code.strip()
        by = " by the batch size" if any(w in code for w in ("batch", "len(", "size", f"/ {fit.n}")) else ""
        return (f"the loss is a sum over the batch (not a mean); the update at {e.source.short} "
                f"(`{code}`) divides the gradient{by} (n = {fit.n}): that is the optimiser's "
                "business, not the gradient's, so the gradient checked here is that of the sum")
    return None


# -- the numeric check --------------------------------------------------------------------------

def numeric_check(step: Step, elements: int = 32) -> list[CheckResult]:
    """autograd's gradients against central finite differences of the float64 replay,
    each element within the bound of the error model (:mod:`.errmodel`)."""
    carried = _carried_graph(step)
    if carried is not None:
        o, carrier = carried
        line = f" at {o.source.short}" if o.source is not None else ""
        return [CheckResult("numeric", step.index, None, "not_applicable",
                            detail=f"not applicable: {step.name(carrier)} (an input of {o.name}{line}) "
                                   "brings a graph from outside the step's recorded ops (the "
                                   "output of a torch.compile'd region; a gradient taken with "
                                   "create_graph=True, as in MAML; a tensor made in an earlier "
                                   "step): autograd differentiates through "
                                   "it, the replay can only take it as a constant; no option "
                                   "changes that")]
    r = replay_of(step)
    if not r:
        return [CheckResult("numeric", step.index, None, "not_applicable",
                            detail=f"not applicable: {numeric_hint(step, r.reason)}")]
    rp, values = r
    got = autograd_gradients(step)
    if not _finite(*values.values(), *got.values()) or not math.isfinite(rp(values)):
        return [CheckResult("numeric", step.index, step.name(t), "not_applicable", tid=t,
                            detail="not applicable: non-finite values in this step (see the "
                                   "non_finite finding); an inf or nan gradient cannot be "
                                   "compared, and no option changes that") for t in sorted(got)]
    samples = {tid: sample_indices(got[tid].numel(), elements, step.index) for tid in sorted(got)}
    try:
        model = ErrorModel(rp, values)
        B_all = model.backward_bounds()
        loss_err = model.loss_error()
        forwards = {tid: model.forward_bound(tid, idx) for tid, idx in samples.items()}
    except (ReplayError, RuntimeError, ValueError, TypeError, IndexError) as e:
        reason = str(e) if isinstance(e, ReplayError) else f"{type(e).__name__}: {str(e)[:120]}"
        return [CheckResult("numeric", step.index, None, "not_applicable",
                            detail=f"not applicable: the error bound of this step could not be "
                                   f"worked out ({reason}); no option changes that")]
    n_ops = len(rp.runs)
    out = []
    failed = False
    for tid in sorted(got):
        g = got[tid].reshape(-1)
        dtype = _dtype_of(step, tid)
        idx = samples[tid]
        a = g[idx]
        backward = B_all[tid].reshape(-1)[idx]
        forward = forwards[tid]
        stored = unit_roundoff(dtype) * a.abs()          # .grad itself is rounded to its dtype
        # finite differences good to a tenth of autograd's own bound need no smaller step
        fd = finite_differences(rp, values, tid, idx, loss_err, 0.1 * (backward + forward + stored))
        diff = (a - fd.fd).abs()
        theta = values[tid].reshape(-1)[idx].abs()
        fd_err = (fd.truncation + fd.CANCELLATION * loss_err / fd.h
                  + fd.fd.abs() * UNIT_ROUNDOFF["float64"] * (theta + 4 * fd.h) / fd.h)
        bound = SAFETY * (backward + forward + stored + fd_err)
        max_abs = float(diff.max())
        gm = max(float(fd.fd.abs().max()), float(a.abs().max()), 1e-300)
        ratio, at = _share_of_bound(diff, bound)
        rel = max_abs / gm
        status = "pass" if ratio <= 1 else "fail"
        failed |= status == "fail"
        tol = _tolerance(rel, ratio, float(bound.max()) / gm)
        what = f"{len(idx)} of {g.numel()} element{'s' if g.numel() != 1 else ''}"
        parts = {"backward": float(backward[at]), "forward": float(forward[at]),
                 "finite differences": float(fd_err[at])}
        biggest = max(parts, key=parts.__getitem__)
        detail = (f"central differences of the float64 replay of {n_ops} op{'s' if n_ops != 1 else ''} "
                  f"at {what} (steps h, 2h, 4h, h = {rp.fd_eps:.0e} * max(1, |theta|) or down to 1/256 of it, extrapolated); bound {float(bound[at]):.2g} at element "
                  f"{idx[at]} ({_dtypes(model.dtypes, dtype)} rounding of autograd's backward {parts['backward']:.2g} + "
                  f"forward {parts['forward']:.2g}, finite-difference error "
                  f"{parts['finite differences']:.2g}; times {SAFETY:g}; mostly {biggest}); "
                  f"largest error {ratio:.2g} of its bound")
        if model.approximate:
            detail += (f"; |J| of {', '.join(model.approximate[:3])} estimated from one "
                       "vector-Jacobian product")
        if status == "fail":
            ratio_fd = float((a * fd.fd).sum() / (fd.fd * fd.fd).sum()) if float((fd.fd * fd.fd).sum()) else None
            if ratio_fd is not None:
                detail += f"; autograd's gradient is {_times(ratio_fd)} x the finite differences"
        out.append(CheckResult("numeric", step.index, step.name(tid), status, max_abs, rel, tol,
                               detail, tid, bound=float(bound[at])))
    if failed:
        # A Function to blame is off by about as much as the failure; correct ones in
        # float32 agree with their forward to far less than 1e-3 of the terms.
        worst = max(c.max_rel_err or 0.0 for c in out if c.failed)
        u = max(unit_roundoff(_dtype_of(step, c.tid)) for c in out if c.failed and c.tid is not None)
        blamed = blame_functions(rp, values, min(1e-3, max(worst / 4, 64 * u)))
        if blamed:
            text = "; ".join(
                f"{b.op.target} ({b.name}, op {b.op.index}"
                f"{' at ' + b.op.source.short if b.op.source else ''}): its backward gives "
                + (f"{_times(b.ratio)} x" if b.ratio is not None else "something other than")
                + " the derivative of its forward" for b in blamed)
        else:
            funcs = [o for o in rp.top if o.is_function]
            text = ("no custom autograd.Function to blame (" + (
                f"{', '.join(o.name for o in funcs)} check out on their own" if funcs else
                "the step has none") + "); a hook on a tensor can also change gradients")
        ops = tuple(b.op.index for b in blamed)
        out = [replace(c, detail=c.detail + f"; wrong backward: {text}", blamed=ops) if c.failed else c
               for c in out]
    return out


#: Where a reason for "not applicable" already says how to make the check apply.
_HAS_OPTION = ("--max-numel", "--values", "gradtrace.trace(", "model.eval()")


def numeric_hint(step: Step, reason: str) -> str:
    """The reason a step cannot be replayed, and what would make the numeric check apply."""
    if step.backward is None:
        return f"{reason} (nothing to check: the step computed no gradient)"
    if any(s in reason for s in _HAS_OPTION):
        return reason
    return (f"{reason}; no recording option makes the numeric check apply to this step "
            "(the analytic check still covers linear models)")


def _dtypes(ran_in: list[str], grad: str) -> str:
    """The dtypes a step's ops ran in, least precise first (``bfloat16/float32``)."""
    names = sorted(set(ran_in) | {grad}, key=lambda d: -UNIT_ROUNDOFF.get(d, 0.0))
    return "/".join(names)


def _times(r: float) -> str:
    """A factor with the digits that tell it from 1 (1.0001, not 1)."""
    if r != 1 and abs(r - 1) < 1e-3:
        return f"{r:.{min(3 - math.floor(math.log10(abs(r - 1))), 15)}g}"
    return f"{r:.4g}"


def _carried_graph(step: Step):
    """The first graph op of the step with an input that requires grad, is no leaf and was
    made by none of the step's ops: ``(op, tid)``, or None. Its own graph (the ops of an
    earlier step, an autograd.grad(create_graph=True)) is differentiated by autograd and
    cannot be replayed."""
    made = {t for o in step.ops for t in o.outputs}
    for o in step.ops:
        if not o.is_graph:
            continue
        for i in o.inputs:
            info = step.tensors.get(i)
            if i not in made and info is not None and info.role == "activation" \
                    and info.requires_grad:
                return o, i
    return None


def _dtype_of(step: Step, tid: int) -> str:
    for e in step.accumulations:
        if e.tensor == tid and e.incoming is not None:
            return e.incoming.dtype
    info = step.tensors.get(tid)
    return info.dtype if info is not None else "float32"
