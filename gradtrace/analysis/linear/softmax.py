"""Softmax cross-entropy: ``L = c * sum_i -sum_j Y_ij log softmax(z_i)_j``.

:class:`CrossEntropyMatcher` starts at the loss and walks back through sums, means and
scaling (folded into the constant) to ``F.cross_entropy``, ``F.nll_loss(F.log_softmax(z))``
or a hand-written form: ``exp(z) / exp(z).sum(1)``, ``z - logsumexp(z)``,
``-log(p[range(n), y])``, ``gather``, ``-(Y * log p)``. The answer is the logits' tid ``z``
and the target distribution ``Y`` (one-hot for class labels).
"""

from __future__ import annotations

from typing import Any

import torch

from ...formatting import shape as fmt_shape
from ...tracefile.model import Op
from .fit import SOFTMAX_CE
from .reader import _NA, _RESHAPES, _Reader, _at, _dims


class CrossEntropyMatcher:
    """The loss at a tensor as ``a * sum Y log softmax(z)``: (a, z tid, Y, form)."""

    def __init__(self, r: _Reader) -> None:
        self.r = r
        #: the op where the cross-entropy is formed (the op a finding about the loss names)
        self.loss_op: Op | None = None

    def cross_entropy(self, tid: int, a: float = 1.0) -> tuple[float, int, torch.Tensor, str]:
        """value(tid) = a * sum_ij Y_ij log softmax(z)_ij: (a, z tid, Y, description)."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the loss was not made by a recorded op")
        scaled = r.rescaling(tid, op)
        if scaled is not None:
            src, num, den = scaled
            return self.cross_entropy(src, a * num / den)
        name, targs = op.name, r.tensor_args(op)
        if name == "neg":
            return self.cross_entropy(r.source(op), -a)
        if name == "mul" and len(op.args) >= 2:
            for i, j in ((0, 1), (1, 0)):
                s = r.scalar(op.args[j])
                t = targs[i]
                if s is not None and t is not None and t in r.dependent:
                    return self.cross_entropy(t, a * s)
            for i, j in ((0, 1), (1, 0)):  # Y * log(p), Y a constant of the same shape
                const, logp = targs[i], targs[j]
                if const is not None and logp is not None and const not in r.dependent \
                        and logp in r.dependent:
                    z = self.log_softmax_of(logp)
                    Y = r.const(const, "the target distribution").double()
                    zs = r.shape(z)
                    if tuple(Y.shape) != tuple(zs):
                        Y = Y.expand(zs) if len(Y.shape) <= len(zs) else Y
                    if tuple(Y.shape) != tuple(zs):
                        break
                    self.loss_op = self.loss_op or op
                    return (a, z, Y.reshape(-1, zs[-1]), "-(Y * log softmax(z)).sum()")
        if name in ("cross_entropy", "nll_loss"):
            z_in, t = targs[0], targs[1] if len(targs) > 1 else None
            if t is None and isinstance(op.kwargs.get("target"), dict):
                t = op.kwargs["target"].get("tensor")
            if r.kw(op, "weight", 2) is not None:
                raise _NA(f"{name} with class weights", SOFTMAX_CE)
            red = op.kwargs.get("reduction", "mean")
            eps = float(op.kwargs.get("label_smoothing", 0.0) or 0.0)
            if z_in is None:
                raise _NA(f"{name} of something that is not a tensor", SOFTMAX_CE)
            z = z_in if name == "cross_entropy" else self.log_softmax_of(z_in)
            zs = r.shape(z)
            if len(zs) != 2:
                raise _NA(f"{name} of logits of shape {fmt_shape(zs)} (only (n, classes))", SOFTMAX_CE)
            if t is None:
                raise _NA(f"{name} without a target tensor", SOFTMAX_CE)
            tv = r.const(t, "the target")
            Y = self._targets(tv, zs, op.kwargs.get("ignore_index", -100), name)
            if eps:
                Y = Y * (1 - eps) + eps / zs[1]
            self.loss_op = self.loss_op or op
            desc = f"{name}(reduction='{red}')"
            if red == "mean":
                return (-a / zs[0], z, Y, desc)
            if red in ("sum", "none"):
                return (-a, z, Y, desc)
            raise _NA(f"{name} with reduction {red!r}", SOFTMAX_CE)
        if name == "log" and targs and targs[0] is not None:
            # log of selected probabilities: -log(p[range(n), y]) or log(p.gather(1, y))
            sel = self.select(targs[0], probs=True)
            if sel is not None:
                self.loss_op = self.loss_op or op
                return (a, sel[0], sel[1], "-log(softmax(z)[range(n), y])")
            self.log_softmax_of(tid)  # raises with the reason when it is not log(softmax)
            raise _NA("log(softmax(z)) summed without picking the target classes", SOFTMAX_CE)
        if name in ("getitem", "gather", "take_along_dim"):
            sel = self.select(tid, probs=False)
            if sel is not None:
                self.loss_op = self.loss_op or op
                return (a, sel[0], sel[1], "-log_softmax(z)[range(n), y]")
        raise _NA(f"the loss applies {name}{_at(op)}, which is not part of a softmax cross-entropy")

    def _targets(self, tv: torch.Tensor, zs: tuple[int, ...], ignore_index: Any,
                 name: str) -> torch.Tensor:
        n, k = zs
        if tv.is_floating_point():
            if tuple(tv.shape) != tuple(zs):
                raise _NA(f"{name} with float targets of shape {fmt_shape(tv.shape)}", SOFTMAX_CE)
            return tv.double()
        tv = tv.reshape(-1).long()
        if tv.numel() != n:
            raise _NA(f"{name} with {tv.numel()} targets for {n} rows", SOFTMAX_CE)
        if bool(torch.any(tv == ignore_index)):
            raise _NA(f"{name} with targets equal to ignore_index", SOFTMAX_CE)
        if bool(torch.any((tv < 0) | (tv >= k))):
            raise _NA(f"{name} with targets outside 0..{k - 1}", SOFTMAX_CE)
        return torch.nn.functional.one_hot(tv, k).double()

    def select(self, tid: int, probs: bool) -> tuple[int, torch.Tensor] | None:
        """p[range(n), y] / p.gather(1, y[:, None]) of softmax (probs) or log-softmax: (z, Y)."""
        r = self.r
        op = r.op(tid)
        while op is not None and op.name in _RESHAPES:
            op = r.op(r.tensor_args(op)[0])
        if op is None:
            return None
        targs = r.tensor_args(op)
        src = targs[0] if targs else None
        if src is None:
            return None
        labels = None
        if op.name == "getitem" and len(op.args) >= 2 and isinstance(op.args[1], (list, tuple)) \
                and len(op.args[1]) == 2:
            rows, cols = op.args[1]
            n = r.shape(src)[0] if r.shape(src) else -1
            if not self._is_arange(rows, n):
                return None
            if isinstance(cols, dict) and "tensor" in cols and cols["tensor"] not in r.dependent:
                labels = r.const(cols["tensor"], "the labels")
        elif op.name in ("gather", "take_along_dim"):
            dim = r.kw(op, "dim", 1)
            idx = r.kw(op, "index", 2) if op.name == "gather" else r.kw(op, "indices", 1)
            if op.name == "take_along_dim":
                dim = r.kw(op, "dim", 2)
            if dim not in (1, -1) or not (isinstance(idx, dict) and "tensor" in idx):
                return None
            labels = r.const(idx["tensor"], "the labels")
        if labels is None or labels.is_floating_point():
            return None
        z = self.softmax_of(src) if probs else self.log_softmax_of(src)
        zs = r.shape(z)
        labels = labels.reshape(-1).long()
        if len(zs) != 2 or labels.numel() != zs[0] or bool(torch.any((labels < 0) | (labels >= zs[1]))):
            return None
        return z, torch.nn.functional.one_hot(labels, zs[1]).double()

    def _is_arange(self, arg: Any, n: int) -> bool:
        if isinstance(arg, dict) and "repr" in arg:
            return arg["repr"] in (f"range(0, {n})", f"range({n})")
        if isinstance(arg, dict) and "tensor" in arg and arg["tensor"] not in self.r.dependent:
            v = self.r.step.value(arg["tensor"])
            if v is not None and v.data is not None:
                return torch.equal(v.data.reshape(-1).long(), torch.arange(n))
        if isinstance(arg, (list, tuple)):
            return list(arg) == list(range(n))
        return False

    def _class_dim_ok(self, op: Op, z: int) -> bool:
        d = _dims(op)
        nd = len(self.r.shape(z))
        if isinstance(d, (list, tuple)) and len(d) == 1:
            d = d[0]
        return isinstance(d, int) and nd == 2 and d % nd == 1

    def softmax_of(self, tid: int) -> int:
        """z such that tid = softmax(z, dim=1)."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the probabilities were not made by a recorded op", SOFTMAX_CE)
        targs = r.tensor_args(op)
        z = targs[0] if targs else None
        if op.name == "softmax" and z is not None and self._class_dim_ok(op, z):
            return z
        if op.name in ("div", "true_divide") and len(targs) >= 2 and targs[0] is not None \
                and targs[1] is not None:
            e, s = targs[0], targs[1]
            z = self._exp_of(e)
            sop = r.op(s)
            while sop is not None and sop.name in _RESHAPES:
                sop = r.op(r.tensor_args(sop)[0])
            if z is not None and sop is not None and sop.name == "sum":
                se = r.tensor_args(sop)[0]
                if (se == e or self._exp_of(se) == z) and self._class_dim_ok(sop, z):
                    return z
        raise _NA(f"{op.name} is not a softmax over the classes", SOFTMAX_CE)

    def _exp_of(self, tid: int | None) -> int | None:
        op = self.r.op(tid)
        if op is not None and op.name == "exp":
            return self.r.tensor_args(op)[0]
        return None

    def log_softmax_of(self, tid: int) -> int:
        """z such that tid = log_softmax(z, dim=1) (also log(softmax(z)), z - logsumexp(z))."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the log-probabilities were not made by a recorded op", SOFTMAX_CE)
        targs = r.tensor_args(op)
        z = targs[0] if targs else None
        if op.name == "log_softmax" and z is not None and self._class_dim_ok(op, z):
            return z
        if op.name == "log" and targs:
            return self.softmax_of(r.source(op, 0, SOFTMAX_CE))
        if op.name == "sub" and len(targs) >= 2 and targs[0] is not None and targs[1] is not None:
            lop = r.op(targs[1])
            if lop is not None and lop.name == "logsumexp" and r.tensor_args(lop)[0] == targs[0] \
                    and self._class_dim_ok(lop, targs[0]):
                return targs[0]
        raise _NA(f"{op.name} is not a log-softmax over the classes", SOFTMAX_CE)
