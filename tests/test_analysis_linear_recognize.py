"""analysis.linear.recognize: steps that used to crash the recognition, and tampered ops.

recognize() promises never to raise: a 0-d weight seen through a transpose and a loss
scaled to infinity each used to escape it (ZeroDivisionError, OverflowError)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

import gradtrace
from gradtrace.analysis.linear import SOFTMAX_CE, SQUARED_ERROR, LinearFit, NotApplicable, recognize
from gradtrace.analysis.numeric import autograd_gradients

torch.manual_seed(0)
N, D = 6, 3
X = torch.randn(N, D)
x1 = torch.randn(N)
Y1 = torch.randn(N, 1)
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def _step(loss_fn):
    with gradtrace.trace() as t:
        loss_fn().backward()
    return t.steps[0]


def _tampered(step, name, **changes):
    """The step with the (only) top-level op called ``name`` changed."""
    ops = tuple(replace(o, **changes) if o.name == name and o.parent is None else o for o in step.ops)
    assert ops != step.ops
    return replace(step, ops=ops)


def test_a_transposed_zero_dim_weight_is_the_weight_itself():
    w = torch.tensor(0.7, requires_grad=True)
    for view in (lambda: w.transpose(0, 0), lambda: w.t()):
        step = _step(lambda: ((x1 * view() - x1 * 2) ** 2).sum())
        fit = recognize(step)
        assert isinstance(fit, LinearFit), fit
        assert fit.param_tids[1] is None and fit.constant == 1.0
        got = autograd_gradients(step)
        ref = fit.gradient()
        assert set(got) == set(ref) == {fit.param_tids[0]}
        for tid in ref:
            torch.testing.assert_close(got[tid].reshape(ref[tid].shape), ref[tid], rtol=1e-5, atol=1e-5)


def test_an_infinite_loss_constant_is_not_applicable_with_its_family():
    w = torch.randn(D, 1, requires_grad=True)
    W3 = torch.randn(D, 3, requires_grad=True)
    for loss_fn, family in (
        (lambda: ((X @ w - Y1) ** 2).sum() * math.inf, SQUARED_ERROR),
        (lambda: ((X @ w - Y1) ** 2).sum() * 1e300 * 1e300, SQUARED_ERROR),
        (lambda: torch.nn.functional.cross_entropy(X @ W3, LABELS) * math.inf, SOFTMAX_CE),
    ):
        na = recognize(_step(loss_fn))
        assert isinstance(na, NotApplicable), na
        assert na.family == family
        assert "not a finite number" in na.reason and "inf" in na.reason


def test_an_op_whose_tensor_argument_is_not_a_tensor_is_not_applicable():
    w = torch.randn(D, 1, requires_grad=True)
    step = _step(lambda: ((X @ w - Y1) ** 2).sum())
    assert isinstance(recognize(step), LinearFit)
    na = recognize(_tampered(step, "sum", args=({"repr": "'not a tensor'"},)))
    assert isinstance(na, NotApplicable)
    assert na.reason == ("the loss is neither a squared error nor a softmax cross-entropy "
                         "(argument 0 of sum is not a tensor)")


def test_a_permute_without_dims_is_not_applicable():
    w = torch.randn(1, D, requires_grad=True)
    step = _step(lambda: ((X @ w.permute(1, 0) - Y1) ** 2).sum())
    assert isinstance(recognize(step), LinearFit)
    perm = next(o for o in step.ops if o.name == "permute")
    na = recognize(_tampered(step, "permute", args=perm.args[:1], kwargs={}))
    assert isinstance(na, NotApplicable)
    assert na.family == SQUARED_ERROR
    assert "permute without its dims" in na.reason

