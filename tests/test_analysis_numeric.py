"""analysis.numeric: the float64 replay of recorded steps and the finite-difference check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.check import numeric_check
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
