"""analysis.linear (the package): recognize() of steps that are no linear model says why; the seed demos are recognised.

Each loss family, the models and the closed forms have their own files:
test_analysis_linear_squared.py, _softmax.py, _model.py, _fit.py, _reader.py, _recognize.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.linear import LinearFit, NotApplicable, recognize
from linear_data import D, K, X, Y1, LABELS, params as _params, one_step as _step


W, B = _params((K, D), (K,))
W1, B1 = _params((D, 1), (1,))


# -- not applicable: a reason, never a crash, never a pass -------------------------------------------

@pytest.mark.parametrize("loss,why", [
    (lambda: ((torch.tanh(X @ W.t()) @ torch.ones(K, 1) + B1 - Y1) ** 2).mean(), "not linear"),
    (lambda: ((X @ W1 + B1 - Y1.reshape(-1)) ** 2).mean(), "broadcasts to (8, 8)"),
    (lambda: (X @ W1 + B1 - Y1).abs().mean(), "neither a squared error nor a softmax"),
    (lambda: ((X @ W1 + B1 - Y1) ** 3).sum(), "neither"),
    (lambda: F.cross_entropy(torch.relu(X @ W.t()) + B, LABELS), "softmax cross-entropy of a model that is not linear"),
])
def test_other_steps_are_not_applicable_with_the_reason(loss, why):
    fit = recognize(_step(loss))
    assert isinstance(fit, NotApplicable) and not fit
    assert why in fit.reason
    assert str(fit).startswith("not applicable: ")


def test_a_step_without_backward_is_not_applicable():
    with gradtrace.trace() as t:
        X @ W1 + B1
        pass
    assert recognize(t.steps[0]).reason == "the step has no backward pass"


def test_seed_demos_are_recognised_with_their_constants(demo_trace):
    expected = {"linreg": 1 / 2, "linreg_concise": 1 / 10, "crop_yield": 1 / 6}
    for name, c in expected.items():
        fit = recognize(demo_trace(name).steps[0])
        assert isinstance(fit, LinearFit), (name, fit)
        assert fit.constant == pytest.approx(c), name
