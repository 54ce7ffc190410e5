"""Recognition: one step's loss and model, confirmed, as a :class:`LinearFit`.

:func:`recognize` tries each loss family in turn (:mod:`.squared`, then :mod:`.softmax`),
finds the model under the loss (:mod:`.model`), reads ``X``, ``y`` and the recorded
prediction, and confirms both against the recorded values (:func:`_confirm`): a formula
that does not reproduce what the step computed is ``NotApplicable``, never a guess.
:func:`fit_of` shares the answer per step object.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch

from ...formatting import fraction as fmt_fraction, shape as fmt_shape
from ...tracefile.model import Op, Step
from .fit import SOFTMAX_CE, SQUARED_ERROR, LinearFit, NotApplicable, _undo_views
from .model import Affine, ModelMatcher
from .reader import _NA, _Reader, _broadcast
from .softmax import CrossEntropyMatcher
from .squared import SquaredErrorMatcher


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
        r = _Reader(step)
        try:
            return _build(r, root, family)
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


@dataclass(frozen=True)
class _Match:
    """A loss recognised at the root and the model recognised under it."""

    c: float                 #: L = c * sum(...)
    core: Affine
    pred_tid: int            #: the prediction (squared error) or the logits (softmax)
    y: torch.Tensor          #: (n, k) float64: the targets, or the target distribution
    pred: torch.Tensor       #: (n, k) float64: the recorded prediction, or logits
    loss_desc: str
    loss_op: Op | None


def _match_squared(r: _Reader, model: ModelMatcher, root: int) -> _Match:
    loss = SquaredErrorMatcher(r)
    c, pred_side, target_side, form = loss.squared(root)
    try:
        core = model.affine(pred_side)
    except _NA as e:
        raise _NA(f"squared error of a model that is not linear in its parameters: {e.reason}",
                  SQUARED_ERROR) from None
    ps, ts = r.shape(pred_side), r.shape(target_side)
    try:
        bs = _broadcast(ps, ts)
    except ValueError:
        raise _NA(f"y_hat {fmt_shape(ps)} and y {fmt_shape(ts)} do not broadcast", SQUARED_ERROR)
    if bs != tuple(ps):
        raise _NA(f"y_hat of shape {fmt_shape(ps)} minus y of shape {fmt_shape(ts)} broadcasts "
                  f"to {fmt_shape(bs)}: the loss compares every prediction with every target "
                  "(reshape y to y_hat's shape)", SQUARED_ERROR)
    y = r.const(target_side, "the target y").double().expand(ps).reshape(-1, core.k)
    pred = r.data(pred_side, "the prediction").double().reshape(-1, core.k)
    return _Match(c, core, pred_side, y, pred, f"L = {fmt_fraction(c)} * sum((y_hat - y)**2)  [{form}]",
                  loss.loss_op)


def _match_softmax(r: _Reader, model: ModelMatcher, root: int) -> _Match:
    loss = CrossEntropyMatcher(r)
    a, z_tid, Y, form = loss.cross_entropy(root)
    c = -a
    try:
        core = model.affine(z_tid)
    except _NA as e:
        raise _NA(f"softmax cross-entropy of a model that is not linear in its parameters: "
                  f"{e.reason}", SOFTMAX_CE) from None
    pred = r.data(z_tid, "the logits").double().reshape(-1, core.k)
    return _Match(c, core, z_tid, Y, pred, f"L = {fmt_fraction(c)} * sum_i CE(softmax(z_i), y_i)  [{form}]",
                  loss.loss_op)


def _build(r: _Reader, root: int, family: str) -> LinearFit:
    """The fit of ``family`` at the root of backward, confirmed against the recorded values."""
    step = r.step
    model = ModelMatcher(r)
    m = (_match_squared if family == SQUARED_ERROR else _match_softmax)(r, model, root)
    c, core, pred, y = m.c, m.core, m.pred, m.y
    if not math.isfinite(c):
        raise _NA(f"the loss's constant c is {c}, not a finite number", family)
    X = core.X
    if pred.shape[0] != X.shape[0] or y.shape != pred.shape:
        raise _NA(f"{X.shape[0]} rows of X but a prediction of shape {fmt_shape(pred.shape)}", family)
    pv = step.value(m.pred_tid)
    dtype = pv.dtype if pv is not None else "float32"
    values: dict[int, torch.Tensor] = {}
    for p in core.params:
        v = step.value(p.tid)
        if v is not None and v.data is not None:
            values[p.tid] = v.data.double().reshape(p.shape)
    fit = LinearFit(step=step.index, loss_kind=family, X=X, y=y, terms=core.terms,
                    row_weights=torch.full((X.shape[0],), float(c),
                                                           dtype=torch.float64),
                    pred=pred, dtype=dtype, model_desc=_model_desc(core, step),
                    loss_desc=m.loss_desc, model_op=model.model_op or core.op,
                    loss_op=m.loss_op, recorded_loss=step.loss, steps=(step.index,))
    # The parameters' values: as recorded, else read back from the tensors the model used.
    if any(p.tid not in values for p in fit.params):
        _values_from_use(fit, model.seen_as, step, values)
    fit.param_values = values
    _confirm(fit, pred)
    return fit


def _values_from_use(fit: LinearFit, seen_as: dict[int, int], step: Step,
                     values: dict[int, torch.Tensor]) -> None:
    """Parameters the recorder saw only through a view (``w.T``): undo the view on the
    value of the tensor the model multiplied by."""
    for p in fit.params:
        view = seen_as.get(p.tid)
        if p.tid in values or view is None:
            continue
        v = step.value(view)
        if v is not None and v.data is not None:
            values[p.tid] = _undo_views(v.data.double(), p.views[:1]).reshape(p.shape)


def _confirm(fit: LinearFit, pred: torch.Tensor) -> None:
    """The recorded forward must be what the recognised formulas say."""
    tol = _tolerance(fit.dtype)
    if len(fit.param_values) == len(fit.params):
        z = fit.predict()
        scale = _prediction_scale(fit)
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


def _prediction_scale(fit: LinearFit) -> float:
    """How large the terms of the prediction are: rounding is relative to this."""
    vals = fit.param_values
    feats: torch.Tensor | None = None
    scale = 0.0
    for t in fit.terms:
        if t.intercept:
            scale += float(vals[t.param.tid].abs().max())
        else:
            c = t.features(fit.X).abs() @ t.matrix(vals[t.param.tid]).abs()
            feats = c if feats is None else feats + c
    if feats is not None and feats.numel():
        scale += float(feats.max())
    return scale


def _model_desc(core: Affine, step: Step) -> str:
    w = core.weight
    b = core.bias
    if core.desc.startswith("a sum of"):
        parts = []
        for t in core.terms:
            name = step.name(t.param.tid)
            if t.cols is None:
                parts.append(name)
            elif t.cols[1] - t.cols[0] == 1:
                parts.append(f"{name} * X[:, {t.cols[0]}]")
            else:
                parts.append(f"X[:, {t.cols[0]}:{t.cols[1]}] @ {name}")
        return (f"{core.desc}: y_hat = {' + '.join(parts)}, X {fmt_shape(tuple(core.X.shape))} "
                "(the features: everything the parameters multiply)")
    s = f"{core.desc}: X {fmt_shape(tuple(core.X.shape))}, W = {step.name(w.tid)}"
    if any(v[0] == "permute" for v in w.views):
        s += " (transposed)"
    s += f" {fmt_shape(w.shape)}"
    if b is not None:
        s += f", b = {step.name(b.tid)} {fmt_shape(b.shape)}"
    else:
        s += ", no bias"
    return s
