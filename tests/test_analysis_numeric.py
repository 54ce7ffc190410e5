"""analysis.numeric: the float64 replay of recorded steps and the finite-difference check."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.check import numeric_check
from gradtrace.analysis.errmodel import ErrorModel
from gradtrace.analysis.numeric import (
    Replay, autograd_gradients, blame_functions, finite_differences, replay_of, sample_indices,
)

HERE = Path(__file__).name  # the source lines recorded here name this file

torch.manual_seed(0)
X = torch.randn(10, 3)
Y = torch.randn(10, 1)


class Cube(torch.autograd.Function):
    """x -> k * x**3 with a backward that is right, or off by ``factor``."""

    factor = 1.0

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return x.pow(3) * k

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return Cube.factor * 3 * ctx.k * x.pow(2) * g, None


def _mlp_steps(n_steps=2, cube_factor=None):
    """A small non-linear model (tanh, a custom Function) trained a few steps."""
    g = torch.Generator().manual_seed(2)
    w1 = (0.5 * torch.randn(3, 4, generator=g)).requires_grad_()
    w2 = (0.5 * torch.randn(4, 1, generator=g)).requires_grad_()
    with gradtrace.trace() as t:
        for _ in range(n_steps):
            h = torch.tanh(X @ w1)
            if cube_factor is not None:
                Cube.factor = cube_factor
                h = Cube.apply(h, 0.5)
            loss = F.mse_loss(h @ w2, Y)
            loss.backward()
            with torch.no_grad():
                for p in (w1, w2):
                    p -= 0.1 * p.grad
                    p.grad = None
    Cube.factor = 1.0
    return t.result


def test_replay_recomputes_the_recorded_loss_in_float64():
    trace = _mlp_steps()
    for step in trace.steps:
        rp, values = replay_of(step)
        assert all(v.dtype == torch.float64 for v in values.values())
        assert rp(values) == pytest.approx(step.loss, rel=1e-6)
        # and it is a function of the parameters: scaling them changes it
        assert rp({t: 0.5 * v for t, v in values.items()}) != pytest.approx(step.loss, rel=1e-3)


def test_finite_differences_match_autograd_on_a_nonlinear_model():
    step = _mlp_steps().steps[0]
    rp, values = replay_of(step)
    got = autograd_gradients(step)
    for tid, g in got.items():
        idx = sample_indices(g.numel(), 100, step.index)
        fd = finite_differences(rp, values, tid, idx)
        torch.testing.assert_close(fd.fd, g.reshape(-1)[idx], rtol=1e-4, atol=1e-6)
    results = numeric_check(step)
    assert [r.status for r in results] == ["pass", "pass"]
    assert all(r.max_rel_err < 1e-4 for r in results)


def test_batched_and_one_at_a_time_finite_differences_agree(monkeypatch):
    """The 6 perturbed losses of every sampled element are replayed together (vmap); where
    vmap cannot batch an op of the step the replay runs once a point. Both give the same
    differences, to the rounding of the float64 loss over the step h."""
    from gradtrace.analysis import numeric

    step = _mlp_steps().steps[0]
    rp, values = replay_of(step)
    tid = max(values, key=lambda t: values[t].numel())
    idx = sample_indices(values[tid].numel(), 100, step.index)
    calls = []
    losses = numeric.Replay.losses
    monkeypatch.setattr(numeric.Replay, "losses",
                        lambda self, *a: calls.append(len(a[2])) or losses(self, *a))
    batched = finite_differences(rp, values, tid, idx)
    assert sum(calls) == 6 * len(idx)            # every point went through the batched replay

    def cannot_batch(self, *a):
        raise RuntimeError("an op vmap cannot batch")

    monkeypatch.setattr(numeric.Replay, "losses", cannot_batch)
    one_by_one = finite_differences(rp, values, tid, idx)
    scale = float(one_by_one.fd.abs().max())
    for a, b in ((batched.d_h, one_by_one.d_h), (batched.d_4h, one_by_one.d_4h),
                 (batched.fd, one_by_one.fd)):
        assert float((a - b).abs().max()) <= 1e-9 * scale
    assert torch.equal(batched.h, one_by_one.h)
    monkeypatch.setattr(numeric, "_FD_BATCH_BYTES", 1)  # a point a chunk: the same again
    monkeypatch.setattr(numeric.Replay, "losses", losses)
    chunked = finite_differences(rp, values, tid, idx)
    assert float((chunked.fd - batched.fd).abs().max()) <= 1e-9 * scale


def test_finite_differences_estimate_their_truncation_error():
    w = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    with gradtrace.trace() as t:
        torch.sin(5 * w).sum().backward()
    rp, values = replay_of(t.result.steps[0])
    fd = finite_differences(rp, values, next(iter(values)), [0])
    exact = 5 * math.cos(3.5)
    assert abs(float(fd.d_h[0]) - exact) > abs(float(fd.fd[0]) - exact)   # extrapolation helps
    assert abs(float(fd.fd[0]) - exact) <= 1e-8


def test_a_custom_function_with_a_wrong_backward_fails_and_is_named():
    step = _mlp_steps(cube_factor=2.0).steps[1]
    results = numeric_check(step)
    # w1's gradient flows back through Cube; w2's (h.T @ g) does not.
    assert [r.status for r in results] == ["fail", "pass"]
    for r in results[:1]:
        assert r.step == 1 and r.max_rel_err == pytest.approx(0.5, rel=1e-3)
        assert "autograd.Function:Cube" in r.detail and "2 x the derivative of its forward" in r.detail
        assert f"{HERE}:" in r.detail  # the line that called Cube.apply
    rp, values = replay_of(step)
    blamed = blame_functions(rp, values, 1e-3)
    assert [b.name for b in blamed] == ["Cube"] and blamed[0].ratio == pytest.approx(2.0, rel=1e-6)


def test_a_correct_custom_function_passes():
    step = _mlp_steps(cube_factor=1.0).steps[0]
    assert [r.status for r in numeric_check(step)] == ["pass", "pass"]
    rp, values = replay_of(step)
    assert blame_functions(rp, values, 1e-3) == []


def test_the_custom_functions_forward_is_replayed_from_its_inner_ops():
    step = _mlp_steps(cube_factor=1.0).steps[0]
    fn = next(o for o in step.ops if o.target == "autograd.Function:Cube")
    assert [o.name for o in step.ops if o.parent == fn.index] == ["pow", "mul"]
    rp, values = replay_of(step)
    env = rp.forward(values)
    torch.testing.assert_close(env[fn.outputs[0]].float(), step.value(fn.outputs[0]).data)


def test_random_ops_make_a_step_not_replayable():
    w = torch.randn(3, 1, requires_grad=True)
    w2 = torch.randn(1, 1, requires_grad=True)
    with gradtrace.trace() as t:
        F.mse_loss(F.dropout(X @ w, 0.5) @ w2, Y).backward()
    r = replay_of(t.steps[0])
    assert not r and "random" in r.reason and "dropout" in r.reason
    [res] = numeric_check(t.steps[0])
    assert res.status == "not_applicable" and res.param is None
    # dropout in eval mode draws nothing; dropout of the data is data (its value is recorded)
    for make in (lambda: F.dropout(X @ w, 0.5, training=False) @ w2, lambda: F.dropout(X, 0.5) @ w):
        with gradtrace.trace() as t:
            F.mse_loss(make(), Y).backward()
        assert replay_of(t.steps[0])
        assert {c.status for c in numeric_check(t.steps[0])} == {"pass"}


def test_values_kept_as_statistics_only_are_not_applicable():
    w = torch.randn(3, 1, requires_grad=True)
    with gradtrace.trace(values="stats") as t:
        F.mse_loss(X @ w, Y).backward()
    r = replay_of(t.steps[0])
    assert not r and "statistics" in r.reason


def test_sample_indices_are_bounded_and_reproducible():
    assert sample_indices(5, 32, 0) == [0, 1, 2, 3, 4]
    a = sample_indices(1000, 32, 7)
    assert len(a) == 32 and a == sorted(set(a)) and a == sample_indices(1000, 32, 7)
    assert a != sample_indices(1000, 32, 8)


def test_replay_needs_a_backward():
    with gradtrace.trace() as t:
        X @ torch.randn(3, 1, requires_grad=True)
    with pytest.raises(Exception, match="no backward"):
        Replay(t.steps[0], ())


def test_numel_bound_of_the_ops_sized_after_they_run():
    """The replay sizes broadcasting ops from their inputs' shapes (no meta device, whose
    first use imports much of torch); every other op stays sized on the meta device first."""
    from gradtrace.analysis.numeric import _numel_bound

    t = torch.zeros
    assert _numel_bound("add", [t(3, 1), t(1, 4)], {}) == 12          # broadcast
    assert _numel_bound("matmul", [t(5, 2), t(2, 7)], {}) >= 5 * 7    # a bound, never less
    assert _numel_bound("pow", [t(6), 2], {}) == 6
    assert _numel_bound("sum", [t(4, 3)], {"dim": [0], "keepdim": True}) == 12
    assert _numel_bound("reshape", [t(4, 3), (2, 6)], {}) == 12
    assert _numel_bound("repeat", [t(2), 1000, 1000], {}) is None    # grows from its numbers
    assert _numel_bound("expand", [t(1), [10**6]], {}) is None
    assert _numel_bound("add", [t(2), "text"], {}) is None            # an argument it cannot read


@pytest.mark.slow  # a new interpreter: what it imports is the point (3.7 s)
def test_the_check_imports_neither_dynamo_nor_sympy(tmp_path):
    """The numeric check of a small fit runs without torch._dynamo or sympy (over a second of
    imports on the user's path at the end of gradtrace run)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""\
        import sys, torch, gradtrace
        torch.manual_seed(0)
        X = torch.randn(16, 2); y = X @ torch.tensor([[2.0], [-3.4]]) + 4.2
        w = torch.zeros(2, 1, requires_grad=True); b = torch.zeros(1, requires_grad=True)
        with gradtrace.trace({str(tmp_path / 't.gtrace')!r}) as t:
            for i in range(3):
                loss = ((X @ w + b - y) ** 2).sum() / 2
                loss.backward()
                with torch.no_grad():
                    w -= 0.01 * w.grad; b -= 0.01 * b.grad
                    w.grad.zero_(); b.grad.zero_()
        report = t.result.check(numeric="all")
        assert report.of("numeric") and all(c.passed for c in report.of("numeric")), report
        print(sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


def test_a_gradient_with_respect_to_an_intermediate_varies_it_not_its_inputs():
    """torch.autograd.grad(loss, h) with h = X @ w (a gradient penalty's first step): the
    replay varies h itself; the op that made h is not run again from w (the gradient was
    0 and the check said WRONG)."""
    torch.manual_seed(0)
    X, w, c = torch.randn(6, 3), torch.randn(3, 4, requires_grad=True), torch.randn(6, 4)
    with gradtrace.trace() as t:
        h = X @ w
        (g,) = torch.autograd.grad((h.tanh() * c).sum(), h)
    step = t.result.steps[0]
    rp, values = replay_of(step)
    [tid] = values
    assert step.tensors[tid].role == "activation"  # h, not the parameter w
    replayed = ErrorModel(rp, values).gradient[tid]  # the float64 replay's own gradient
    torch.testing.assert_close(replayed.float(), g, rtol=1e-5, atol=1e-6)
    [check] = numeric_check(step)
    assert check.status == "pass", check.detail


def test_a_kink_near_the_point_does_not_make_a_correct_relu_wrong():
    """relu(x w + c) with the first row's input 1e-8 > 0: autograd's derivative is x summed,
    3. Central differences of steps down to 6e-6 / 256 all reach across relu's kink (they
    measured 2.5 and the check said WRONG). A ReLU is replayed on the branch the run took
    (its recorded input's sign), so any step measures the derivative there."""
    x = torch.tensor([[1.0], [2.0]])
    c = torch.tensor([[0.0], [3.0]])
    w = torch.tensor([[1e-8]], requires_grad=True)
    with gradtrace.trace() as t:
        F.relu(x @ w + c).sum().backward()
    step = t.result.steps[0]
    rp, values = replay_of(step)
    assert rp.fd_eps == pytest.approx(6e-8)
    checks = numeric_check(step)
    assert checks and all(c.status == "pass" for c in checks), [c.detail for c in checks]
    # as the check asks: good to a tenth of float32's bound, retried with h / 16 till then
    fd = finite_differences(rp, values, t.find("w").tid, [0], target=torch.tensor([1e-7]))
    assert float(fd.fd[0]) == pytest.approx(3.0, rel=1e-6)  # x summed: 1 + 2, both on the live side
    # a point 10x past the kink is still measured on the run's branch: row 0 is not cut to 0
    past = dict(values)
    past[t.find("w").tid] = torch.tensor([[-1e-7]], dtype=torch.float64)
    assert rp(past) == pytest.approx(3.0 - 3e-7, abs=1e-12)


# -- ops in place -------------------------------------------------------------------------------
_IN_PLACE = {
    "h.relu_()": lambda h: h.relu_(),
    "torch.relu_(h)": lambda h: torch.relu_(h),
    "h.masked_fill_(h > 1, 0.5)": lambda h: h.masked_fill_(h > 1, 0.5),
    "h.clamp_(min=-0.5, max=0.7)": lambda h: h.clamp_(min=-0.5, max=0.7),
    "h.exp_()": lambda h: h.exp_(),
    "h += 1; h *= 0.5": lambda h: h.__iadd__(1).__imul__(0.5),
    "F.relu(h, inplace=True)": lambda h: F.relu(h, inplace=True),
    "F.leaky_relu(h, 0.1, True)": lambda h: F.leaky_relu(h, 0.1, True),
    "h[h < -0.5] = 0": lambda h: h.__setitem__(h < -0.5, 0),
    "h[:, 0] = 0": lambda h: h.__setitem__((slice(None), 0), 0),
    "h.narrow(1, 1, 2).mul_(2.0)": lambda h: h.narrow(1, 1, 2).mul_(2.0),
}


def _in_place_step(change, cube_factor=None):
    g = torch.Generator().manual_seed(3)
    w1 = torch.randn(3, 4, generator=g).requires_grad_()
    w2 = torch.randn(4, 1, generator=g).requires_grad_()
    with gradtrace.trace() as t:
        h = X @ w1
        change(h)
        if cube_factor is not None:
            Cube.factor = cube_factor
            h = Cube.apply(h, 0.5)
        F.mse_loss(h @ w2, Y).backward()
    Cube.factor = 1.0
    return t.result.steps[0]


@pytest.mark.parametrize("what", list(_IN_PLACE))
def test_an_op_in_place_replays_on_a_copy_and_its_gradients_pass(what):
    """h.relu_() gives its output h's tid: the replay names the two values apart, runs the
    op on a copy where it must (a leaf the error model differentiates may not be changed in
    place) and the check passes correct code."""
    step = _in_place_step(_IN_PLACE[what])
    checks = numeric_check(step)
    assert [c.status for c in checks] == ["pass", "pass"], [c.detail for c in checks]
    rp, values = replay_of(step)
    before = {t: v.clone() for t, v in values.items()}
    env = rp.forward(values)
    assert all(torch.equal(values[t], before[t]) for t in values)  # the leaves stay as they were
    assert all(torch.equal(c, step.value(t).data.double()) for t, c in rp.constants.items())
    torch.testing.assert_close(env[rp.roots[0]].float(), step.value(step.backward.roots[0]).data)
    # the value the op in place made has a tid of the replay's own (the ops after it read it)
    renamed = [o for o in rp.runs if o.outputs and o.outputs[0] < 0]
    assert renamed and all(rp.origin[o.outputs[0]] in o.inputs
                           or rp.origin.get(o.inputs[0]) == rp.origin[o.outputs[0]] for o in renamed)


def test_a_wrong_custom_function_after_an_op_in_place_still_fails():
    step = _in_place_step(_IN_PLACE["h.relu_()"], cube_factor=2.0)
    assert [c.status for c in numeric_check(step)] == ["fail", "pass"]
    rp, values = replay_of(step)
    assert [b.name for b in blame_functions(rp, values, 1e-3)] == ["Cube"]


@pytest.mark.parametrize("what", ["h.mul_(2)", "h[:, 0] = 3", "F.relu(h, inplace=True)"])
def test_an_activation_changed_in_place_under_no_grad_makes_the_step_not_applicable(what):
    """autograd does not see a change made under no_grad, so its gradient (of (h ** 2).sum():
    2 h X with h changed) is no derivative of what the step computed, and the replay's
    finite differences (of the change too) disagree with it: not applicable, never WRONG."""
    change = {"h.mul_(2)": lambda h: h.mul_(2), "h[:, 0] = 3": lambda h: h.__setitem__((slice(None), 0), 3),
              "F.relu(h, inplace=True)": lambda h: F.relu(h, inplace=True)}[what]
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 4, generator=g).requires_grad_()
    with gradtrace.trace() as t:
        h = X @ w
        with torch.no_grad():
            change(h)
        (h ** 2).sum().backward()
    checks = numeric_check(t.result.steps[0])
    assert [c.status for c in checks] == ["not_applicable"]
    assert "changed in place where autograd does not see it" in checks[0].detail
    assert f"{HERE}:" in checks[0].detail and "torch.no_grad()" in checks[0].detail
