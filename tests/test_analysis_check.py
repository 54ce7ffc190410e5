"""analysis.check and `gradtrace check`: the seeds pass, wrong gradients fail, the JSON document, exit codes."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import gradtrace
from conftest import gradtrace_cmd, gradtrace_main
from gradtrace.analysis.check import CheckOptions, CheckReport, CheckResult, check_trace
from gradtrace.analysis.diagnostics import Finding
from gradtrace.cli import cli

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


# -- the command line ------------------------------------------------------------------------------

def test_cli_check_json_and_exit_codes(tmp_path):
    path = tmp_path / "doubled.gtrace"
    _doubled_w_trace(path)
    runner = CliRunner()
    r = runner.invoke(cli, ["check", str(path), "--json", "--no-numeric"])
    assert r.exit_code == 3, r.output   # a failed check exits with 3, --strict or not
    doc = json.loads(r.output)
    assert [(c["step"], c["param"], c["status"]) for c in doc["checks"]] == [
        (0, "w", "fail"), (0, "b", "pass"), (1, "w", "fail"), (1, "b", "pass")]
    r = runner.invoke(cli, ["check", str(path), "--numeric"])
    assert r.exit_code == 3 and r.output.startswith("gradients WRONG at step 0 (w)")
    assert "numeric w: 0/2 passed, 2 failed" in r.output


def test_cli_strict_and_usage_errors(tmp_path, capsys):
    path = tmp_path / "doubled.gtrace"
    _doubled_w_trace(path)
    code, out, _ = gradtrace_main(capsys, "check", str(path), "--strict", "--no-numeric")
    assert code == 3 and "FAIL analytic_mse step 0 w" in out
    code, out, err = gradtrace_main(capsys, "check", str(path), "--steps", "7:3")
    assert code == 2 and out == ""
    assert err.splitlines() == ["gradtrace: error: step range '7:3' is empty or negative; "
                                "use A:B with 0 <= A < B"]
    code, out, err = gradtrace_main(capsys, "check", str(tmp_path / "missing.gtrace"))
    assert code == 2 and len(err.splitlines()) == 1 and "missing.gtrace" in err


def test_cli_strict_exits_3_on_a_finding_and_0_without(tmp_path):
    w = torch.zeros(1, requires_grad=True)
    x = torch.rand(5)
    path = tmp_path / "data.gtrace"
    with gradtrace.trace(path):
        for _ in range(2):
            ((x * w - x) ** 2).mean().backward()
            w.data -= 0.1 * w.grad.data
            w.grad.data.zero_()
    runner = CliRunner()
    r = runner.invoke(cli, ["check", str(path), "--strict"])
    assert r.exit_code == 3 and "data_update (step 0" in r.output
    r = runner.invoke(cli, ["check", str(path)])
    assert r.exit_code == 0 and "gradients ok" in r.output


@pytest.mark.slow  # `gradtrace run` in a forked child
def test_run_prints_the_verdict_and_the_findings(tmp_path):
    script = tmp_path / "nozero.py"
    script.write_text(textwrap.dedent("""
        import torch
        torch.manual_seed(0)
        X, y = torch.randn(10, 2), torch.randn(10, 1)
        w = torch.zeros(2, 1, requires_grad=True)
        for i in range(3):
            ((X @ w - y) ** 2).sum().backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
        print("done")
    """))
    r = gradtrace_cmd("run", "-o", str(tmp_path / "t.gtrace"), str(script), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "done\n"
    lines = r.stderr.splitlines()
    [verdict] = [ln for ln in lines if ln.startswith("gradtrace: check: ")]
    assert verdict.startswith("gradtrace: check: gradients ok: analytic_mse 3 passed (max rel err ")
    assert "numeric 3 passed" in verdict and verdict.endswith("; 1 finding (forgot_zero_grad)")
    assert any(ln.startswith("gradtrace:   forgot_zero_grad (step 1, nozero.py:7)") for ln in lines)
