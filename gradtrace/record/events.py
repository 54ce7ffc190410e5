"""Events outside the forward ops: updates, zeroings and grad writes of leaves and their ``.grad``.

They are seen as in-place calls (on a leaf, its ``.grad`` or a ``.data`` alias of either),
``.grad = …``, ``.data = …`` and ``optimizer.step()``.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

from ..tracefile.rows import EventRow
from .calls import (GET_GRAD, INPLACE, INPLACE_SYMBOLS, SET_DATA, SET_GRAD, base_of, grad_fn_of,
                    is_lazy)
from .forward import Forward
from .naming import Naming
from .state import Run, StepState
from .values import Values

__all__ = ["Events"]

_Tensor = torch.Tensor
#: What a plan of :meth:`Events.on_change` can say instead: run the call unrecorded, or
#: record it as a forward op (an in-place op on a tensor that is no leaf).
_PLAIN, _AS_OP = object(), object()


def _idiom(via, default):
    if via:
        if via.endswith("zero_grad"):
            owner = "optimizer" if "Optimizer" in via or "optim" in via else "module"
            return f"{owner}.zero_grad()"
    return default


def _inplace_idiom(name, role, path, no_grad, via) -> str:
    """How an in-place call reads in the trace: ``p.grad.zero_()``, ``p -= …`` ..."""
    sym = INPLACE_SYMBOLS.get(name)
    lhs = f"p.{path}" if path else "p"
    op = (f"{lhs}[...] = …" if name == "__setitem__" else f"{lhs} {sym} …") if sym \
        else f"{lhs}.{name}()"
    if role == "param" and not path and no_grad:
        op += " (no_grad)"
    return _idiom(via, op)


class Events:
    """Sees what happens to leaves and their ``.grad`` and writes it as events."""

    def __init__(self, run: Run, step: StepState, naming: Naming, values: Values, forward: Forward):
        self.run = run
        self.step = step
        self.naming = naming
        self.values = values
        self.forward = forward
        self.idioms: dict[tuple, str] = {}
        #: Called when the step's updates are done (the recorder then writes it early).
        self.updates_done: Callable[[], None] = lambda: None

    def event(self, kind, tid, idiom, before, after, f, via, fresh=None, incoming=None,
              accumulation=None, through_data=False):
        run, step = self.run, self.step
        run.w.add_event(EventRow(run.take_seq(), kind, tid, idiom, before, after, incoming,
                                 None if fresh is None else int(fresh), via, 0, self.naming.sid(f),
                                 accumulation, int(through_data)))
        if kind == "allreduce":
            return  # DDP's gradient synchronisation: not a write of the user's
        step.count(kind if kind != "accumulate" else
                   ("accumulate_fresh" if fresh else "accumulate_added"))
        if accumulation == "added":
            step.count("accumulate_on_top")
        if kind == "zero":
            run.grad_zeroed.add(tid)
            if step.counts["update"] and not step.committed_early:
                self.updates_done()  # manual updates, then zeroing: the step's work is done
        else:
            run.grad_zeroed.discard(tid)

    def on_get(self, kind, func, args, kwargs):
        """``p.data`` / ``p.grad``: the result is noted as an alias of the leaf or its gradient."""
        out = func(*args, **kwargs)
        try:
            self._alias(kind, args[0], out)
        except Exception as e:  # a bug of gradtrace's: the user's call has run, it goes on
            self.run.internal(e)
        return out

    def _alias(self, kind, src, out) -> None:
        if out is not None and not is_lazy(src):  # a lazy parameter is registered once it has a shape
            alias = self.run.alias
            role = alias.get(src)
            if kind == GET_GRAD:
                # p.grad is the same tensor on every read: note it once.
                if role is None and src.requires_grad and grad_fn_of(src) is None \
                        and alias.get(out) is None:
                    alias.set(out, ("grad", self.run.tid_of(src), "grad"))
            elif role is not None:
                alias.set(out, (role[0], role[1], role[2] + ".data"))
            elif src.requires_grad and grad_fn_of(src) is None:
                alias.set(out, ("param", self.run.tid_of(src), "data"))

    def on_change(self, kind, func, args, kwargs):
        """An in-place call, ``.grad = …`` or ``.data = …``: what it changes is read before
        the call (a plan), the call runs, and its events are written after. The user's call
        runs exactly once, whatever gradtrace's own code does: a bug of gradtrace's before
        it leaves the call unrecorded, one after it leaves its events out, and either is
        said once (``Run.internal``); what the call itself raises reaches the user as it is."""
        run = self.run
        if not run.recording or run.in_optimizer_step or run.awaiting_forward:
            return func(*args, **kwargs)
        if kind == INPLACE:
            plan, finish = self._plan_inplace, self._finish_inplace
        elif kind == SET_GRAD:
            plan, finish = self._plan_set_grad, self._finish_set_grad
        elif kind == SET_DATA:
            plan, finish = self._plan_set_data, self._finish_set_data
        else:
            return func(*args, **kwargs)
        try:
            planned = plan(func, args, kwargs, sys._getframe())
        except Exception as e:
            run.internal(e)
            planned = _PLAIN
        if planned is _PLAIN:
            return func(*args, **kwargs)
        if planned is _AS_OP:  # an in-place op on a tensor that is no leaf: a forward op
            return self.forward.on_op(func, args, kwargs, inplace=True)
        out = func(*args, **kwargs)
        try:
            finish(func, args, planned)
        except Exception as e:
            run.internal(e)
        return out

    def _role(self, t):
        """What an in-place call on ``t`` changes: ``(the tensor whose value changes, (role,
        tid, path))``, or ``(None, None)``. A view (``w.view(-1)[1:3]`` under no_grad) changes
        what it is a view of: a parameter, or a ``.grad``."""
        if not isinstance(t, _Tensor) or is_lazy(t):
            return None, None
        alias = self.run.alias
        r = alias.get(t)
        if r is not None:
            return t, r
        base = base_of(t)
        if base is not None:
            r = alias.get(base)
            if r is not None:
                return base, r
            if t.requires_grad and base.requires_grad and grad_fn_of(base) is None:
                return base, ("param", self.run.tid_of(base), "")
            return None, None
        if t.requires_grad and grad_fn_of(t) is None:
            return t, ("param", self.run.tid_of(t), "")
        return None, None

    @staticmethod
    def _writes_back(target, args) -> bool:
        """``x[i] -= v`` is ``x[i].__isub__(v)`` (recorded), then ``x[i] = that view``: the
        second call writes a view back onto the very elements it views, changing nothing."""
        if len(args) < 3 or not isinstance(args[2], _Tensor):
            return False
        value = args[2]
        vb, tb = base_of(value), base_of(target)
        if vb is None or (vb is not target and vb is not tb):
            return False
        with torch._C.DisableTorchFunction():
            try:
                dest = target[args[1]]
            except Exception:
                return False
            return isinstance(dest, _Tensor) and dest.data_ptr() == value.data_ptr() \
                and dest.shape == value.shape and dest.stride() == value.stride()

    def _plan_inplace(self, func, args, kwargs, frame):
        if args:
            target = args[0]
        else:  # Python-level initialisers (nn.init.*_) pass the tensor by keyword
            target = next((v for v in kwargs.values() if isinstance(v, _Tensor)), None)
        if isinstance(target, _Tensor):
            changed, role = self._role(target)
            if role is None:
                return _AS_OP
            if getattr(func, "__name__", "") == "__setitem__" and self._writes_back(target, args):
                return _PLAIN
            roles = ((changed, role),)
        else:  # torch._foreach_*_ take lists of tensors
            targets = target if isinstance(target, (list, tuple)) else ()
            roles = [(c, r) for t in targets for c, r in (self._role(t),) if r is not None]
            if not roles:
                return _AS_OP
        f, via = self.naming.user_frame(frame)
        no_grad = not torch.is_grad_enabled()
        values = self.values
        before = [None if self._unwritten(t) else values.before(t, r) for t, r in roles]
        return roles, before, f, via, no_grad

    def _unwritten(self, t) -> bool:
        """Whether ``t`` is memory that ``torch.empty`` & co. made this step and nothing has
        written yet (``nn.Linear`` makes its weight so, then calls ``kaiming_uniform_`` on
        it): its first write has no value before, not the bytes the memory happened to hold
        (often NaN or 1e38, and different on every run). Once written, it has values."""
        unwritten = self.step.unwritten
        if not unwritten or t.data_ptr() not in unwritten:
            return False
        unwritten.discard(t.data_ptr())
        # the version counter (a Parameter shares its tensor's) says nothing wrote it in
        # between: in place, or through out= (another tensor may have its address since)
        return t._version == 0

    def _finish_inplace(self, func, args, planned) -> None:
        roles, before, f, via, no_grad = planned
        values = self.values
        name = getattr(func, "__name__", "")
        for (t, (role, tid, path)), b in zip(roles, before):
            key = (name, role, path, no_grad, via)
            idiom = self.idioms.get(key)
            if idiom is None:
                idiom = self.idioms[key] = _inplace_idiom(*key)
            through_data = "data" in path.split(".")
            if role == "param":
                self.event("update", tid, idiom, b, values.snap_now(t), f, via,
                           through_data=through_data)
            else:
                zero = name == "zero_" or not (bool(torch.any(t)) if t.numel() else False)
                after = values.snap_zeros(t) if zero else values.snap_now(t)
                self.event("zero" if zero else "grad_write", tid, idiom, b, after, f, via,
                           through_data=through_data)

    def _plan_set_grad(self, func, args, kwargs, frame):
        t, new = args[0], args[1]
        old = t.grad
        if old is None and new is None:
            return _PLAIN
        f, via = self.naming.user_frame(frame)
        tid = self.run.tid_of(t)
        # Usually the gradient the last backward left, already copied then.
        before = self.values.before(old, ("grad", tid, "grad")) if old is not None else None
        return tid, before, f, via

    def _finish_set_grad(self, func, args, planned) -> None:
        tid, before, f, via = planned
        new = args[1]
        if new is None:
            idiom = "p.grad = None"
            if via and via.endswith("zero_grad"):
                idiom = _idiom(via, idiom).replace("()", "(set_to_none=True)")
            self.event("zero", tid, idiom, before, None, f, via)
        else:
            self.event("grad_write", tid, "p.grad = …", before, self.values.snap_now(new), f, via)

    def _plan_set_data(self, func, args, kwargs, frame):
        t, new = args[0], args[1]
        _, role = self._role(t)
        if role is None or role[0] != "param":
            return _PLAIN
        same = self.run.alias.get(new) if isinstance(new, _Tensor) else None
        if same is not None and same[0] == "param" and same[1] == role[1]:
            # `p.data -= x` is an in-place call on the alias (recorded) then `p.data = alias`.
            return _PLAIN
        f, via = self.naming.user_frame(frame)
        return role[1], None if self._unwritten(t) else self.values.snap_now(t), f, via

    def _finish_set_data(self, func, args, planned) -> None:
        tid, before, f, via = planned
        self.event("update", tid, "p.data = …", before, self.values.snap_now(args[0]), f, via,
                   through_data=True)

    def optimizer_groups(self, optimizer, frame) -> None:
        """An optimizer's first ``step()`` in a recorded step: its param groups (which tensors,
        and the hyper-parameters that are plain numbers) go into the trace, so that a tensor
        given to it that cannot learn (``requires_grad=False``, never used) can be named."""
        run, naming = self.run, self.naming
        f, _ = naming.user_frame(frame)
        groups = []
        for group in optimizer.param_groups:
            tids, frozen = [], []
            for p in group["params"]:
                if not isinstance(p, _Tensor):
                    continue
                tid = run.tids.get(p)
                if tid is None:
                    tid = run.new_tid(p, role="param")
                if tid not in run.named:
                    name = run.param_names.get(p) or (naming.leaf_name(f, p) if f is not None else None)
                    if name:
                        run.name(tid, name)
                tids.append(tid)
                if not p.requires_grad:
                    frozen.append(tid)
            hyper: dict = {}
            for k, v in group.items():
                if k == "params" or not isinstance(k, str):
                    continue
                if v is None or isinstance(v, bool):
                    hyper[k] = v
                elif isinstance(v, (int, float)):
                    hyper[k] = float(v)
                elif isinstance(v, _Tensor) and v.numel() == 1 and v.is_floating_point():
                    hyper[k] = float(v.item())
                elif isinstance(v, (tuple, list)) and 0 < len(v) <= 16 and all(
                        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                    hyper[k] = [float(x) for x in v]
            groups.append({"params": tids, "frozen": frozen, "hyper": hyper})
        run.optimizers.append({"kind": type(optimizer).__name__, "step": run.step,
                               "source": naming.sid(f), "groups": groups})

    def optimizer_step(self, optimizer, before, frame) -> None:
        """``optimizer.step()`` has run: an update for each parameter it changed."""
        f, via = self.naming.user_frame(frame)
        idiom = f"{type(optimizer).__name__}.step()"
        updated = False
        for tid, p, version, b, _ in before:
            if p._version != version:
                self.event("update", tid, idiom, b, self.values.snap_now(p), f, via or idiom)
                updated = True
        if updated:
            self.updates_done()
