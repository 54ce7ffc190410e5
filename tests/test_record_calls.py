"""record/calls.py: the guarded reads of tensor attributes, the territory checks, classify."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradtrace.record import calls


def test_grad_fn_of_a_no_grad_view_whose_base_changed_is_none():
    w = torch.zeros(4, 1, requires_grad=True)
    with torch.no_grad():
        flat = w.view(-1)
        flat[1:3].sub_(1.0)
        with pytest.raises(RuntimeError):
            flat.grad_fn  # what torch does: the read raises
        assert calls.grad_fn_of(flat) is None
        assert calls.base_of(flat) is w and calls.view_root(flat) is w and calls.view_root(w) is w
    y = w * 2
    assert calls.grad_fn_of(y) is y.grad_fn and calls.base_of(y) is None


def test_a_lazy_parameter_is_lazy_until_materialised():
    lin = nn.LazyLinear(2)
    p = lin.weight
    assert calls.is_lazy(p)
    lin(torch.randn(3, 5))
    assert lin.weight is p and not calls.is_lazy(p) and p.shape == (2, 5)


def test_in_transform_inside_torch_func_only():
    seen = []

    def f(x):
        seen.append(calls.in_transform())
        return (x * x).sum()

    assert not calls.in_transform() and not calls.compiling()
    torch.func.grad(f)(torch.ones(3))
    torch.func.vmap(f)(torch.ones(2, 3))
    assert seen == [True, True]


def test_classify_sees_through_the_autograd_patch():
    def wrapper(*a, **k):
        return torch.autograd.grad(*a, **k)

    wrapper.gradtrace_wraps = torch.autograd.grad
    assert calls.classify(wrapper) == calls.BACKWARD
    assert calls.classify(torch.Tensor.add) == calls.OP
