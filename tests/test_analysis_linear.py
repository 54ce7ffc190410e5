"""analysis.linear: which models and losses are recognised, with which constant, and the closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradtrace
from gradtrace.analysis.linear import (
    SOFTMAX_CE, SQUARED_ERROR, LinearFit, NotApplicable, NotApplicableError, pool, recognize,
)
from gradtrace.analysis.numeric import autograd_gradients

torch.manual_seed(0)
N, D, K = 8, 3, 2
X = torch.randn(N, D)
Y2 = torch.randn(N, K)
Y1 = torch.randn(N, 1)
LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])


def _params(*shapes):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(*s, generator=g).requires_grad_() for s in shapes]


def _step(loss_fn):
    """Record one backward of loss_fn() and return its step."""
    with gradtrace.trace() as t:
        loss_fn().backward()
    return t.steps[0]


def _agrees(step, fit):
    """The closed form equals what autograd accumulated, to float32 rounding."""
    got = autograd_gradients(step)
    ref = fit.gradient()
    assert set(got) == set(ref)
    for tid in ref:
        torch.testing.assert_close(got[tid].reshape(ref[tid].shape), ref[tid], rtol=1e-5, atol=1e-5)


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


SOFTMAX = [
    ("F.cross_entropy (mean)", lambda: F.cross_entropy(X @ W.t() + B, LABELS), 1 / N),
    ("F.cross_entropy sum", lambda: F.cross_entropy(X @ W.t() + B, LABELS, reduction="sum"), 1.0),
    ("cross_entropy none, then mean", lambda: F.cross_entropy(F.linear(X, W, B), LABELS, reduction="none").mean(), 1 / N),
    ("nll_loss(log_softmax)", lambda: F.nll_loss(F.log_softmax(F.linear(X, W, B), 1), LABELS), 1 / N),
    ("-log(softmax[range(n), y]).mean()",
     lambda: -torch.log(torch.softmax(X @ W.t() + B, dim=1)[range(N), LABELS]).mean(), 1 / N),
    ("by hand: exp / exp.sum, summed",
     lambda: (lambda e: -torch.log((e / e.sum(1, keepdim=True))[range(N), LABELS]).sum())(torch.exp(X @ W.t() + B)), 1.0),
    ("-(onehot * log p).sum(1).mean()",
     lambda: -(F.one_hot(LABELS, K) * torch.log(torch.softmax(X @ W.t() + B, 1))).sum(1).mean(), 1 / N),
    ("log_softmax.gather", lambda: -torch.log_softmax(X @ W.t() + B, 1).gather(1, LABELS.view(-1, 1)).mean(), 1 / N),
    ("probability targets", lambda: F.cross_entropy(X @ W.t() + B, F.one_hot(LABELS, K).float()), 1 / N),
]


@pytest.mark.parametrize("desc,loss,c", SOFTMAX, ids=[f[0] for f in SOFTMAX])
def test_each_softmax_cross_entropy_form_gets_its_constant(desc, loss, c):
    step = _step(loss)
    fit = recognize(step)
    assert fit, fit
    assert fit.loss_kind == SOFTMAX_CE
    assert fit.constant == pytest.approx(c, rel=1e-12)
    assert fit.loss() == pytest.approx(step.loss, rel=1e-5)
    _agrees(step, fit)


def test_softmax_gradient_is_softmax_minus_onehot_times_c():
    step = _step(lambda: F.cross_entropy(X @ W.t() + B, LABELS, reduction="sum"))
    fit = recognize(step)
    z = fit.pred
    G = fit.gradient_wrt_output()
    torch.testing.assert_close(G, torch.softmax(z, 1) - F.one_hot(LABELS, K).double())


def test_label_smoothing_is_folded_into_the_targets():
    step = _step(lambda: F.cross_entropy(X @ W.t() + B, LABELS, label_smoothing=0.2))
    fit = recognize(step)
    assert fit and fit.y[0].tolist() == pytest.approx([0.9, 0.1])
    _agrees(step, fit)


# -- models ----------------------------------------------------------------------------------------

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


# -- closed forms ------------------------------------------------------------------------------------

def test_optimum_hessian_and_loss_of_least_squares():
    w, b = _params((K, D), (K,))
    step = _step(lambda: ((X @ w.t() + b - Y2) ** 2).sum() / 4)
    fit = recognize(step)
    Xa = torch.cat([X, torch.ones(N, 1)], 1).double()
    theta = torch.linalg.lstsq(Xa, Y2.double()).solution  # (D+1, K)
    opt = fit.optimum()
    torch.testing.assert_close(opt[fit.weight.tid], theta[:D].T)   # w is stored (K, D)
    torch.testing.assert_close(opt[fit.bias.tid], theta[D])
    assert fit.loss(opt) < fit.loss()
    assert all(float(g.abs().max()) < 1e-9 for g in fit.gradient(opt).values())
    # The Hessian of c * sum((X_a theta - y)^2): 2c X_a^T X_a per output, in the params' order.
    H = fit.hessian()
    assert H.shape == (K * D + K, K * D + K)
    torch.testing.assert_close(H[:D, :D], 2 / 4 * (X.double().T @ X.double()))
    torch.testing.assert_close(H[:D, D:2 * D], torch.zeros(D, D, dtype=torch.float64))
    # A quadratic is its second-order Taylor expansion around zero, exactly.
    theta = fit.flatten()
    zero = {t: torch.zeros_like(v) for t, v in fit.values().items()}
    g0 = fit.flatten(fit.gradient(zero))
    assert fit.loss() == pytest.approx(fit.loss(zero) + float(g0 @ theta) + float(0.5 * theta @ H @ theta),
                                       rel=1e-9)


def test_pool_is_the_mean_of_the_steps_losses():
    w, b = _params((D, 1), (1,))
    with gradtrace.trace() as t:
        for i in range(3):
            ((X[i:i + 4] @ w + b - Y1[i:i + 4]) ** 2).sum().backward()
    fits = [recognize(s) for s in t.steps]
    p = pool(fits)
    assert p.n == 12 and p.steps == (0, 1, 2)
    vals = fits[0].values()
    assert p.loss(vals) == pytest.approx(sum(f.loss(vals) for f in fits) / 3)
    torch.testing.assert_close(p.hessian(), sum(f.hessian() for f in fits) / 3)


def test_softmax_has_no_closed_form_optimum():
    fit = recognize(_step(lambda: F.cross_entropy(X @ W.t() + B, LABELS)))
    with pytest.raises(NotApplicableError, match="squared-error"):
        fit.optimum()
    with pytest.raises(gradtrace.GradtraceError):
        fit.hessian()


def test_seed_demos_are_recognised_with_their_constants(demo_trace):
    expected = {"linreg": 1 / 2, "linreg_concise": 1 / 10, "crop_yield": 1 / 6}
    for name, c in expected.items():
        fit = recognize(demo_trace(name).steps[0])
        assert isinstance(fit, LinearFit), (name, fit)
        assert fit.constant == pytest.approx(c), name
