"""The fit: a recognised linear model and its loss, and everything in closed form.

:class:`LinearFit` holds ``X``, ``y``, the parameters (as :class:`_Param`: a tid and the
views that make it the model's ``W`` or ``b``) and the row weights of the loss; from them it
evaluates the loss, the gradient (``X.T @ G``), the Hessian and the least-squares optimum.
:func:`pool` joins the fits of several steps. Nothing here reads ops: recognition
(:mod:`.recognize`) builds the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal, Sequence

import torch

from ...errors import NotApplicableError
from ...tracefile.model import Op

SQUARED_ERROR = "squared_error"
SOFTMAX_CE = "softmax_ce"


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



# -- how a parameter becomes the matrix the model multiplies ------------------------------------

#: ("reshape", from shape, to shape) or ("permute", dims): one step from a parameter to W or b
_View = tuple[Any, ...]


def _apply_views(t: torch.Tensor, views: Sequence[_View]) -> torch.Tensor:
    for v in views:
        if v[0] == "reshape":
            t = t.reshape(v[2])
        elif v[0] == "permute":
            t = t.permute(*v[1])
    return t


def _undo_views(t: torch.Tensor, views: Sequence[_View]) -> torch.Tensor:
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
    views: tuple[_View, ...] = ()

    def to_eff(self, t: torch.Tensor) -> torch.Tensor:
        return _apply_views(t, self.views)

    def from_eff(self, t: torch.Tensor) -> torch.Tensor:
        return _undo_views(t, self.views).reshape(self.shape)

    def then(self, *views: _View) -> "_Param":
        return replace(self, views=self.views + tuple(views))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Term:
    """One term of a model that is linear in its parameters.

    With ``cols = (a, b)`` the term is ``X[:, a:b] @ W``, ``W`` the parameter through its
    views, of shape ``(b - a, out)``; with ``cols = None`` it is an intercept ``b``, the
    parameter through its views, of shape ``(out,)``. ``out`` is the number of outputs ``k``
    or 1 (the same value for every output, broadcast).
    """

    param: _Param
    cols: tuple[int, int] | None
    out: int

    @property
    def intercept(self) -> bool:
        return self.cols is None

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """This term's columns of ``X`` (n, d_t); a column of ones for an intercept."""
        if self.cols is None:
            return torch.ones(X.shape[0], 1, dtype=X.dtype)
        a, b = self.cols
        return X if (a, b) == (0, X.shape[1]) else X[:, a:b]

    def matrix(self, value: torch.Tensor) -> torch.Tensor:
        """The parameter's value as this term's ``W`` (d_t, out) (``(1, out)`` for an intercept)."""
        eff = self.param.to_eff(torch.as_tensor(value, dtype=torch.float64).reshape(self.param.shape))
        return eff.reshape(1, self.out) if self.cols is None else eff

    def contribution(self, X: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``X[:, a:b] @ W`` (n, out), or ``b`` (out,) for an intercept."""
        W = self.matrix(value)
        return W.reshape(-1) if self.cols is None else self.features(X) @ W

    def back(self, X: torch.Tensor, G: torch.Tensor, absolute: bool = False) -> torch.Tensor:
        """The gradient this term passes to its parameter, given dL/dy_hat ``G`` (n, k), in the
        parameter's shape (with ``absolute``: the same sums over absolute values)."""
        if self.cols is None:
            gb = G.sum(0)
            return self.param.from_eff(gb.sum().reshape(1) if self.out == 1 else gb)
        F = self.features(X)
        if absolute:
            F = F.abs()
        Gt = G if self.out == G.shape[1] else G.sum(1, keepdim=True)
        return self.param.from_eff(F.T @ Gt)


def weight_of(terms: Sequence[Term]) -> _Param:
    """The parameter of the first feature term (the ``W`` of ``X @ W + b``)."""
    for t in terms:
        if not t.intercept:
            return t.param
    return terms[0].param


def bias_of(terms: Sequence[Term]) -> _Param | None:
    """The parameter of the first intercept that is not also the weight (the ``b``)."""
    w = weight_of(terms)
    for t in terms:
        if t.intercept and t.param.tid != w.tid:
            return t.param
    return None


def params_of(terms: Sequence[Term]) -> list[_Param]:
    """Each parameter once: those of feature terms first, then intercepts."""
    out: list[_Param] = []
    seen: set[int] = set()
    for t in sorted(terms, key=lambda t: t.intercept):
        if t.param.tid not in seen:
            seen.add(t.param.tid)
            out.append(t.param)
    return out


# -- the fit ---------------------------------------------------------------------------------------

@dataclass(eq=False)
class LinearFit:
    """A model linear in its parameters (``y_hat = X @ W + b``, or any sum of parameter x
    feature terms: :class:`Term`) and its loss, as recognised in one step.

    ``X`` (n, d) and ``y`` (n, k) are float64. For the squared error ``y`` holds the
    targets and the loss is ``L = sum_i w_i * sum_j (y_hat_ij - y_ij)**2`` with row
    weights ``w_i`` (all equal to :attr:`constant` for one step). For softmax cross-entropy
    ``y`` holds the target distribution per row (one-hot for class labels) and
    ``L = sum_i w_i * CE_i``. ``W`` and ``b`` are the parameters seen through their views
    (``w.t()`` in the model means ``W = w.T``); every result is given back in the
    parameters' own shapes, keyed by tid. ``X`` holds the feature columns of every term
    side by side (``a + b*x + c*x**2`` has ``X = [x, x**2]``, like ``nn.Linear`` on them).
    """

    step: int | None
    loss_kind: str
    X: torch.Tensor
    y: torch.Tensor
    #: the model, ``y_hat = sum of the terms``: feature terms first, then intercepts
    terms: tuple[Term, ...]
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
    def weight(self) -> _Param:
        """The parameter of the first feature term (the ``W`` of ``X @ W + b``)."""
        return weight_of(self.terms)

    @property
    def bias(self) -> _Param | None:
        """The parameter of the intercept (the ``b`` of ``X @ W + b``), if there is one."""
        return bias_of(self.terms)

    @property
    def param_tids(self) -> tuple[int, int | None]:
        b = self.bias
        return (self.weight.tid, b.tid if b is not None else None)

    @property
    def params(self) -> list[_Param]:
        """Each parameter once: those of feature terms first, then intercepts."""
        return params_of(self.terms)

    def is_intercept(self, tid: int) -> bool:
        """Whether the parameter enters the model only as an added constant (its gradient is
        the sum over rows, not ``X^T G``)."""
        return all(t.intercept for t in self.terms if t.param.tid == tid)

    @property
    def classic(self) -> bool:
        """``y_hat = X @ W (+ b)``: one feature term over all of X, at most one intercept."""
        feats = [t for t in self.terms if not t.intercept]
        ints = [t for t in self.terms if t.intercept]
        return (len(feats) == 1 and feats[0].cols == (0, self.d) and feats[0].out == self.k
                and len(ints) <= 1 and all(t.param.tid != feats[0].param.tid for t in ints))

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

    def _value(self, vals: dict[int, torch.Tensor], tid: int) -> torch.Tensor:
        try:
            return vals[tid]
        except KeyError:
            raise NotApplicableError(f"no value given for parameter t{tid}") from None

    def predict(self, values: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """``X @ W + b`` (the sum of the terms, (n, k)) at the given parameter values
        (default: this step's)."""
        vals = self.param_values if values is None else values
        z: torch.Tensor | None = None
        for t in self.terms:
            c = t.contribution(self.X, self._value(vals, t.param.tid))
            z = c if z is None else z + c
        n, k = self.X.shape[0], self.k
        if z is None:
            return torch.zeros(n, k, dtype=torch.float64)
        if tuple(z.shape) != (n, k):
            z = z.reshape(-1, z.shape[-1]).expand(n, k).clone()
        return z

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
        return self.back(G)

    def back(self, G: torch.Tensor, absolute: bool = False) -> dict[int, torch.Tensor]:
        """{tid: dL/dparam} from ``G = dL/dy_hat`` (n, k), in the parameters' shapes: the sum
        over the terms of ``X[:, cols]^T G`` (an intercept: ``G`` summed over rows). With
        ``absolute``, ``|X|`` in place of ``X`` (pass a non-negative ``G`` for the magnitudes
        of the terms a float sum adds up)."""
        out: dict[int, torch.Tensor] = {}
        for t in self.terms:
            g = t.back(self.X, G, absolute)
            out[t.param.tid] = g if t.param.tid not in out else out[t.param.tid] + g
        return out

    def gradient_scale(self) -> dict[int, torch.Tensor]:
        """The same sums taken over absolute values: how large the terms autograd added were.

        Rounding in a sum is relative to this, not to the (possibly cancelling) result."""
        return self.back(self.gradient_wrt_output().abs(), absolute=True)

    # -- least squares ---------------------------------------------------------------------
    def _index_maps(self) -> list[torch.Tensor]:
        """Per term, a (d_t, k) integer map: which flat parameter each entry of its W is
        (an intercept: (1, k)); parameters are numbered in :attr:`params` order."""
        start, at = {}, 0
        for p in self.params:
            start[p.tid] = at
            at += p.numel
        maps = []
        for t in self.terms:
            p = t.param
            base = start[p.tid]
            idx = p.to_eff(torch.arange(base, base + p.numel, dtype=torch.float64).reshape(p.shape))
            idx = idx.reshape(1, t.out) if t.intercept else idx.reshape(-1, t.out)
            maps.append(idx.expand(idx.shape[0], self.k).round().long())
        return maps

    @property
    def n_params(self) -> int:
        return sum(p.numel for p in self.params)

    def _design(self, rows: slice) -> torch.Tensor:
        """D with y_hat.flatten() = D @ theta for the given rows: (rows*k, P)."""
        X = self.X[rows]
        n, k = X.shape[0], self.k
        D = torch.zeros(n, k, self.n_params, dtype=torch.float64)
        for t, idx in zip(self.terms, self._index_maps()):
            F = t.features(X)
            for a in range(F.shape[1]):
                D.scatter_add_(2, idx[a].view(1, k, 1).expand(n, k, 1),
                               F[:, a].view(n, 1, 1).expand(n, k, 1).contiguous())
        return D.reshape(n * k, self.n_params)

    def _chunks(self) -> Iterator[slice]:
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
        if (f.loss_kind, f.terms, f.d, f.k) != (first.loss_kind, first.terms, first.d, first.k):
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
