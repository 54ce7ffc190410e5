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


class _Affine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x.mm(weight.t()) + bias

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g.mm(weight), g.t().mm(x), g.sum(0)


class _FunctionLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 2))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return _Affine.apply(x, self.weight, self.bias)


def test_a_parameter_passed_to_a_function_is_named_by_its_module_path_not_the_argument():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = _FunctionLinear(), _FunctionLinear()

        def forward(self, x):
            return self.fc2(self.fc1(x).repeat(1, 2))

    net = Two()
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        net(X).sum().backward()

    def helper(weight):  # a plain function's argument is still a name when nothing better is
        return (X @ weight).sum()

    w = torch.ones(2, 1, requires_grad=True)
    with gradtrace.trace() as t2:
        helper(w).backward()
    names = [p.name for p in t.params]  # weight.t() inside the Function is not one of them
    assert sorted(names) == ["net.fc1.bias", "net.fc1.weight", "net.fc2.bias", "net.fc2.weight"]
    assert {p.name for p in t2.params} == {"w"}


def test_a_view_made_inside_a_function_is_an_activation_every_step():
    """``weight.t()`` in a custom Function's forward is a new tensor each step that requires
    grad and has no grad_fn: it is the Function's intermediate, not a parameter, so the
    trace's parameters stay the module's two however long the run."""
    net = _FunctionLinear()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        for _ in range(3):
            opt.zero_grad()
            net(X).pow(2).mean().backward()
            opt.step()
    tr = t.result
    assert [p.name for p in tr.params] == ["net.weight", "net.bias"]
    for s in tr.steps:
        (view,) = [o for o in s.ops if o.name == "t"]
        assert view.parent is not None and s.tensors[view.outputs[0]].role == "activation"


def test_a_chain_of_prep_ops_calling_one_function_twice_keeps_its_inputs_name():
    """``X.reshape(-1).flip(0).reshape(4, 3)``: the two reshapes are two places to look for a
    name; the unnamed input of the second must not make the first forget ``X``, in any step."""
    X = torch.arange(12.0).reshape(3, 4)
    w = torch.ones(3, 2, requires_grad=True)
    with gradtrace.trace() as t:
        for _ in range(3):
            (X.reshape(-1).flip(0).reshape(4, 3) @ w).sum().backward()
    for s in t.result.steps:
        ops = [(o.name, [s.name(i) for i in o.inputs]) for o in s.ops]
        assert [name for name, _ in ops] == ["reshape", "flip", "reshape", "matmul", "sum"], ops
        assert ops[0][1] == ["X"] and ops[3][1][1] == "w", ops
        assert ops[1][1] != ["X"] and ops[2][1] != ["X"], ops   # the middle links are unnamed


def test_a_modules_buffers_are_named_by_their_module_path():
    # Two blocks whose code says self.bn.running_mean: the path tells them apart
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            return torch.nn.functional.relu(self.bn(self.lin(x)))

    torch.manual_seed(0)
    net = nn.Sequential(Block(), Block())
    X = torch.randn(5, 3)
    with gradtrace.trace() as t:
        net(X).sum().backward()
    names = {t.name(i) for op in t.steps[0].ops for i in op.inputs}
    for k in (0, 1):
        assert {f"net.{k}.bn.running_mean", f"net.{k}.bn.running_var", f"net.{k}.bn.weight",
                f"net.{k}.lin.weight"} <= names
    assert not any("self." in n for n in names)


def test_a_batch_is_named_by_the_loops_variable_after_a_first_call_with_a_temporary():
    # A lazy module is often materialised with a temporary first (net(X[:2])): the name
    # found then is forward's argument; the next steps' batches are the loop's `xb`
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.LazyLinear(2)

        def forward(self, x):
            return self.lin(x).sum()

    torch.manual_seed(0)
    net = Net()
    X = torch.randn(8, 4)
    with gradtrace.trace() as t:
        net(X[:2]).backward()
        for i in range(0, 8, 4):
            xb = X[i:i + 4]
            net(xb).backward()
    firsts = [t.name(s.ops[0].inputs[0]) for s in t.steps]
    assert firsts == ["x", "xb", "xb"]
