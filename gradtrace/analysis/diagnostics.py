"""Training diagnostics: what went wrong (or is worth a remark) in a recorded run.

Each finding names the step, the parameter, the op and the source line where it applies:

- ``forgot_zero_grad``: a gradient was added onto the previous step's gradient although
  the parameter was updated in between (the missing ``zero_grad()``). Several backward
  passes before one update (gradient accumulation on purpose) are not flagged.
- ``non_finite``: the first value that was inf or nan, in the forward pass, the backward
  pass or an update, and the op that produced it; not said of a step whose loss, gradients
  and updates are all finite (an attention mask of -inf that a softmax takes back).
- ``lr_unstable``: plain gradient descent on a squared-error linear model is stable only
  for lr < 2/lambda_max of the loss Hessian; said when the recorded lr is past it (an lr
  read off hand-written or SGD updates that agree across the parameters one line moved).
- ``ill_conditioned``: the Hessian's condition number is large (unscaled features):
  progress along the flattest direction is slow while the steepest one limits lr.
- ``no_grad_received``: a parameter never received a gradient: its use does not reach the
  loss, it did not require grad when the graph used it (``requires_grad = False`` by
  mistake), the forward pass uses only ``p.detach()``, or it sits in a module next to trained
  parameters and is never used (a sub-module ``forward()`` does not call), or it is given
  to an optimizer that can never change it (it does not require grad, or nothing uses it).
  Each names the line where the parameter was used, or made (or the optimizer's first step).
- ``data_update``: a parameter changed through ``.data`` during training (legal, but
  invisible to autograd).

The distance to the least-squares optimum per step comes with the findings
(:class:`OptimumTrack`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..tracefile import conveniences
from ..tracefile.model import Backward, Event, Op, Source, Step
from .linear import SQUARED_ERROR, LinearFit, NotApplicableError, pool
from .timeline import Timeline

__all__ = ["Finding", "FINDING_KINDS", "Diagnostics", "OptimumTrack", "effective_lr"]

FINDING_KINDS = ("forgot_zero_grad", "non_finite", "lr_unstable", "ill_conditioned",
                 "no_grad_received", "data_update",
                 # across the ranks of a distributed run (analysis/distributed.py)
                 "rank_missing", "ranks_step_count", "ranks_diverged", "no_grad_on_rank")

#: Above this condition number of the loss Hessian, progress is called slow.
ILL_CONDITIONED = 1e3


@dataclass(frozen=True)
class Finding:
    """One thing worth telling the user, where it happened."""

    kind: str
    step: int | None
    param: str | None
    op: str | None
    source: str | None
    message: str
    #: the rank of a distributed run it concerns (None: a single process, or all ranks)
    rank: int | None = None

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "step": self.step, "param": self.param, "op": self.op,
             "source": self.source, "message": self.message}
        if self.rank is not None:
            d["rank"] = self.rank
        return d

    def __str__(self) -> str:
        where = f"step {self.step}" if self.step is not None else "the run"
        if self.rank is not None:
            where = f"rank {self.rank}, {where}"
        if self.source:
            where += f", {self.source}"
        return f"{self.kind} ({where}): {self.message}"

    def __repr__(self) -> str:
        text = str(self)
        return f"<gradtrace.Finding {text if len(text) <= 160 else text[:159] + '…'}>"

    def _repr_html_(self) -> str | None:
        return conveniences.html(self)


@dataclass
class OptimumTrack:
    """The least-squares optimum on the recorded data and each step's distance to it."""

    theta_star: dict[str, list]
    loss_star: float
    distances: list[tuple[int, float]]
    rows: int
    steps: int

    def to_dict(self) -> dict:
        return {"theta_star": self.theta_star, "loss_star": self.loss_star, "rows": self.rows,
                "steps": self.steps, "distance": [[s, d] for s, d in self.distances]}


def _src(s: Source | None) -> str | None:
    return s.short if s is not None else None


def _finite(v) -> bool:
    """Whether a recorded Value holds only finite numbers (cheap when the data is kept)."""
    if v is None:
        return True
    d = v.array
    if d is not None:
        if d.dtype.kind != "f" or d.size == 0:  # as torch's is_floating_point: not complex
            return True
        return bool(np.isfinite(d).all())  # numpy: ~1 us on small arrays
    return v.stats.nonfinite == 0


def _step_values(step: Step) -> list:
    vals = [step.value(t) for o in step.ops for t in o.outputs]
    if step.backward is not None:
        for n in step.backward.nodes:
            vals.extend(n.grad_inputs)
    for e in step.events:
        vals.extend((e.incoming, e.after))
    return vals


def _all_finite(step: Step) -> bool:
    """One pass over every value of the step (the common case: nothing to find)."""
    arrays = []
    for v in _step_values(step):
        if v is None:
            continue
        a = v.array
        if a is None:
            if v.stats.nonfinite:
                return False
            continue
        if a.dtype.kind == "f":
            arrays.append(a.reshape(-1))
    return not arrays or bool(np.isfinite(np.concatenate(arrays).astype(np.float64, copy=False)).all())


def _contained(step: Step) -> bool:
    """Whether the step's non-finite values stayed inside its forward pass: its loss, every
    gradient of its backward pass and every event's value are finite. An attention mask
    filled with -inf, then a softmax, is that: nothing to report. Where the loss or a
    gradient is not finite, the first non-finite value of the step is where to look, even if
    it is such a mask (a row masked whole gives a softmax of NaN)."""
    if step.loss is not None and not math.isfinite(step.loss):
        return False
    vals: list[Any] = []
    if step.backward is not None:
        for n in step.backward.nodes:
            vals.extend(n.grad_inputs)
    for e in step.events:
        vals.extend((e.incoming, e.after))
    return all(_finite(v) for v in vals)


def _bad(v) -> str:
    d = v.array
    if d is not None and d.dtype.kind == "f":
        nan = int(np.isnan(d).sum())
        inf = int(np.isinf(d).sum())
        if d.size == 1:
            return "nan" if nan else str(float(d.reshape(())))
        parts = ([f"{nan} nan"] if nan else []) + ([f"{inf} inf"] if inf else [])
        return " and ".join(parts) + f" of {d.size} values"
    return f"{v.stats.nonfinite} non-finite of {v.numel} values"


def effective_lr(before: Any, after: Any, grad: Any) -> tuple[float, bool] | None:
    """(lr, plain) with ``after = before - lr * grad`` read from the values (arrays, a Value's
    ``.array``, or CPU tensors), where the step is large enough to measure; ``plain`` is False
    when elements disagree (momentum, Adam)."""
    b = np.asarray(before, dtype=np.float64).reshape(-1)
    a = np.asarray(after, dtype=np.float64).reshape(-1)
    g = np.asarray(grad, dtype=np.float64).reshape(-1)
    if b.shape != g.shape or not (np.isfinite(b).all() and np.isfinite(a).all() and np.isfinite(g).all()):
        return None
    delta = b - a
    # The difference of two float32 values resolves steps above a few ulps of the value.
    measurable = (np.abs(delta) > 64 * 1.2e-7 * np.maximum(np.abs(b), 1e-30)) & (g != 0)
    if not measurable.any():
        return None
    ratios = delta[measurable] / g[measurable]
    lr = float(np.median(ratios))
    if lr <= 0:
        return lr, False
    plain = bool((np.abs(ratios - lr) <= 1e-2 * abs(lr)).all())
    return lr, plain


def _gradient_descent(idiom: str | None) -> bool:
    """Whether an update's idiom may be plain gradient descent: one written by hand (``p -=
    lr * p.grad``) or ``SGD.step()``. Another optimizer's step (LBFGS, Adam...) can move a
    parameter of one number by a multiple of its gradient too, which is no learning rate."""
    return not (idiom or "").endswith(".step()") or idiom == "SGD.step()"


def _agreeing(lrs: list[tuple]) -> list[tuple]:
    """The learning rates read off updates, each made not plain unless every parameter the
    same step's update line (or optimizer) moved says plain gradient descent with the same
    rate: a parameter of one number always looks plain, whatever moved it."""
    groups: dict[tuple, list[tuple]] = {}
    for x in lrs:
        e = x[3]
        groups.setdefault((x[0], e.idiom, e.source), []).append(x)
    out: list[tuple] = []
    for xs in groups.values():
        lo, hi = min(x[1] for x in xs), max(x[1] for x in xs)
        agree = all(x[2] for x in xs) and hi - lo <= 1e-2 * abs(hi)
        out.extend(x if agree else (x[0], x[1], False, x[3]) for x in xs)
    return out


def gradient_multiple(before: np.ndarray, after: np.ndarray, grad: np.ndarray) -> float | None:
    """The one number ``r`` with ``after - before = r * grad`` element by element (to 2%: float32
    parameters round a small change to a few digits), or None when there is none (a zero in
    the gradient, shapes that differ, momentum or Adam). Arrays: a recorded Value's ``.array``."""
    d = (np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)).reshape(-1)
    gd = np.asarray(grad, dtype=np.float64).reshape(-1)
    if d.shape != gd.shape or not bool((gd != 0).all()):
        return None
    r = d / gd
    if not np.allclose(r, r[0], rtol=0.02, atol=0):
        return None
    return float(r[0])


class Diagnostics:
    """Feed it the steps in order (:meth:`see`), then ask for :meth:`findings`."""

    def __init__(self, trace, ill_conditioned: float = ILL_CONDITIONED):
        self.trace = trace
        self.ill_threshold = ill_conditioned
        self.out: list[Finding] = []
        # forgot_zero_grad
        self.updated_since_acc: dict[int, Event | None] = {}
        self.forgot: dict[int, list[tuple[int, Event, Event]]] = {}
        self.first_acc: dict[int, Event] = {}     # where each .grad was first accumulated
        self.first_update: dict[int, Event] = {}  # and the parameter first updated
        # what every step's scalars say (see :meth:`use_scalars`)
        self.timeline: Timeline | None = None
        self.columns: tuple[int, ...] = ()
        self.full_steps: set[int] = set()
        # non_finite
        self.non_finite: Finding | None = None
        # data_update
        self.first_use: dict[int, tuple[int, Op | None]] = {}
        self.data_updates: dict[tuple[int, str | None], list[tuple[int, Event]]] = {}
        # no_grad_received
        self.received: set[int] = set()
        self.grad_api_inputs: set[int] = set()
        self.used: set[int] = set()                       # params any recorded op took
        self.made: dict[int, tuple[int, Source | None]] = {}  # first event or use: where made
        self.detached: dict[int, tuple[int, Op]] = {}     # params a detach() took
        self.use_in_graph: dict[int, bool] = {}           # first graph use: its op in backward?
        self.changed: set[int] = set()                    # updated other than by initialisation
        self.tensors: dict = {}
        # lr and conditioning
        self.fits: list[LinearFit] = []
        self.fit_key: tuple[object, ...] | None = None
        self.lrs: list[tuple[int, float, bool, Event]] = []
        self.grad_now: dict[int, np.ndarray | None] = {}
        self.n_updates: dict[int, int] = {}

    def name(self, tid: int) -> str:
        return self.trace.name(tid)

    def use_scalars(self, timeline: "Timeline", columns: tuple[int, ...], full_steps) -> None:
        """Decide forgot_zero_grad (when the accumulation codes were recorded) and the first
        non-finite value from every step's scalars (``timeline``; ``columns`` the tid of each
        column), not only from the steps seen: the steps seen then give the details (the
        line, the update's idiom, the op). ``full_steps``: the steps recorded in full."""
        self.timeline = timeline
        self.columns = tuple(columns)
        self.full_steps = set(full_steps)

    # -- one step ------------------------------------------------------------------------------
    def see(self, step: Step, fit: LinearFit | None) -> None:
        bw = step.backward
        has_bw = bw is not None
        if bw is not None and bw.api == "autograd.grad":
            self.grad_api_inputs.update(bw.inputs)
        self.tensors = step.tensors
        op_nodes = {n.op for n in bw.nodes if n.op is not None} if bw is not None else set()
        # The classes are the kinds: "op", "backward", and the event kinds.
        for item in step.timeline():
            if isinstance(item, Op):
                if item.parent is None:
                    self._use(step, item)
                if item.is_graph and item.parent is None and has_bw:
                    for t in item.inputs:
                        info = step.tensors.get(t)
                        if info is not None and info.role == "param" and t not in self.first_use:
                            self.first_use[t] = (step.index, item)
                            self.use_in_graph[t] = item.index in op_nodes
            elif isinstance(item, Backward):
                for n in item.nodes:
                    if n.variable is not None and n.variable not in self.first_use:
                        self.first_use[n.variable] = (step.index, None)
            else:
                self._event(step, item)
        if self.non_finite is None and not _all_finite(step) and not _contained(step):
            self._scan_non_finite(step)
        if fit is not None and fit.loss_kind == SQUARED_ERROR:
            key = (fit.terms, fit.d, fit.k)
            if self.fit_key is None:
                self.fit_key = key
            if key == self.fit_key:
                self.fits.append(fit)

    def _use(self, step: Step, op: Op) -> None:
        for t in op.inputs:
            info = step.tensors.get(t)
            if info is None or info.role != "param":
                continue
            self.used.add(t)
            self.made.setdefault(t, (step.index, op.source))
            if op.name in ("detach", "detach_"):
                self.detached.setdefault(t, (step.index, op))

    def _event(self, step: Step, e: Event) -> None:
        tid = e.tensor
        self.made.setdefault(tid, (step.index, e.source))
        if e.kind == "update" and not any(w in (e.via or "") for w in ("__init__", "reset_parameters")):
            self.changed.add(tid)
        if e.kind == "accumulate":
            self.received.add(tid)
            self.first_acc.setdefault(tid, e)
            prev = self.updated_since_acc.get(tid)
            if e.accumulation == "added" and prev is not None:
                self.forgot.setdefault(tid, []).append((step.index, e, prev))
            self.updated_since_acc[tid] = None
            self.grad_now[tid] = e.after.array if e.after is not None else None
        elif e.kind == "update":
            self.updated_since_acc[tid] = e
            self.first_update.setdefault(tid, e)
            if e.through_data and tid in self.first_use:
                self.data_updates.setdefault((tid, _src(e.source)), []).append((step.index, e))
            g = self.grad_now.get(tid)
            n = self.n_updates[tid] = self.n_updates.get(tid, 0) + 1
            # Every update of the first 100, then every 10th: enough to see a schedule.
            if (g is not None and (n <= 100 or n % 10 == 0) and e.before is not None and e.after is not None
                    and e.before.array is not None and e.after.array is not None
                    and _gradient_descent(e.idiom)):
                r = effective_lr(e.before.array, e.after.array, g)
                if r is not None:
                    self.lrs.append((step.index, r[0], r[1], e))
        elif e.kind == "zero":
            self.grad_now[tid] = None
        elif e.kind == "grad_write":
            self.grad_now[tid] = e.after.array if e.after is not None else None

    def _scan_non_finite(self, step: Step) -> None:
        ops = {o.index: o for o in step.ops}
        first_op = min(ops) if ops else None  # once: not per op, which made the scan quadratic
        for item in step.timeline():
            if isinstance(item, Op):
                if item.index == first_op:  # values the step started from
                    for t in item.inputs:
                        info = step.tensors.get(t)
                        if info is not None and info.role == "param" and not _finite(step.value(t)):
                            self._nf(step, f"{self.name(t)} was already non-finite when step "
                                           f"{step.index} began ({_bad(step.value(t))})",
                                     self.name(t), None, item.source)
                            return
                bad_in = any(not _finite(step.value(t)) for t in item.inputs)
                for t in item.outputs:
                    v = step.value(t)
                    if not _finite(v):
                        how = ("from non-finite inputs" if bad_in else
                               "from finite inputs: an overflow or an undefined value such as log(0)")
                        self._nf(step, f"{item.name} ({item.target}) gave {_bad(v)} in the forward "
                                       f"pass, {how}", None, item.name, item.source)
                        return
            elif isinstance(item, Backward):
                for n in item.execution_order:
                    for g in n.grad_inputs:
                        if g is not None and not _finite(g):
                            op = ops.get(n.op) if n.op is not None else None
                            what = f"{n.name}" + (f", the backward of {op.name}" if op else "")
                            self._nf(step, f"{what} gave {_bad(g)} in the backward pass",
                                     None, op.name if op else n.name,
                                     op.source if op is not None else item.source)
                            return
            else:
                for label, v in (("gradient", item.incoming), ("value", item.after)):
                    if v is not None and not _finite(v):
                        self._nf(step, f"{self.name(item.tensor)}'s {label} became {_bad(v)} "
                                       f"({item.kind}: {item.idiom})", self.name(item.tensor),
                                 item.idiom, item.source)
                        return

    def _nf(self, step: Step, message: str, param, op, source) -> None:
        self.non_finite = Finding("non_finite", step.index, param, op, _src(source),
                                  f"first non-finite value: {message}")

    # -- after the last step --------------------------------------------------------------------
    def findings(self) -> tuple[list[Finding], OptimumTrack | None]:
        out: list[Finding] = self._forgot()
        nf = self._first_non_finite()
        if nf is not None:
            out.append(nf)
        optimum = None
        if self.fits:
            extra, optimum = self._quadratic()
            out.extend(extra)
        out.extend(self._no_grad())
        for (tid, src), updates in self.data_updates.items():
            s, e = updates[0]
            out.append(Finding(
                "data_update", s, self.name(tid), e.idiom, src,
                f"{self.name(tid)} was updated through .data ({e.idiom}, {len(updates)} time"
                f"{'s' if len(updates) != 1 else ''}): legal, but invisible to autograd; "
                f"`with torch.no_grad(): {self.name(tid)} -= ...` says the same and keeps "
                "autograd's checks"))
        out.sort(key=lambda f: (f.step if f.step is not None else -1, FINDING_KINDS.index(f.kind),
                                f.param or ""))
        return out, optimum

    def _forgot(self) -> list[Finding]:
        """forgot_zero_grad: from every step's accumulation codes when the scalars have them
        (the events of the steps seen across a gap between them cannot tell gradient
        accumulation on purpose from a forgotten zero_grad()), else from the events."""
        tl = self.timeline
        hits: dict[int, tuple[int, int]] = {}   # tid -> (first step, steps)
        if tl is not None and tl.has_accumulation:
            for col, steps in tl.forgot.items():
                if col < len(self.columns):
                    hits[self.columns[col]] = (steps[0], tl.forgot_counts[col])
        else:
            hits = {tid: (h[0][0], len(h)) for tid, h in self.forgot.items()}
        out = []
        for tid, (s, count) in hits.items():
            seen = {step: (e, upd) for step, e, upd in self.forgot.get(tid, [])}
            e, upd = seen.get(s, (self.first_acc.get(tid), self.first_update.get(tid)))
            n = self.name(tid)
            how = (f" ({upd.idiom}{' at ' + upd.source.short if upd.source else ''})"
                   if upd is not None else "")
            more = f"; it happened at {count} steps" if count > 1 else ""
            if s not in self.full_steps and tl is not None:
                more += (f"; step {s} was kept as scalars only (its accumulation says so), "
                         "`gradtrace run --full` records its ops")
            out.append(Finding(
                "forgot_zero_grad", s, n, "AccumulateGrad", _src(e.source) if e is not None else None,
                f"backward() added {n}'s gradient onto the one from an earlier step although {n} "
                f"was updated in between{how}: .grad accumulates, so the update used the sum of "
                f"old gradients; zero it after each update (param.grad.zero_() or "
                f"optimizer.zero_grad()){more}"))
        return out

    def _first_non_finite(self) -> Finding | None:
        """The first non-finite value: of the steps seen, or earlier by the scalars."""
        tl = self.timeline
        seen = self.non_finite
        if tl is None or tl.non_finite is None:
            return seen
        s, what = tl.non_finite
        if seen is not None and seen.step is not None and seen.step <= s:
            return seen
        note = ("" if s in self.full_steps else
                f"; step {s} was kept as scalars only: `gradtrace run --full` (or a larger "
                "--budget) records its ops, to name the one that made it")
        return Finding("non_finite", s, None, None, None,
                       f"first non-finite value: {what} (from the step's scalars){note}")

    def _root(self, tid: int) -> str | None:
        """The module a parameter belongs to, by its name ("net" of "net.fc.weight")."""
        info = self.tensors.get(tid)
        name = info.name if info is not None else None
        return name.split(".")[0] if name and "." in name else None

    def _next_to_trained(self, tid: int) -> bool:
        """Whether the parameter's own module (or, outside modules, the run) has a parameter
        that received a gradient: then a frozen one there is more likely a mistake."""
        info = self.tensors.get(tid)
        name = info.name if info is not None else None
        if not name or "." not in name:
            return True
        module = name.rsplit(".", 1)[0] + "."
        return any((i := self.tensors.get(t)) is not None and (i.name or "").startswith(module)
                   and "." not in (i.name or "")[len(module):] for t in self.received)

    def _made_at(self, tid: int) -> str:
        made = self.made.get(tid)
        src = made[1] if made is not None else None
        return f" (made at {src.short})" if src is not None else ""

    def _no_grad(self) -> list[Finding]:
        """Parameters that never received a gradient, each with why and where."""
        if not self.received:
            return []
        out: list[Finding] = []
        done = set(self.received) | self.grad_api_inputs
        for tid, (s, op) in sorted(self.first_use.items(), key=lambda kv: (kv[1][0], kv[0])):
            if tid in done:
                continue
            done.add(tid)
            n = self.name(tid)
            if op is not None and self.use_in_graph.get(tid):
                if not self._next_to_trained(tid):
                    continue  # its whole module is frozen: on purpose (fine-tuning)
                at = f" at {op.source.short}" if op.source is not None else ""
                msg = (f"{n} was used by {op.name}{at} but did not require grad there "
                       f"(requires_grad was False){self._made_at(tid)}: backward() passed it by, "
                       "so it never received a gradient and the optimizer never changes it; "
                       "if it is not frozen on purpose, do not set requires_grad = False")
            else:
                where = f"{op.name}" if op is not None else "the backward graph"
                msg = (f"{n} requires grad and was used by {where}, but no backward pass reached "
                       "it: it never received a gradient (is it connected to the loss, or "
                       "detached on the way?)")
            out.append(Finding("no_grad_received", s, n, op.name if op is not None else None,
                               _src(op.source) if op is not None else None, msg))
        for tid, (s, op) in sorted(self.detached.items(), key=lambda kv: (kv[1][0], kv[0])):
            if tid in done:
                continue
            done.add(tid)
            n = self.name(tid)
            at = f" (at {op.source.short})" if op.source is not None else ""
            out.append(Finding(
                "no_grad_received", s, n, op.name, _src(op.source),
                f"{n} requires grad, but the forward pass uses it only through {n}.detach(){at}: "
                f"detach() cuts {n} off from the graph, so it never received a gradient and "
                f"training does not change it; use {n} itself where it should learn"))
        trained = {self._root(t) for t in self.received} - {None}
        for tid in sorted(self.tensors):
            info = self.tensors[tid]
            root = self._root(tid)
            # (a parameter changed by hand, such as an EMA copy, is not meant to get gradients)
            if (tid in done or tid in self.used or tid in self.changed or info.role != "param"
                    or not info.requires_grad or root is None or root not in trained):
                continue
            n = self.name(tid)
            module = n.rsplit(".", 1)[0]
            made = self.made.get(tid)
            made_step, src = (made[0], made[1]) if made is not None else (None, None)
            if src is None:  # made before the trace: where an optimizer was given it, if one was
                made_step, src = self._optimizer_step_of(tid, made_step)
            if self._next_to_trained(tid):  # its own module learns: forward() skips it
                why = (f"{module}'s forward() does not use it, so {n} never received a gradient "
                       f"while the other parameters of {module} were trained; use it in "
                       "forward() or remove it")
            else:
                why = (f"{module} is not called (or only under torch.no_grad()), so {n} never "
                       f"received a gradient while the other parameters of {root} were trained; "
                       f"call {module} in forward() or remove it")
            out.append(Finding(
                "no_grad_received", made_step, n, None, _src(src),
                f"{n} is never used in the forward pass{self._made_at(tid)}: {why}"))
        out.extend(self._optimizer_params({f.param for f in out} | {self.name(t) for t in done}))
        return out

    def _optimizer_step_of(self, tid: int, step: int | None) -> tuple[int | None, Source | None]:
        """The first step() line of the first optimizer given ``tid``, and its step."""
        for opt in self.trace.info.optimizers:
            if tid in opt.params and opt.source is not None:
                return opt.step, self.trace.sources.get(opt.source)
        return step, None

    def _optimizer_params(self, reported: set[str | None]) -> list[Finding]:
        """Tensors given to an optimizer that cannot learn there: ones that do not require
        grad, and ones that never received a gradient (not said twice)."""
        out: list[Finding] = []
        info = self.trace.info
        sources = self.trace.sources if info.optimizers else {}
        tensors = self.trace.tensors if info.optimizers else {}
        seen: set[int] = set()
        for opt in info.optimizers:
            src = sources.get(opt.source) if opt.source is not None else None
            at = f" (its first step() at {src.short})" if src is not None else ""
            frozen = {t for g in opt.groups for t in g.frozen}
            for tid in opt.params:
                n = self.name(tid)
                t = tensors.get(tid)
                # (a tensor changed by hand, such as an EMA copy, is not meant to get gradients)
                if (tid in seen or tid in self.received or tid in self.changed or n in reported
                        or t is None):
                    continue
                seen.add(tid)
                made = self.made.get(tid)
                where = made[1] if made is not None and made[1] is not None else src
                if tid in frozen or not t.requires_grad:
                    msg = (f"{n} is passed to the optimizer ({opt.kind}{at}) but does not require "
                           f"grad{self._made_at(tid)}: autograd never gives it a gradient, so "
                           f"{opt.kind} skips it and it never changes; if it should learn, do not "
                           "set requires_grad = False; if it is frozen on purpose, give the "
                           "optimizer only the parameters that require grad")
                else:
                    msg = (f"{n} is passed to the optimizer ({opt.kind}{at}) but never received a "
                           f"gradient{self._made_at(tid)}: the forward pass does not use it, so "
                           f"{opt.kind} never changes it; use it in the model or leave it out")
                out.append(Finding("no_grad_received", opt.step, n, f"{opt.kind}.step()",
                                   _src(where), msg))
        return out

    def _quadratic(self) -> tuple[list[Finding], OptimumTrack | None]:
        """lr stability, conditioning and the distance to the optimum (squared error)."""
        out: list[Finding] = []
        fits = [f for f in self.fits if torch.isfinite(f.X).all() and torch.isfinite(f.y).all()]
        if not fits:
            return out, None
        try:
            pooled = pool(fits)
            ev = pooled.eigenvalues()
        except (NotApplicableError, RuntimeError):
            return out, None
        lam_max = float(ev[-1])
        lam_min = float(ev[0])
        first = fits[0]
        wname = self.name(first.weight.tid)
        model_op = first.model_op
        lrs = [(s, lr, plain, e) for s, lr, plain, e in _agreeing(self.lrs) if plain and lr > 0]
        lr = None
        if lrs:
            lr = sorted(x[1] for x in lrs)[len(lrs) // 2]
        data_desc = (f"the recorded data ({pooled.n} rows over {len(fits)} step"
                     f"{'s' if len(fits) != 1 else ''}, normalised like one step's loss)")
        if lr is not None and lam_max > 0 and lr > 2 / lam_max:
            s, _, _, e = next(x for x in lrs if x[1] > 2 / lam_max)
            out.append(Finding(
                "lr_unstable", s, wname, e.idiom, _src(e.source),
                f"lr = {lr:.3g} is past the stability bound 2/lambda_max = {2 / lam_max:.3g} "
                f"(lambda_max = {lam_max:.4g}, the largest eigenvalue of the loss Hessian on "
                f"{data_desc}): each step overshoots along the steepest direction by a factor "
                f"|1 - lr*lambda_max| = {abs(1 - lr * lam_max):.3g}, so training diverges; "
                f"use lr < {2 / lam_max:.3g} or scale the features"))
        kappa = lam_max / lam_min if lam_min > lam_max * 1e-12 else math.inf
        if kappa > self.ill_threshold:
            scales = pooled.X.std(0) if pooled.n > 1 else pooled.X.abs().mean(0)
            means = pooled.X.mean(0)
            feat = ", ".join(f"{float(m):.3g}±{float(sd):.3g}" for m, sd in zip(means, scales))
            if math.isinf(kappa):
                msg = (f"the loss Hessian on {data_desc} is singular (lambda_min = {lam_min:.3g}): "
                       "features are collinear or there are fewer rows than parameters, so the "
                       "least-squares optimum is not unique")
            else:
                msg = (f"condition number {kappa:.3g} of the loss Hessian (lambda_max = "
                       f"{lam_max:.4g}, lambda_min = {lam_min:.3g}) on {data_desc}")
                if lr is not None and lr > 0:
                    slow = 1 / (lr * lam_min)
                    msg += (f": with lr = {lr:.3g} the flattest direction shrinks by a factor "
                            f"(1 - lr*lambda_min) per step, about {slow:.3g} steps per e-fold, ")
                    if lr * lam_max < 2:
                        msg += (f"while the steepest one (lr*lambda_max = {lr * lam_max:.3g}) "
                                "forbids a larger lr: slow, zig-zag progress")
                    else:
                        msg += (f"and lr*lambda_max = {lr * lam_max:.3g} > 2 already diverges along "
                                "the steepest one: no single lr suits both")
                else:
                    msg += ": gradient descent progresses slowly along the flattest direction"
            msg += f"; the features (mean±std per column: {feat}) are not on one scale: standardise them"
            out.append(Finding("ill_conditioned", first.step, wname,
                               model_op.name if model_op is not None else None,
                               _src(model_op.source) if model_op is not None else None, msg))
        track = None
        try:
            star = pooled.optimum()
            flat_star = pooled.flatten(star)
            dist = []
            for f in fits:
                if len(f.param_values) == len(f.params):
                    assert f.step is not None  # each fit is one step's (only a pool has none)
                    d = float(torch.linalg.vector_norm(f.flatten() - flat_star))
                    if math.isfinite(d):
                        dist.append((f.step, d))
            track = OptimumTrack(
                theta_star={self.name(t): v.tolist() for t, v in star.items()},
                loss_star=pooled.loss(star), distances=dist, rows=pooled.n, steps=len(fits))
        except (NotApplicableError, RuntimeError):
            pass
        return out, track
