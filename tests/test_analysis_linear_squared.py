"""analysis.linear.squared: the squared error L = c * sum((y_hat - y)**2) in its spellings, its constant, its sides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradtrace
from gradtrace.analysis.linear import SQUARED_ERROR, recognize
from gradtrace.analysis.linear.reader import _NA, _Reader
from gradtrace.analysis.linear.squared import SquaredErrorMatcher
from linear_data import N, D, K, X, Y2, Y1, params as _params, one_step as _step, agrees as _agrees

HERE = Path(__file__).name  # the source lines recorded here name this file


W, B = _params((K, D), (K,))
W1, B1 = _params((D, 1), (1,))

# (description, loss, expected c, family). The constant is the whole point: L = c * sum(...).
FORMS = [
    ("half factor, summed (d2l squared_loss)", lambda: ((X @ W1 + B1 - Y1.reshape(N, 1)) ** 2 / 2).sum(), 1 / 2),
    ("half factor, then mean", lambda: ((X @ W1 + B1 - Y1) ** 2 / 2).mean(), 1 / (2 * N)),
    ("mean over n", lambda: (torch.matmul(X, W1) + B1 - Y1).pow(2).mean(), 1 / N),
    ("mean over n * outputs", lambda: ((X @ W.t() + B - Y2) ** 2).mean(), 1 / (N * K)),
    ("plain sum", lambda: ((X @ W.t() + B - Y2) ** 2).sum(), 1.0),
    ("sum(d * d) / d.numel()", lambda: (lambda d: torch.sum(d * d) / d.numel())(X @ W.t() + B - Y2), 1 / (N * K)),
    ("MSELoss() (mean)", lambda: nn.MSELoss()(F.linear(X, W, B), Y2), 1 / (N * K)),
    ("mse_loss(reduction='sum')", lambda: F.mse_loss(F.linear(X, W, B), Y2, reduction="sum"), 1.0),
    ("mse_loss(reduction='none').mean(1).sum()",
     lambda: F.mse_loss(torch.addmm(B, X, W.t()), Y2, reduction="none").mean(1).sum(), 1 / K),
    ("0.5 * square().sum() / n", lambda: 0.5 * (X @ W.transpose(0, 1) + B - Y2).square().sum() / N, 1 / (2 * N)),
    ("(y - y_hat) ** 2, target first", lambda: ((Y2 - (X @ W.T + B)) ** 2).mean(), 1 / (N * K)),
]


@pytest.mark.parametrize("desc,loss,c", FORMS, ids=[f[0] for f in FORMS])
def test_each_squared_error_form_gets_its_constant(desc, loss, c):
    step = _step(loss)
    fit = recognize(step)
    assert fit, fit
    assert fit.loss_kind == SQUARED_ERROR
    assert fit.constant == pytest.approx(c, rel=1e-12)
    assert fit.loss() == pytest.approx(step.loss, rel=1e-5)
    _agrees(step, fit)


# -- the matcher on its own: (c, prediction side, target side, form) -------------------------------

def _matched(loss_fn):
    """SquaredErrorMatcher at the root of one recorded backward: (step, matcher, its answer)."""
    step = _step(loss_fn)
    m = SquaredErrorMatcher(_Reader(step))
    return step, m, m.squared(step.backward.roots[0])


def _matmul_out(step) -> int:
    return next(o for o in step.ops if o.name == "matmul").outputs[0]


@pytest.mark.parametrize("loss,c,form,at", [
    (lambda: ((X @ W1 - Y1) ** 2).sum(), 1.0, "d ** 2", "pow"),
    (lambda: (lambda d: (d * d).mean())(X @ W1 - Y1), 1 / N, "d * d", "mul"),
    (lambda: (X @ W1 - Y1).square().sum() * 3, 3.0, "d.square()", "square"),
    (lambda: ((X @ W1 - Y1) ** 2).sum() / 4, 1 / 4, "d ** 2", "pow"),
    (lambda: -F.mse_loss(X @ W1, Y1), -1 / N, "mse_loss(reduction='mean')", "mse_loss"),
    (lambda: F.mse_loss(X @ W1, Y1, reduction="sum"), 1.0, "mse_loss(reduction='sum')", "mse_loss"),
])
def test_each_spelling_is_named_with_its_constant_and_the_op_that_squares(loss, c, form, at):
    step, m, (got_c, pred, target, got_form) = _matched(loss)
    assert got_c == pytest.approx(c, rel=1e-15) and got_form == form
    assert pred == _matmul_out(step) and step.name(target) == "Y1"
    assert m.loss_op is not None and m.loss_op.name == at


def test_the_side_that_depends_on_the_parameters_is_the_prediction_whichever_comes_first():
    step, _, (_, pred, target, _) = _matched(lambda: ((Y1 - X @ W1) ** 2).sum())
    assert pred == _matmul_out(step) and step.name(target) == "Y1"


@pytest.mark.parametrize("loss,reason,family", [
    (lambda: ((X @ W1 - 2 * (X @ W1)) ** 2).sum(), "both sides of the difference depend on the parameters",
     SQUARED_ERROR),
    (lambda: (torch.sub(X @ W1, Y1, alpha=2) ** 2).sum(), "sub with alpha", SQUARED_ERROR),
    (lambda: ((X @ W1 + Y1) ** 2).sum(), "the squared term is add, not a difference y_hat - y", SQUARED_ERROR),
    (lambda: ((X @ W1 - 3.0) ** 2).sum(), "the squared term is sub, not a difference y_hat - y", SQUARED_ERROR),
])
def test_a_square_of_something_else_is_a_squared_error_family_reason(loss, reason, family):
    with pytest.raises(_NA) as e:
        _matched(loss)
    assert e.value.reason == reason and e.value.family == family


def test_a_loss_that_squares_nothing_says_the_op_and_where_it_is():
    with pytest.raises(_NA) as e:
        _matched(lambda: (X @ W1 - Y1).abs().sum())
    assert e.value.family is None  # not recognised as a squared error at all
    assert e.value.reason.startswith(f"the loss applies abs at {HERE}:")
    assert e.value.reason.endswith(", which is not part of a squared error")
    assert "(`" in e.value.reason  # the line's code, quoted
