"""The model: where the features meet the parameters, ``y_hat = X @ W + b``.

:class:`ModelMatcher` starts at the tensor the loss compares with the targets and walks back
through the recorded ops: reshapes, an added bias, then ``matmul`` / ``mm`` / ``F.linear`` /
``addmm`` / ``x * w``. A parameter may reach the model through views (``w.t()``, a reshape,
or ``w.T``, which the recorder does not see: :func:`unrecorded_view`). The result is an
:class:`Affine`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...tracefile.model import Op, Step
from .fit import _Param
from .reader import _NA, _RESHAPES, _TRANSPOSES, _Reader, _num, _shape_str

_VIEW_NODES = {"PermuteBackward0", "TransposeBackward0", "TBackward0"}


@dataclass
class Affine:
    """``y_hat = X @ W + b`` as found in the ops (``W``, ``b``: parameters through views)."""

    X: torch.Tensor            #: (n, d) float64, the features as fed to the model
    x_tid: int                 #: the tensor the model multiplied by W
    weight: _Param
    bias: _Param | None
    op: Op                     #: where X meets W
    k: int                     #: outputs per row
    desc: str                  #: "X @ W (matmul)", "F.linear(X, W, b)", ...


class ModelMatcher:
    """The model at the loss's prediction (or logits): an :class:`Affine`, or _NA why not."""

    def __init__(self, r: _Reader) -> None:
        self.r = r
        self.step = r.step
        #: the op a finding about the model names (set by :meth:`affine`)
        self.model_op: Op | None = None
        #: parameters seen only through an unrecorded view: param tid -> the view's tid
        self.seen_as: dict[int, int] = {}

    # -- parameters through views ------------------------------------------------------------
    def param_path(self, tid: int, consumer: Op | None, what: str) -> _Param:
        r = self.r
        if tid in r.params:
            return _Param(tid, r.shape(tid))
        op = r.op(tid)
        if op is None:
            found = self._unrecorded_view(tid, consumer)
            if found is not None:
                return found
            raise _NA(f"{what} ({self.step.name(tid)}) is neither a parameter nor made from one by "
                      "a recorded op")
        ins = [t for t in r.tensor_args(op) if t is not None]
        if len(ins) != 1 or ins[0] not in r.dependent:
            raise _NA(f"{what} is computed by {op.name} (not a view of one parameter)")
        src = ins[0]
        inner = self.param_path(src, op, what)
        in_shape, out_shape = r.shape(src), r.shape(tid)
        if op.name in _RESHAPES:
            return inner.then(("reshape", in_shape, out_shape))
        if op.name in _TRANSPOSES:
            nd = len(in_shape)
            if nd == 0:  # t(), .T, transpose(0, 0), permute() of a 0-d tensor: itself
                return inner
            if op.name == "permute":
                given = op.args[1:] if len(op.args) > 2 else (op.args[1] if len(op.args) > 1
                                                               else op.kwargs.get("dims"))
                if not isinstance(given, (list, tuple)):
                    raise _NA(f"{what} is a permute without its dims")
                dims = [int(x) % nd for x in given]
            elif op.name in ("transpose", "swapaxes", "swapdims"):
                a = [x for x in op.args[1:3]] or [op.kwargs.get("dim0"), op.kwargs.get("dim1")]
                dims = list(range(nd))
                i, j = int(a[0]) % nd, int(a[1]) % nd
                dims[i], dims[j] = dims[j], dims[i]
            elif op.name == "T":
                dims = list(range(nd))[::-1]
            else:  # t, mT, adjoint: the last two
                dims = list(range(nd))
                if nd >= 2:
                    dims[-1], dims[-2] = dims[-2], dims[-1]
            return inner.then(("permute", tuple(dims)))
        raise _NA(f"{what} is computed by {op.name} from a parameter (not a plain view)")

    def _unrecorded_view(self, tid: int, consumer: Op | None) -> _Param | None:
        found = unrecorded_view(self.step, tid, consumer)
        if found is None:
            return None
        p, dims = found
        info = self.step.tensors.get(p)
        self.seen_as[p] = tid
        return _Param(p, tuple(info.shape) if info is not None else (), (("permute", dims),))

    # -- the model ------------------------------------------------------------------------------
    def affine(self, tid: int) -> Affine:
        """y_hat = X @ W + b at ``tid`` (through reshapes): X, weight, bias, pred tid."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA(f"the prediction ({self.step.name(tid)}) was not made by a recorded op")
        name = op.name
        targs = r.tensor_args(op)
        if name in _RESHAPES:
            src = [t for t in targs if t is not None]
            if len(src) == 1 and src[0] in r.dependent:
                return self.affine(src[0])
        if name == "add" and len(op.args) >= 2 and targs[0] is not None and targs[1] is not None:
            if _num(op.kwargs.get("alpha", 1)) not in (None, 1.0):
                raise _NA("an add with alpha is not a plain bias")
            reasons = []
            for a, b in ((targs[0], targs[1]), (targs[1], targs[0])):
                try:
                    core = self.linear_core(a)
                    if core.bias is not None:
                        raise _NA("two biases")
                    core.bias = self.bias_path(b, op, core)
                    self.model_op = core.op  # where X meets W: the op a finding names
                    return core
                except _NA as e:
                    reasons.append(e.reason)
            raise _NA(f"the prediction is an add that is not X @ W + b ({reasons[0]})")
        core = self.linear_core(tid)
        self.model_op = core.op
        return core

    def linear_core(self, tid: int) -> Affine:
        """X @ W, F.linear(X, W[, b]), addmm(b, X, W) or x * w at ``tid``."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA(f"{self.step.name(tid)} was not made by a recorded op")
        name = op.name
        targs = r.tensor_args(op)
        if name in ("matmul", "mm"):
            x, w = targs[0], targs[1] if len(targs) > 1 else None
            if x is None or w is None:
                raise _NA(f"{name} without two tensors")
            return self._xw(op, x, w, transpose=False, desc=f"X @ W ({name})")
        if name == "linear":
            x, w = targs[0], targs[1]
            b = r.kw(op, "bias", 2)
            core = self._xw(op, x, w, transpose=True, desc="F.linear(X, W, b)")
            if isinstance(b, dict) and "tensor" in b:
                core.bias = self.bias_path(b["tensor"], op, core)
            elif b is not None:
                raise _NA("F.linear with a bias that is not a tensor")
            return core
        if name == "addmm":
            if any(_num(op.kwargs.get(k, 1)) != 1.0 for k in ("beta", "alpha")):
                raise _NA("addmm with beta/alpha is not X @ W + b")
            b, x, w = targs[0], targs[1], targs[2]
            if b is None:
                raise _NA("addmm whose first argument is not a tensor")
            core = self._xw(op, x, w, transpose=False, desc="addmm(b, X, W)")
            core.bias = self.bias_path(b, op, core)
            return core
        if name == "mul" and len(targs) >= 2 and targs[0] is not None and targs[1] is not None:
            for x, w in ((targs[0], targs[1]), (targs[1], targs[0])):
                if x in r.dependent or w not in r.dependent:
                    continue
                p = self.param_path(w, op, "the weight")
                if p.numel != 1:
                    raise _NA("x * w with a w of more than one element is not a linear regression "
                              "of the usual form")
                xv = r.const(x, "the input")
                X = xv.double().reshape(-1, 1)
                return Affine(X=X, x_tid=x, weight=p.then(("reshape", r.shape(w), (1, 1))),
                              bias=None, op=op, k=1, desc="x * w")
            raise _NA("a product of two parameter-dependent tensors is not linear in the parameters")
        raise _NA(f"{op.name} ({op.target}) at the model's output is not X @ W + b")

    def _xw(self, op: Op, x: int | None, w: int | None, transpose: bool, desc: str) -> Affine:
        r = self.r
        if x is None or w is None:
            raise _NA(f"{op.name} without two tensors")
        if x in r.dependent:
            raise _NA("the input of the linear layer depends on the parameters "
                      "(more than one layer is not a linear model)")
        if w not in r.dependent:
            raise _NA(f"{op.name} multiplies by a constant, not a parameter")
        p = self.param_path(w, op, "the weight")
        xv = r.const(x, "the input X").double()
        wshape = r.shape(w)
        if len(wshape) == 1 and not transpose:
            p = p.then(("reshape", wshape, (wshape[0], 1)))
            wshape = (wshape[0], 1)
        elif len(wshape) != 2:
            raise _NA(f"a weight of shape {_shape_str(wshape)} is not a matrix")
        elif transpose:
            p = p.then(("permute", (1, 0)))
            wshape = (wshape[1], wshape[0])
        if xv.dim() < 1 or xv.shape[-1] != wshape[0]:
            raise _NA(f"X of shape {_shape_str(xv.shape)} does not match W {_shape_str(wshape)}")
        X = xv.reshape(-1, wshape[0])
        return Affine(X=X, x_tid=x, weight=p, bias=None, op=op, k=wshape[1], desc=desc)

    def bias_path(self, tid: int, consumer: Op, core: Affine) -> _Param:
        r = self.r
        if tid not in r.dependent:
            raise _NA("the added term is a constant, not a parameter")
        p = self.param_path(tid, consumer, "the bias")
        shape = r.shape(tid)
        k = core.k
        if p.numel not in (1, k) or math.prod(shape) != p.numel or (len(shape) >= 2 and
                                                                    any(s != 1 for s in shape[:-1])):
            raise _NA(f"the added parameter of shape {_shape_str(shape)} is not a bias of "
                      f"{k} output(s)")
        return p.then(("reshape", shape, (p.numel,)))


def unrecorded_view(step: Step, tid: int, consumer: Op | None) -> tuple[int, tuple[int, ...]] | None:
    """``w.T`` is a property, which the recorder does not see: the matmul's input is then a
    tensor no recorded op made. Find the parameter behind it through the backward graph
    (the consumer's node -> a transpose node -> AccumulateGrad): (param tid, permutation)."""
    bw = step.backward
    if bw is None or consumer is None:
        return None
    nodes = bw.nodes
    cands = []
    for n in nodes:
        if n.op != consumer.index:
            continue
        for nxt in n.next:
            if nxt is None:
                continue
            m = nodes[nxt]
            if m.op is None and m.name in _VIEW_NODES and len(m.next) == 1 and m.next[0] is not None:
                leaf = nodes[m.next[0]]
                if leaf.name == "AccumulateGrad" and leaf.variable is not None:
                    cands.append(leaf.variable)
    if len(cands) != 1:
        return None
    info = step.tensors.get(cands[0])
    shape = tuple(info.shape) if info is not None else ()
    v = step.value(tid)
    out = tuple(v.shape) if v is not None else ()
    if len(shape) != 2 or tuple(reversed(shape)) != out:
        return None
    return cands[0], (1, 0)
