"""How far a correct gradient can be from the exact one: the rounding error model of the checks.

A gradient autograd computed in floating point is not the exact derivative: every op of
the forward rounded its result, every op of the backward rounded its products and sums.
This module bounds that error a priori, op by op, from the arithmetic of the recorded step
(docs/gradients.md has the formulas):

- **unit roundoff** ``u`` of the dtype each op ran in, read from its recorded output
  (so ``torch.autocast`` is followed: a matmul that ran in bfloat16 has ``u = 2^-8``);
  half-precision ops accumulate in float32 (``u_acc``) and round their result once;
- **terms summed**: an op whose result (or, in the backward, whose input's gradient) adds
  up ``k`` products is exact to ``gamma_k = k u / (1 - k u)`` of the sum of their
  magnitudes;
- **magnitudes**: the sum of the magnitudes of those terms, ``|J|^T |upstream|``,
  computed in float64 on the replay of the step (:class:`~.numeric.Replay`).

Backward rounding: going back through the ops, the bound ``B`` on the error of each
cotangent grows as ``B_x += |J|^T B_y + gamma_k(op) |J|^T |g_y|``. Forward rounding: a
result rounded by ``E_v = gamma_k |terms of v|`` moves the gradient by at most
``sum_v |d g / d v| E_v``, the derivative taken on the float64 replay (a zero added to
each op's output is the handle). Both are first-order bounds; the check doubles them.

The same model bounds the finite differences' own error (:func:`fd_error`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..tracefile.model import Op
from .numeric import Replay, ReplayError

__all__ = ["UNIT_ROUNDOFF", "unit_roundoff", "gamma", "ErrorModel", "SAFETY"]

#: Unit roundoff (half an ulp of 1) of each float dtype.
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}
#: The factor between the first-order bounds and the tolerance the checks use.
SAFETY = 2.0

# Ops whose result is elementwise in their (broadcast) inputs: |J| is diagonal.
_ELEMENTWISE = {
    "add", "sub", "rsub", "mul", "div", "true_divide", "neg", "pow", "square", "sqrt", "rsqrt",
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos",
    "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sigmoid", "relu", "relu6",
    "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "softplus", "hardtanh",
    "hardsigmoid", "hardswish", "logsigmoid", "abs", "reciprocal", "clamp", "clip",
    "clamp_min", "clamp_max", "maximum", "minimum", "where", "erf", "erfc", "atan2", "hypot",
    "lerp", "addcmul", "addcdiv", "threshold", "dropout", "to", "float", "double", "half",
    "bfloat16", "type_as", "_to_copy", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
    "__rmul__", "__truediv__", "__rtruediv__", "__neg__", "__pow__", "__rpow__", "xlogy",
    "sgn", "sign", "square_", "mul_", "add_", "sub_", "div_", "copysign", "fmod", "remainder",
}
# Ops linear in each float input (products and sums of their entries): at the magnitudes of
# their inputs their Jacobian is |J|.
_CONTRACTIONS = {"matmul", "mm", "bmm", "mv", "dot", "vdot", "inner", "linear", "addmm",
                 "addmv", "addbmm", "baddbmm", "einsum", "outer", "ger", "__matmul__",
                 "__rmatmul__", "tensordot", "bilinear"}
_CONVOLUTIONS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                 "conv_transpose3d", "convolution"}
_LINEAR = _CONTRACTIONS | _CONVOLUTIONS | {
    "sum", "mean", "nansum", "cumsum", "trace", "reshape", "view", "view_as", "flatten",
    "unflatten", "permute", "transpose", "t", "T", "mT", "squeeze", "unsqueeze", "expand",
    "expand_as", "getitem", "__getitem__", "select", "narrow", "index_select", "gather",
    "take_along_dim", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "split",
    "chunk", "unbind", "contiguous", "clone", "repeat", "tile", "repeat_interleave", "flip",
    "roll", "diag", "diagonal", "tril", "triu", "movedim", "swapaxes", "broadcast_to",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "pad", "masked_select", "index_add", "scatter_add", "positive", "ravel", "squeeze_",
    "unsqueeze_", "detach_copy"}
# Normalisations whose backward subtracts a weighted sum: see ErrorModel._softmax_terms.
_SOFTMAXES = {"softmax", "_softmax", "log_softmax", "_log_softmax"}
# A local Jacobian taken whole when it is at most this many entries (the rest: |vjp|).
_JACOBIAN_LIMIT = 1 << 20


def unit_roundoff(dtype: str) -> float:
    return UNIT_ROUNDOFF.get(dtype, UNIT_ROUNDOFF["float32"])


def gamma(k: float, u: float) -> float:
    """gamma_k = k u / (1 - k u): the relative error bound of a sum of k products."""
    ku = k * u
    return ku / (1 - ku) if ku < 0.5 else 2 * ku


def _kind(o: Op) -> str:
    name = o.name if isinstance(o.name, str) else ""
    if name.endswith("_") and not name.endswith("__") and name not in _LINEAR | _ELEMENTWISE:
        name = name[:-1]  # relu_ is relu, run on a copy (Replay.call)
    if name in _LINEAR:
        return "linear"
    if name in _ELEMENTWISE:
        return "elementwise"
    return "other"


def _tensor_tids(a, out: list[int]) -> list[int]:
    if isinstance(a, dict) and len(a) == 1 and "tensor" in a and isinstance(a["tensor"], int):
        if a["tensor"] not in out:
            out.append(a["tensor"])
    elif isinstance(a, (list, tuple)):
        for x in a:
            _tensor_tids(x, out)
    elif isinstance(a, dict):
        for x in a.values():
            _tensor_tids(x, out)
    return out


def _vjp(outs, inputs: list[torch.Tensor], cot: list[torch.Tensor]):
    """J^T c: what ``torch.autograd.grad(outs, inputs, cot)`` gives, bit for bit (the extra
    ``* c`` and ``sum`` pass each ``c`` on times 1.0, exactly), without its handling of
    given gradients, whose first use imports sympy (a third of a second)."""
    total = sum((o * c.reshape(o.shape)).sum() for o, c in zip(outs, cot))
    return torch.autograd.grad(total, inputs, allow_unused=True)


@dataclass
class _OpRecord:
    op: Op
    kind: str
    inputs: list[int]            # float tensor tids among its arguments
    outputs: list[int]           # float tensor tids it made
    u_acc: float                 # unit roundoff its products and sums were accumulated in
    u_out: float                 # unit roundoff of its result
    terms: float                 # products the op adds up, over all its outputs


#: at most this many bytes held by one batch of :meth:`ErrorModel.forward_bound`'s cotangents
_BATCH_BYTES = 64 << 20
#: from this many elements on, forward_bound's backward passes are batched
_BATCH_FROM = 8


@dataclass
class ErrorModel:
    """The float64 replay of a step with a handle on every op result, and the bounds.

    ``gradient[tid]`` is the exact (float64) gradient of the replay; ``backward_bound(tid)``
    bounds the rounding of autograd's backward elementwise, ``forward_bound(tid, i)`` that
    of the forward at element ``i``; ``loss_error(u)`` bounds the rounding of the loss
    itself in float64 (for the finite differences)."""

    replay: Replay
    values: dict[int, torch.Tensor]
    records: list[_OpRecord] = field(default_factory=list)
    approximate: list[str] = field(default_factory=list)
    #: the dtypes the step's ops ran in (autocast shows here), in order of first use
    dtypes: list[str] = field(default_factory=list)

    def __post_init__(self):
        rp = self.replay
        step = rp.step
        self.leaves = {t: v.detach().clone().requires_grad_(True) for t, v in self.values.items()}
        env: dict[int, torch.Tensor] = dict(self.leaves)
        for tid, (src, dims) in rp.views.items():
            env[tid] = env[src].permute(*dims)
        self.probes: dict[int, torch.Tensor] = {}
        self.env = env
        with torch.enable_grad():
            for o in rp.top:
                self._run(o, env)
            loss = torch.zeros((), dtype=torch.float64)
            for r, g in zip(rp.roots, rp.root_grads):
                if r not in env:
                    raise ReplayError(f"the loss ({rp.name(r)}) was not recomputed")
                v = env[r]
                loss = loss + (v.sum() if g is None else (v * g.reshape(v.shape)).sum())
            self.loss = loss
            wrt = list(self.leaves.values()) + list(self.probes.values())
            grads = torch.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
        self._grad_graph = dict(zip(list(self.leaves) , grads[:len(self.leaves)]))
        n = len(self.leaves)
        self.cotangent = {t: (g.detach() if g is not None else torch.zeros_like(self.env[t]))
                          for t, g in zip(self.probes, grads[n:])}
        self.gradient = {t: (g.detach() if g is not None else torch.zeros_like(v))
                         for (t, v), g in zip(self.leaves.items(), grads[:n])}
        self._B: dict[int, torch.Tensor] | None = None
        self._E: dict[int, torch.Tensor] | None = None  # forward_errors() in the ops' dtypes

    # -- the replay with handles -----------------------------------------------------------------
    def _run(self, o: Op, env: dict[int, torch.Tensor]) -> None:
        rp = self.replay
        if not o.is_graph and o.parent is None:
            return
        if o.is_function:
            for i in o.inputs:
                if i not in env:
                    env[i] = rp._arg({"tensor": i}, env, o)
            for io in rp.inner.get(o.index, []):
                self._run(io, env)
            return
        rp._run(o, env)
        ins = []
        for i in _tensor_tids(list(o.args) + list(o.kwargs.values()), []):
            t = env.get(i)
            if t is None:
                t = rp.constant(i, o)
            if t.is_floating_point():
                ins.append(i)
                env.setdefault(i, t)
        outs = [tid for tid in o.outputs if tid in env and env[tid].is_floating_point()]
        for tid in outs:
            z = torch.zeros_like(env[tid], requires_grad=True)
            self.probes[tid] = z
            env[tid] = env[tid] + z
        dt = self._dtype(outs[0]) if outs else "float64"
        u_out = unit_roundoff(dt)
        u_acc = min(u_out, UNIT_ROUNDOFF["float32"])
        kind = _kind(o)
        n_out = sum(env[t].numel() for t in outs)
        n_in = max([env[i].numel() for i in ins] or [1])
        terms = float(max(n_out, n_in))
        if kind == "linear" and ins:
            name = o.name
            first = env[ins[0]] if name not in ("addmm", "addmv", "addbmm", "baddbmm") or len(ins) < 2 \
                else env[ins[1]]
            if name in _CONTRACTIONS:
                inner = first.shape[-1] if first.dim() else 1
                if name == "einsum":
                    inner = max([d for i in ins for d in env[i].shape] or [1])
                terms = float(max(n_out * inner, n_in))
            elif name in _CONVOLUTIONS and len(ins) >= 2:
                w = env[ins[1]]
                terms = float(max(n_out * (w.numel() // max(w.shape[0], 1)), n_in))
        self.records.append(_OpRecord(o, kind, ins, outs, u_acc, u_out, terms))
        if dt not in self.dtypes:
            self.dtypes.append(dt)

    def _dtype(self, tid: int) -> str:
        step = self.replay.step
        tid = self.replay.origin.get(tid, tid)  # a value an op in place made: its tensor's
        v = step.value(tid)
        if v is not None:
            return v.dtype
        info = step.tensors.get(tid)
        return info.dtype if info is not None else "float32"

    def _at(self, rec: _OpRecord, subst: dict[int, torch.Tensor]):
        env = dict(self.env)
        env.update(subst)
        outs = rec.op.outputs
        res = self.replay.call(rec.op, env)
        res = (res,) if isinstance(res, torch.Tensor) else tuple(
            v for v in res if isinstance(v, torch.Tensor))
        return [r for t, r in zip(outs, res) if t in rec.outputs]

    # -- |J|^T c ----------------------------------------------------------------------------------
    def abs_vjp(self, rec: _OpRecord, cot: list[torch.Tensor],
                terms: bool = False) -> dict[int, torch.Tensor]:
        """|J|^T c for nonnegative cotangents ``cot`` (one per float output), per float input;
        ``terms``: the magnitudes of the terms the op's backward adds up instead, where they
        exceed |J|^T c (softmax: see :meth:`_softmax_terms`). Errors already in ``c`` move
        through |J|^T; the op's own rounding is relative to its terms.

        Inputs that depend on no parameter (data, a batch norm's running statistics, which
        the op updates in place and so may not require grad) pass no gradient back: they
        get zeros and are given to the op as they are."""
        fixed = {i: torch.zeros_like(self.env[i]) for i in rec.inputs
                 if i not in self.replay.dependent}
        if fixed:
            return {**fixed, **self._abs_vjp([i for i in rec.inputs if i not in fixed], rec, cot,
                                             list(fixed), terms)}
        return self._abs_vjp(rec.inputs, rec, cot, [], terms)

    def _abs_vjp(self, inputs: list[int], rec: _OpRecord, cot: list[torch.Tensor],
                 fixed: list[int], terms: bool = False) -> dict[int, torch.Tensor]:
        if not inputs:
            return {}
        xs = {i: self.env[i].detach() for i in inputs}
        if terms:
            magnitudes = self._softmax_terms(rec, xs, cot)
            if magnitudes is not None:
                return magnitudes
        with torch.enable_grad():
            if rec.kind == "elementwise" and rec.outputs:
                shape = self.env[rec.outputs[0]].shape
                try:
                    sub = {i: x.expand(shape).clone().requires_grad_(True) for i, x in xs.items()}
                except RuntimeError:
                    sub = None
                if sub is not None:
                    outs = self._at(rec, sub)
                    gs = _vjp(outs, list(sub.values()), cot)
                    return {i: (g.abs().sum_to_size(xs[i].shape) if g is not None
                                else torch.zeros_like(xs[i])) for i, g in zip(sub, gs)}
            if rec.kind == "linear":
                sub = {i: x.abs().requires_grad_(True) for i, x in xs.items()}
                outs = self._at(rec, {**{i: self.env[i].detach().abs() for i in fixed}, **sub})
                gs = _vjp(outs, list(sub.values()), cot)
                return {i: (g.abs() if g is not None else torch.zeros_like(xs[i]))
                        for i, g in zip(sub, gs)}
            sub = {i: x.clone().requires_grad_(True) for i, x in xs.items()}
            outs = self._at(rec, sub)
            n_out = sum(o.numel() for o in outs)
            n_in = sum(x.numel() for x in xs.values())
            if n_out * n_in <= _JACOBIAN_LIMIT and n_out <= 256:
                acc = {i: torch.zeros_like(x) for i, x in xs.items()}
                for oi, (out, c) in enumerate(zip(outs, cot)):
                    flat = out.reshape(-1)
                    cf = c.reshape(-1)
                    for j in range(flat.numel()):
                        if float(cf[j]) == 0:
                            continue
                        gs = torch.autograd.grad(flat[j], list(sub.values()), retain_graph=True,
                                                 allow_unused=True)
                        for i, g in zip(sub, gs):
                            if g is not None:
                                acc[i] += g.abs() * cf[j]
                return acc
            name = rec.op.name if isinstance(rec.op.name, str) else str(rec.op.target)
            if name not in self.approximate:
                self.approximate.append(name)
            gs = _vjp(outs, list(sub.values()), cot)
            return {i: (g.abs() if g is not None else torch.zeros_like(xs[i]))
                    for i, g in zip(sub, gs)}

    def _softmax_terms(self, rec: _OpRecord, xs: dict[int, torch.Tensor],
                       cot: list[torch.Tensor]) -> dict[int, torch.Tensor] | None:
        """The magnitudes of the terms softmax's and log_softmax's backward add up, for
        cotangents ``cot``; None for any other op. Their Jacobians come from a cancellation
        (``diag(p) - p p^T``), so |J|^T c understates them where p is near 1 (a confident
        softmax: attention, a trained classifier): the backward computes ``p (g - sum(g p))``
        and ``g - p sum(g)``, whose terms are ``p (|g| + sum(|g| p))`` and ``|g| + p sum(|g|)``."""
        name = rec.op.name if isinstance(rec.op.name, str) else ""
        if name not in _SOFTMAXES or len(xs) != 1 or len(rec.outputs) != 1 or len(cot) != 1:
            return None
        args, kwargs = rec.op.args, rec.op.kwargs
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(dim, int):
            return None
        (i, x), = xs.items()
        out = self.env[rec.outputs[0]].detach()
        c = cot[0].reshape(out.shape)
        if name in ("log_softmax", "_log_softmax"):
            p = out.exp()
            t = c + p * c.sum(dim, keepdim=True)
        else:
            p = out
            t = p * (c + (c * p).sum(dim, keepdim=True))
        return {i: t.reshape(x.shape) if t.shape == x.shape else t.sum_to_size(x.shape)}

    # -- the bounds -----------------------------------------------------------------------------
    def _k_bwd(self, rec: _OpRecord, tid: int) -> float:
        return math.ceil(rec.terms / max(self.env[tid].numel(), 1)) + 2

    def _k_fwd(self, rec: _OpRecord) -> float:
        n_out = sum(self.env[t].numel() for t in rec.outputs) or 1
        return math.ceil(rec.terms / n_out) + 2

    def _gamma(self, rec: _OpRecord, k: float) -> float:
        g = gamma(k, rec.u_acc)
        return g + rec.u_out if rec.u_out > rec.u_acc else g

    def backward_bounds(self) -> dict[int, torch.Tensor]:
        """Per leaf, elementwise: how far the rounding of autograd's backward can move it."""
        if self._B is not None:
            return self._B
        B: dict[int, torch.Tensor] = {}
        A: dict[int, torch.Tensor] = {}   # sum of the magnitudes of the contributions
        uses: dict[int, int] = {}
        for rec in reversed(self.records):
            if not rec.inputs or not rec.outputs:
                continue
            g_abs = [self.cotangent[t].abs() for t in rec.outputs]
            b_out = [B.get(t, torch.zeros_like(self.cotangent[t])) for t in rec.outputs]
            if all(float(g.max()) == 0 for g in g_abs if g.numel()) and all(
                    float(b.max()) == 0 for b in b_out if b.numel()):
                continue
            terms = self.abs_vjp(rec, g_abs, terms=True)
            carried = self.abs_vjp(rec, b_out) if any(
                float(b.max()) > 0 for b in b_out if b.numel()) else {}
            for i, t in terms.items():
                add = self._gamma(rec, self._k_bwd(rec, i)) * t
                if i in carried:
                    add = add + carried[i]
                B[i] = B[i] + add if i in B else add
                A[i] = A[i] + t if i in A else t
                uses[i] = uses.get(i, 0) + 1
        for i, n in uses.items():
            if n > 1:  # the contributions of several uses are added up too
                B[i] = B[i] + gamma(n, UNIT_ROUNDOFF.get(self._dtype(i), UNIT_ROUNDOFF["float32"])) * A[i]
        self._B = {t: B.get(t, torch.zeros_like(v)).reshape(v.shape) for t, v in self.leaves.items()}
        return self._B

    def forward_errors(self, u_of=None) -> dict[int, torch.Tensor]:
        """E_v per op result: the rounding error of v (in the dtype it ran in, or in float64
        when ``u_of`` says so), from the magnitudes of the terms that made it."""
        out = {}
        for rec in self.records:
            if not rec.outputs:
                continue
            if rec.kind == "linear" and rec.inputs:
                with torch.no_grad():
                    mags = [m.abs() for m in self._at(rec, {i: self.env[i].detach().abs()
                                                            for i in rec.inputs})]
            else:
                mags = [self.env[t].detach().abs() for t in rec.outputs]
            k = self._k_fwd(rec)
            g = self._gamma(rec, k) if u_of is None else gamma(k + 1, u_of)
            for t, m in zip(rec.outputs, mags):
                # An infinity the op set on purpose (a mask's -inf, that a softmax turns into
                # an exact 0) carries no rounding error, and nothing of the loss depends on it.
                out[t] = torch.where(torch.isfinite(m), g * m, torch.zeros_like(m))
        return out

    def forward_bound(self, tid: int, indices: list[int]) -> torch.Tensor:
        """At the given flat elements of leaf ``tid``: sum_v |d g_i / d v| E_v."""
        if self._E is None:
            self._E = self.forward_errors()
        E = self._E
        probes = [p for t, p in self.probes.items() if t in E]
        errs = [E[t] for t in self.probes if t in E]
        g = self._grad_graph.get(tid)
        res = torch.zeros(len(indices), dtype=torch.float64)
        if g is None or not probes or not g.requires_grad:
            return res
        # A few elements are taken one at a time: a batched backward first imports torch's
        # decompositions and sympy (about half a second), which only many elements repay.
        if len(indices) >= _BATCH_FROM:
            batched = self._forward_bound_batched(g, probes, errs, indices)
            if batched is not None:
                return batched
        flat = g.reshape(-1)
        for j, i in enumerate(indices):
            ds = torch.autograd.grad(flat[i], probes, retain_graph=True, allow_unused=True)
            res[j] = sum(float((d.abs() * e).sum()) for d, e in zip(ds, errs) if d is not None)
        return res

    def _forward_bound_batched(self, g: torch.Tensor, probes: list[torch.Tensor],
                               errs: list[torch.Tensor], indices: list[int]) -> torch.Tensor | None:
        """:meth:`forward_bound`'s sums for every element at once: one backward pass of the
        gradient's graph with a batch of one-hot cotangents (``is_grads_batched``, vmap over
        the backward), in chunks of bounded memory; None where a backward function cannot be
        batched (the caller then takes one element at a time)."""
        per = 8 * max(1, g.numel() + sum(p.numel() for p in probes))
        chunk = max(1, _BATCH_BYTES // per)
        out = torch.zeros(len(indices), dtype=torch.float64)
        flat = torch.tensor(indices, dtype=torch.long)
        try:
            for lo in range(0, len(indices), chunk):
                hi = min(len(indices), lo + chunk)
                onehot = torch.zeros(hi - lo, g.numel(), dtype=g.dtype)
                onehot[torch.arange(hi - lo), flat[lo:hi]] = 1
                ds = torch.autograd.grad(g, probes, grad_outputs=onehot.reshape(hi - lo, *g.shape),
                                         retain_graph=True, allow_unused=True,
                                         is_grads_batched=True)
                for d, e in zip(ds, errs):
                    if d is not None:
                        out[lo:hi] += (d.abs() * e).reshape(hi - lo, -1).sum(1)
        except RuntimeError:  # a backward vmap cannot batch
            return None
        return out

    def loss_error(self) -> float:
        """How far the float64 replay's loss can be from the exact one: sum_v |dL/dv| E_v."""
        E = self.forward_errors(u_of=UNIT_ROUNDOFF["float64"])
        return float(sum(float((self.cotangent[t].abs() * e).sum()) for t, e in E.items()
                         if t in self.cotangent)) + UNIT_ROUNDOFF["float64"] * abs(float(self.loss.detach()))
