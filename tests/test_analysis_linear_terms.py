"""analysis.linear: any model linear in its parameters is recognised, whatever the spelling.

The PyTorch "polynomial fit to sin" tutorial in its three spellings (scalar parameters with
``x ** k``, with ``x.pow(k)``, and ``nn.Linear`` on ``[x, x**2, x**3]``) is one and the same
least-squares problem: same features, same closed-form gradient, same optimum. A model that
is not linear in its parameters is not applicable, with a reason a student can act on.
"""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

import gradtrace
from gradtrace.analysis.linear import LinearFit, NotApplicable, recognize
from gradtrace.analysis.numeric import autograd_gradients
from gradtrace.analysis.training import loss_surface, training_series

# The tutorial, shortened: 3 steps of plain gradient descent on 200 points.
HEAD = """\
import math
import torch
torch.manual_seed(0)
x = torch.linspace(-math.pi, math.pi, 200)
y = torch.sin(x)
"""

SCALARS = HEAD + """\
a, b, c, d = (torch.randn((), requires_grad=True) for _ in range(4))
for t in range(3):
    y_pred = {model}
    loss = (y_pred - y).pow(2).sum()
    loss.backward()
    with torch.no_grad():
        for p in (a, b, c, d):
            p -= 1e-6 * p.grad
            p.grad = None
"""

NN_LINEAR = HEAD + """\
xx = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))
model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
loss_fn = torch.nn.MSELoss(reduction="sum")
for t in range(3):
    loss = loss_fn(model(xx), y)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-6 * p.grad
"""

SPELLINGS = {
    "x ** k": "a + b * x + c * x ** 2 + d * x ** 3",
    "x.pow(k)": "a + b * x + c * x.pow(2) + d * x.pow(3)",
    "parameter on the right, a last": "x * b + x ** 2 * c + d * x ** 3 + a",
    "features computed first": "b * x + c * (x * x) + d * torch.pow(x, 3) + a",
}


def _record(tmp_path, source: str, name: str = "script.py"):
    """Run ``source`` as a script under gradtrace.trace(); the trace."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    code = compile(path.read_text(), str(path), "exec")
    with gradtrace.trace(tmp_path / (name + ".gtrace")) as t:
        exec(code, {"__name__": "__main__", "__file__": str(path)})
    return t.result


def _features():
    x = torch.linspace(-math.pi, math.pi, 200).double()
    return torch.stack([x, x ** 2, x ** 3], 1)


@pytest.fixture(scope="module")
def nn_fit(tmp_path_factory):
    trace = _record(tmp_path_factory.mktemp("nn"), NN_LINEAR)
    return trace, recognize(trace.steps[0])


@pytest.mark.parametrize("spelling", list(SPELLINGS), ids=list(SPELLINGS))
def test_the_scalar_polynomial_is_a_linear_model(tmp_path, spelling, nn_fit):
    trace = _record(tmp_path, SCALARS.format(model=SPELLINGS[spelling]))
    step = trace.steps[0]
    fit = recognize(step)
    assert isinstance(fit, LinearFit), fit
    names = {p.tid: trace.name(p.tid) for p in fit.params}
    # the features are what the parameters multiply: x, x**2, x**3 (a is the intercept)
    assert [names[t.param.tid] for t in fit.terms] == ["b", "c", "d", "a"]
    assert [t.cols for t in fit.terms] == [(0, 1), (1, 2), (2, 3), None]
    torch.testing.assert_close(fit.X, _features(), rtol=1e-6, atol=1e-5)
    assert fit.constant == 1.0 and fit.is_intercept(fit.terms[3].param.tid)
    # the closed form is autograd's gradient
    got = autograd_gradients(step)
    ref = fit.gradient()
    assert set(got) == set(ref) == set(names)
    for tid in ref:
        torch.testing.assert_close(got[tid].double().reshape(()), ref[tid].reshape(()),
                                   rtol=1e-5, atol=1e-3)
    # ... and the least-squares problem is the nn.Linear one: the same optimum
    _, lin = nn_fit
    assert isinstance(lin, LinearFit)
    opt, lopt = fit.optimum(), lin.optimum()
    by_name = {names[t]: float(v) for t, v in opt.items()}
    w, bias = lopt[lin.weight.tid].reshape(-1), lopt[lin.bias.tid].reshape(())
    assert [by_name["b"], by_name["c"], by_name["d"]] == pytest.approx(w.tolist(), rel=1e-6, abs=1e-9)
    assert by_name["a"] == pytest.approx(float(bias), rel=1e-6, abs=1e-9)
    # least squares by hand, on the recorded x
    A = torch.cat([_features(), torch.ones(200, 1, dtype=torch.float64)], 1)
    theta = torch.linalg.lstsq(A, fit.y).solution.reshape(-1)
    assert [by_name[n] for n in "bcda"] == pytest.approx(theta.tolist(), rel=1e-4, abs=1e-6)


def test_the_check_passes_the_polynomial_analytically(tmp_path):
    trace = _record(tmp_path, SCALARS.format(model=SPELLINGS["x ** k"]))
    report = trace.check()
    mse = report.of("analytic_mse")
    assert {c.param for c in mse} == {"a", "b", "c", "d"}
    assert {c.status for c in mse} == {"pass"} and len(mse) == 12  # 4 parameters x 3 steps
    detail = {c.param: c.detail for c in mse if c.step == 0}
    assert "y_hat = b * X[:, 0] + c * X[:, 1] + d * X[:, 2] + a" in detail["a"]
    assert "dL/da = sum over rows of" in detail["a"] and "dL/dc = X^T" in detail["c"]
    assert report.ok


def test_the_training_animation_gets_the_closed_form_optimum(tmp_path, nn_fit):
    trace = _record(tmp_path, SCALARS.format(model=SPELLINGS["x ** k"]))
    surface = loss_surface(trace, training_series(trace))
    assert surface, surface
    lin_trace, _ = nn_fit
    lin_surface = loss_surface(lin_trace, training_series(lin_trace))
    assert lin_surface, lin_surface
    # parameters b, c, d, a against weight (3) then bias: the same optimum and loss there
    assert surface.optimum.tolist() == pytest.approx(lin_surface.optimum.tolist(), rel=1e-6, abs=1e-9)
    assert surface.loss_at_optimum == pytest.approx(lin_surface.loss_at_optimum, rel=1e-6)
    theta = surface.optimum
    torch.testing.assert_close(torch.as_tensor(surface.predict(theta)),
                               torch.as_tensor(lin_surface.predict(lin_surface.optimum)), rtol=1e-5, atol=1e-5)
    assert surface.X.shape[1] == 3


def test_tensor_parameters_broadcast_over_rows_and_outputs(tmp_path):
    # x (n, 1) times w (1, k) is an outer product: a feature column times a row of weights
    trace = _record(tmp_path, """\
        import torch
        torch.manual_seed(0)
        x = torch.randn(16, 1)
        y = torch.randn(16, 2)
        w = torch.randn(1, 2, requires_grad=True)
        b = torch.zeros(2, requires_grad=True)
        s = torch.zeros((), requires_grad=True)
        y_hat = x * w + 0.5 * x ** 2 * w + b - s
        ((y_hat - y) ** 2).mean().backward()
        """)
    step = trace.steps[0]
    fit = recognize(step)
    assert isinstance(fit, LinearFit), fit
    assert fit.k == 2 and fit.X.shape == (16, 3)  # x, x**2/2, and the -1 that s multiplies
    got = autograd_gradients(step)
    for tid, g in fit.gradient().items():
        torch.testing.assert_close(got[tid].double().reshape(g.shape), g, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fit.predict(), fit.pred)


def test_x_at_w_plus_b_with_the_transpose_property_stays_classic(tmp_path):
    trace = _record(tmp_path, """\
        import torch
        import torch.nn.functional as F
        torch.manual_seed(0)
        X, y = torch.randn(8, 3), torch.randn(8, 2)
        w = torch.randn(2, 3, requires_grad=True)
        b = torch.zeros(2, requires_grad=True)
        F.mse_loss(X @ w.T + b, y).backward()
        F.mse_loss(F.linear(X, w, b), y).backward()
        """)
    fits = [recognize(s) for s in trace.steps]
    assert all(isinstance(f, LinearFit) and f.classic for f in fits), fits
    assert fits[0].model_desc.startswith("X @ W (matmul): X (8, 3), W = w (transposed) (2, 3), b = b")
    assert fits[1].model_desc.startswith("F.linear(X, W, b)")
    torch.testing.assert_close(fits[0].gradient()[fits[0].weight.tid], fits[1].gradient()[fits[1].weight.tid])


NOT_LINEAR = {
    "product of two parameters": (
        "y_pred = b * c * x",
        "squared error of a model that is not linear in its parameters: the model multiplies two "
        "parameters (b * c) at script.py:9 (`y_pred = b * c * x`)"),
    "power of a parameter": (
        "y_pred = b ** 2 * x + c",
        "the model raises b to the power 2 at script.py:9 (`y_pred = b ** 2 * x + c`); a power of "
        "a parameter is not linear in it"),
    "activation": (
        "y_pred = torch.tanh(b * x) + c",
        "the model applies tanh (torch.tanh) to the result of mul (made from b) at script.py:9"),
    "division by a parameter": (
        "y_pred = x / b + c",
        "the model divides x by b at script.py:9 (`y_pred = x / b + c`); dividing by a parameter "
        "is not linear in it"),
}


@pytest.mark.parametrize("case", list(NOT_LINEAR), ids=list(NOT_LINEAR))
def test_a_model_not_linear_in_its_parameters_says_why_in_words(tmp_path, case):
    line, why = NOT_LINEAR[case]
    trace = _record(tmp_path, f"""\
        import torch
        torch.manual_seed(0)
        x = torch.linspace(-1, 1, 50)
        y = 2 * x
        b = torch.randn((), requires_grad=True)
        c = torch.randn((), requires_grad=True)
        if True:
            pass
        {line}
        loss = ((y_pred - y) ** 2).mean()
        loss.backward()
        """)
    na = recognize(trace.steps[0])
    assert isinstance(na, NotApplicable) and na.family == "squared_error"
    assert why in na.reason
    assert "not made by a recorded op" not in na.reason
    [check] = trace.check().of("analytic_mse")
    assert check.status == "not_applicable" and why in check.detail


@pytest.mark.parametrize("model,desc", [
    ("(X * w).sum(1) + b", "(X * w).sum(-1)"),
    ("torch.sum(w * X, dim=-1) + b", "(X * w).sum(-1)"),
    ("X.mv(w) + b", "X @ W (mv)"),
    ("(X * w).mean(1) * 3 + b", "(X * w).mean(-1)"),
])
def test_the_dot_product_written_out_is_x_at_w(tmp_path, model, desc):
    trace = _record(tmp_path, f"""\
        import torch
        torch.manual_seed(0)
        X, y = torch.randn(16, 3), torch.randn(16)
        w = torch.randn(3, requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        loss = (({model} - y) ** 2).mean()
        loss.backward()
        """)
    fit = recognize(trace.steps[0])
    assert isinstance(fit, LinearFit) and fit.classic, fit
    assert fit.model_desc.startswith(f"{desc}: X (16, 3), W = w (3,), b = b ()")
    report = trace.check()
    assert [c.status for c in report.of("analytic_mse")] == ["pass", "pass"]


def test_softmax_cross_entropy_of_a_sum_of_terms(tmp_path):
    # logits z = x * w + x**2 * v + b: (n, 1) features times (1, k) rows of weights
    trace = _record(tmp_path, """\
        import torch
        import torch.nn.functional as F
        torch.manual_seed(0)
        x = torch.randn(12, 1)
        labels = (x[:, 0] > 0).long() + (x[:, 0] > 1).long()
        w = torch.randn(1, 3, requires_grad=True)
        v = torch.randn(1, 3, requires_grad=True)
        b = torch.zeros(3, requires_grad=True)
        F.cross_entropy(x * w + x ** 2 * v + b, labels).backward()
        """)
    fit = recognize(trace.steps[0])
    assert isinstance(fit, LinearFit) and fit.loss_kind == "softmax_ce", fit
    assert [trace.name(p.tid) for p in fit.params] == ["w", "v", "b"] and fit.X.shape == (12, 2)
    checks = trace.check().of("analytic_softmax")
    assert sorted(c.param for c in checks) == ["b", "v", "w"]
    assert {c.status for c in checks} == {"pass"}


def test_a_loss_of_another_kind_names_the_op_and_the_line(tmp_path):
    trace = _record(tmp_path, """\
        import torch
        X, y = torch.randn(8, 2), torch.randn(8, 1)
        w = torch.randn(2, 1, requires_grad=True)
        loss = (X @ w - y).abs().mean()
        loss.backward()
        """)
    na = recognize(trace.steps[0])
    assert isinstance(na, NotApplicable) and na.family is None
    assert na.reason == ("the loss is neither a squared error nor a softmax cross-entropy (the loss "
                         "applies abs at script.py:4 (`loss = (X @ w - y).abs().mean()`), which is "
                         "not part of a squared error)")


def test_back_gives_every_parameter_its_share_of_a_given_output_gradient(tmp_path):
    trace = _record(tmp_path, SCALARS.format(model="a + b * x + c * x ** 2 + d * x ** 3 + b * x ** 3"))
    fit = recognize(trace.steps[0])
    assert isinstance(fit, LinearFit), fit
    names = {p.tid: trace.name(p.tid) for p in fit.params}
    G = torch.ones(fit.n, 1, dtype=torch.float64)
    got = {names[t]: float(v) for t, v in fit.back(G).items()}
    X = _features()
    # b is in two terms (x and x**3): its share is the sum of both
    assert got["b"] == pytest.approx(float(X[:, 0].sum() + X[:, 2].sum()), abs=1e-6)
    assert got["a"] == pytest.approx(200.0) and got["c"] == pytest.approx(float(X[:, 1].sum()), rel=1e-6)
    mags = {names[t]: float(v) for t, v in fit.back(G, absolute=True).items()}
    assert mags["d"] == pytest.approx(float(X[:, 2].abs().sum()), rel=1e-6)
    tid = {n: t for t, n in names.items()}
    assert fit.is_intercept(tid["a"]) and not fit.is_intercept(tid["b"])
