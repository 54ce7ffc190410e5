"""analysis.diagnostics: each finding fires where it should and stays quiet where it should not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.diagnostics import effective_lr

HERE = Path(__file__).name  # the source lines recorded here name this file

torch.manual_seed(0)
X = torch.randn(20, 2)
Y = X @ torch.tensor([[2.0], [-3.4]]) + 4.2


def _params():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 1, generator=g).requires_grad_(), torch.zeros(1, requires_grad=True)


def _findings(trace, kind=None):
    report = trace.check(numeric="none")
    return [f for f in report.findings if kind is None or f.kind == kind]


def _train(steps=3, lr=0.01, zero=True, accumulate=1, data=False, X=X, Y=Y):
    """Plain gradient descent on the squared error, with the usual mistakes on request."""
    w, b = _params()
    with gradtrace.trace() as t:
        for i in range(steps):
            for _ in range(accumulate):
                ((X @ w + b - Y) ** 2).mean().backward()
            if data:
                w.data -= lr * w.grad.data
                b.data -= lr * b.grad.data
            else:
                with torch.no_grad():
                    w -= lr * w.grad
                    b -= lr * b.grad
            if zero:
                w.grad.zero_()
                b.grad.zero_()
    return t.result


# -- forgot_zero_grad ------------------------------------------------------------------------------

def test_forgot_zero_grad_is_flagged_at_the_second_step_for_each_parameter():
    found = _findings(_train(zero=False), "forgot_zero_grad")
    assert sorted((f.step, f.param) for f in found) == [(1, "b"), (1, "w")]
    f = found[0]
    assert f.op == "AccumulateGrad" and f.source.startswith(f"{HERE}:")
    assert "updated in between" in f.message and "2 steps" in f.message


def test_zeroing_every_step_is_not_flagged():
    assert _findings(_train(zero=True)) == []


def test_gradient_accumulation_on_purpose_is_not_flagged():
    # three backward passes, one update, one zeroing: the gradients add up on purpose
    t = _train(steps=2, accumulate=3)
    assert [e.idiom for e in t.steps[1].accumulations] == ["added", "added"]
    assert _findings(t, "forgot_zero_grad") == []


def test_optimizer_zero_grad_set_to_none_is_not_flagged():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradtrace.trace() as t:
        for _ in range(3):
            opt.zero_grad()
            F.mse_loss(net(X), Y).backward()
            opt.step()
    assert _findings(t.result) == []


# -- non_finite, lr_unstable, ill_conditioned ------------------------------------------------------

def test_lr_past_the_bound_is_unstable_and_the_first_non_finite_op_is_named():
    # lambda_max of the mean squared error's Hessian here is about 2 * (1 + 1) = 4 (X ~ N(0, 1)
    # plus the bias), so lr = 2 is past 2/lambda_max: the loss grows 9x per step and overflows.
    t = _train(steps=120, lr=2.0)
    found = _findings(t)
    unstable = [f for f in found if f.kind == "lr_unstable"]
    assert len(unstable) == 1
    f = unstable[0]
    assert f.step == 0 and f.param == "w" and "lr = 2 is past the stability bound" in f.message
    lam = 2 / float(f.message.split("2/lambda_max = ")[1].split(" ")[0])
    H = 2 / len(X) * torch.cat([X, torch.ones(len(X), 1)], 1).double().T @ torch.cat([X, torch.ones(len(X), 1)], 1).double()
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-3)
    [nf] = [f for f in found if f.kind == "non_finite"]
    first_inf = next(s.index for s in t.steps if s.loss is not None and s.loss == float("inf"))
    assert nf.step <= first_inf
    assert nf.op == "pow" and "inf" in nf.message and "in the forward pass" in nf.message
    assert nf.source.startswith(f"{HERE}:")


def test_lr_below_the_bound_is_quiet():
    found = _findings(_train(steps=30, lr=0.1))
    assert not [f for f in found if f.kind in ("lr_unstable", "non_finite", "ill_conditioned")]


def test_an_optimizer_that_is_not_gradient_descent_gives_no_learning_rate():
    """LBFGS converges here (loss 6.0 -> 1e-8) with lr=0.5; its step moved the one-number
    bias by 3.2 times its gradient, which read as plain gradient descent with lr = 3.2, past
    2/lambda_max: lr_unstable said "training diverges" on a run that converged."""
    torch.manual_seed(0)
    Xl = torch.randn(50, 3)
    y = Xl @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    lin = torch.nn.Linear(3, 1)
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=5, history_size=5)

    def closure():
        opt.zero_grad()
        loss = F.mse_loss(lin(Xl), y)
        loss.backward()
        return loss

    with gradtrace.trace() as t:
        for _ in range(4):
            last = opt.step(closure)
    assert float(last) < 1e-6
    assert not _findings(t.result, "lr_unstable")


def test_updates_of_one_step_must_agree_to_read_a_learning_rate():
    from types import SimpleNamespace

    from gradtrace.analysis.diagnostics import _agreeing

    line = SimpleNamespace(idiom="p -= … (no_grad)", source=3)
    other = SimpleNamespace(idiom="p -= … (no_grad)", source=4)
    lrs = [(0, 0.1, True, line), (0, 0.1, True, line),      # the same line, the same rate
           (1, 3.2, True, line), (1, 0.5, False, line),     # one not plain: neither is
           (2, 0.1, True, line), (2, 0.2, True, line),      # two rates from one line
           (3, 0.1, True, line), (3, 0.3, True, other)]     # two lines, each its own
    assert [x[2] for x in _agreeing(lrs)] == [True, True, False, False, False, False, True, True]


def test_non_finite_in_the_backward_pass_names_the_backward_node():
    w = torch.zeros(1, requires_grad=True)
    with gradtrace.trace() as t:
        torch.sqrt(w).sum().backward()  # sqrt(0) = 0 is fine; its derivative is inf
    [nf] = _findings(t.result, "non_finite")
    assert nf.step == 0 and nf.op == "sqrt" and "SqrtBackward0" in nf.message and "backward pass" in nf.message


def _masked_attention(mask):
    torch.manual_seed(0)
    q = torch.randn(2, 3, 4, requires_grad=True)
    v = torch.randn(2, 3, 4)
    with gradtrace.trace() as t:
        scores = (q @ q.transpose(1, 2)).masked_fill(mask, float("-inf"))  # padding: -inf
        (scores.softmax(-1) @ v).pow(2).sum().backward()
    return t.result


def test_a_mask_of_minus_inf_that_the_softmax_takes_back_is_not_a_finding():
    mask = torch.tensor([False, False, True]).expand(2, 3, 3)  # the last key is padding
    run = _masked_attention(mask)
    assert _findings(run, "non_finite") == []
    assert run.check().ok


def test_a_row_masked_whole_is_found_at_the_mask():
    mask = torch.tensor([[False, False, False], [False, False, False], [True, True, True]])
    run = _masked_attention(mask.expand(2, 3, 3))  # softmax of all -inf: NaN
    [nf] = _findings(run, "non_finite")
    assert nf.op == "masked_fill" and "in the forward pass" in nf.message


def test_unscaled_features_are_ill_conditioned(demo_trace):
    [f] = _findings(demo_trace("crop_yield"), "ill_conditioned")
    assert f.param == "w" and f.op == "matmul" and f.source == "crop_yield.py:34"
    kappa = float(f.message.split("condition number ")[1].split(" ")[0])
    assert kappa > 1e6
    assert "standardise" in f.message and "slow, zig-zag" in f.message


def test_standardised_features_are_not_ill_conditioned(demo_trace):
    assert _findings(demo_trace("linreg"), "ill_conditioned") == []


# -- no_grad_received, data_update ---------------------------------------------------------------

def test_a_parameter_the_loss_does_not_reach_gets_no_gradient():
    w, b = _params()
    unused = torch.randn(2, 1, requires_grad=True)
    with gradtrace.trace() as t:
        for _ in range(2):
            side = X @ unused  # computed, but not part of the loss
            ((X @ w + b - Y) ** 2).mean().backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
                w.grad = None
                b.grad = None
    [f] = _findings(t.result, "no_grad_received")
    assert f.param == "unused" and f.op == "matmul" and f.step == 0
    assert "never received a gradient" in f.message
    del side


def test_every_parameter_reached_is_quiet():
    assert _findings(_train(), "no_grad_received") == []


def test_updates_through_data_are_noted_once_per_line():
    found = _findings(_train(steps=4, data=True), "data_update")
    assert sorted(f.param for f in found) == ["b", "w"]
    assert all(f.step == 0 and "4 times" in f.message and ".data" in f.op for f in found)


def test_no_grad_updates_and_initialisation_through_data_are_quiet(demo_trace):
    assert _findings(_train(), "data_update") == []
    # linreg_concise initialises its weights through .data before training: not an update to note
    assert _findings(demo_trace("linreg_concise"), "data_update") == []


def test_gd_backprop_updates_through_data(demo_trace):
    report = demo_trace("gd_backprop").check(numeric="none", steps=(0, 50))
    found = [f for f in report.findings if f.kind == "data_update"]
    assert sorted(f.param for f in found) == ["b", "w"]
    assert {f.source for f in found} == {"gd_backprop.py:34", "gd_backprop.py:35"}


# -- the distance to the optimum, the effective learning rate ----------------------------------------

def test_distance_to_the_least_squares_optimum_shrinks(demo_trace):
    report = demo_trace("linreg").check(numeric="none")
    opt = report.optimum
    assert opt is not None and opt.steps == 300 and opt.rows == 3000
    assert [x for row in opt.theta_star["w"] for x in row] == pytest.approx([2.0, -3.4], abs=1e-3)
    assert opt.theta_star["b"] == pytest.approx([4.2], abs=1e-3)
    d = dict(opt.distances)
    assert d[0] > 5 and d[299] < 1e-2 and d[299] < d[100] < d[0]


def test_effective_lr_reads_plain_sgd_and_refuses_momentum():
    before = torch.tensor([1.0, -2.0, 3.0])
    g = torch.tensor([0.5, 0.25, -1.0])
    lr, plain = effective_lr(before, before - 0.03 * g, g)
    assert lr == pytest.approx(0.03, rel=1e-4) and plain
    lr, plain = effective_lr(before, before - 0.03 * g * torch.tensor([1.0, 2.0, 1.0]), g)
    assert not plain
