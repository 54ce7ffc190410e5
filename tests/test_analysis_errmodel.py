"""analysis.errmodel and the checks' bounds: correct scripts never fail, mutated twins do.

The corpus below is written for these tests: each correct script is recorded in-process
with ``gradtrace.trace()`` and checked numerically at every step; each mutated twin has a
backward that is wrong by a known factor or term, and must be caught with the parameter
and the step named.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.check import check_trace, numeric_check
from gradtrace.analysis.errmodel import UNIT_ROUNDOFF, ErrorModel, gamma, unit_roundoff
from gradtrace.analysis.numeric import replay_of


class Legendre3(torch.autograd.Function):
    """P3(x) = (5x^3 - 3x) / 2 with the backward 1.5 (5x^2 - 1), or a mutated one."""

    mutation = "none"
    factor = 1.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * (5 * x ** 3 - 3 * x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        m = Legendre3.mutation
        if m == "dropped_term":
            return g * 1.5 * 5 * x ** 2          # forgot the "- 1"
        d = g * 1.5 * (5 * x ** 2 - 1)
        return d * (Legendre3.factor if m == "factor" else 1.0)


def legendre_fit(dtype=torch.float32, steps=40, mutation="none", factor=1.0, n=2000, full=True):
    """y = a + b P3(c + d x) fit to sin on [-pi, pi] (the PyTorch custom-Function lesson).
    a and c start at 0 and sin is odd, so their true gradient is exactly 0 at every step."""
    Legendre3.mutation, Legendre3.factor = mutation, factor
    x = torch.linspace(-math.pi, math.pi, n, dtype=dtype)
    y = torch.sin(x)
    a, b, c, d = (torch.tensor(v, dtype=dtype, requires_grad=True) for v in (0.0, -1.0, 0.0, 0.3))
    try:
        with gradtrace.trace(full=full) as t:  # every step in full: each one is checked
            for _ in range(steps):
                y_pred = a + b * Legendre3.apply(c + d * x)
                loss = (y_pred - y).pow(2).sum()
                loss.backward()
                with torch.no_grad():
                    for p in (a, b, c, d):
                        p -= 5e-6 * p.grad
                        p.grad = None
    finally:
        Legendre3.mutation, Legendre3.factor = "none", 1.0
    return t.result


def mlp_fit(steps=3, dtype=torch.float32, scale=1.0, reduction="mean", autocast=False, seed=0):
    """A two-layer tanh network, inputs scaled by ``scale``, loss reduced as asked."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=g, dtype=dtype) * scale
    Y = torch.randn(64, 2, generator=g, dtype=dtype)
    lin1 = torch.nn.Linear(5, 16).to(dtype)
    lin2 = torch.nn.Linear(16, 2).to(dtype)
    with torch.no_grad():
        lin1.weight /= scale
    params = list(lin1.parameters()) + list(lin2.parameters())
    with gradtrace.trace() as t:
        for _ in range(steps):
            ctx = torch.autocast("cpu", torch.bfloat16) if autocast else _nothing()
            with ctx:
                out = lin2(torch.tanh(lin1(X)))
            out = out.to(dtype)
            if reduction == "none":
                loss = F.mse_loss(out, Y, reduction="none").mean(1).sum()
            else:
                loss = F.mse_loss(out, Y, reduction=reduction)
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= 0.01 * p.grad
                    p.grad = None
    return t.result


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class Softsign(torch.autograd.Function):
    """x / (1 + |x|), a correct custom Function with a hand-written backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x / (1 + x.abs())

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return g / (1 + x.abs()) ** 2


def symmetric_linear(steps=20):
    """A linear model on data symmetric about 0 with an odd target: the bias's true
    gradient is exactly 0 at every step (analytic and numeric checks)."""
    x = torch.linspace(-2, 2, 401).reshape(-1, 1)
    y = x ** 3
    w = torch.zeros(1, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    with gradtrace.trace() as t:
        for _ in range(steps):
            loss = ((x @ w + b - y) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                b -= 0.1 * b.grad
                w.grad = None
                b.grad = None
    return t.result


def custom_function_fit(steps=3):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(50, 4, generator=g)
    Y = torch.randn(50, 1, generator=g)
    w1 = torch.randn(4, 8, generator=g).requires_grad_()
    w2 = torch.randn(8, 1, generator=g).requires_grad_()
    with gradtrace.trace() as t:
        for _ in range(steps):
            loss = F.mse_loss(Softsign.apply(X @ w1) @ w2, Y, reduction="sum")
            loss.backward()
            with torch.no_grad():
                for p in (w1, w2):
                    p -= 1e-3 * p.grad
                    p.grad = None
    return t.result


CORRECT = {
    "legendre_float32": lambda: legendre_fit(torch.float32),
    "legendre_float64": lambda: legendre_fit(torch.float64),
    "symmetric_zero_bias": symmetric_linear,
    "mlp_mean": lambda: mlp_fit(reduction="mean"),
    "mlp_sum": lambda: mlp_fit(reduction="sum"),
    "mlp_none": lambda: mlp_fit(reduction="none"),
    "mlp_features_1e4": lambda: mlp_fit(scale=1e4),
    "mlp_features_1e-4": lambda: mlp_fit(scale=1e-4),
    "mlp_float64": lambda: mlp_fit(dtype=torch.float64),
    "mlp_autocast_bfloat16": lambda: mlp_fit(autocast=True),
    "custom_function": custom_function_fit,
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_scripts_pass_every_check_at_every_step(name):
    trace = CORRECT[name]()
    report = check_trace(trace, numeric="all", diagnostics=False)
    numeric = report.of("numeric")
    assert numeric and all(c.status == "pass" for c in numeric), [str(c) for c in report.failed][:3]
    assert not report.failed and report.exit_code() == 0
    assert report.verdict().startswith("gradients ok"), report.verdict()
    steps = {c.step for c in numeric}
    assert len(steps) == len(trace.steps)            # every step, not a sample
    for c in numeric:                                # the bound is shown and decided the check
        assert c.bound is not None and c.bound > 0 and c.to_dict()["bound"] > 0
        assert c.max_rel_err <= c.tolerance
        # with room to spare: a correct gradient uses a small share of its bound
        assert c.max_rel_err <= 0.25 * c.tolerance, str(c)


def test_a_true_zero_gradient_is_compared_with_float32_noise_and_passes():
    trace = legendre_fit(torch.float32, steps=3)
    for step in trace.steps:
        results = {c.param: c for c in numeric_check(step)}
        for p in ("a", "c"):
            c = results[p]
            # autograd's value is rounding noise (no relative error is small) ...
            assert c.max_rel_err > 0.5, str(c)
            # ... but it is within the bound of what float32 can resolve
            assert c.passed and c.max_abs_err <= c.bound, str(c)


def test_the_bound_follows_the_dtype_the_ops_ran_in():
    plain = check_trace(mlp_fit(steps=1), numeric="all", diagnostics=False).of("numeric")
    auto = check_trace(mlp_fit(steps=1, autocast=True), numeric="all", diagnostics=False).of("numeric")
    double = check_trace(mlp_fit(steps=1, dtype=torch.float64), numeric="all",
                         diagnostics=False).of("numeric")
    by = {k: {c.param: c.tolerance for c in cs} for k, cs in
          (("f32", plain), ("bf16", auto), ("f64", double))}
    for p in by["f32"]:
        assert by["bf16"][p] > 10 * by["f32"][p] > 10 * by["f64"][p], (p, by)
    assert all("bfloat16" not in c.detail for c in plain)


def test_the_bound_is_computed_the_same_way_at_every_step():
    trace = legendre_fit(torch.float32, steps=3)
    first = numeric_check(trace.steps[0])
    again = numeric_check(trace.steps[0])
    assert [c.bound for c in first] == [c.bound for c in again]
    # a later step's bound comes from its own magnitudes, never from a constant floor
    later = numeric_check(trace.steps[2])
    assert all(a.bound != b.bound for a, b in zip(first, later))


def test_gamma_and_the_magnitudes_of_a_reduction():
    u = UNIT_ROUNDOFF["float32"]
    assert gamma(1000, u) == pytest.approx(1000 * u / (1 - 1000 * u))
    # sum of n terms of a broadcast scalar: the bound is gamma_k * sum|terms|
    x = torch.linspace(-1, 1, 1001)
    a = torch.tensor(0.0, requires_grad=True)
    with gradtrace.trace() as t:
        ((a + x) ** 2).sum().backward()
    rp, values = replay_of(t.result.steps[0])
    model = ErrorModel(rp, values)
    [(tid, bound)] = model.backward_bounds().items()
    terms = float((2 * (x.double()).abs()).sum())     # |d/da (a + x_i)^2| summed
    assert abs(model.gradient[tid].item()) < 1e-6 * terms    # it cancels to (nearly) 0
    assert gamma(1001 + 2, u) * terms <= float(bound) <= 5 * gamma(1001 + 3, u) * terms


# -- the model's pieces, derived by hand -----------------------------------------------------------

def test_the_unit_roundoff_of_each_dtype_is_half_its_machine_epsilon():
    for name, u in UNIT_ROUNDOFF.items():
        assert u == torch.finfo(getattr(torch, name)).eps / 2, name
        assert unit_roundoff(name) == u
    # a dtype the model does not know (an integer result) is taken as float32
    assert unit_roundoff("int64") == unit_roundoff("no such dtype") == UNIT_ROUNDOFF["float32"]


def test_gamma_is_k_u_over_one_minus_k_u_and_stays_finite_from_k_u_one_half_on():
    assert gamma(0, 0.25) == 0.0
    assert gamma(1, 0.25) == pytest.approx((1 / 4) / (3 / 4), rel=1e-15)
    # at k u = 1/2 the formula would be 1; from there on it is 2 k u, so it never blows up
    assert gamma(1 - 1e-9, 0.5) == pytest.approx(1.0, rel=1e-8)
    assert gamma(2, 0.25) == 1.0 and gamma(4, 0.25) == 2.0 and gamma(1e6, 0.25) == 5e5


X4 = torch.tensor([0.5, -1.25, 3.0, 0.1], dtype=torch.float64)
W4 = [1.0, 2.0, -0.5, 4.0]


def _model_of(loss_fn):
    """The ErrorModel of one recorded backward of ``loss_fn(w)``, w a float64 leaf like W4."""
    w = torch.tensor(W4, dtype=torch.float64, requires_grad=True)
    with gradtrace.trace() as t:
        loss_fn(w).backward()
    rp, values = replay_of(t.result.steps[0])
    return ErrorModel(rp, values)


def test_the_backward_bound_of_a_dot_product_is_gamma_3_of_its_inputs_magnitudes():
    """L = x @ w: dL/dw = x, one product per element (k = 4 terms / 4 elements + 2)."""
    model = _model_of(lambda w: X4 @ w)
    assert model.dtypes == ["float64"]
    [(tid, bound)] = model.backward_bounds().items()
    torch.testing.assert_close(model.gradient[tid], X4, rtol=0, atol=0)
    torch.testing.assert_close(bound, gamma(3, UNIT_ROUNDOFF["float64"]) * X4.abs(), rtol=1e-15, atol=0)
    # the gradient of a linear loss does not depend on the forward's values: no forward bound
    assert model.forward_bound(tid, [0, 1, 2, 3]).tolist() == [0.0] * 4


def test_the_loss_error_of_a_dot_product_is_gamma_of_its_terms_plus_one_rounding():
    model = _model_of(lambda w: X4 @ w)
    u = UNIT_ROUNDOFF["float64"]
    terms = [abs(a * b) for a, b in zip(X4.tolist(), W4)]
    loss = sum(a * b for a, b in zip(X4.tolist(), W4))
    # E = gamma(k + 1, u) * sum |x_j w_j|, k = 4 terms / 1 output + 2
    assert model.loss_error() == pytest.approx(gamma(4 + 3, u) * sum(terms) + u * abs(loss), rel=1e-12)


def test_the_forward_bound_of_a_squared_dot_product_follows_the_rounded_product():
    """L = (x @ w)^2: dL/dw_i = 2 v x_i, and v = x @ w is rounded by gamma(4 + 2) sum |x_j w_j|."""
    model = _model_of(lambda w: (X4 @ w) ** 2)
    [tid] = list(model.gradient)
    u = UNIT_ROUNDOFF["float64"]
    E_v = gamma(4 + 2, u) * sum(abs(a * b) for a, b in zip(X4.tolist(), W4))
    got = model.forward_bound(tid, [0, 1, 2, 3])
    torch.testing.assert_close(got, 2 * X4.abs() * E_v, rtol=1e-12, atol=0)
    assert model.forward_bound(tid, [2]).tolist() == pytest.approx([got[2].item()], rel=1e-15)


def test_a_softmaxs_backward_is_bounded_by_its_terms_not_its_jacobian():
    """softmax's backward computes p (g - sum(g p)): its terms are p (|g| + sum(|g| p)), where
    |J|^T |g| (J = diag(p) - p p^T) is near 0 for a confident p. The op's own rounding is
    relative to those terms; errors already in g move through |J|^T as before."""
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    for name, fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
        w = torch.tensor([6.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
        with gradtrace.trace() as t:
            (fn(w, 0) * c).sum().backward()
        model = ErrorModel(*replay_of(t.result.steps[0]))
        [rec] = [r for r in model.records if r.op.name == name]
        g = [c.abs()]
        p = torch.softmax(w.detach(), 0)
        # J[i, j] = d out_i / d w_j
        eye = torch.eye(3, dtype=torch.float64)
        jac = torch.diag(p) - torch.outer(p, p) if name == "softmax" else eye - p[None, :].expand(3, 3)
        [(tid, through)] = model.abs_vjp(rec, g).items()
        [(_, own)] = model.abs_vjp(rec, g, terms=True).items()
        torch.testing.assert_close(through, jac.abs().T @ c.abs(), rtol=1e-12, atol=1e-15)
        want = p * (c.abs() + (c.abs() * p).sum()) if name == "softmax" else c.abs() + p * c.abs().sum()
        torch.testing.assert_close(own, want, rtol=1e-12, atol=0)
        assert bool((own >= through - 1e-15).all())
        if name == "softmax":  # the confident element: |J| hides almost all of its terms
            assert float(own[0]) > 50 * float(through[0])


def test_a_confident_softmax_in_float32_passes_the_numeric_check():
    """Attention scores q q^T are largest on the diagonal: a softmax near one-hot, whose
    backward's float32 rounding is many times |J|^T |g| (this failed: error 2x its bound)."""
    torch.manual_seed(0)
    q = torch.randn(2, 3, 4, requires_grad=True)
    v = torch.randn(2, 3, 4)
    with gradtrace.trace() as t:
        ((q @ q.transpose(1, 2)).softmax(-1) @ v).pow(2).sum().backward()
    [c] = numeric_check(t.result.steps[0])
    assert c.status == "pass", c.detail


def test_a_masks_minus_inf_carries_no_rounding_error():
    """masked_fill(-inf) then softmax (attention with padding): the -inf is exact and the
    softmax makes it an exact 0; the forward errors stay finite and the check passes."""
    torch.manual_seed(0)
    q = torch.randn(2, 3, 4, requires_grad=True)
    v = torch.randn(2, 3, 4)
    mask = torch.tensor([False, False, True]).expand(2, 3, 3)
    with gradtrace.trace() as t:
        s = (q @ q.transpose(1, 2)).masked_fill(mask, float("-inf"))
        (s.softmax(-1) @ v).pow(2).sum().backward()
    rp, values = replay_of(t.result.steps[0])
    model = ErrorModel(rp, values)
    assert all(bool(torch.isfinite(e).all()) for e in model.forward_errors().values())
    [c] = numeric_check(t.result.steps[0])
    assert c.status == "pass" and math.isfinite(c.bound) and c.bound > 0


def test_an_op_that_ran_in_bfloat16_adds_the_rounding_of_its_result():
    """A bfloat16 dot product accumulates in float32 and rounds its result once to bfloat16:
    gamma_3(u_float32) + u_bfloat16, then the float() after it adds its own gamma_3(u_float32)."""
    x = X4.to(torch.bfloat16)
    w = torch.tensor(W4, dtype=torch.bfloat16, requires_grad=True)
    with gradtrace.trace() as t:
        (x @ w).float().backward()
    model = ErrorModel(*replay_of(t.result.steps[0]))
    assert model.dtypes == ["bfloat16", "float32"]
    [bound] = model.backward_bounds().values()
    g3 = gamma(3, UNIT_ROUNDOFF["float32"])
    mags = x.double().abs()  # 0.1 in bfloat16 is not 0.1
    expected = (g3 + UNIT_ROUNDOFF["bfloat16"]) * mags + g3 * mags
    torch.testing.assert_close(bound, expected, rtol=1e-12, atol=0)


# -- mutated twins -------------------------------------------------------------------------------

TWINS = [
    ("2 percent, float64", torch.float64, "factor", 1.02),
    ("2 percent, float32", torch.float32, "factor", 1.02),
    ("2x", torch.float32, "factor", 2.0),
    ("sign flip", torch.float32, "factor", -1.0),
    ("dropped term", torch.float32, "dropped_term", 1.0),
]


@pytest.mark.parametrize("label,dtype,mutation,factor", TWINS, ids=[t[0] for t in TWINS])
def test_a_wrong_custom_backward_is_caught_with_parameter_and_step(label, dtype, mutation, factor):
    trace = legendre_fit(dtype, steps=4, mutation=mutation, factor=factor)
    report = check_trace(trace, numeric="all", diagnostics=False)
    failed = report.failed
    assert failed, label
    # only parameters whose gradient goes through P3's backward can be wrong: c and d
    assert {c.param for c in failed} <= {"c", "d"}
    assert "d" in {c.param for c in failed if c.step == 0}
    assert report.verdict().startswith("gradients WRONG at step 0 (")
    assert report.exit_code() == 3
    first = next(c for c in failed if c.param == "d")
    assert "Legendre3" in first.detail and first.max_rel_err > first.tolerance
    assert first.max_abs_err > first.bound


def _smallest_caught(dtype, deltas):
    caught = []
    for delta in deltas:
        trace = legendre_fit(dtype, steps=1, mutation="factor", factor=1 + delta)
        if any(c.failed for c in numeric_check(trace.steps[0])):
            caught.append(delta)
    return min(caught) if caught else None


def test_smallest_backward_error_caught():
    """float64: the finite differences decide and errors of 1e-8 are caught; float32 at the
    first step of the Legendre fit: 1e-3 (the gradient of d adds up 2000 terms)."""
    assert _smallest_caught(torch.float64, [1e-4, 1e-6, 1e-8]) == 1e-8
    assert _smallest_caught(torch.float32, [2e-2, 3e-3, 1e-3]) == 1e-3


@pytest.mark.slow
def test_the_legendre_lesson_passes_over_a_long_run_and_its_twin_fails():
    """Issue 12: 300 steps, float32 and float64, zero failed checks; the 2 % twin fails
    where the bound can tell (early, while the gradient is large) and nowhere else wrongly."""
    for dtype in (torch.float32, torch.float64):
        report = check_trace(legendre_fit(dtype, steps=300), numeric="all", diagnostics=False)
        assert len(report.of("numeric")) == 4 * 300 and not report.failed, report.verdict()
        twin = check_trace(legendre_fit(dtype, steps=300, mutation="factor", factor=1.02),
                           numeric="all", diagnostics=False)
        failed_steps = {c.step for c in twin.failed}
        assert 0 in failed_steps and {c.param for c in twin.failed} <= {"c", "d"}
        if dtype == torch.float64:
            assert failed_steps == set(range(300))


def test_a_small_backward_error_is_still_blamed_on_its_function():
    trace = legendre_fit(torch.float64, steps=1, mutation="factor", factor=1 + 1e-4)
    [fail] = [c for c in numeric_check(trace.steps[0]) if c.failed]
    assert fail.param == "d" and "Legendre3" in fail.detail, fail.detail
    assert "1.0001 x the derivative of its forward" in fail.detail, fail.detail


class ScaledSoftsign(Softsign):
    """Softsign with a backward multiplied by ``factor`` (2: the 2x twin)."""

    factor = 2.0

    @staticmethod
    def backward(ctx, g):
        return ScaledSoftsign.factor * Softsign.backward(ctx, g)


def test_a_wrong_backward_under_bfloat16_autocast_is_still_caught():
    g = torch.Generator().manual_seed(7)
    X = torch.randn(32, 4, generator=g)
    Y = torch.randn(32, 1, generator=g)
    lin1, lin2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)
    with gradtrace.trace() as t:
        with torch.autocast("cpu", torch.bfloat16):
            h = lin1(X)
        out = lin2(ScaledSoftsign.apply(h.float()))
        F.mse_loss(out, Y).backward()
    results = {c.param: c for c in numeric_check(t.result.steps[0])}
    # lin1's gradient goes through the wrong backward, lin2's does not
    assert results["lin1.weight"].failed and results["lin1.bias"].failed, results["lin1.weight"]
    assert results["lin2.weight"].passed and results["lin2.bias"].passed, results["lin2.weight"]
    assert "ScaledSoftsign" in results["lin1.weight"].detail
    assert "bfloat16" in results["lin1.weight"].detail


def test_the_forward_bound_of_many_elements_is_one_batched_backward(monkeypatch):
    """From eight elements on, the forward bound's backward passes (one per element) are one
    pass with a batch of one-hot cotangents; it gives the sums of the one-at-a-time passes."""
    from gradtrace.analysis import errmodel

    torch.manual_seed(0)
    W1 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    W2 = torch.randn(1, 6, dtype=torch.float64, requires_grad=True)
    X = torch.randn(10, 4, dtype=torch.float64)
    with gradtrace.trace() as t:
        (torch.tanh(X @ W1.T) @ W2.T).pow(2).mean().backward()
    rp, values = replay_of(t.result.steps[0])
    model = ErrorModel(rp, values)
    w1 = t.result.find("W1").tid
    idx = list(range(24))
    seen = []
    batched_of = errmodel.ErrorModel._forward_bound_batched
    monkeypatch.setattr(errmodel.ErrorModel, "_forward_bound_batched",
                        lambda self, *a: seen.append(len(a[3])) or batched_of(self, *a))
    batched = model.forward_bound(w1, idx)
    few = model.forward_bound(w1, idx[:errmodel._BATCH_FROM - 1])
    assert seen == [24]                       # the few were taken one at a time
    monkeypatch.setattr(errmodel.ErrorModel, "_forward_bound_batched", lambda self, *a: None)
    one_by_one = model.forward_bound(w1, idx)
    assert bool((one_by_one > 0).all())
    torch.testing.assert_close(batched, one_by_one, rtol=1e-12, atol=0)
    torch.testing.assert_close(few, one_by_one[:errmodel._BATCH_FROM - 1], rtol=1e-12, atol=0)
    monkeypatch.setattr(errmodel, "_BATCH_BYTES", 1)   # an element a chunk: the same sums
    monkeypatch.setattr(errmodel.ErrorModel, "_forward_bound_batched", batched_of)
    torch.testing.assert_close(model.forward_bound(w1, idx), one_by_one, rtol=1e-12, atol=0)


def test_an_op_in_place_has_a_handle_on_each_value_its_tensor_held():
    """h = x @ w; h.mul_(3): one tid, two values. Each has its own probe, and the bound of
    the matmul's result carries the 3 the op in place multiplies its cotangent by (with one
    handle for both, the matmul's rounding was left out and its cotangent taken a third)."""
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    w = torch.tensor([[0.5], [0.25]], requires_grad=True)
    with gradtrace.trace() as t:
        h = x @ w
        h.mul_(3)
        h.sum().backward()
    step = t.result.steps[0]
    rp, values = replay_of(step)
    model = ErrorModel(rp, values)
    matmul, mul_, _ = model.records
    assert matmul.outputs != mul_.outputs and mul_.inputs == matmul.outputs
    assert {matmul.outputs[0], mul_.outputs[0]} <= set(model.probes)
    torch.testing.assert_close(model.cotangent[matmul.outputs[0]], torch.full((2, 1), 3.0, dtype=torch.float64))
    torch.testing.assert_close(model.gradient[t.find("w").tid], torch.tensor([[12.0], [3.0]], dtype=torch.float64))
    assert [c.status for c in numeric_check(step)] == ["pass"]
