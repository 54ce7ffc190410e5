"""analysis.linear.fit: LinearFit's closed forms (loss, gradient, Hessian, optimum), its terms and views, and pool."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.linear import LinearFit, NotApplicable, NotApplicableError, pool, recognize
from gradtrace.analysis.linear.fit import (SOFTMAX_CE, SQUARED_ERROR, Term, _apply_views, _Param,
                                           _undo_views, bias_of, params_of, weight_of)
from linear_data import N, D, K, X, Y2, Y1, LABELS, params as _params, one_step as _step


W, B = _params((K, D), (K,))


# -- closed forms of recognised fits ---------------------------------------------------------------

def test_softmax_gradient_is_softmax_minus_onehot_times_c():
    step = _step(lambda: F.cross_entropy(X @ W.t() + B, LABELS, reduction="sum"))
    fit = recognize(step)
    z = fit.pred
    G = fit.gradient_wrt_output()
    torch.testing.assert_close(G, torch.softmax(z, 1) - F.one_hot(LABELS, K).double())


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


def test_pool_keeps_the_predictions_only_when_every_step_has_them():
    w = torch.randn(D, 1, requires_grad=True)
    fits = [recognize(_step(lambda: ((X @ w - Y1) ** 2).sum())) for _ in range(2)]
    assert all(isinstance(f, LinearFit) and f.pred is not None for f in fits)
    both = pool(fits)
    assert both.pred is not None and both.pred.shape == (2 * N, 1)
    torch.testing.assert_close(both.pred, torch.cat([fits[0].pred, fits[1].pred]))
    assert pool([fits[0], replace(fits[1], pred=None)]).pred is None


# -- a fit built by hand: y_hat = X @ w.T + b, w stored (k, d) as nn.Linear keeps it --------------

WT, BT = 7, 9   # the parameters' tids
G = torch.Generator().manual_seed(3)
XS = torch.randn(5, 3, generator=G, dtype=torch.float64)
YS = torch.randn(5, 2, generator=G, dtype=torch.float64)
WS = torch.randn(2, 3, generator=G, dtype=torch.float64)
BS = torch.randn(2, generator=G, dtype=torch.float64)


def _fit(kind=SQUARED_ERROR, weights=None, y=YS) -> LinearFit:
    terms = (Term(_Param(BT, (2,)), None, 2),                                # listed first
             Term(_Param(WT, (2, 3), (("permute", (1, 0)),)), (0, 3), 2))    # W = w.T
    rows = torch.full((5,), 0.25, dtype=torch.float64) if weights is None else weights
    return LinearFit(step=3, loss_kind=kind, X=XS, y=y, terms=terms, row_weights=rows,
                     param_values={WT: WS.clone(), BT: BS.clone()})


def _loss_by_hand(w, b, kind=SQUARED_ERROR, weights=None, y=YS):
    z = XS @ w.T + b
    rows = torch.full((5,), 0.25, dtype=torch.float64) if weights is None else weights
    if kind == SQUARED_ERROR:
        return (rows * ((z - y) ** 2).sum(1)).sum()
    return (rows * -(y * torch.log_softmax(z, 1)).sum(1)).sum()


def _autograd(kind=SQUARED_ERROR, y=YS):
    w, b = WS.clone().requires_grad_(), BS.clone().requires_grad_()
    loss = _loss_by_hand(w, b, kind, y=y)
    gw, gb = torch.autograd.grad(loss, (w, b))
    return float(loss.detach()), {WT: gw, BT: gb}


def test_a_fit_by_hand_has_its_shapes_and_its_parameters_feature_terms_first():
    fit = _fit()
    assert (fit.n, fit.d, fit.k, fit.n_params) == (5, 3, 2, 8)
    assert [p.tid for p in fit.params] == [WT, BT]
    assert fit.param_tids == (WT, BT) and fit.weight.tid == WT and fit.bias.tid == BT
    assert fit.classic and fit.uniform and fit.constant == 0.25
    assert fit.is_intercept(BT) and not fit.is_intercept(WT)
    assert repr(fit).startswith("<LinearFit step=3 squared_error n=5 d=3 k=2 c=0.25 ")


@pytest.mark.parametrize("kind", [SQUARED_ERROR, SOFTMAX_CE])
def test_the_loss_and_the_closed_form_gradient_are_autograds_of_the_formula(kind):
    y = YS if kind == SQUARED_ERROR else torch.softmax(YS, 1)   # a target distribution
    fit = _fit(kind, y=y)
    loss, grads = _autograd(kind, y=y)
    torch.testing.assert_close(fit.predict(), XS @ WS.T + BS, rtol=1e-15, atol=0)
    assert fit.loss() == pytest.approx(loss, rel=1e-13)
    got = fit.gradient(fit.values())
    assert set(got) == {WT, BT}
    for tid in grads:  # in the parameters' own shapes
        torch.testing.assert_close(got[tid], grads[tid], rtol=1e-12, atol=1e-14)


def test_without_values_the_gradient_is_taken_at_the_recorded_prediction():
    recorded = XS @ WS.T + BS + 0.5      # what the step's forward computed (here: shifted)
    fit = replace(_fit(), pred=recorded)
    G_out = 2 * 0.25 * (recorded - YS)
    torch.testing.assert_close(fit.gradient_wrt_output(), G_out, rtol=1e-15, atol=0)
    torch.testing.assert_close(fit.gradient()[WT], G_out.T @ XS, rtol=1e-13, atol=0)
    torch.testing.assert_close(fit.gradient()[BT], G_out.sum(0), rtol=1e-13, atol=0)
    # the magnitudes of the terms autograd added: |X|^T |G|, |G| summed over rows
    scale = fit.gradient_scale()
    torch.testing.assert_close(scale[WT], G_out.abs().T @ XS.abs(), rtol=1e-13, atol=0)
    torch.testing.assert_close(scale[BT], G_out.abs().sum(0), rtol=1e-13, atol=0)


def test_the_hessian_is_autograds_over_weight_then_bias_and_its_eigenvalues_ascend():
    fit = _fit()
    theta = fit.flatten()
    torch.testing.assert_close(theta, torch.cat([WS.reshape(-1), BS]), rtol=0, atol=0)

    def loss_of(flat):
        return _loss_by_hand(flat[:6].reshape(2, 3), flat[6:])

    H = torch.autograd.functional.hessian(loss_of, theta)
    torch.testing.assert_close(fit.hessian(), H, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fit.eigenvalues(), torch.linalg.eigvalsh(H), rtol=1e-10, atol=1e-12)
    assert bool((fit.eigenvalues()[1:] >= fit.eigenvalues()[:-1]).all())


def test_the_optimum_solves_weighted_least_squares():
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    fit = _fit(weights=weights)
    assert not fit.uniform and fit.constant == pytest.approx(7.5 / 5)
    opt = fit.optimum()
    A = torch.cat([XS, torch.ones(5, 1, dtype=torch.float64)], 1) * weights.sqrt().unsqueeze(1)
    theta = torch.linalg.lstsq(A, YS * weights.sqrt().unsqueeze(1)).solution   # (d + 1, k)
    torch.testing.assert_close(opt[WT], theta[:3].T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(opt[BT], theta[3], rtol=1e-10, atol=1e-12)
    assert all(float(g.abs().max()) < 1e-10 for g in fit.gradient(opt).values())


def test_a_parameter_without_a_value_is_not_applicable_naming_its_tid():
    with pytest.raises(NotApplicableError, match="no value given for parameter t9"):
        _fit().loss({WT: WS})


def test_a_loss_without_a_positive_constant_has_no_optimum():
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    with pytest.raises(NotApplicableError, match=r"the loss has no minimum \(a non-positive constant\)"):
        _fit(weights=weights).optimum()


def test_flatten_and_unflatten_are_inverse():
    fit = _fit()
    back = fit.unflatten(fit.flatten())
    assert set(back) == {WT, BT}
    torch.testing.assert_close(back[WT], WS, rtol=0, atol=0)
    torch.testing.assert_close(back[BT], BS, rtol=0, atol=0)


# -- terms and views -------------------------------------------------------------------------------

def test_views_applied_then_undone_give_the_parameter_back():
    t = torch.arange(24.0).reshape(2, 3, 4)
    views = (("permute", (2, 0, 1)), ("reshape", (4, 2, 3), (8, 3)))
    eff = _apply_views(t, views)
    torch.testing.assert_close(eff, t.permute(2, 0, 1).reshape(8, 3), rtol=0, atol=0)
    torch.testing.assert_close(_undo_views(eff, views), t, rtol=0, atol=0)
    p = _Param(1, (2, 3, 4), views)
    assert p.numel == 24 and p.then(("reshape", (8, 3), (24,))).views[-1] == ("reshape", (8, 3), (24,))
    torch.testing.assert_close(p.from_eff(p.to_eff(t)), t, rtol=0, atol=0)


def test_an_intercept_term_is_a_column_of_ones_and_one_output_broadcasts():
    Xd = torch.randn(4, 2, dtype=torch.float64)
    b = Term(_Param(1, (1,)), None, 1)
    assert b.intercept
    torch.testing.assert_close(b.features(Xd), torch.ones(4, 1, dtype=torch.float64), rtol=0, atol=0)
    Gd = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(b.back(Xd, Gd), Gd.sum().reshape(1), rtol=1e-15, atol=0)
    # a feature term over some columns, one value for every output: X[:, 1:2]^T (G summed over outputs)
    w = Term(_Param(2, (1, 1)), (1, 2), 1)
    torch.testing.assert_close(w.features(Xd), Xd[:, 1:2], rtol=0, atol=0)
    torch.testing.assert_close(w.back(Xd, Gd), Xd[:, 1:2].T @ Gd.sum(1, keepdim=True), rtol=1e-15, atol=0)
    torch.testing.assert_close(w.contribution(Xd, torch.tensor([[2.0]])), 2 * Xd[:, 1:2], rtol=0, atol=0)


def test_weight_bias_and_params_of_terms():
    a, b, c = _Param(1, ()), _Param(2, (1,)), _Param(3, ())
    terms = [Term(b, None, 1), Term(a, (0, 1), 1), Term(c, (1, 2), 1)]
    assert weight_of(terms) == a and bias_of(terms) == b
    assert [p.tid for p in params_of(terms)] == [1, 3, 2]
    # a parameter that is both a feature term and an intercept is the weight, not a bias
    assert bias_of([Term(a, (0, 1), 1), Term(a, None, 1)]) is None
    # intercepts only: the first is the weight
    assert weight_of([Term(b, None, 1)]) == b


def test_not_applicable_is_falsy_and_says_why():
    na = NotApplicable("the model multiplies two parameters", "squared_error")
    assert not na and na.family == "squared_error"
    assert str(na) == "not applicable: the model multiplies two parameters"
    assert NotApplicable("no loss").family is None


# -- pool ------------------------------------------------------------------------------------------

def test_pooling_nothing_or_two_models_is_not_applicable():
    with pytest.raises(NotApplicableError, match="no steps to pool"):
        pool([])
    one = _fit()
    other = replace(one, step=4, terms=one.terms[1:])
    with pytest.raises(NotApplicableError, match="step 4 has another model than step 3"):
        pool([one, other])


def test_a_pool_of_one_fit_is_that_fit_without_its_step():
    fit = _fit()
    p = pool([fit])
    assert p.step is None and p.steps == (3,) and p.recorded_loss is None
    assert p.loss() == pytest.approx(fit.loss(), rel=1e-15)
