"""analysis.check: seeds pass, wrong gradients fail, what does not apply says why, the verdict, the JSON."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.check import CheckOptions, CheckReport, CheckResult, check_trace
from gradtrace.analysis.diagnostics import Finding
from test_analysis_errmodel import symmetric_linear

CHECK_KEYS = ["kind", "step", "param", "status", "max_abs_err", "max_rel_err", "tolerance", "bound",
              "detail"]
FINDING_KEYS = ["kind", "step", "param", "op", "source", "message"]


# -- the seeds: every step passes the analytic check at float32 rounding ---------------------------

@pytest.mark.parametrize("name,params,kind", [
    ("linreg", {"w", "b"}, "analytic_mse"),
    ("linreg_concise", {"net.0.weight", "net.0.bias"}, "analytic_mse"),
    ("crop_yield", {"w", "b"}, "analytic_mse"),
    pytest.param("gd_backprop", {"w", "b"}, "analytic_mse", marks=pytest.mark.slow),  # 3,000 steps checked
    ("softmax_regression", {"W", "b"}, "analytic_softmax"),
])
def test_seed_demos_pass_the_analytic_check_at_every_step(demo_trace, name, params, kind):
    trace = demo_trace(name)
    report = check_trace(trace, numeric="none", diagnostics=False)
    checks = report.of(kind)
    steps_with_backward = sum(r["has_backward"] for r in trace.step_rows())
    assert len(checks) == len(params) * steps_with_backward
    assert {c.param for c in checks} == params
    assert all(c.status == "pass" for c in checks), [str(c) for c in checks if not c.passed][:3]
    assert max(c.max_rel_err for c in checks) <= 1e-5
    # the tolerance comes from the error model (docs/gradients.md), not a fixed 1e-4
    assert all(c.bound > 0 and c.max_rel_err <= c.tolerance < 1e-2 for c in checks)


def test_seed_1_says_the_update_divides_by_the_batch_size(demo_trace):
    c = check_trace(demo_trace("linreg"), steps=(0, 1), numeric="none").checks[0]
    assert c.passed and "L = 1/2 * sum((y_hat - y)**2)" in c.detail
    assert "divides the gradient by the batch size (n = 10)" in c.detail
    assert "linreg.py:51" in c.detail and "not the gradient's" in c.detail


def test_a_mean_loss_has_no_batch_size_note(demo_trace):
    c = check_trace(demo_trace("linreg_concise"), steps=(0, 1), numeric="none").checks[0]
    assert c.passed and "L = 1/10 * sum" in c.detail and "batch size" not in c.detail


# -- wrong gradients fail; other steps are not applicable -------------------------------------------

def _doubled_w_trace(path=None):
    """A linear model whose w.grad a hook doubles: autograd's gradient is wrong for w only."""
    torch.manual_seed(0)
    X, y = torch.randn(6, 2), torch.randn(6, 1)
    w, b = torch.randn(2, 1, requires_grad=True), torch.zeros(1, requires_grad=True)
    w.register_hook(lambda g: 2 * g)
    with gradtrace.trace(path) as t:
        for _ in range(2):
            ((X @ w + b - y) ** 2).mean().backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
                b -= 0.01 * b.grad
                w.grad.zero_()
                b.grad.zero_()
    return t.result


def test_a_wrong_gradient_fails_the_analytic_and_the_numeric_check():
    report = _doubled_w_trace().check(numeric="all")
    by = {(c.kind, c.step, c.param): c for c in report.checks}
    for step in (0, 1):
        assert by[("analytic_mse", step, "w")].status == "fail"
        assert by[("analytic_mse", step, "b")].status == "pass"
        assert by[("numeric", step, "w")].status == "fail"
        assert by[("numeric", step, "b")].status == "pass"
    assert by[("numeric", 0, "w")].max_rel_err == pytest.approx(0.5, rel=1e-4)
    assert "2 x the finite differences" in by[("numeric", 0, "w")].detail
    assert not report.ok and report.verdict().startswith("gradients WRONG at step 0 (w)")


def _softmax_trace(double_W: bool = False):
    """Softmax regression under F.cross_entropy, 3 steps; ``double_W``: a hook doubles the
    gradient on its way into W.grad, so autograd's W.grad is twice the true one."""
    torch.manual_seed(1)
    X = torch.randn(30, 2)
    labels = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    W, b = torch.zeros(2, 3, requires_grad=True), torch.zeros(3, requires_grad=True)
    if double_W:
        W.register_hook(lambda g: 2 * g)
    with gradtrace.trace() as t:
        for _ in range(3):
            F.cross_entropy(X @ W + b, labels).backward()
            with torch.no_grad():
                for p in (W, b):
                    p -= 0.5 * p.grad
                    p.grad.zero_()
    return t.result


def test_softmax_regression_passes_the_analytic_softmax_check():
    report = _softmax_trace().check()
    checks = report.of("analytic_softmax")
    assert len(checks) == 6 and all(c.passed for c in checks)
    assert "CE(softmax(z_i), y_i)" in checks[0].detail and "c = 0.0333333" in checks[0].detail


def test_a_wrong_gradient_fails_the_analytic_softmax_check():
    trace = _softmax_trace(double_W=True)
    report = trace.check(numeric="none")
    by = {(c.step, c.param): c for c in report.of("analytic_softmax")}
    assert sorted(by) == [(s, p) for s in (0, 1, 2) for p in ("W", "b")]
    W = trace.find("W").tid
    for step in trace.steps:
        assert by[(step.index, "W")].status == "fail" and by[(step.index, "b")].status == "pass"
        # what the check measured is the extra copy of the gradient: half of W.grad
        grad = next(e for e in step.accumulations if e.tensor == W).after.data
        assert by[(step.index, "W")].max_abs_err == pytest.approx(grad.abs().max().item() / 2, rel=1e-5)
        assert by[(step.index, "W")].max_rel_err > 100 * by[(step.index, "W")].tolerance
    assert not report.ok and report.verdict().startswith("gradients WRONG at step 0 (W): "
                                                         "analytic_softmax 3 passed, 3 FAILED")


def test_a_non_linear_model_is_not_applicable_and_checked_numerically():
    torch.manual_seed(0)
    X, y = torch.randn(8, 2), torch.randn(8, 1)
    w1, w2 = torch.randn(2, 4, requires_grad=True), torch.randn(4, 1, requires_grad=True)
    with gradtrace.trace() as t:
        F.mse_loss(torch.tanh(X @ w1) @ w2, y).backward()
    report = t.check()
    [na] = report.of("analytic_mse")
    assert na.status == "not_applicable" and na.param is None
    assert na.detail.startswith("not applicable: squared error of a model that is not linear")
    assert [c.status for c in report.of("numeric")] == ["pass", "pass"]
    assert report.ok and report.verdict().startswith("gradients ok")


# -- "not applicable" says why and what would make it apply; the verdict says what ran --------

def _tanh_fit(path=None, **options):
    g = torch.Generator().manual_seed(5)
    X = torch.randn(40, 3, generator=g)
    Y = torch.randn(40, 1, generator=g)
    w1 = torch.randn(3, 4, generator=g).requires_grad_()
    w2 = torch.randn(4, 1, generator=g).requires_grad_()
    with gradtrace.trace(path, **options) as t:
        for _ in range(2):
            F.mse_loss(torch.tanh(X @ w1) @ w2, Y).backward()
            with torch.no_grad():
                for p in (w1, w2):
                    p -= 0.1 * p.grad
                    p.grad = None
    return t.result


def test_not_applicable_names_the_option_that_makes_it_apply_and_then_it_passes():
    # X (40 x 3 = 120 elements) kept as statistics only: nothing to replay from
    small = check_trace(_tanh_fit(max_value_numel=100), numeric="all", diagnostics=False)
    [na, *_] = small.of("numeric")
    assert na.status == "not_applicable"
    assert "statistics only" in na.detail and "--max-numel 120" in na.detail, na.detail
    assert small.verdict().startswith("no check applies ("), small.verdict()
    assert "--max-numel 120" in small.verdict() and small.exit_code() == 0
    # ... and with that option the numeric check runs and passes
    full = check_trace(_tanh_fit(max_value_numel=120), numeric="all", diagnostics=False)
    assert {c.status for c in full.of("numeric")} == {"pass"}
    # a step that is not a linear model says what the analytic check covers
    [an, *_] = full.of("analytic_mse")
    assert an.status == "not_applicable" and "numeric check covers" in an.detail


def test_the_verdict_says_which_checks_ran():
    trace = symmetric_linear(steps=2)
    both = check_trace(trace, numeric="all", diagnostics=False).verdict()
    assert both.startswith("gradients ok: analytic_mse 4 passed"), both
    assert "numeric 4 passed" in both
    only = check_trace(trace, numeric="none", diagnostics=False).verdict()
    assert only.startswith("gradients ok by the analytic_mse check (the numeric check was not run)")


def test_the_verdict_when_the_numeric_check_does_not_apply():
    x = torch.linspace(-1, 1, 30).reshape(-1, 1)
    w = torch.zeros(1, 1, requires_grad=True)
    with gradtrace.trace() as t:
        # the target goes through dropout: the data's dropout is data, but here it is
        # the model's output: the replay would draw different numbers
        loss = ((F.dropout(x @ w, 0.5) - x) ** 2).mean()
        loss.backward()
    report = check_trace(t.result, numeric="all", diagnostics=False)
    [na] = report.of("numeric")
    assert na.status == "not_applicable" and "model.eval()" in na.detail, na.detail
    assert not report.failed and report.exit_code() == 0


def test_a_large_relative_error_within_its_bound_says_how_far_within():
    """A converged run's gradients are near zero: their relative error is large and still
    within what rounding allows. The verdict says the share of the bound, not only 0.18."""
    def report(*results):
        return CheckReport([CheckResult("numeric", i, "w", st, 1e-9, rel, tol)
                            for i, (st, rel, tol) in enumerate(results)], [])

    v = report(("pass", 0.18, 4.0), ("pass", 0.02, 1.0)).verdict()
    assert "numeric 2 passed (max rel err 0.18, largest error 0.045 of its bound)" in v, v
    v = report(("pass", 6.5e-8, 1e-4)).verdict()
    assert "numeric 1 passed (max rel err 6.5e-08);" in v, v  # small: nothing to explain
    v = report(("pass", 0.18, 4.0), ("fail", 0.5, 0.1)).verdict()
    assert "numeric 1 passed, 1 FAILED (max rel err 0.5);" in v, v


def _three_steps(**options):
    """Three d2l-style steps recorded with ``options``: the run's trace."""
    w = torch.zeros(3, requires_grad=True)
    with gradtrace.trace(**options) as t:
        for _ in range(3):
            (w - 1).pow(2).sum().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
    return t.result


def test_the_verdict_when_no_step_was_recorded_in_full():
    """budget=0: every step has its scalars and none its ops: said so, with how to keep some."""
    v = check_trace(_three_steps(budget=0)).verdict()
    assert v.startswith("nothing to check: none of the 3 steps was recorded in full (--full, or "
                        "a larger --budget, records them); 0 findings"), v
    assert "checked 0 of" not in v


def test_the_verdict_when_training_ran_in_another_thread():
    import threading

    w = [torch.zeros(3, requires_grad=True)]

    def train():
        for _ in range(2):
            (w[0] - 1).pow(2).sum().backward()

    with gradtrace.trace() as t:
        th = threading.Thread(target=train)
        th.start()
        th.join()
    assert t.result.info.unrecorded == {"thread_backward": 2, "transform_ops": 0,
                                        "batched_backward": 0}
    v = check_trace(t.result).verdict()
    assert v == ("nothing to check: the run's 2 backward passes ran in threads other than the "
                 "one that started the trace (gradtrace records that thread only); 0 findings"), v


# -- options --------------------------------------------------------------------------------------

def test_steps_and_numeric_options(demo_trace):
    trace = demo_trace("linreg")
    sample = check_trace(trace)
    assert sorted({c.step for c in sample.of("numeric")}) == [0, 43, 85, 128, 171, 214, 256, 299]
    some = check_trace(trace, steps="10:13", numeric="all")
    assert sorted({c.step for c in some.checks}) == [10, 11, 12]
    assert len(some.of("numeric")) == 6
    assert check_trace(trace, steps=(10, 13), numeric=False).of("numeric") == []
    with pytest.raises(gradtrace.UsageError):
        CheckOptions(numeric="sometimes")
    with pytest.raises(gradtrace.UsageError, match="no recorded step"):
        check_trace(trace, steps="5000:")


def test_python_api_returns_typed_objects(demo_trace):
    report = demo_trace("crop_yield").check(steps="0:3")
    assert isinstance(report, CheckReport)
    assert all(isinstance(c, CheckResult) for c in report.checks)
    assert all(isinstance(f, Finding) for f in report.findings)
    assert [f.kind for f in report.findings] == ["ill_conditioned"]


def test_json_document_keys(demo_trace):
    report = demo_trace("crop_yield").check(steps="0:3")
    doc = json.loads(report.to_json())
    assert list(doc) == ["checks", "findings", "optimum"]
    assert all(list(c) == CHECK_KEYS for c in doc["checks"])
    assert all(list(f) == FINDING_KEYS for f in doc["findings"])
    assert {c["kind"] for c in doc["checks"]} == {"analytic_mse", "numeric"}
    assert {c["status"] for c in doc["checks"]} == {"pass"}
    assert doc["optimum"]["distance"][0][0] == 0
    # deterministic: the same document twice
    assert demo_trace("crop_yield").check(steps="0:3").to_json() == report.to_json()


def test_the_check_says_no_warning_and_minds_no_warning_filter():
    """Replaying F.softmax(x) without dim= warned again, at every replay; and a script's own
    simplefilter("error") (a test suite's) turned that into 'check failed (a gradtrace bug)'."""
    import warnings

    torch.manual_seed(0)
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gradtrace.trace() as t:
            F.softmax(x @ w).pow(2).sum().backward()  # the implicit dim: a UserWarning
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("error")
        report = check_trace(t.result, numeric="all")
        assert warnings.filters[0][0] == "error"  # the caller's filters, as they were
    assert seen == [] and report.of("numeric") and all(c.passed for c in report.of("numeric"))


def test_a_range_of_steps_that_misses_the_run_says_so():
    v = check_trace(_three_steps(step_range=(100, 200))).verdict()
    assert v.startswith("nothing to check: none of the 3 steps was recorded in full (--steps left "
                        "them out)"), v


def test_a_step_through_a_gradient_taken_with_create_graph_is_not_applicable():
    """MAML: the outer loss goes through fast weights w - lr * g, g from autograd.grad(...,
    create_graph=True) in the step before. autograd differentiates through g (the second
    order), the replay took g for a constant: correct code was called WRONG (0.85x)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(1, 1)
    xs, xq = torch.randn(5, 1), torch.randn(5, 1)
    with gradtrace.trace() as t:
        for _ in range(2):
            inner = ((lin(xs) - xs.sin()) ** 2).mean()
            gw, gb = torch.autograd.grad(inner, (lin.weight, lin.bias), create_graph=True)
            w2, b2 = lin.weight - 0.1 * gw, lin.bias - 0.1 * gb
            ((xq @ w2.t() + b2 - xq.sin()) ** 2).mean().backward()
    report = check_trace(t.result, numeric="all")
    assert not report.failed
    outer = [c for c in report.of("numeric") if c.step in (1, 3)]
    assert outer and all(c.status == "not_applicable" and "create_graph=True" in c.detail
                         for c in outer)
    assert {c.status for c in report.of("numeric") if c.step in (0, 2)} == {"pass"}


def test_a_relu_under_bfloat16_autocast_is_replayed_on_the_runs_branch():
    """autocast rounds each linear's float32 inputs to bfloat16 inside the op: some of the
    ReLU's inputs near 0 have the other sign in the float64 replay, and correct code was
    called WRONG at 6x its bound. The replay keeps the run's branch (its recorded input)."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    X, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    with gradtrace.trace() as t:
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = m(X)
            F.cross_entropy(out.float(), y).backward()
            with torch.no_grad():
                for p in m.parameters():
                    p -= 0.05 * p.grad
                    p.grad = None
    numeric = check_trace(t.result, numeric="all").of("numeric")
    assert len(numeric) == 8 and {c.status for c in numeric} == {"pass"}, [c.detail for c in numeric]
