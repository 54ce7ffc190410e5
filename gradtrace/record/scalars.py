"""Every step's scalars, recorded in full or not: the loss, per-parameter norms, how each ``.grad`` was met.

Taken around each backward call (the patched ``torch.autograd.backward``, which every
``loss.backward()`` goes through, with the mode on or off): before it, the loss, each
parameter's value norm, how its ``.grad`` stands (None, zeros or not), and the norm of its
change since the last backward call (the step before's update); after it, the gradient
norms. A handful of ``torch._foreach_norm`` calls per step whatever the number of
parameters: a few microseconds. Read-only on the user's tensors, under ``no_grad`` and
with torch functions off; the one copy is gradtrace's own (the values at the last backward
call, to measure updates by).
"""

from __future__ import annotations

import math
import time
from array import array
from typing import Any

import numpy as np
import torch

from ..tracefile.rows import NO_LOSS, ScalarParamRow, ScalarRow
from .policy import Policy
from .state import Run

__all__ = ["ScalarTaker"]

_NAN = float("nan")
#: dtypes whose values numpy views directly (norms by BLAS on the view, no torch call)
_VIEWED = frozenset({torch.float32, torch.float64, torch.float16})


def _view(t) -> np.ndarray | None:
    """A numpy view of a CPU tensor's values (no copy), or None."""
    if t.dtype in _VIEWED and t.is_cpu and t.layout is torch.strided:
        try:
            return (t.detach() if t.requires_grad else t).numpy()
        except (RuntimeError, TypeError):  # a neg-bit or conj view, a tensor subclass...
            return None
    return None


def _nonzero_probe(v: list | np.ndarray | None) -> int | None:
    """A flat index where a CPU gradient is nonzero now, among its first, middle and last
    elements; ``v``: its values as :func:`_numbers` gives them (None if numpy cannot view
    it, or none of the three is nonzero)."""
    if v is None:
        return None
    if isinstance(v, list):
        n = len(v)
        for k in (0, n // 2, n - 1):
            if n and v[k] != 0:
                return k
        return None
    n = v.size
    for k in (0, n // 2, n - 1):
        if n and v.flat[k] != 0:
            return k
    return None


def _still_nonzero(seen: tuple[int, int, int] | None, g) -> bool:
    """Whether ``g`` is the gradient tensor seen after the last backward pass, unchanged by
    autograd's count and still nonzero where it was: then it is not all zeros. The element
    is read again because ``g.data.zero_()`` (old tutorials' idiom) zeroes the values without
    moving ``g``'s version counter: ``.data`` has a counter of its own."""
    if seen is None or seen[0] != id(g) or seen[1] != g._version:
        return False
    v = _view(g)
    return v is not None and v.size > seen[2] and v.flat[seen[2]] != 0


#: Up to this many elements a value is read as a Python list (cheaper than numpy calls).
_LISTED = 64


def _numbers(t) -> list | np.ndarray | None:
    """A CPU tensor's values: a list of floats when it is small, else a numpy view; None
    for what numpy cannot view (another device, bfloat16, sparse...)."""
    v = _view(t)
    if v is not None and v.size <= _LISTED:
        return v.ravel().tolist()
    return v


def _norm_of(v: list | np.ndarray) -> float:
    if isinstance(v, list):
        return math.hypot(*v)
    f = v.reshape(-1)
    if f.dtype == np.float16:
        f = f.astype(np.float32)
    return math.sqrt(float(np.dot(f, f)))


def _norms(ts: list) -> list[float]:
    """Norms of ``ts`` as floats, in one foreach call (one by one where that fails)."""
    if not ts:
        return []
    try:
        return torch.stack(torch._foreach_norm(ts)).tolist()
    except Exception:  # mixed dtypes or devices, sparse, a tensor subclass...
        out = []
        for t in ts:
            try:
                out.append(float(torch.linalg.vector_norm(t.detach().to_dense().double())))
            except Exception:
                out.append(_NAN)
        return out


class ScalarTaker:
    """Takes each step's scalars and writes them a step late (the update is known then)."""

    FLUSH_ROWS = 256

    def __init__(self, run: Run, policy: Policy):
        self.run = run
        self.policy = policy
        self.params: list[Any] = []
        self.cols: dict[int, int] = {}   # id(param) -> column (the params list keeps ids valid)
        self.optimizers: dict[int, tuple[Any, int]] = {}  # id -> (optimizer, params seen)
        self.prev: list[Any] = []        # values at the last backward call (gradtrace's copies)
        self.views: list[tuple] = []     # per parameter: (data_ptr, its numpy view or None)
        #: id(param) -> (id(grad), version, flat index of an element then nonzero)
        self.seen_grads: dict[int, tuple[int, int, int]] = {}
        self.pending: tuple | None = None  # (step, full, loss, grads, values, acc) awaiting its update
        self.current: tuple | None = None
        self.last_flush = time.monotonic()
        self.prev_loss: float | None = None
        self.delta = 0.0                 # running mean of |loss change|
        self.patterns: set[tuple] = set()
        self.last_pattern: tuple | None = None
        self.seen_steps = 0
        self.said: set[str] = set()

    # -- which parameters ---------------------------------------------------------------------
    def watch(self, t, tid: int) -> None:
        """A parameter gradtrace saw (in a recorded backward pass or an optimizer): a column."""
        if id(t) in self.cols:
            return
        col = self.cols[id(t)] = len(self.params)
        self.params.append(t)
        self.policy.parameter(t.numel())
        self.run.w.add_scalar_param(ScalarParamRow(col, tid))

    def _discover(self, roots) -> None:
        """No parameter is known yet (the first backward call, in a step not recorded in
        full: ``--steps 10:20``): the leaves the roots' graph ends in, so that this step's
        scalars have them too. Once only matters: a parameter, once watched, stays."""
        from .backward import walk

        fns = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
        if not fns:
            return
        nodes, names, _, _ = walk(fns, self.run.config.max_nodes_per_backward)
        leaves = [(self.run.tid_of(n.variable), n.variable) for n, name in zip(nodes, names)
                  if name == "AccumulateGrad"]
        for tid, leaf in sorted(leaves, key=lambda x: x[0]):
            self.watch(leaf, tid)

    def watch_optimizer(self, optimizer) -> None:
        groups = optimizer.param_groups
        n = sum(len(g["params"]) for g in groups)
        known = self.optimizers.get(id(optimizer))
        if known is not None and known[1] == n:
            return
        self.optimizers[id(optimizer)] = (optimizer, n)
        for g in groups:
            for p in g["params"]:
                if isinstance(p, torch.Tensor) and p.requires_grad:
                    self.watch(p, self.run.tid_of(p))

    # -- around each backward call ------------------------------------------------------------
    def before(self, roots, api: str) -> None:
        """Before a backward call of the run's step ``run.step``."""
        loss = NO_LOSS  # (several roots, or a root of several numbers: no one number to call it)
        if len(roots) == 1 and isinstance(roots[0], torch.Tensor) and roots[0].numel() == 1:
            loss = self.run.loss_of(roots[0])  # one element, any shape
        if not self.params:
            try:
                self._discover(roots)
            except Exception as e:  # gradtrace's bug: the step's scalars still go in
                self.run.internal(e)
        params = self.params
        n_prev = len(self.prev)
        views = self._param_numbers()
        if all(v is not None for v in views):
            # CPU tensors: a few numbers as a Python list (hypot, dist: one C call each),
            # larger ones as numpy views (BLAS dot); a microsecond or two a parameter where
            # torch's foreach kernels cost ~4 us per tiny tensor and a stack to read them
            acc, values, updates = [], [], []
            for p, v in zip(params, views):
                g = p.grad
                if g is None:
                    acc.append(0)
                elif _still_nonzero(self.seen_grads.get(id(p)), g):
                    acc.append(2)  # the gradient the last backward left, not zeroed: not zeros
                else:
                    gv = _numbers(g)
                    zero = (not any(gv)) if isinstance(gv, list) else (
                        not gv.any() if gv is not None else not bool(torch.any(g)))
                    acc.append(1 if zero else 2)
                values.append(_norm_of(v))
            prev = self.prev
            for i, (v, old) in enumerate(zip(views, prev)):
                if isinstance(v, list):
                    updates.append(math.dist(v, old) if isinstance(old, list) and len(old) == len(v)
                                   else _NAN)
                    prev[i] = v
                elif isinstance(old, np.ndarray) and old.shape == v.shape:
                    # the difference in gradtrace's own copy, then the copy made current: two
                    # buffers, not three (a third costs 3x the time once they leave the cache)
                    np.subtract(v, old, out=old)
                    updates.append(_norm_of(old))
                    np.copyto(old, v)
                else:
                    updates.append(_NAN)
                    prev[i] = v.copy()
            prev += [v if isinstance(v, list) else v.copy() for v in views[n_prev:]]
        else:
            grads = [p.grad for p in params]
            have = [g for g in grads if g is not None]
            old = [t for t in self.prev if isinstance(t, torch.Tensor)]
            diffs = torch._foreach_sub(params[:n_prev], old) if n_prev and len(old) == n_prev else []
            norms = _norms(have + params + list(diffs))
            k = len(have)
            it = iter(norms[:k])
            # how each .grad stands: None (0: fresh if a gradient comes), zeros (1), or not (2)
            acc = [0 if g is None else (1 if next(it) == 0 else 2) for g in grads]
            values = norms[k:k + len(params)]
            updates = norms[k + len(params):]
            if diffs:
                torch._foreach_copy_(old, params[:n_prev])
                self.prev = old + [p.detach().clone() for p in params[n_prev:]]
            else:
                self.prev = [p.detach().clone() for p in params]
        if self.pending is not None:
            self._write(self.pending, updates)
            self.pending = None
        # each .grad as it stands: one the pass leaves as it was got no gradient from it
        held = [None if g is None else (id(g), g._version) for g in (p.grad for p in params)]
        self.current = (self.run.step, int(self.run.recording), loss, values,
                        acc if api != "autograd.grad" else [-1] * len(acc), held)
        if loss is not NO_LOSS:
            self._look(loss)

    def after(self, api: str) -> None:
        """After the backward call: the gradient norms; the row waits for its update."""
        if self.current is None:
            return
        step, full, loss, values, acc, held = self.current
        self.current = None
        grads = [p.grad for p in self.params]
        seen = self.seen_grads
        seen.clear()
        if api == "autograd.grad":
            g_norms = [_NAN] * len(grads)
            views: list = [None] * len(grads)
        else:
            views = [None if g is None else _numbers(g) for g in grads]
            if all(v is not None or g is None for v, g in zip(views, grads)):
                g_norms = [_NAN if v is None else _norm_of(v) for v in views]
            else:
                have = [g for g in grads if g is not None]
                it = iter(_norms(have))
                g_norms = [_NAN if g is None else next(it) for g in grads]
        for p, g, n, v in zip(self.params, grads, g_norms, views):
            if g is not None and n > 0:  # known not to be zeros while it stays as it is
                probe = _nonzero_probe(v)  # (the same values: nothing ran since they were read)
                if probe is not None:
                    seen[id(p)] = (id(g), g._version, probe)
        # acc: how the .grad was met; -1 where no gradient arrived (still None after, or the
        # .grad it had, unchanged: a parameter this pass did not reach, another model's)
        acc = [-1 if g is None or (h is not None and h == (id(g), g._version)) else a
               for a, g, h in zip(acc, grads, held)]
        if any(n in (math.inf, -math.inf) or (n != n and a >= 0) for n, a in zip(g_norms, acc)):
            self._event(step, "a non-finite gradient")
        self.pending = (step, full, loss, g_norms, values, acc)
        pattern = tuple(acc)
        if self.seen_steps >= 2 and pattern != self.last_pattern and pattern not in self.patterns:
            self._event(step, "a new zeroing / accumulation pattern")
        self.patterns.add(pattern)
        self.last_pattern = pattern
        self.seen_steps += 1

    def _param_numbers(self) -> list:
        """The parameters' values (see :func:`_numbers`), through numpy views kept from one
        step to the next while each parameter keeps its storage (``p.data = ...`` swaps it)."""
        cache = self.views
        out = []
        for i, p in enumerate(self.params):
            ptr = p.data_ptr() if p.is_cpu else -1
            hit = cache[i] if i < len(cache) else None
            if hit is None or hit[0] != ptr or hit[1] is None:
                v = _view(p)
                hit = (ptr, v)
                if i < len(cache):
                    cache[i] = hit
                else:
                    cache.append(hit)
            v = hit[1]
            out.append(v.ravel().tolist() if v is not None and v.size <= _LISTED else v)
        return out

    def _look(self, loss: float) -> None:
        step = self.run.step
        if loss != loss or loss in (math.inf, -math.inf):
            self._event(step, "a non-finite loss")
        elif self.prev_loss is not None and self.prev_loss == self.prev_loss:
            change = loss - self.prev_loss
            if self.seen_steps >= 5 and change > 10 * self.delta and loss > 1.5 * abs(self.prev_loss) \
                    and change > 0:
                self._event(step, f"the loss jumped from {self.prev_loss:.3g} to {loss:.3g}")
            self.delta = 0.9 * self.delta + 0.1 * abs(change) if self.seen_steps > 1 else abs(change)
        self.prev_loss = loss

    def _event(self, step: int, why: str) -> None:
        self.policy.event(step, why)

    def _write(self, row: tuple, updates: list[float]) -> None:
        step, full, loss, g_norms, values, acc = row
        k = len(g_norms)
        ups = list(updates[:k]) + [_NAN] * (k - len(updates))
        vals = array("d", [loss])
        for i in range(k):
            vals.extend((g_norms[i], values[i], ups[i]))
        self.run.w.add_scalars(ScalarRow(step, full, vals.tobytes(), array("b", acc).tobytes()))
        now = time.monotonic()
        if now - self.last_flush >= self.run.w.window / 2:
            self.last_flush = now
            self.run.w.flush_scalars()

    def finish(self) -> None:
        """The run ended: the last step's update is its change since its backward call."""
        try:
            if self.pending is not None:
                ups = []
                for p, old in zip(self.params, self.prev):
                    v = _numbers(p)
                    if isinstance(v, list) and isinstance(old, list) and len(v) == len(old):
                        ups.append(math.dist(v, old))
                    elif isinstance(v, np.ndarray) and isinstance(old, np.ndarray) \
                            and v.shape == old.shape:
                        ups.append(_norm_of(v - old))
                    elif isinstance(old, torch.Tensor):
                        ups.append(_norms([p.detach() - old])[0])
                    else:
                        ups.append(_NAN)
                self._write(self.pending, ups)
                self.pending = None
            self.run.w.flush_scalars()
        finally:
            self.clear()

    def clear(self) -> None:
        self.params, self.prev, self.cols, self.optimizers, self.views = [], [], {}, {}, []
        self.seen_grads = {}
        self.pending = self.current = None
