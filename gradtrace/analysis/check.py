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
that gradient adds up (``2|c| |X|^T |y_hat - y|``); a sum of n float32 terms is only
exact to that scale, which is what makes the number meaningful when the terms cancel
(a gradient near zero at the optimum). The numeric check uses ``max|diff| / max|fd|``,
with the tolerance widened by the rounding of the forward values (``eps * |H theta|``).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch

from ..config import parse_step_range
from ..errors import EXIT_CHECK_FAILED, EXIT_OK, UsageError
from ..tracefile.model import Step
from .diagnostics import FINDING_KINDS, Diagnostics, Finding, OptimumTrack
from .linear import SOFTMAX_CE, SQUARED_ERROR, LinearFit, fit_of
from .numeric import (
    autograd_gradients, blame_functions, finite_differences, replay_of, sample_indices,
)

__all__ = ["CheckOptions", "CheckResult", "CheckReport", "Finding", "OptimumTrack",
           "check_trace", "CHECK_KINDS", "FINDING_KINDS", "STATUSES"]

CHECK_KINDS = ("analytic_mse", "analytic_softmax", "numeric")
STATUSES = ("pass", "fail", "not_applicable")

#: Analytic check: largest error relative to the summed magnitudes, per dtype.
ANALYTIC_RTOL = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
#: Numeric check: relative tolerance, and the unit roundoff behind the noise floor.
NUMERIC_RTOL = {"float64": 1e-6, "float32": 1e-3, "float16": 3e-2, "bfloat16": 1e-1}
UNIT_ROUNDOFF = {"float64": 1.1e-16, "float32": 6e-8, "float16": 4.9e-4, "bfloat16": 3.9e-3}


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
    """

    steps: Any = None
    numeric: Any = "sample"
    numeric_sample: int = 8
    numeric_elements: int = 32
    analytic: bool = True
    diagnostics: bool = True
    ill_conditioned: float = 1e3

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

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "step": self.step, "param": self.param, "status": self.status,
                "max_abs_err": _json_num(self.max_abs_err), "max_rel_err": _json_num(self.max_rel_err),
                "tolerance": _json_num(self.tolerance), "detail": self.detail}

    def __str__(self) -> str:
        head = f"{self.kind} step {self.step}" + (f" {self.param}" if self.param else "")
        if self.status == "not_applicable":
            return f"{head}: {self.detail}"
        return (f"{head}: {self.status} (max rel err {self.max_rel_err:.2g}, tolerance "
                f"{self.tolerance:.2g}): {self.detail}")


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
                s += f" (max rel err {max(rel):.2g})"
            parts.append(s)
        n_f = len(self.findings)
        kinds = sorted({f.kind for f in self.findings}, key=FINDING_KINDS.index)
        found = f"{n_f} finding{'s' if n_f != 1 else ''}" + (f" ({', '.join(kinds)})" if kinds else "")
        if not parts:
            head = "nothing to check (no backward pass in the checked steps)"
        elif self.failed:
            first = self.failed[0]
            head = (f"gradients WRONG at step {first.step}"
                    + (f" ({first.param})" if first.param else ""))
        elif all(c.status == "not_applicable" for c in self.checks):
            head = "no check applies"
        else:
            head = "gradients ok"
        return f"{head}: " + "; ".join(parts + [found]) if parts else f"{head}; {found}"

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
                s += f", {st['not_applicable']} not applicable"
            if rel:
                s += f", max rel err {max(rel):.2g}"
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
    """Check the gradients of a recorded run and diagnose its training (see the module doc)."""
    opts = options if options is not None else CheckOptions(**kw)
    if options is not None and kw:
        opts = replace(options, **kw)
    steps = trace.steps
    indices = [i for i, idx in enumerate(steps.indices) if opts.wants(idx)]
    if opts.steps is not None and not indices and len(steps):
        idx = steps.indices
        raise UsageError(f"no recorded step in {opts.steps[0]}:{opts.steps[1] if opts.steps[1] is not None else ''}; "
                         f"recorded steps are {idx[0]}..{idx[-1]}")
    has_bw = {row["index"]: row["has_backward"] for row in trace.step_rows()}
    with_bw = [i for i in indices if has_bw.get(steps.indices[i])]
    numeric_at = _numeric_sample(with_bw, opts)
    checks: list[CheckResult] = []
    diag = Diagnostics(trace, opts.ill_conditioned) if opts.diagnostics else None
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
    return CheckReport(checks, findings, optimum, steps_checked=len(indices))


def _numeric_sample(with_bw: list[int], opts: CheckOptions) -> set[int]:
    if opts.numeric == "none" or not with_bw:
        return set()
    if opts.numeric == "all" or len(with_bw) <= opts.numeric_sample:
        return set(with_bw)
    m = opts.numeric_sample
    return {with_bw[round(j * (len(with_bw) - 1) / (m - 1))] for j in range(m)} if m > 1 else {with_bw[0]}


# -- the analytic check -----------------------------------------------------------------------

def _finite(*ts: torch.Tensor | None) -> bool:
    return all(bool(np.isfinite(t.numpy()).all()) if t.dtype in (torch.float64, torch.float32)
               else bool(torch.isfinite(t).all()) for t in ts if t is not None and t.numel())


def analytic_check(step: Step) -> tuple[list[CheckResult], LinearFit | None]:
    """Closed-form gradients of a recognised linear model against autograd's, per parameter."""
    fit = fit_of(step)
    if not fit:
        kind = "analytic_softmax" if fit.family == SOFTMAX_CE else "analytic_mse"
        return [CheckResult(kind, step.index, None, "not_applicable", detail=str(fit))], None
    kind = "analytic_mse" if fit.loss_kind == SQUARED_ERROR else "analytic_softmax"
    got = autograd_gradients(step)
    out = []
    if not _finite(fit.X, fit.y, fit.pred, *got.values()):
        return [CheckResult(kind, step.index, step.name(p.tid), "not_applicable", tid=p.tid,
                            detail="not applicable: non-finite values in this step (see the "
                                   "non_finite finding)") for p in fit.params], fit
    ref = fit.gradient()
    scale = fit.gradient_scale()
    rtol = ANALYTIC_RTOL.get(fit.dtype, 1e-4)
    base = _analytic_detail(fit)
    for p in fit.params:
        name = step.name(p.tid)
        if p.tid not in got:
            kept = any(e.tensor == p.tid and e.incoming is not None for e in step.accumulations)
            why = ("was kept as statistics only (record with --values full)" if kept else
                   "was not recorded in this step")
            out.append(CheckResult(kind, step.index, name, "not_applicable", tid=p.tid,
                                   detail=f"not applicable: autograd's gradient of {name} {why}"))
            continue
        g = got[p.tid].reshape(p.shape)
        diff = (g - ref[p.tid]).abs()
        max_abs = float(diff.max()) if diff.numel() else 0.0
        rel = diff / scale[p.tid].clamp_min(1e-300)
        rel = torch.where(diff == 0, torch.zeros_like(rel), rel)
        max_rel = float(rel.max()) if rel.numel() else 0.0
        status = "pass" if max_rel <= rtol else "fail"
        detail = base + f"; {_formula(fit, not fit.is_intercept(p.tid), name)}"
        note = _update_note(step, fit, p.tid)
        if note:
            detail += f"; {note}"
        if status == "fail":
            detail += (f"; autograd's gradient differs from the closed form (largest at element "
                       f"{tuple(int(x) for x in torch.nonzero(diff == diff.max())[0].tolist())})")
        out.append(CheckResult(kind, step.index, name, status, max_abs, max_rel, rtol, detail, p.tid))
    return out, fit


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
    """autograd's gradients against central finite differences of the float64 replay."""
    r = replay_of(step)
    if not r:
        return [CheckResult("numeric", step.index, None, "not_applicable", detail=str(r))]
    rp, values = r
    got = autograd_gradients(step)
    if not _finite(*values.values(), *got.values()) or not math.isfinite(rp(values)):
        return [CheckResult("numeric", step.index, step.name(t), "not_applicable", tid=t,
                            detail="not applicable: non-finite values in this step (see the "
                                   "non_finite finding)") for t in sorted(got)]
    n_ops = sum(1 for o in rp.runs)
    out = []
    failed = False
    for tid in sorted(got):
        g = got[tid].reshape(-1)
        dtype = _dtype_of(step, tid)
        idx = sample_indices(g.numel(), elements, step.index)
        fd = finite_differences(rp, values, tid, idx)
        a = g[idx]
        diff = (a - fd.fd).abs()
        max_abs = float(diff.max())
        gm = max(float(fd.fd.abs().max()), float(a.abs().max()), 1e-300)
        atol = 32 * UNIT_ROUNDOFF.get(dtype, 6e-8) * float(fd.curvature.abs().max())
        rtol = NUMERIC_RTOL.get(dtype, 1e-3)
        tol = rtol + atol / gm
        rel = max_abs / gm
        status = "pass" if rel <= tol else "fail"
        failed |= status == "fail"
        what = f"{len(idx)} of {g.numel()} element{'s' if g.numel() != 1 else ''}"
        detail = (f"central differences of the float64 replay of {n_ops} op{'s' if n_ops != 1 else ''} "
                  f"at {what} (h = 6e-6 * max(1, |theta|)); tolerance {rtol:g} + rounding floor "
                  f"{atol / gm:.2g}")
        if status == "fail":
            ratio = float((a * fd.fd).sum() / (fd.fd * fd.fd).sum()) if float((fd.fd * fd.fd).sum()) else None
            if ratio is not None:
                detail += f"; autograd's gradient is {ratio:.4g} x the finite differences"
        out.append(CheckResult("numeric", step.index, step.name(tid), status, max_abs, rel, tol,
                               detail, tid))
    if failed:
        blamed = blame_functions(rp, values, 1e-3)
        if blamed:
            text = "; ".join(
                f"{b.op.target} ({b.name}, op {b.op.index}"
                f"{' at ' + b.op.source.short if b.op.source else ''}): its backward gives "
                + (f"{b.ratio:.4g} x" if b.ratio is not None else "something other than")
                + " the derivative of its forward" for b in blamed)
        else:
            funcs = [o for o in rp.top if o.is_function]
            text = ("no custom autograd.Function to blame (" + (
                f"{', '.join(o.name for o in funcs)} check out on their own" if funcs else
                "the step has none") + "); a hook on a tensor can also change gradients")
        out = [replace(c, detail=c.detail + f"; wrong backward: {text}") if c.failed else c
               for c in out]
    return out


def _dtype_of(step: Step, tid: int) -> str:
    for e in step.accumulations:
        if e.tensor == tid and e.incoming is not None:
            return e.incoming.dtype
    info = step.tensors.get(tid)
    return info.dtype if info is not None else "float32"
