"""The model: a sum of parameter x feature terms, ``y_hat = X @ W + b`` and its relatives.

:class:`ModelMatcher` starts at the tensor the loss compares with the targets and walks back
through the recorded ops, keeping the prediction as a list of terms (a parameter times
features that do not depend on any parameter): sums and differences join terms, a product
or quotient with data scales their features, ``matmul`` / ``mm`` / ``F.linear`` / ``addmm``
make a term of a weight matrix, and a parameter on its own is an intercept. So ``X @ W + b``,
``nn.Linear``, ``a + b * x + c * x ** 2`` with scalar parameters and ``x * w + b`` all read
the same way. A parameter may reach the model through views (``w.t()``, a reshape, or
``w.T``, which the recorder does not see: :func:`unrecorded_view`). Anything else on the way
(a product of two parameters, a ``tanh``, a power of a parameter) stops the walk with the
reason, in words a student can act on, naming the op and its source line. The result is an
:class:`Affine`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...formatting import shape as fmt_shape
from ...tracefile.model import Op, Step
from .fit import Term, _Param, bias_of, params_of, weight_of
from .reader import _NA, _RESHAPES, _TRANSPOSES, _Reader, _at, _dims, _num

_VIEW_NODES = {"PermuteBackward0", "TransposeBackward0", "TBackward0"}


@dataclass(eq=False)
class _T:
    """A term while the walk goes on: features ``F`` (1 or N rows, d columns) times ``W``."""

    param: _Param              #: through its views, W of shape (d, out)
    F: torch.Tensor            #: (1 or N, d) float64
    out: int                   #: 1 or K
    ones: bool                 #: F is the intercept's implicit 1 (not yet scaled by data)
    op: Op | None              #: where the parameter met its features
    desc: str                  #: "X @ W (matmul)", "x * w", ... (for the classic description)

    def scaled(self, c: torch.Tensor | float, op: Op | None = None) -> "_T":
        """This term times a number or a column of data (which then meets the parameter at ``op``)."""
        number = isinstance(c, float)
        one = isinstance(c, float) and c == 1.0
        return _T(self.param, self.F * c, self.out, self.ones and one,
                  op if self.ones and op is not None else self.op,
                  "x * w" if self.ones and not number else self.desc)


@dataclass
class Affine:
    """``y_hat = sum of terms`` as found in the ops: ``X @ W + b`` in general."""

    X: torch.Tensor            #: (n, d) float64, the feature columns of every term
    terms: tuple[Term, ...]    #: feature terms first, then intercepts
    op: Op                     #: where the features first meet a parameter
    k: int                     #: outputs per row
    desc: str                  #: "X @ W (matmul)", "F.linear(X, W, b)", ...

    @property
    def weight(self) -> _Param:
        return weight_of(self.terms)

    @property
    def bias(self) -> _Param | None:
        return bias_of(self.terms)

    @property
    def params(self) -> list[_Param]:
        return params_of(self.terms)


class ModelMatcher:
    """The model at the loss's prediction (or logits): an :class:`Affine`, or _NA why not."""

    def __init__(self, r: _Reader) -> None:
        self.r = r
        self.step = r.step
        #: the op a finding about the model names (set by :meth:`affine`)
        self.model_op: Op | None = None
        #: parameters seen only through an unrecorded view: param tid -> the view's tid
        self.seen_as: dict[int, int] = {}
        self.N = 1
        self.K = 1

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


    def _as_param(self, tid: int, consumer: Op | None) -> _Param | None:
        """``tid`` as one parameter through views (w, w.t(), b.reshape(1, -1), w.T), or None."""
        r = self.r
        if tid in r.params:
            return _Param(tid, r.shape(tid))
        op = r.op(tid)
        if op is None:
            return self._unrecorded_view(tid, consumer)
        if op.name not in _RESHAPES and op.name not in _TRANSPOSES:
            return None
        try:
            return self.param_path(tid, consumer, "the parameter")
        except _NA:
            return None

    # -- names, for the reasons ----------------------------------------------------------------
    def _params_in(self, tid: int) -> list[str]:
        """The names of the parameters ``tid`` was computed from (as far as the ops say)."""
        r, seen, todo, found = self.r, set(), [tid], []
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in r.params:
                found.append(t)
                continue
            op = r.op(t)
            if op is not None:
                todo.extend(i for i in op.inputs if i in r.dependent)
        return [self.step.name(t) for t in sorted(found)]

    def _label(self, tid: int, consumer: Op | None) -> str:
        p = self._as_param(tid, consumer)
        if p is not None:
            return self.step.name(p.tid)
        names = self._params_in(tid)
        op = self.r.op(tid)
        what = f"the result of {op.name}" if op is not None else self.step.name(tid)
        return f"{what} (made from {', '.join(names)})" if names else what

    # -- where a tensor sits in the prediction's (rows, outputs) ---------------------------------
    @staticmethod
    def _frame(shape: tuple[int, ...]) -> tuple[int, int]:
        k = shape[-1] if len(shape) >= 2 else 1
        return (math.prod(shape) // k if k else 0, k)

    def _place(self, s: tuple[int, ...], fs: tuple[int, ...], what: str) -> tuple[int, int]:
        """(rows, outputs) of a tensor of shape ``s`` broadcast into ``fs``: each 1 or all."""
        s = tuple(s)
        while len(s) > len(fs) and s[0] == 1:
            s = s[1:]
        if len(s) > len(fs):
            raise _NA(f"{what} of shape {fmt_shape(s)} has more dimensions than the prediction "
                      f"{fmt_shape(fs)}")
        if len(fs) >= 2:
            c = s[-1] if s else 1
            srows, frows = s[:-1], fs[:-1]
        else:
            c, srows, frows = 1, s, fs
        srows = (1,) * (len(frows) - len(srows)) + tuple(srows)
        if c not in (1, self.K) or (len(fs) >= 2 and c != 1 and c != fs[-1]):
            raise _NA(f"{what} of shape {fmt_shape(s)} does not line up with the prediction's "
                      f"{fmt_shape(fs)}")
        if all(x == 1 for x in srows):
            return 1, c
        if tuple(srows) == tuple(frows):
            return self.N, c
        raise _NA(f"{what} of shape {fmt_shape(s)} spreads over only part of the prediction's "
                  f"rows {fmt_shape(fs)}")

    # -- the model ------------------------------------------------------------------------------
    def affine(self, tid: int) -> Affine:
        """The prediction at ``tid`` as a sum of parameter x feature terms."""
        r = self.r
        if tid not in r.dependent:
            raise _NA(f"the prediction ({self.step.name(tid)}) does not depend on any parameter")
        ps = r.shape(tid)
        self.N, self.K = self._frame(ps)
        parts = self.expr(tid, ps, None)
        return self._finish(parts)

    def _finish(self, parts: list[_T]) -> Affine:
        N, K = self.N, self.K
        plain = [t.ones and tuple(t.F.shape) == (1, 1) and float(t.F) == 1.0 for t in parts]
        feats = [t for t, i in zip(parts, plain) if not i]
        ints = [t for t, i in zip(parts, plain) if i]
        cols, blocks, terms, at = [], [], [], 0
        for t in feats:
            F = t.F.expand(N, t.F.shape[1]) if t.F.shape[0] == 1 else t.F
            blocks.append(F)
            terms.append(Term(t.param, (at, at + F.shape[1]), t.out))
            cols.append(t)
            at += F.shape[1]
        for t in ints:
            terms.append(Term(t.param.then(("reshape", (1, t.out), (t.out,))), None, t.out))
        X = torch.cat(blocks, 1) if blocks else torch.zeros(N, 0, dtype=torch.float64)
        first = next((t.op for t in feats + ints if t.op is not None), None)
        if first is None:
            raise _NA("the prediction is a parameter on its own, not a model of the data")
        self.model_op = first
        core = Affine(X=X.contiguous() if len(blocks) > 1 else X, terms=tuple(terms), op=first,
                      k=K, desc="")
        classic = (len(feats) == 1 and feats[0].out == K and len(ints) <= 1
                   and all(t.param.tid != feats[0].param.tid for t in ints))
        core.desc = feats[0].desc if classic else f"a sum of {len(terms)} parameter x feature terms"
        return core

    def expr(self, tid: int, fs: tuple[int, ...], consumer: Op | None) -> list[_T]:
        """``tid`` (which depends on the parameters, broadcast into shape ``fs``) as terms."""
        r = self.r
        p = self._as_param(tid, consumer)
        if p is not None:
            s = r.shape(tid)
            rows, c = self._place(s, fs, f"the parameter {self.step.name(p.tid)}")
            if rows != 1:
                raise _NA(f"the parameter {self.step.name(p.tid)} of shape {fmt_shape(s)} has one "
                          "value per row of the data: it is not a model of the data")
            return [_T(p.then(("reshape", s, (1, c))), torch.ones(1, 1, dtype=torch.float64), c,
                       True, consumer, "b")]
        op = r.op(tid)
        if op is None:
            raise _NA(f"{self.step.name(tid)} depends on the parameters but was made by a call "
                      "gradtrace did not record")
        name, targs = op.name, r.tensor_args(op)
        if name in _RESHAPES:
            src = [t for t in targs if t is not None]
            if len(src) == 1 and src[0] in r.dependent:
                if self._frame(r.shape(src[0])) != self._frame(r.shape(tid)):
                    raise _NA(f"the model reshapes {fmt_shape(r.shape(src[0]))} to "
                              f"{fmt_shape(r.shape(tid))}{_at(op)}, which mixes rows and outputs")
                return self.expr(src[0], r.shape(src[0]), op)
        if name in ("add", "sub") and len(op.args) >= 2:
            alpha = _num(op.kwargs.get("alpha", 1))
            if alpha is None:
                raise _NA(f"{name} with alpha = {op.kwargs.get('alpha')!r}{_at(op)}")
            out: list[_T] = []
            for i, sign in ((0, 1.0), (1, alpha * (-1.0 if name == "sub" else 1.0))):
                t = targs[i]
                if t is None or t not in r.dependent:
                    what = self.step.name(t) if t is not None else repr(op.args[i])
                    if t is None and _num(op.args[i]) == 0.0:
                        continue
                    raise _NA(f"the model adds {what}, which is not a parameter times data"
                              f"{_at(op)}; gradtrace reads models that are sums of parameter x "
                              "feature terms")
                out.extend(x if sign == 1.0 else x.scaled(sign) for x in self.expr(t, fs, op))
            return out
        if name == "neg":
            return [x.scaled(-1.0) for x in self.expr(r.source(op), fs, op)]
        if name in ("mul", "div", "true_divide") and len(op.args) >= 2:
            return self._product(op, tid, fs)
        if name in ("matmul", "mm", "mv", "linear", "addmm"):
            return self._matrix(op, tid, fs)
        if name in ("pow", "square", "float_power"):
            base = targs[0] if targs else None
            k = "2" if name == "square" else (repr(op.args[1]) if len(op.args) > 1 and
                                               not isinstance(op.args[1], dict) else "a tensor")
            if base is not None and base in r.dependent:
                raise _NA(f"the model raises {self._label(base, op)} to the power {k}{_at(op)}; a "
                          "power of a parameter is not linear in it")
            raise _NA(f"the model raises a number to a power that depends on the parameters{_at(op)}")
        if name in ("sum", "mean") and targs and targs[0] is not None:
            dot = self._dot(op, tid, fs, targs[0])
            if dot is not None:
                return dot
        if name in ("sum", "mean", "nansum"):
            raise _NA(f"the model takes a {name} inside the prediction{_at(op)}; gradtrace reads "
                      "sums of parameter x feature terms such as X @ w, or (X * w).sum(-1) with w "
                      "a vector")
        ins = [t for t in targs if t is not None and t in r.dependent]
        what = self._label(ins[0], op) if ins else "something that depends on the parameters"
        raise _NA(f"the model applies {name} ({op.target}) to {what}{_at(op)}, which is not linear "
                  "in the parameters")

    def _dot(self, op: Op, tid: int, fs: tuple[int, ...], src: int) -> list[_T] | None:
        """``(X * w).sum(-1)`` (or ``mean``): ``X @ w`` written out, w a vector over the last
        dimension of the data X; None when it is not that."""
        r = self.r
        d = _dims(op)
        if isinstance(d, (list, tuple)) and len(d) == 1:
            d = d[0]
        ss = r.shape(src)
        if not isinstance(d, int) or not ss or d % len(ss) != len(ss) - 1:
            return None
        mul = r.op(src)
        if mul is None or mul.name != "mul":
            return None
        targs = r.tensor_args(mul)
        if len(targs) < 2 or targs[0] is None or targs[1] is None:
            return None
        for x, w in ((targs[0], targs[1]), (targs[1], targs[0])):
            if x in r.dependent or w not in r.dependent:
                continue
            p = self._as_param(w, mul)
            ws, xs = r.shape(w), r.shape(x)
            n = ss[-1]
            if p is None or math.prod(ws) != n or (ws and ws[-1] != n) or not xs or xs[-1] != n:
                return None
            F = r.const(x, "the data").double().expand(ss).reshape(-1, n)
            if op.name == "mean":
                F = F / n
            rows, cols = self._place(r.shape(tid), fs, f"the result of {op.name}")
            if cols != 1 or F.shape[0] != rows:
                return None
            return [_T(p.then(("reshape", ws, (n, 1))), F, 1, False, mul, f"(X * w).{op.name}(-1)")]
        return None

    def _product(self, op: Op, tid: int, fs: tuple[int, ...]) -> list[_T]:
        """``A * B`` or ``A / B``: one side depends on the parameters, the other is data."""
        r = self.r
        targs = r.tensor_args(op)
        div = op.name != "mul"
        if div and op.kwargs.get("rounding_mode") is not None:
            raise _NA(f"the model divides with rounding{_at(op)}, which is not linear")
        a, b = targs[0], targs[1]
        dep = [t is not None and t in r.dependent for t in (a, b)]
        if all(dep):
            assert a is not None and b is not None
            la, lb = self._label(a, op), self._label(b, op)
            if div:
                raise _NA(f"the model divides {la} by {lb}{_at(op)}; dividing by a parameter is not "
                          "linear in it")
            if self._as_param(a, op) is not None and self._as_param(b, op) is not None:
                raise _NA(f"the model multiplies two parameters ({la} * {lb}){_at(op)}")
            raise _NA(f"the model multiplies {la} by {lb}{_at(op)}, and both depend on the "
                      "parameters")
        if dep[1] and div:
            assert b is not None
            num = self.step.name(a) if a is not None else repr(op.args[0])
            raise _NA(f"the model divides {num} by {self._label(b, op)}{_at(op)}; dividing by a "
                      "parameter is not linear in it")
        i = 0 if dep[0] else 1
        d, other = (a, op.args[1]) if i == 0 else (b, op.args[0])
        if d is None:
            raise _NA(f"{op.name} of nothing that depends on the parameters{_at(op)}")
        s = r.scalar(other)
        if s is not None:
            if div and s == 0:
                raise _NA(f"the model divides by zero{_at(op)}")
            factor: torch.Tensor | float = 1.0 / s if div else s
        else:
            c = targs[1 - i]
            if c is None:
                raise _NA(f"{op.name} by {other!r}, which is not a number{_at(op)}")
            cs = r.shape(c)
            rows, cols = self._place(cs, fs, f"the data {self.step.name(c)}")
            if cols != 1:
                raise _NA(f"the model multiplies by data {self.step.name(c)} of shape "
                          f"{fmt_shape(cs)}, one value per output{_at(op)}; gradtrace reads "
                          "parameter x feature terms (X @ W + b)")
            cv = r.const(c, "the data").double().reshape(rows, 1)
            factor = 1.0 / cv if div else cv
        parts = self.expr(d, fs, op)
        return [x.scaled(factor, op) for x in parts]

    def _matrix(self, op: Op, tid: int, fs: tuple[int, ...]) -> list[_T]:
        """X @ W, F.linear(X, W[, b]), addmm(b, X, W): a weight matrix term (and a bias)."""
        r = self.r
        name = op.name
        targs = r.tensor_args(op)
        bias: int | None = None
        if name in ("matmul", "mm", "mv"):
            x, w = targs[0], targs[1] if len(targs) > 1 else None
            transpose, desc = False, f"X @ W ({name})"
        elif name == "linear":
            x, w = targs[0], targs[1]
            b = r.kw(op, "bias", 2)
            if isinstance(b, dict) and "tensor" in b:
                bias = b["tensor"]
            elif b is not None:
                raise _NA("F.linear with a bias that is not a tensor")
            transpose, desc = True, "F.linear(X, W, b)"
        else:
            if any(_num(op.kwargs.get(k, 1)) != 1.0 for k in ("beta", "alpha")):
                raise _NA(f"addmm with beta/alpha{_at(op)} is not X @ W + b")
            bias, x, w = targs[0], targs[1], targs[2]
            if bias is None:
                raise _NA("addmm whose first argument is not a tensor")
            transpose, desc = False, "addmm(b, X, W)"
        if x is None or w is None:
            raise _NA(f"{name} without two tensors")
        if x in r.dependent:
            if w in r.dependent:
                raise _NA(f"the input of the linear layer ({self._label(x, op)}) depends on the "
                          f"parameters{_at(op)}: more than one layer is not a linear model")
            self.expr(x, r.shape(x), op)  # raises with the reason it is not linear
            raise _NA(f"the model multiplies {self._label(x, op)} by a matrix of data{_at(op)}; "
                      "gradtrace reads X @ W with the parameters on the right")
        if w not in r.dependent:
            raise _NA(f"{name} multiplies by a constant, not a parameter")
        p = self.param_path(w, op, "the weight")
        xv = r.const(x, "the input X").double()
        wshape = r.shape(w)
        if len(wshape) == 1 and not transpose:
            p = p.then(("reshape", wshape, (wshape[0], 1)))
            wshape = (wshape[0], 1)
        elif len(wshape) != 2:
            raise _NA(f"a weight of shape {fmt_shape(wshape)} is not a matrix")
        elif transpose:
            p = p.then(("permute", (1, 0)))
            wshape = (wshape[1], wshape[0])
        if xv.dim() < 1 or xv.shape[-1] != wshape[0]:
            raise _NA(f"X of shape {fmt_shape(xv.shape)} does not match W {fmt_shape(wshape)}")
        X = xv.reshape(-1, wshape[0])
        rows, cols = self._place(r.shape(tid), fs, f"the result of {name}")
        if cols != wshape[1] or X.shape[0] != rows:
            raise _NA(f"the result of {name} of shape {fmt_shape(r.shape(tid))} does not line up "
                      f"with the prediction's {fmt_shape(fs)}")
        out = [_T(p, X, wshape[1], False, op, desc)]
        if bias is not None:
            if bias not in r.dependent:
                raise _NA("the added term is a constant, not a parameter")
            out.extend(self.expr(bias, r.shape(tid), op))
        return out


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
