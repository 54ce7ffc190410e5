"""Linear models under a squared-error or softmax cross-entropy loss, recognised from recorded ops.

The recognition reads one recorded :class:`~gradtrace.tracefile.model.Step` (its ops, the
values they saw, the backward graph) and never the script's text::

    fit = recognize(step)            # LinearFit, or NotApplicable (falsy, with .reason)
    fit = fit_of(step)               # the same, recognised once per step object and shared
    fit.X, fit.y                     # float64 (n, d) features as fed to the model, (n, k) targets
    fit.param_tids                   # (weight tid, bias tid or None)
    fit.constant                     # c in L = c * sum((y_hat - y)**2)  (or c * sum(CE_i))
    fit.values()                     # {tid: tensor}: the parameters as this step saw them
    fit.loss(values)                 # the loss at other parameter values, a float
    fit.gradient(values=None)        # closed form: {tid: dL/dparam}, shaped like the params
    fit.optimum()                    # least squares: {tid: theta*} (normal equations)
    fit.hessian()                    # (P, P) over (weight, bias) flattened, weight first
    pool([fit, ...])                 # one fit over the rows of many steps (the "full data")

Models: ``X @ w + b``, ``torch.matmul(X, w) + b``, ``X @ w.t() + b`` (several outputs),
``nn.Linear`` / ``F.linear`` / ``torch.addmm``, ``x * w + b`` with a one-element ``w``,
with or without a bias; features may be built beforehand (anything that does not depend on
a parameter is data). Losses: ``L = c * sum((y_hat - y)**2)`` in any spelling made of
``-``, ``**2`` / ``pow(2)`` / ``square`` / ``d * d``, ``sum`` / ``mean`` (whole or per
dimension), scaling by numbers, and ``F.mse_loss`` with ``mean``/``sum``/``none``; and
softmax cross-entropy ``L = c * sum_i -sum_j Y_ij log softmax(z_i)_j`` written as
``F.cross_entropy``, ``F.nll_loss(F.log_softmax(z))``, or by hand (``exp(z) / exp(z).sum``,
``-log(p[range(n), y])``, ``gather``, ``-(Y * log p)``).

Every recognition is confirmed against the recorded values: the prediction must equal
``X @ W + b`` and the loss must equal the recognised formula, both within the dtype's
rounding; otherwise the answer is :class:`NotApplicable` with the reason, never a guess.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

import torch

from ..errors import NotApplicableError
from ..tracefile.model import Op, Step

__all__ = [
    "LinearFit", "NotApplicable", "NotApplicableError", "recognize", "fit_of", "pool", "unrecorded_view",
    "SQUARED_ERROR", "SOFTMAX_CE",
]

SQUARED_ERROR = "squared_error"
SOFTMAX_CE = "softmax_ce"

# Ops that keep every element (and its row-major order): pass-through for shapes.
_RESHAPES = {"reshape", "view", "squeeze", "unsqueeze", "flatten", "view_as", "reshape_as",
             "contiguous", "clone", "ravel"}
_TRANSPOSES = {"t", "T", "mT", "transpose", "permute", "swapaxes", "swapdims", "adjoint"}
_VIEW_NODES = {"PermuteBackward0", "TransposeBackward0", "TBackward0"}


@dataclass(frozen=True)
class NotApplicable:
    """Why a step is not a linear model under a recognised loss. Falsy.

    ``family`` is the loss family when the loss was recognised but the model was not
    (``squared_error`` / ``softmax_ce``), else None.
    """

    reason: str
    family: str | None = None

    def __bool__(self) -> Literal[False]:  # lets type checkers narrow `if fit:`
        return False

    def __str__(self) -> str:
        return f"not applicable: {self.reason}"


class _NA(Exception):
    """Internal: recognition stopped, with the reason (becomes a NotApplicable)."""

    def __init__(self, reason: str, family: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.family = family


# -- how a parameter becomes the matrix the model multiplies ------------------------------------

def _apply_views(t: torch.Tensor, views) -> torch.Tensor:
    for v in views:
        if v[0] == "reshape":
            t = t.reshape(v[2])
        elif v[0] == "permute":
            t = t.permute(*v[1])
    return t


def _undo_views(t: torch.Tensor, views) -> torch.Tensor:
    for v in reversed(views):
        if v[0] == "reshape":
            t = t.reshape(v[1])
        elif v[0] == "permute":
            inv = [0] * len(v[1])
            for i, d in enumerate(v[1]):
                inv[d] = i
            t = t.permute(*inv)
    return t


@dataclass(frozen=True)
class _Param:
    """A parameter and the views (reshape/permute) that turn it into the model's W or b."""

    tid: int
    shape: tuple[int, ...]
    views: tuple = ()

    def to_eff(self, t: torch.Tensor) -> torch.Tensor:
        return _apply_views(t, self.views)

    def from_eff(self, t: torch.Tensor) -> torch.Tensor:
        return _undo_views(t, self.views).reshape(self.shape)

    def then(self, *views) -> "_Param":
        return replace(self, views=self.views + tuple(views))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# -- the fit ---------------------------------------------------------------------------------------

@dataclass(eq=False)
class LinearFit:
    """A linear model (``y_hat = X @ W + b``) and its loss, as recognised in one step.

    ``X`` (n, d) and ``y`` (n, k) are float64. For the squared error ``y`` holds the
    targets and the loss is ``L = sum_i w_i * sum_j (y_hat_ij - y_ij)**2`` with row
    weights ``w_i`` (all equal to :attr:`constant` for one step). For softmax cross-entropy
    ``y`` holds the target distribution per row (one-hot for class labels) and
    ``L = sum_i w_i * CE_i``. ``W`` and ``b`` are the parameters seen through their views
    (``w.t()`` in the model means ``W = w.T``); every result is given back in the
    parameters' own shapes, keyed by tid.
    """

    step: int | None
    loss_kind: str
    X: torch.Tensor
    y: torch.Tensor
    weight: _Param
    bias: _Param | None
    row_weights: torch.Tensor
    #: the recorded prediction (squared error) or logits (softmax), (n, k) float64
    pred: torch.Tensor | None = None
    #: the parameter values of this step, in their own shapes (float64)
    param_values: dict[int, torch.Tensor] = field(default_factory=dict)
    dtype: str = "float32"
    #: human-readable description of the recognised model and loss
    model_desc: str = ""
    loss_desc: str = ""
    #: ops (by index) of the model and the loss, for findings that name an op
    model_op: Op | None = None
    loss_op: Op | None = None
    #: the recorded loss value (the root of backward)
    recorded_loss: float | None = None
    steps: tuple[int, ...] = ()

    def __bool__(self) -> Literal[True]:  # truthy, as any object: says so to type checkers
        return True

    # -- shapes and names -----------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def k(self) -> int:
        return self.y.shape[1]

    @property
    def param_tids(self) -> tuple[int, int | None]:
        return (self.weight.tid, self.bias.tid if self.bias is not None else None)

    @property
    def params(self) -> list[_Param]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    @property
    def constant(self) -> float:
        """c in ``L = c * sum(...)``; for a pooled fit of unequal batches, the mean row weight."""
        return float(self.row_weights.mean())

    @property
    def uniform(self) -> bool:
        return bool(torch.all(self.row_weights == self.row_weights[0]))

    # -- evaluation at given parameter values ---------------------------------------------
    def values(self) -> dict[int, torch.Tensor]:
        """The parameters as this step saw them, {tid: float64 tensor in the param's shape}."""
        return {t: v.clone() for t, v in self.param_values.items()}

    def _weights(self, values: dict[int, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        vals = self.param_values if values is None else values
        try:
            W = self.weight.to_eff(torch.as_tensor(vals[self.weight.tid], dtype=torch.float64)
                                   .reshape(self.weight.shape))
            if self.bias is not None:
                b = self.bias.to_eff(torch.as_tensor(vals[self.bias.tid], dtype=torch.float64)
                                     .reshape(self.bias.shape)).reshape(-1)
                b = b.expand(self.k) if b.numel() == 1 else b
            else:
                b = torch.zeros(self.k, dtype=torch.float64)
        except KeyError as e:
            raise NotApplicableError(f"no value given for parameter t{e.args[0]}") from None
        return W, b

    def predict(self, values: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """``X @ W + b`` (n, k) at the given parameter values (default: this step's)."""
        W, b = self._weights(values)
        return self.X @ W + b

    def loss(self, values: dict[int, torch.Tensor] | None = None) -> float:
        """The loss at the given parameter values (default: this step's), in float64."""
        z = self.predict(values)
        if self.loss_kind == SQUARED_ERROR:
            per_row = ((z - self.y) ** 2).sum(1)
        else:
            per_row = -(self.y * torch.log_softmax(z, 1)).sum(1)
        return float((self.row_weights * per_row).sum())

    def gradient_wrt_output(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """dL/dy_hat (squared error) or dL/dz (softmax), (n, k), by the closed form.

        With the recorded prediction by default, so that the result is what autograd
        should have computed from the same forward values.
        """
        z = (self.pred if self.pred is not None else self.predict()) if z is None else z
        w = self.row_weights.reshape(-1, 1)
        if self.loss_kind == SQUARED_ERROR:
            return 2 * w * (z - self.y)                     # 2c (y_hat - y)
        p = torch.softmax(z, 1)
        return w * (p * self.y.sum(1, keepdim=True) - self.y)  # c (softmax(z) - Y)

    def gradient(self, values: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
        """The closed-form gradient {tid: dL/dparam} in the parameters' shapes (float64).

        ``dL/dW = X.T @ G`` and ``dL/db = sum_i G_i`` with ``G = 2c (y_hat - y)`` for the
        squared error and ``G = c (softmax(z) - Y)`` for cross-entropy. Without ``values``
        ``G`` is computed from the recorded prediction of this step.
        """
        G = self.gradient_wrt_output(None if values is None else self.predict(values))
        out = {self.weight.tid: self.weight.from_eff(self.X.T @ G)}
        if self.bias is not None:
            gb = G.sum(0)
            out[self.bias.tid] = self.bias.from_eff(gb.sum().reshape(1) if self.bias.numel == 1
                                                    else gb)
        return out

    def gradient_scale(self) -> dict[int, torch.Tensor]:
        """The same sums taken over absolute values: how large the terms autograd added were.

        Rounding in a sum is relative to this, not to the (possibly cancelling) result."""
        G = self.gradient_wrt_output().abs()
        out = {self.weight.tid: self.weight.from_eff(self.X.abs().T @ G)}
        if self.bias is not None:
            gb = G.sum(0)
            out[self.bias.tid] = self.bias.from_eff(gb.sum().reshape(1) if self.bias.numel == 1
                                                    else gb)
        return out

    # -- least squares ---------------------------------------------------------------------
    def _index_map(self) -> torch.Tensor:
        """(d or d+1, k) integer map: which flat parameter each entry of [W; b] is."""
        pw = self.weight.numel
        widx = self.weight.to_eff(torch.arange(pw, dtype=torch.float64).reshape(self.weight.shape))
        rows = [widx.reshape(self.d, self.k)]
        if self.bias is not None:
            bidx = self.bias.to_eff(torch.arange(pw, pw + self.bias.numel, dtype=torch.float64)
                                    .reshape(self.bias.shape)).reshape(-1)
            rows.append(bidx.expand(self.k).reshape(1, self.k) if bidx.numel() == 1
                        else bidx.reshape(1, self.k))
        return torch.cat(rows).round().long()

    @property
    def n_params(self) -> int:
        return sum(p.numel for p in self.params)

    def _design(self, rows: slice) -> torch.Tensor:
        """D with y_hat.flatten() = D @ theta for the given rows: (rows*k, P)."""
        X = self.X[rows]
        if self.bias is not None:
            X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], 1)
        idx = self._index_map()
        n, k = X.shape[0], self.k
        D = torch.zeros(n, k, self.n_params, dtype=torch.float64)
        for a in range(X.shape[1]):
            D.scatter_add_(2, idx[a].view(1, k, 1).expand(n, k, 1),
                           X[:, a].view(n, 1, 1).expand(n, k, 1).contiguous())
        return D.reshape(n * k, self.n_params)

    def _chunks(self):
        step = max(1, 2_000_000 // max(1, self.k * self.n_params))
        for s in range(0, self.n, step):
            yield slice(s, min(self.n, s + step))

    def _require_squared(self, what: str) -> None:
        if self.loss_kind != SQUARED_ERROR:
            raise NotApplicableError(f"{what} is only given in closed form for a squared-error loss, "
                                     "not softmax cross-entropy")

    def hessian(self) -> torch.Tensor:
        """The loss Hessian (P, P) over the flattened weight then bias (float64).

        For the squared error it is ``2 D.T diag(w) D`` (``y_hat = D theta``), the same at
        every parameter value."""
        self._require_squared("the Hessian")
        H = torch.zeros(self.n_params, self.n_params, dtype=torch.float64)
        for rows in self._chunks():
            D = self._design(rows)
            w = self.row_weights[rows].repeat_interleave(self.k)
            H += 2 * D.T @ (w.unsqueeze(1) * D)
        return H

    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of :meth:`hessian`, ascending."""
        return torch.linalg.eigvalsh(self.hessian())

    def optimum(self) -> dict[int, torch.Tensor]:
        """The minimiser of the loss on these rows: the normal equations, solved by least
        squares (the minimum-norm solution when the minimiser is not unique)."""
        self._require_squared("the optimum")
        if bool(torch.any(self.row_weights <= 0)):
            raise NotApplicableError("the loss has no minimum (a non-positive constant)")
        if self.n * self.k * self.n_params <= 4_000_000:
            D = self._design(slice(0, self.n))
            s = self.row_weights.repeat_interleave(self.k).sqrt().unsqueeze(1)
            theta = torch.linalg.lstsq(s * D, s * self.y.reshape(-1, 1), driver="gelsd").solution
        else:
            A = torch.zeros(self.n_params, self.n_params, dtype=torch.float64)
            r = torch.zeros(self.n_params, 1, dtype=torch.float64)
            for rows in self._chunks():
                D = self._design(rows)
                w = self.row_weights[rows].repeat_interleave(self.k).unsqueeze(1)
                A += D.T @ (w * D)
                r += D.T @ (w * self.y[rows].reshape(-1, 1))
            theta = torch.linalg.lstsq(A, r, driver="gelsd").solution
        return self.unflatten(theta.reshape(-1))

    def flatten(self, values: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """theta: the parameters flattened, weight first (the Hessian's order)."""
        vals = self.param_values if values is None else values
        parts = [torch.as_tensor(vals[p.tid], dtype=torch.float64).reshape(-1) for p in self.params]
        return torch.cat(parts)

    def unflatten(self, theta: torch.Tensor) -> dict[int, torch.Tensor]:
        out, at = {}, 0
        for p in self.params:
            out[p.tid] = theta[at:at + p.numel].reshape(p.shape).clone()
            at += p.numel
        return out

    def __repr__(self) -> str:
        return (f"<LinearFit step={self.step} {self.loss_kind} n={self.n} d={self.d} k={self.k} "
                f"c={self.constant:g} model={self.model_desc!r} loss={self.loss_desc!r}>")


def pool(fits: Sequence[LinearFit]) -> LinearFit:
    """One fit over the rows of several steps (same model, same parameters).

    Row weights are divided by the number of fits, so the pooled loss is the mean of the
    steps' losses: its Hessian is the average of theirs (what SGD's stability depends on),
    and its optimum is the least-squares solution on all recorded data.
    """
    if not fits:
        raise NotApplicableError("no steps to pool")
    first = fits[0]
    for f in fits[1:]:
        if (f.loss_kind, f.weight, f.bias, f.d, f.k) != (first.loss_kind, first.weight, first.bias,
                                                          first.d, first.k):
            raise NotApplicableError(f"step {f.step} has another model than step {first.step}")
    T = len(fits)
    preds = [f.pred for f in fits if f.pred is not None]
    return replace(
        first, step=None,
        X=torch.cat([f.X for f in fits]), y=torch.cat([f.y for f in fits]),
        row_weights=torch.cat([f.row_weights / T for f in fits]),
        pred=torch.cat(preds) if len(preds) == T else None,
        recorded_loss=None, steps=tuple(f.step for f in fits if f.step is not None),
    )


# -- recognition -------------------------------------------------------------------------------------

def _num(x) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    return None


def _broadcast(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy broadcasting of shapes (torch.broadcast_shapes imports sympy: slow)."""
    nd = max(len(s) for s in shapes)
    out: list[int] = []
    for i in range(nd):
        dims = {s[len(s) - nd + i] for s in shapes if len(s) - nd + i >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _shape_str(s: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, s)) + ("," if len(s) == 1 else "") + ")"


class _Reader:
    """Read one step's ops as an expression graph: producers, constants, parameters."""

    def __init__(self, step: Step):
        self.step = step
        self.ops = [o for o in step.ops if o.parent is None]
        self.producer: dict[int, Op] = {}
        for o in self.ops:
            for t in o.outputs:
                self.producer.setdefault(t, o)
        # Only this step's tensors: step.tensors is the whole run's table.
        seen: set[int] = set()
        for o in self.ops:
            seen.update(o.inputs)
            seen.update(o.outputs)
        if step.backward is not None:
            seen.update(n.variable for n in step.backward.nodes if n.variable is not None)
        tensors = step.tensors
        self.params = {t for t in seen if t in tensors and tensors[t].role == "param"}
        self.dependent: set[int] = set(self.params)
        for t in seen:
            info = tensors.get(t)
            if info is not None and info.role == "activation" and t not in self.producer:
                self.dependent.add(t)  # made by a call gradtrace did not see (w.T)
        for o in self.ops:
            if o.is_graph or any(i in self.dependent for i in o.inputs):
                self.dependent.update(o.outputs)
        self.dtype = "float32"

    # values
    def shape(self, tid: int) -> tuple[int, ...]:
        v = self.step.value(tid)
        if v is not None:
            return tuple(v.shape)
        info = self.step.tensors.get(tid)
        return tuple(info.shape) if info is not None else ()

    def numel(self, tid: int) -> int:
        return math.prod(self.shape(tid))

    def data(self, tid: int, what: str) -> torch.Tensor:
        v = self.step.value(tid)
        if v is None:
            raise _NA(f"the value of {what} ({self.step.name(tid)}) was not recorded")
        if v.data is None:
            raise _NA(f"only statistics of {what} ({self.step.name(tid)}, {v.numel} elements) were "
                      "kept; record with a larger --max-numel to check it")
        return v.data

    def const(self, tid: int, what: str) -> torch.Tensor:
        if tid in self.dependent:
            raise _NA(f"{what} ({self.step.name(tid)}) depends on the parameters")
        return self.data(tid, what)

    def scalar(self, arg) -> float | None:
        """A number, or a one-element constant tensor, as a float."""
        n = _num(arg)
        if n is not None:
            return n
        if isinstance(arg, dict) and "tensor" in arg:
            t = arg["tensor"]
            if t not in self.dependent:
                v = self.step.value(t)
                if v is not None and v.data is not None and v.data.numel() == 1:
                    return float(v.data.double().reshape(()).item())
        return None

    def op(self, tid: int | None) -> Op | None:
        """The recorded op that made ``tid`` (None for leaves, unseen calls and non-tensors)."""
        return self.producer.get(tid) if tid is not None else None

    def source(self, op: Op, i: int = 0, family: str | None = None) -> int:
        """The tensor ``op`` takes as positional argument ``i`` (_NA when it is not a tensor)."""
        t = self.tensor_args(op)[i]
        if t is None:
            raise _NA(f"argument {i} of {op.name} is not a tensor", family)
        return t

    @staticmethod
    def tensor_args(op: Op) -> list[int | None]:
        return [a["tensor"] if isinstance(a, dict) and "tensor" in a else None for a in op.args]

    @staticmethod
    def kw(op: Op, name: str, pos: int | None = None, default=None):
        if name in op.kwargs:
            return op.kwargs[name]
        if pos is not None and len(op.args) > pos:
            return op.args[pos]
        return default


def _dims(op: Op) -> Any:
    d = _Reader.kw(op, "dim", 1)
    if d is None:
        d = _Reader.kw(op, "axis")
    return d


class _Recognizer:
    def __init__(self, step: Step):
        self.step = step
        self.r = _Reader(step)
        self.model_op: Op | None = None
        self.loss_op: Op | None = None
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
    def affine(self, tid: int) -> dict:
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
                    if core.get("bias") is not None:
                        raise _NA("two biases")
                    core["bias"] = self.bias_path(b, op, core)
                    self.model_op = core["op"]  # where X meets W: the op a finding names
                    return core
                except _NA as e:
                    reasons.append(e.reason)
            raise _NA(f"the prediction is an add that is not X @ W + b ({reasons[0]})")
        core = self.linear_core(tid)
        self.model_op = core["op"]
        return core

    def linear_core(self, tid: int) -> dict:
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
                core["bias"] = self.bias_path(b["tensor"], op, core)
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
            core["bias"] = self.bias_path(b, op, core)
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
                core = {"X": X, "x_tid": x, "weight": p.then(("reshape", r.shape(w), (1, 1))),
                        "bias": None, "op": op, "pred_tid": tid, "k": 1, "desc": "x * w"}
                return core
            raise _NA("a product of two parameter-dependent tensors is not linear in the parameters")
        raise _NA(f"{op.name} ({op.target}) at the model's output is not X @ W + b")

    def _xw(self, op: Op, x, w, transpose: bool, desc: str) -> dict:
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
        return {"X": X, "x_tid": x, "weight": p, "bias": None, "op": op, "pred_tid": None,
                "k": wshape[1], "desc": desc}

    def bias_path(self, tid: int, consumer: Op, core: dict) -> _Param:
        r = self.r
        if tid not in r.dependent:
            raise _NA("the added term is a constant, not a parameter")
        p = self.param_path(tid, consumer, "the bias")
        shape = r.shape(tid)
        k = core["k"]
        if p.numel not in (1, k) or math.prod(shape) != p.numel or (len(shape) >= 2 and
                                                                    any(s != 1 for s in shape[:-1])):
            raise _NA(f"the added parameter of shape {_shape_str(shape)} is not a bias of "
                      f"{k} output(s)")
        return p.then(("reshape", shape, (p.numel,)))

    # -- the loss ----------------------------------------------------------------------------
    def squared(self, tid: int, c: float = 1.0) -> tuple[float, int, int, str]:
        """value(tid) = c * sum(d**2) over the elements it reduces: (c, pred side, target side)."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the loss was not made by a recorded op")
        name, targs = op.name, r.tensor_args(op)
        if name in _RESHAPES or name in ("sum", "nansum"):
            return self.squared(r.source(op), c)
        if name == "mean":
            src = r.source(op)
            return self.squared(src, c * r.numel(tid) / max(1, r.numel(src)))
        if name in ("div", "true_divide") and len(op.args) >= 2 and targs[0] is not None:
            s = r.scalar(op.args[1])
            if s is not None and s != 0 and op.kwargs.get("rounding_mode") is None:
                return self.squared(targs[0], c / s)
        if name == "mul" and len(op.args) >= 2:
            if targs[0] is not None and targs[0] == targs[1]:
                self.loss_op = self.loss_op or op
                return (c, *self.residual(targs[0]), "d * d")
            for i, j in ((0, 1), (1, 0)):
                s = r.scalar(op.args[j])
                t = targs[i]
                if s is not None and t is not None and t in r.dependent:
                    return self.squared(t, c * s)
        if name == "neg":
            return self.squared(r.source(op), -c)
        if name in ("pow", "float_power") and len(op.args) >= 2 and _num(op.args[1]) == 2.0:
            self.loss_op = self.loss_op or op
            return (c, *self.residual(r.source(op, 0, SQUARED_ERROR)), "d ** 2")
        if name == "square":
            self.loss_op = self.loss_op or op
            return (c, *self.residual(r.source(op, 0, SQUARED_ERROR)), "d.square()")
        if name == "mse_loss":
            red = r.kw(op, "reduction", 2, "mean")
            if op.kwargs.get("weight") is not None:
                raise _NA("a weighted mse_loss", SQUARED_ERROR)
            a, b = targs[0], targs[1]
            pred, target = self._sides(a, b)
            n = math.prod(_broadcast(r.shape(pred), r.shape(target)))
            self.loss_op = self.loss_op or op
            if red == "mean":
                return (c / n, pred, target, "mse_loss(reduction='mean')")
            if red in ("sum", "none"):
                return (c, pred, target, f"mse_loss(reduction='{red}')")
            raise _NA(f"mse_loss with reduction {red!r}", SQUARED_ERROR)
        raise _NA(f"{name} in the loss is not part of a squared error")

    def residual(self, tid: int) -> tuple[int, int]:
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the squared term was not made by a recorded op", SQUARED_ERROR)
        targs = r.tensor_args(op)
        if op.name in _RESHAPES and targs and targs[0] is not None:
            return self.residual(targs[0])
        if op.name == "sub" and len(targs) >= 2 and targs[0] is not None and targs[1] is not None:
            if _num(op.kwargs.get("alpha", 1)) != 1.0:
                raise _NA("sub with alpha", SQUARED_ERROR)
            return self._sides(targs[0], targs[1])
        raise _NA(f"the squared term is {op.name}, not a difference y_hat - y", SQUARED_ERROR)

    def _sides(self, a, b) -> tuple[int, int]:
        r = self.r
        if a is None or b is None:
            raise _NA("a difference with a number", SQUARED_ERROR)
        da, db = a in r.dependent, b in r.dependent
        if da and not db:
            return a, b
        if db and not da:
            return b, a
        raise _NA("both sides of the difference depend on the parameters" if da else
                  "neither side of the difference depends on the parameters", SQUARED_ERROR)

    # -- softmax cross-entropy -------------------------------------------------------------
    def cross_entropy(self, tid: int, a: float = 1.0) -> tuple[float, int, torch.Tensor, str]:
        """value(tid) = a * sum_ij Y_ij log softmax(z)_ij: (a, z tid, Y, description)."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the loss was not made by a recorded op")
        name, targs = op.name, r.tensor_args(op)
        if name in _RESHAPES or name in ("sum", "nansum"):
            return self.cross_entropy(r.source(op), a)
        if name == "mean":
            src = r.source(op)
            return self.cross_entropy(src, a * r.numel(tid) / max(1, r.numel(src)))
        if name in ("div", "true_divide") and len(op.args) >= 2 and targs[0] is not None:
            s = r.scalar(op.args[1])
            if s is not None and s != 0 and op.kwargs.get("rounding_mode") is None:
                return self.cross_entropy(targs[0], a / s)
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
                raise _NA(f"{name} of logits of shape {_shape_str(zs)} (only (n, classes))", SOFTMAX_CE)
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
        raise _NA(f"{name} in the loss is not part of a softmax cross-entropy")

    def _targets(self, tv: torch.Tensor, zs, ignore_index, name) -> torch.Tensor:
        n, k = zs
        if tv.is_floating_point():
            if tuple(tv.shape) != tuple(zs):
                raise _NA(f"{name} with float targets of shape {_shape_str(tv.shape)}", SOFTMAX_CE)
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

    def _is_arange(self, arg, n: int) -> bool:
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


def _tolerance(dtype: str) -> float:
    return {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}.get(dtype, 1e-4)


def recognize(step: Step) -> LinearFit | NotApplicable:
    """The linear model and loss of ``step``, or why there is none (never raises, not even
    for a step whose ops were tampered with)."""
    bw = step.backward
    if bw is None:
        return NotApplicable("the step has no backward pass")
    if len(bw.roots) != 1:
        return NotApplicable(f"backward from {len(bw.roots)} roots (one scalar loss expected)")
    root = bw.roots[0]
    rv = bw.root_value
    if rv is None or rv.numel != 1:
        return NotApplicable("backward from a tensor that is not a single number")
    first: _NA | None = None
    for family in (SQUARED_ERROR, SOFTMAX_CE):
        rec = _Recognizer(step)
        try:
            return _build(rec, step, root, family)
        except _NA as e:
            if first is None or (e.family is not None and first.family is None):
                first = e
        except (IndexError, KeyError, TypeError, ValueError, RuntimeError) as e:
            # Ops without the arguments their names promise: a damaged or crafted file.
            return NotApplicable(f"the step's ops do not have the arguments their names imply "
                                 f"({type(e).__name__}: {str(e)[:80]})")
    assert first is not None
    if first.family is None:
        return NotApplicable(f"the loss is neither a squared error nor a softmax cross-entropy "
                             f"({first.reason})")
    return NotApplicable(first.reason, first.family)


#: step object -> what :func:`recognize` said of it; a step read again from its file is a new
#: object and is recognised again, a step nobody holds any more drops out.
_FITS: "weakref.WeakKeyDictionary[Step, LinearFit | NotApplicable]" = weakref.WeakKeyDictionary()


def fit_of(step: Step) -> LinearFit | NotApplicable:
    """:func:`recognize`, once per step object: the check, the diagnostics and the training
    analysis of one trace share the answer (treat the fit as read-only)."""
    fit = _FITS.get(step)
    if fit is None:
        fit = _FITS[step] = recognize(step)
    return fit


def _build(rec: _Recognizer, step: Step, root: int, family: str) -> LinearFit:
    r = rec.r
    if family == SQUARED_ERROR:
        c, pred_side, target_side, form = rec.squared(root)
        try:
            core = rec.affine(pred_side)
        except _NA as e:
            raise _NA(f"squared error of a model that is not linear in its parameters: {e.reason}",
                      SQUARED_ERROR) from None
        ps, ts = r.shape(pred_side), r.shape(target_side)
        try:
            bs = _broadcast(ps, ts)
        except ValueError:
            raise _NA(f"y_hat {_shape_str(ps)} and y {_shape_str(ts)} do not broadcast", SQUARED_ERROR)
        if bs != tuple(ps):
            raise _NA(f"y_hat of shape {_shape_str(ps)} minus y of shape {_shape_str(ts)} broadcasts "
                      f"to {_shape_str(bs)}: the loss compares every prediction with every target "
                      "(reshape y to y_hat's shape)", SQUARED_ERROR)
        y = r.const(target_side, "the target y").double().expand(ps).reshape(-1, core["k"])
        pred = r.data(pred_side, "the prediction").double().reshape(-1, core["k"])
        loss_desc = f"L = {_fmt(c)} * sum((y_hat - y)**2)  [{form}]"
    else:
        a, z_tid, Y, form = rec.cross_entropy(root)
        c = -a
        try:
            core = rec.affine(z_tid)
        except _NA as e:
            raise _NA(f"softmax cross-entropy of a model that is not linear in its parameters: "
                      f"{e.reason}", SOFTMAX_CE) from None
        pred_side = z_tid
        y = Y
        pred = r.data(z_tid, "the logits").double().reshape(-1, core["k"])
        loss_desc = f"L = {_fmt(c)} * sum_i CE(softmax(z_i), y_i)  [{form}]"
    if not math.isfinite(c):
        raise _NA(f"the loss's constant c is {c}, not a finite number", family)
    X = core["X"]
    if pred.shape[0] != X.shape[0] or y.shape != pred.shape:
        raise _NA(f"{X.shape[0]} rows of X but a prediction of shape {_shape_str(pred.shape)}", family)
    pv = step.value(pred_side)
    dtype = pv.dtype if pv is not None else "float32"
    values = {}
    for p in (core["weight"], core["bias"]):
        if p is None:
            continue
        v = step.value(p.tid)
        if v is not None and v.data is not None:
            values[p.tid] = v.data.double().reshape(p.shape)
    fit = LinearFit(step=step.index, loss_kind=family, X=X, y=y, weight=core["weight"],
                    bias=core["bias"], row_weights=torch.full((X.shape[0],), float(c),
                                                              dtype=torch.float64),
                    pred=pred, dtype=dtype, model_desc=_model_desc(core, step),
                    loss_desc=loss_desc, model_op=rec.model_op or core["op"],
                    loss_op=rec.loss_op, recorded_loss=step.loss, steps=(step.index,))
    # The parameters' values: as recorded, else read back from the tensors the model used.
    if any(p.tid not in values for p in fit.params):
        _values_from_use(fit, rec, values)
    fit.param_values = values
    _confirm(fit, core, rec, pred)
    return fit


def _values_from_use(fit: LinearFit, rec: _Recognizer, values: dict) -> None:
    """Parameters the recorder saw only through a view (``w.T``): undo the view on the
    value of the tensor the model multiplied by."""
    for p in fit.params:
        view = rec.seen_as.get(p.tid)
        if p.tid in values or view is None:
            continue
        v = rec.step.value(view)
        if v is not None and v.data is not None:
            values[p.tid] = _undo_views(v.data.double(), p.views[:1]).reshape(p.shape)


def _confirm(fit: LinearFit, core: dict, rec: _Recognizer, pred: torch.Tensor) -> None:
    """The recorded forward must be what the recognised formulas say."""
    tol = _tolerance(fit.dtype)
    if len(fit.param_values) == len(fit.params):
        z = fit.predict()
        scale = float((fit.X.abs() @ fit.weight.to_eff(fit.param_values[fit.weight.tid].abs())).max())
        if fit.bias is not None:
            scale += float(fit.param_values[fit.bias.tid].abs().max())
        err = float((z - pred).abs().max()) if z.numel() else 0.0
        if not math.isfinite(err) or err > tol * max(scale, 1e-30) + 1e-30:
            if math.isfinite(err) or torch.isfinite(pred).all():
                raise _NA(f"the recorded prediction differs from X @ W + b by {err:.3g}: "
                          "gradtrace misread the model", fit.loss_kind)
    rl = fit.recorded_loss
    if rl is not None and math.isfinite(rl):
        w = fit.row_weights
        if fit.loss_kind == SQUARED_ERROR:
            terms = w * ((pred - fit.y) ** 2).sum(1)
        else:
            terms = -w * (fit.y * torch.log_softmax(pred, 1)).sum(1)
        mine = float(terms.sum())
        scale = float(terms.abs().sum())
        if abs(mine - rl) > tol * max(scale, abs(rl)) + 1e-30:
            raise _NA(f"the recorded loss {rl:.6g} is not {fit.loss_desc.split('  [')[0]} = "
                      f"{mine:.6g}: gradtrace misread the loss", fit.loss_kind)


def _fmt(c: float) -> str:
    """1/2, 1/10, 1/6, 2 ... : the constant as a lecture would write it."""
    if c == 0:
        return "0"
    if not math.isfinite(c):
        return str(c)
    inv = 1 / c
    if abs(inv - round(inv)) < 1e-9 * abs(inv) and abs(round(inv)) != 1:
        return f"1/{round(inv)}" if inv > 0 else f"-1/{round(-inv)}"
    if abs(c - round(c)) < 1e-12:
        return str(int(round(c)))
    return f"{c:.6g}"


def _model_desc(core: dict, step: Step) -> str:
    w = core["weight"]
    b = core["bias"]
    s = f"{core['desc']}: X {_shape_str(tuple(core['X'].shape))}, W = {step.name(w.tid)}"
    if any(v[0] == "permute" for v in w.views):
        s += " (transposed)"
    s += f" {_shape_str(w.shape)}"
    if b is not None:
        s += f", b = {step.name(b.tid)} {_shape_str(b.shape)}"
    else:
        s += ", no bias"
    return s
