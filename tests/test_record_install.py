"""gradtrace/record/install.py: whatever a trace installs is gone when it ends, however it ends."""

from __future__ import annotations

import sys

import pytest
import torch

import gradtrace
from gradtrace.record import install


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
