"""gradtrace/record/install.py: whatever a trace installs is gone when it ends, however it ends."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.record import install
from planted import INTERNAL, loop


def _installed():
    from torch.nn.modules import module as m
    from torch.optim import optimizer as o
    from torch.utils.data import dataloader as dl

    return {
        "mode stack": torch._C._len_torch_function_stack(),
        "module pre hooks": dict(m._global_forward_pre_hooks),
        "module hooks": dict(m._global_forward_hooks),
        "optimizer pre hooks": dict(o._global_optimizer_pre_hooks),
        "optimizer post hooks": dict(o._global_optimizer_post_hooks),
        "Function.apply": torch.autograd.Function.__dict__["apply"],
        "DataLoader __next__": dl._BaseDataLoaderIter.__dict__["__next__"],
        "Tensor.backward": torch.Tensor.__dict__["backward"],
        "autograd.backward": torch.autograd.backward,
        "autograd.grad": torch.autograd.grad,
        "profile": sys.getprofile(),
    }


def _train(steps=5):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)
    for _ in range(steps):
        for (X,) in data:
            opt.zero_grad()
            net(X).pow(2).mean().backward()
            opt.step()


@pytest.mark.parametrize("options", [{}, {"every": 3}, {"step_range": (2, 4)}])
def test_nothing_stays_installed_after_a_trace(options):
    before = _installed()
    with gradtrace.trace(**options) as t:
        assert _installed() != before  # something was installed while recording
        _train()
    assert _installed() == before
    assert t.info.status == "completed" and len(t.steps) >= 1


def test_a_failed_installation_removes_what_it_had_installed(monkeypatch):
    before = _installed()

    def broken(*args):
        raise RuntimeError("cannot patch")

    monkeypatch.setattr(install, "_patch_dataloader", broken)  # after the hooks and apply
    with pytest.raises(RuntimeError, match="cannot patch"):
        with gradtrace.trace():
            pass
    assert _installed() == before


def _adam_run(steps, fail_at=None, closure=False, differentiable=False):
    """A small Adam loop; ``fail_at``: a step whose ``opt.step()`` raises (from a hook of
    the optimizer's own, after gradtrace's pre hook), which the loop catches and goes on."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01, differentiable=differentiable)
    X, y = torch.randn(16, 3), torch.randn(16, 1)
    seen = []

    def raise_once(o, args, kwargs):
        seen.append(torch._C._len_torch_function_stack())
        if len(seen) - 1 == fail_at:
            raise RuntimeError("the optimizer's own hook failed")

    opt.register_step_pre_hook(raise_once)
    for _ in range(steps):
        opt.zero_grad()
        if closure:
            def again():
                opt.zero_grad()
                loss = (net(X) - y).pow(2).mean()
                loss.backward()
                return loss
            opt.step(again)
            continue
        (net(X) - y).pow(2).mean().backward()
        try:
            opt.step()
        except RuntimeError:
            pass
    return net, seen


def _adam_updates(step):
    return sum(e.via == "Adam.step()" for e in step.updates)


def test_a_torch_optimizer_steps_with_the_mode_off_and_the_run_is_unchanged(monkeypatch):
    """torch's own optimizer's step() records nothing through the mode (its update is read
    by the optimizer hooks), so the mode is off the stack while it runs: the same ops,
    events and values as with the mode on, the same final parameters, the mode back for
    the next step."""
    plain, _ = _adam_run(4)
    with gradtrace.trace() as t:
        net, depth = _adam_run(4)
    assert depth == [0, 0, 0, 0]  # the optimizer's own hook ran with no mode on the stack
    for a, b in zip(plain.parameters(), net.parameters()):
        assert torch.equal(a, b)
    monkeypatch.setattr(install, "_records_nothing", lambda *args: False)
    with gradtrace.trace() as on:
        _, depth = _adam_run(4)
    assert depth == [1, 1, 1, 1]
    assert len(t.steps) == len(on.steps) == 4

    def facts(step):
        return ([(o.name, o.inputs, o.outputs) for o in step.graph_ops],
                [(e.kind, e.tensor, e.via, None if e.after is None else e.after.array.tobytes())
                 for e in step.events])

    for s, s_on in zip(t.steps, on.steps):
        assert facts(s) == facts(s_on), s.index
        assert len(s.graph_ops) == 6 and _adam_updates(s) == 4, (s.index, s.updates)


def test_a_step_that_raises_gives_the_mode_back_at_the_next_forward():
    with gradtrace.trace() as t:
        _, depth = _adam_run(4, fail_at=1)
    assert depth == [0, 0, 0, 0] and torch._C._len_torch_function_stack() == 0
    counts = [_adam_updates(s) for s in t.steps]
    assert counts == [4, 0, 4, 4], counts  # the failed step updated nothing; the next ones are seen
    assert all(len(s.graph_ops) == 6 for s in t.steps)


@pytest.mark.parametrize("how", ["closure", "differentiable"])
def test_a_step_that_may_record_keeps_the_mode(how):
    """A closure runs a forward and backward pass inside step(); a differentiable
    optimizer's update is part of the graph: the mode stays on for those."""
    with gradtrace.trace() as t:
        _, depth = _adam_run(2, closure=how == "closure", differentiable=how == "differentiable")
    assert depth and all(d == 1 for d in depth), depth
    if how == "closure":
        assert sum(len(s.graph_ops) for s in t.steps) >= 2 * 6  # the closure's forward is recorded


def test_a_closure_that_begins_a_new_step_inside_step_keeps_each_value_in_its_step():
    """LBFGS's closure runs a forward pass inside step(), which begins a new step: the
    update's "before" (the parameter as step() began) is written into the step that holds
    the update, not referred to in the step before (which made the trace unreadable)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.LBFGS(net.parameters(), max_iter=3)
    X, y = torch.randn(16, 3), torch.randn(16, 1)
    starts = []

    def closure():
        opt.zero_grad()
        loss = (net(X) - y).pow(2).mean()
        loss.backward()
        return loss

    with gradtrace.trace() as t:
        for _ in range(2):
            starts.append([p.detach().clone() for p in net.parameters()])
            opt.step(closure)
    updates = [e for s in t.steps for e in s.updates if e.via == "LBFGS.step()"]
    assert len(updates) == 4  # weight and bias, two steps
    for k, e in enumerate(updates):
        start = starts[k // 2][k % 2]
        assert np.array_equal(e.before.array, start.numpy()), (k, e.before)
    assert t.check() is not None  # every step reads back


def test_a_bug_as_a_light_step_ends_never_reaches_the_script(monkeypatch, capfd, tmp_path):
    # budget 0: every step is light, and the patched backward decides the next one
    from gradtrace.record.policy import Policy
    plain = loop()
    calls = {"n": 0}
    decide = Policy.decide

    def flaky(self, step):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("planted")
        return decide(self, step)

    monkeypatch.setattr(Policy, "decide", flaky)
    with gradtrace.trace(tmp_path / "t.gtrace", budget=0) as t:
        traced = loop()
    assert all(torch.equal(a, b) for a, b in zip(plain, traced))
    assert capfd.readouterr().err.count(INTERNAL) == 1
    assert len(t.scalars()) == 4



def test_a_backward_pass_inside_a_backward_pass_is_part_of_it():
    """checkpoint(use_reentrant=True) backpropagates through its block with a
    torch.autograd.backward of its own, inside the outer pass: it was taken for a step, its
    scalars shifted the step's columns, and check found a forgotten zero_grad on the head."""
    from torch.utils.checkpoint import checkpoint

    from gradtrace.analysis.check import check_trace

    torch.manual_seed(0)
    pre, block, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    params = [*pre.parameters(), *block.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(10, 4), torch.randn(10, 1)
    with gradtrace.trace() as t:
        for _ in range(3):
            opt.zero_grad()
            h = checkpoint(block, pre(x), use_reentrant=True)
            torch.nn.functional.mse_loss(head(h), y).backward()
            opt.step()
    sc = t.result.scalars()
    assert len(sc) == 3 and len(t.result.steps) == 3
    for name in ("pre.weight", "head.bias"):
        assert sc.accumulation[:, sc.column(name)].tolist() == [0, 0, 0]
    assert not check_trace(t.result).findings
