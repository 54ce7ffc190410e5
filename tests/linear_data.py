"""Shared inputs of the analysis/linear tests: a small regression and classification problem,
parameters drawn from their own generator, one recorded step, and the closed form checked
against autograd."""

from __future__ import annotations

import torch

import gradtrace
from gradtrace.analysis.numeric import autograd_gradients

N, D, K = 8, 3, 2
_DATA = torch.Generator().manual_seed(0)  # the draws torch.manual_seed(0) would give
X = torch.randn(N, D, generator=_DATA)
Y2 = torch.randn(N, K, generator=_DATA)
Y1 = torch.randn(N, 1, generator=_DATA)
LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])


def params(*shapes):
    """Leaf parameters of these shapes, the same values on every call."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(*s, generator=g).requires_grad_() for s in shapes]


def one_step(loss_fn):
    """Record one backward of loss_fn() and return its step."""
    with gradtrace.trace() as t:
        loss_fn().backward()
    return t.steps[0]


def agrees(step, fit):
    """The closed form equals what autograd accumulated, to float32 rounding."""
    got = autograd_gradients(step)
    ref = fit.gradient()
    assert set(got) == set(ref)
    for tid in ref:
        torch.testing.assert_close(got[tid].reshape(ref[tid].shape), ref[tid], rtol=1e-5, atol=1e-5)
