"""A d2l-style loop for the tests that plant a bug in gradtrace's recording code: every kind
of torch call the mode handles (forward ops, backward, in-place updates under no_grad,
``.grad.zero_()``, ``.grad = None``, ``.data = ...``), and what they should find."""

from __future__ import annotations

import torch

import gradtrace

INTERNAL = "gradtrace: internal error while recording (RuntimeError: planted)"


def loop(steps: int = 4) -> list[torch.Tensor]:
    """Train a line; the final parameters."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
    w = (torch.randn(3, 1, generator=g) * 0.1).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    for k in range(steps):
        loss = ((X @ w + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
            b.data = b.data - 0.1 * b.grad
        w.grad.zero_()
        b.grad = None
    return [w.detach().clone(), b.detach().clone()]


def planted(*_args, **_kwargs):
    raise RuntimeError("planted")


def run_with(monkeypatch, capfd, target, name, tmp_path):
    """The loop traced with ``target.name`` raising: the same parameters as untraced, one
    line about it on stderr, and a trace that loads."""
    plain = loop()
    monkeypatch.setattr(target, name, planted)
    path = tmp_path / "planted.gtrace"
    with gradtrace.trace(path):
        traced = loop()
    err = capfd.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(plain, traced))  # bit-identical
    assert err.count(INTERNAL) == 1, err
    return gradtrace.load(path)
