"""analysis.linear.model: the model under the loss as a sum of parameter x feature terms, or why it is not one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.analysis.linear import recognize
from gradtrace.analysis.linear.model import ModelMatcher, unrecorded_view
from gradtrace.analysis.linear.reader import _NA, _Reader
from linear_data import N, D, K, X, Y2, Y1, params as _params, one_step as _step, agrees as _agrees

HERE = Path(__file__).name  # the source lines recorded here name this file


W1, B1 = _params((D, 1), (1,))

def test_models_without_bias_and_scalar_weight():
    fit = recognize(_step(lambda: ((torch.matmul(X, W1) - Y1) ** 2).sum()))
    assert fit and fit.param_tids[1] is None and fit.bias is None

    x = torch.rand(20)
    w, b = _params((1,), (1,))
    step = _step(lambda: (x * w + b - (3 * x + 0.8)).pow(2).mean())
    fit = recognize(step)
    assert fit and fit.X.shape == (20, 1) and fit.constant == pytest.approx(1 / 20)
    _agrees(step, fit)


def test_features_built_beforehand_are_data():
    x = torch.linspace(-1, 1, 12)
    w, b = _params((3, 1), (1,))
    step = _step(lambda: ((x.unsqueeze(-1).pow(torch.arange(1, 4)) @ w + b - x.unsqueeze(-1) ** 2) ** 2).mean())
    fit = recognize(step)
    assert fit, fit
    torch.testing.assert_close(fit.X, x.unsqueeze(-1).pow(torch.arange(1, 4)).double())


def test_nn_linear_weight_is_seen_through_its_transpose():
    net = nn.Linear(D, K)
    step = _step(lambda: nn.MSELoss()(net(X), Y2))
    fit = recognize(step)
    assert fit and fit.weight.shape == (K, D)
    torch.testing.assert_close(fit.predict(), net(X).detach().double())
    _agrees(step, fit)


def test_w_dot_T_property_is_found_through_the_backward_graph():
    # `.T` is a property the recorder does not see; the parameter is found from the graph.
    w, b = _params((K, D), (K,))
    step = _step(lambda: ((X @ w.T + b - Y2) ** 2).mean())
    fit = recognize(step)
    assert fit, fit
    torch.testing.assert_close(fit.values()[fit.weight.tid], w.detach().double())
    _agrees(step, fit)


# -- the matcher on its own, at the prediction -----------------------------------------------------

x = torch.linspace(-1, 1, N)
a, c = (torch.tensor(v, requires_grad=True) for v in (0.5, -2.0))
WV = torch.randn(D, generator=torch.Generator().manual_seed(2), requires_grad=True)


def _model(predict):
    """ModelMatcher.affine at ``predict()``, recorded under ``predict().sum().backward()``:
    (step, matcher, Affine); raises _NA with the reason."""
    step = _step(lambda: predict().sum())
    m = ModelMatcher(_Reader(step))
    total = [o for o in step.ops if o.parent is None][-1]  # the .sum() of the prediction
    return step, m, m.affine(total.inputs[0])


def _terms(step, core):
    return [(step.name(t.param.tid), t.cols, t.out) for t in core.terms]


def test_x_at_w_plus_b_is_one_feature_term_and_an_intercept():
    step, m, core = _model(lambda: X @ W1 + B1)
    assert _terms(step, core) == [("W1", (0, D), 1), ("B1", None, 1)]
    assert core.desc == "X @ W (matmul)" and core.k == 1
    torch.testing.assert_close(core.X, X.double(), rtol=0, atol=0)
    assert m.model_op is not None and m.model_op.name == "matmul"
    assert [step.name(p.tid) for p in core.params] == ["W1", "B1"]


def test_scalar_parameters_times_data_are_x_times_w_with_the_intercept_last():
    step, m, core = _model(lambda: a + c * x)
    assert _terms(step, core) == [("c", (0, 1), 1), ("a", None, 1)]
    assert core.desc == "x * w" and m.model_op.name == "mul"
    torch.testing.assert_close(core.X, x.double().reshape(-1, 1), rtol=0, atol=0)


@pytest.mark.parametrize("reduce,scale", [("sum", 1.0), ("mean", 1 / D)])
def test_a_dot_product_written_out_is_x_at_w(reduce, scale):
    step, _, core = _model(lambda: getattr(X * WV, reduce)(-1))
    assert _terms(step, core) == [("WV", (0, D), 1)]
    assert core.desc == f"(X * w).{reduce}(-1)"
    torch.testing.assert_close(core.X, X.double() * scale, rtol=1e-15, atol=0)


def test_numbers_scale_the_features_of_the_terms_they_multiply():
    step, _, core = _model(lambda: X @ W1 + B1 * 2 - a * 3)
    assert _terms(step, core) == [("W1", (0, D), 1), ("B1", (D, D + 1), 1), ("a", (D + 1, D + 2), 1)]
    assert core.desc == "a sum of 3 parameter x feature terms"
    torch.testing.assert_close(core.X[:, D:], torch.tensor([[2.0, -3.0]] * N, dtype=torch.float64),
                               rtol=0, atol=0)


@pytest.mark.parametrize("predict,says", [
    (lambda: a * c * x, "the model multiplies two parameters (a * c)"),
    (lambda: x / a, "the model divides x by a"),
    (lambda: a ** 2 * x, "the model raises a to the power 2"),
    (lambda: torch.tanh(X @ W1), "the model applies tanh (torch.tanh) to the result of matmul (made from W1)"),
    (lambda: (X @ W1) @ torch.ones(1, 1, requires_grad=True),
     "the input of the linear layer (the result of matmul (made from W1)) depends on the parameters"),
    (lambda: torch.addmm(B1, X, W1, beta=2), "addmm with beta/alpha"),
    (lambda: (X @ W1).sum() * x, "the model takes a sum inside the prediction"),
    (lambda: (X @ W1).reshape(2, 4), "the model reshapes (8, 1) to (2, 4)"),
])
def test_a_model_that_is_not_linear_in_its_parameters_says_what_and_where(predict, says):
    with pytest.raises(_NA) as e:
        _model(predict)
    assert e.value.reason.startswith(says + f" at {HERE}:"), e.value.reason
    assert e.value.family is None  # the loss family is the loss matcher's to say


def test_a_parameter_with_one_value_per_row_is_not_a_model_of_the_data():
    per_row = torch.zeros(N, 1, requires_grad=True)
    with pytest.raises(_NA) as e:
        _model(lambda: x.reshape(N, 1) * per_row)
    assert e.value.reason.endswith("of shape (8, 1) has one value per row of the data: it is not a "
                                   "model of the data")


def _tid(step, label: str) -> int:
    return next(t for t, info in step.tensors.items() if info.label == label)


def test_a_prediction_without_parameters_or_with_nothing_but_one_is_not_a_model():
    step, _, _ = _model(lambda: a + c * x)
    with pytest.raises(_NA, match=r"the prediction \(x\) does not depend on any parameter"):
        ModelMatcher(_Reader(step)).affine(_tid(step, "x"))
    with pytest.raises(_NA, match="the prediction is a parameter on its own, not a model of the data"):
        ModelMatcher(_Reader(step)).affine(_tid(step, "a"))


# -- w.T, which the recorder does not see ----------------------------------------------------------

def test_the_parameter_behind_an_unrecorded_transpose_is_found_in_the_backward_graph():
    """Where the recorder did not see ``w.T`` (no op made the matmul's input), the backward
    graph still has the transpose node between the matmul and w's AccumulateGrad."""
    w = torch.randn(1, D, requires_grad=True)
    step = _step(lambda: ((X @ w.T - Y1) ** 2).sum())
    [t_op] = [o for o in step.ops if o.name == "T"]
    nodes = tuple(replace(n, op=None) if n.op == t_op.index else n for n in step.backward.nodes)
    unseen = replace(step, ops=tuple(o for o in step.ops if o is not t_op),
                     backward=replace(step.backward, nodes=nodes))
    mm = next(o for o in unseen.ops if o.name == "matmul")
    [view] = t_op.outputs
    assert unrecorded_view(unseen, view, mm) == (_tid(step, "w"), (1, 0))
    assert unrecorded_view(step, view, mm) is None                           # recorded: a plain op
    assert unrecorded_view(unseen, view, None) is None                       # no consumer to start from
    assert unrecorded_view(replace(unseen, backward=None), view, mm) is None  # no backward graph
    # and the model reads W = w.T through it
    m = ModelMatcher(_Reader(unseen))
    core = m.affine(mm.outputs[0])
    assert core.weight.tid == _tid(step, "w") and core.weight.views[0] == ("permute", (1, 0))
    assert m.seen_as == {_tid(step, "w"): view}
