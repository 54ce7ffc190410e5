"""analysis/training.py: the series and the surface of runs the animations once crashed on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.analysis.linear import NotApplicable
from gradtrace.analysis.training import loss_surface, training_series


def _two_layer(d_in: int = 300, hidden: int = 40, steps: int = 3):
    """The PyTorch tutorial's two-layer net with hand-written updates (w1 is d_in x hidden)."""
    torch.manual_seed(0)
    x, y = torch.randn(16, d_in), torch.randn(16, 4)
    w1 = torch.randn(d_in, hidden, requires_grad=True)
    w2 = torch.randn(hidden, 4, requires_grad=True)
    for _ in range(steps):
        loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            w1 -= 1e-6 * w1.grad
            w2 -= 1e-6 * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()


def _linear(n_in: int, steps: int = 5):
    """nn.Linear(n_in, 1, bias=False) fitted with SGD and MSELoss."""
    torch.manual_seed(0)
    X = torch.randn(24, n_in)
    y = X @ torch.arange(1.0, n_in + 1).reshape(-1, 1)
    model = nn.Linear(n_in, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def stats_only():
    """w1 (12,000 numbers) is above max_value_numel: only its statistics are kept."""
    with gradtrace.trace(max_value_numel=1000) as t:
        _two_layer()
    return t.result


def test_a_parameter_kept_as_statistics_is_left_out_with_a_reason(stats_only):
    s = training_series(stats_only)
    w1, w2 = stats_only.find("w1").tid, stats_only.find("w2").tid
    assert [p.tid for p in s.tracked] == [w2]
    assert "statistics only" in s.left_out[w1] and w2 not in s.left_out
    assert s.theta().shape == (3, 160)                  # w2 alone; no KeyError for w1
    assert s.grad_theta().shape == (3, 160)
    # its gradient norm is still known, from the statistics
    assert np.isfinite(s.grad_norm[w1]).all()
    acc = [e for e in stats_only.steps[0].events if e.kind == "accumulate" and e.tensor == w1]
    assert acc[0].after.data is None                    # the values really were not kept
    assert s.grad_norm[w1][0] == pytest.approx(acc[0].after.stats.norm)
    S = loss_surface(stats_only, s)
    assert isinstance(S, NotApplicable) and not S


def test_no_parameter_tracked_gives_empty_theta():
    with gradtrace.trace(values="stats") as t:
        _two_layer(steps=2)
    s = training_series(t.result)
    assert s.tracked == [] and len(s.left_out) == 2
    assert s.theta().shape == (2, 0)


def test_a_single_two_number_weight_gets_the_exact_surface():
    """nn.Linear(2, 1, bias=False): one parameter of two numbers (was an IndexError)."""
    with gradtrace.trace() as t:
        _linear(2)
    s = training_series(t.result)
    S = loss_surface(t.result, s)
    assert S and S.exact
    name = t.result.name(s.params[0].tid)
    assert S.labels == (f"{name}[0]", f"{name}[1]")
    np.testing.assert_allclose(S.optimum, [1.0, 2.0], atol=1e-4)


def test_one_number_to_learn_has_no_plane():
    """nn.Linear(1, 1, bias=False): one number; said, not a 0/0 direction."""
    with gradtrace.trace() as t:
        _linear(1)
    with np.errstate(all="raise"):
        S = loss_surface(t.result, training_series(t.result))
    assert isinstance(S, NotApplicable) and "one number to learn" in S.reason


def test_flat_names_name_every_number():
    with gradtrace.trace() as t:
        _linear(3)
    s = training_series(t.result)
    name = t.result.name(s.params[0].tid)
    assert s.flat_names() == [f"{name}[0]", f"{name}[1]", f"{name}[2]"]
