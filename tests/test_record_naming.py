"""record/naming.py: names the way the script names things (variables, attribute paths)."""

from __future__ import annotations

import torch
from torch import nn

import gradtrace


class Scratch(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.zeros(2, 1, requires_grad=True)  # a plain attribute, not a Parameter
        self.b = torch.zeros(1, requires_grad=True)

    def forward(self, X):
        return torch.matmul(X, self.w) + self.b


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, X):
        return self.net(X)


def _fit(model, X):
    loss = model(X).pow(2).mean()
    loss.backward()


def test_a_leaf_no_variable_holds_is_named_by_its_attribute_path():
    model = Scratch()
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        _fit(model, X)
    s = t.steps[0]
    mm = s.ops[0]
    assert [t.name(i) for i in mm.inputs] == ["X", "model.w"]
    assert t.name(s.ops[1].inputs[1]) == "model.b"


def test_a_module_called_through_self_is_named_by_the_scripts_variable():
    model = Wrapper()
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        _fit(model, X)
    lin = t.steps[0].ops[0]
    assert lin.module == "model.net"
    assert [t.name(i) for i in lin.inputs] == ["X", "model.net.weight", "model.net.bias"]


def test_a_variable_still_wins_over_an_attribute_path():
    model = Scratch()
    w = model.w
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        (X @ w).sum().backward()
    assert [t.name(i) for i in t.steps[0].ops[0].inputs] == ["X", "w"]
