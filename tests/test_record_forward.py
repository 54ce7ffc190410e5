"""gradtrace/record/forward.py: the ops that build the graph, the prep ops that fed them unnamed, custom Functions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradtrace
from planted import run_with


def _params():
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(4, 3)
    return w, X


def _names(step):
    return [(o.name, o.is_graph) for o in step.ops]


# -- moved from test_record_recorder.py --------------------------------------------------------
def test_custom_function_by_class_name_with_inner_ops():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    w, X = _params()
    with gradtrace.trace() as t:
        Square.apply(X @ w).sum().backward()
    s = t.steps[0]
    fn = [o for o in s.ops if o.name == "Square"]
    assert len(fn) == 1 and fn[0].target.endswith("Square") and fn[0].is_graph
    assert fn[0].grad_fn == "SquareBackward"
    inner = [o for o in s.ops if o.parent == fn[0].index]
    assert [o.name for o in inner] == ["mul"] and inner[0].outputs == fn[0].outputs
    assert any(n.op == fn[0].index for n in s.backward.nodes)
    assert torch.autograd.Function.__dict__["apply"].__func__.__qualname__ == "Function.apply"


def test_ops_in_index_order_and_by_index():
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    w, X = _params()
    with gradtrace.trace() as t:
        Double.apply(X @ w).sum().backward()
    s = t.steps[0]
    assert [o.index for o in s.ops] == sorted(o.index for o in s.ops)
    node = [n for n in s.backward.nodes if n.name == "DoubleBackward"][0]
    assert s.op(node.op).name == "Double"
    assert s.ops[0].args == ({"tensor": s.ops[0].inputs[0]}, {"tensor": s.ops[0].inputs[1]})


def test_module_classes_and_prep_ops_outside_the_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 1))
    with gradtrace.trace() as t:
        net(torch.randn(3, 2)).sum().backward()
    assert t.info.modules == {"net": "Sequential", "net.0": "Linear"}
    assert [(o.name, o.module) for o in t.steps[0].ops] == [
        ("randn", None), ("linear", "net.0"), ("sum", None)]


def test_an_op_that_returns_its_input_is_no_graph_op():
    w = torch.ones(2, requires_grad=True)
    with gradtrace.trace() as t:
        loss = (w * 3).sum()
        same = loss.to(torch.device("cpu"))
        assert same is loss
        loss.backward()
    s = t.steps[0]
    assert [o.name for o in s.ops] == ["mul", "sum"]
    assert s.backward.roots == (s.ops[-1].outputs[0],)


# -- graph ops ---------------------------------------------------------------------------------
def test_an_in_place_op_on_an_activation_and_a_many_output_op_are_graph_ops():
    torch.manual_seed(0)
    w = torch.randn(3, 2, requires_grad=True)
    X = torch.randn(4, 3)
    with gradtrace.trace() as t:
        h = X @ w
        h.add_(1)
        a, b = h.split(1, dim=1)
        (a * b).sum().backward()
    s = t.steps[0]
    assert _names(s) == [("matmul", True), ("add_", True), ("split", True), ("mul", True), ("sum", True)]
    matmul, add_, split, mul, _ = s.ops
    assert add_.inputs == add_.outputs == matmul.outputs   # the same tensor, changed in place
    assert len(split.outputs) == 2 and mul.inputs == split.outputs
    assert split.grad_fn == "SplitBackward0"
    assert [o.index for o in s.ops] == list(range(5)) and [o.source.code for o in s.ops][-1] == (
        "(a * b).sum().backward()")


@pytest.mark.parametrize("act, name", [(nn.ReLU(inplace=True), "relu"),
                                       (nn.LeakyReLU(inplace=True), "leaky_relu"),
                                       (nn.Hardswish(inplace=True), "hardswish")])
def test_an_activation_module_in_place_is_an_op_in_place(act, name):
    """F.relu(h, inplace=True) returns h itself, changed: an op in place, not `h.to()`."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 1))
    with gradtrace.trace() as t:
        net(torch.randn(3, 4)).sum().backward()
    s = t.steps[0]
    assert _names(s) == [("randn", False), ("linear", True), (name, True), ("linear", True),
                         ("sum", True)]
    first, relu, second = s.ops[1:4]
    assert relu.inputs == relu.outputs == first.outputs and relu.kwargs["inplace"] is True
    assert second.inputs[0] == relu.outputs[0] and relu.module == "net.1"


def test_an_index_assignment_on_an_activation_is_an_op_in_place():
    """`h[mask] = 0` is Tensor.__setitem__, which returns None: its result is h, changed."""
    w, X = _params()
    idx = torch.tensor([0, 2])
    with gradtrace.trace() as t:
        h = X @ w
        h[h < -1] = 0
        h[:, 0] = 0
        h[idx] = torch.ones(1)
        h.sum().backward()
    s = t.steps[0]
    assert _names(s) == [("matmul", True), ("lt", False), ("setitem", True), ("setitem", True),
                         ("ones", False), ("setitem", True), ("sum", True)]
    matmul, lt, masked, column, ones, indexed, total = s.ops
    h = matmul.outputs[0]
    assert all(o.target == "Tensor.__setitem__" and o.outputs == (h,) and o.inputs[0] == h
               for o in (masked, column, indexed))
    assert masked.inputs == (h, lt.outputs[0]) and masked.args[1:] == ({"tensor": lt.outputs[0]}, 0)
    assert len(indexed.inputs) == 3 and indexed.inputs[2] == ones.outputs[0]   # h, idx, value
    assert total.inputs == (h,)


def test_an_op_in_place_under_no_grad_on_an_activation_is_recorded_as_no_graph_op():
    """autograd does not see `h.mul_(2)` under no_grad: recorded, but not as a graph op."""
    w, X = _params()
    with gradtrace.trace() as t:
        h = X @ w
        with torch.no_grad():
            h.mul_(2)
            h[0] = 1.0
        (h ** 2).sum().backward()
        with torch.no_grad():
            h.relu_()                  # after the backward pass: nothing of the step
    s = t.steps[0]
    assert _names(s) == [("matmul", True), ("mul_", False), ("setitem", False), ("pow", True),
                         ("sum", True)]
    assert s.ops[1].outputs == s.ops[2].outputs == s.ops[0].outputs


def test_ops_beyond_max_ops_per_step_are_counted_not_recorded():
    w = torch.ones(2, requires_grad=True)
    n, limit = 6, 4
    with gradtrace.trace(max_ops_per_step=limit) as t:
        h = w
        for _ in range(n - 1):
            h = h * 1.5
        h.sum().backward()
        (w * 2).sum().backward()   # the next step starts with the full allowance again
    first, second = t.steps
    assert [o.name for o in first.ops] == ["mul"] * limit          # the first ones are kept
    assert first.ops_dropped == n - limit and second.ops_dropped == 0
    assert [o.name for o in second.ops] == ["mul", "sum"]
    assert t.info.ops_dropped == n - limit


# -- prep ops ----------------------------------------------------------------------------------
def test_an_unnamed_non_graph_result_that_feeds_the_graph_is_a_prep_op_before_it():
    w, X = _params()
    with gradtrace.trace() as t:
        (X.reshape(-1).flip(0).view(4, 3) @ w).sum().backward()
    s = t.steps[0]
    assert _names(s) == [("reshape", False), ("flip", False), ("view", False),
                         ("matmul", True), ("sum", True)]
    r1, flip, r2, matmul, _ = s.ops
    assert t.name(r1.inputs[0]) == "X"
    assert flip.inputs == r1.outputs and r2.inputs == flip.outputs  # pulled in, inputs first
    assert matmul.inputs[0] == r2.outputs[0] and t.name(matmul.inputs[1]) == "w"
    assert torch.equal(s.value(r2.outputs[0]).data, X.reshape(-1).flip(0).view(4, 3))


def test_a_named_non_graph_result_is_a_leaf_not_a_prep_op():
    w, X = _params()
    with gradtrace.trace() as t:
        X2 = X * 2
        unused = X.mean()  # noqa: F841  (feeds nothing: no op of the step)
        (X2 @ w).sum().backward()
    s = t.steps[0]
    assert _names(s) == [("matmul", True), ("sum", True)]
    assert [t.name(i) for i in s.ops[0].inputs] == ["X2", "w"]


def test_prep_ops_at_the_top_of_the_loop_are_recorded_in_every_step():
    """The prep op made before a step's first graph op belongs to that step: it was lost in
    every step after the first, the step's beginning forgot it."""
    w, X = _params()
    with gradtrace.trace() as t:
        for _ in range(3):
            ((X * 2) @ w).sum().backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
            w.grad = None
    first = _names(t.steps[0])
    assert first == [("mul", False), ("matmul", True), ("sum", True)]
    assert [_names(s) for s in t.steps] == [first] * 3
    for s in t.steps:
        mul, matmul, _ = s.ops
        assert t.name(mul.inputs[0]) == "X" and matmul.inputs[0] == mul.outputs[0]


def test_prep_ops_of_sampled_steps_are_recorded_too():
    w, X = _params()
    with gradtrace.trace(every=2) as t:
        for _ in range(5):
            ((X * 2) @ w).sum().backward()
    assert t.steps.indices == [0, 2, 4]
    assert {tuple(_names(s)) for s in t.steps} == {(("mul", False), ("matmul", True), ("sum", True))}


def test_what_a_forward_left_unused_is_no_prep_op_of_the_next_step():
    """A non-graph result of step 0's forward, fed unnamed to step 1, is not step 1's prep op."""
    w, X = _params()
    kept = []
    with gradtrace.trace() as t:
        kept.append(X * 2)       # made during step 0's forward, before its backward
        (X @ w).sum().backward()
        (kept[0] @ w).sum().backward()
    assert _names(t.steps[1]) == [("matmul", True), ("sum", True)]


# -- custom Functions --------------------------------------------------------------------------
def test_a_function_of_tensors_that_need_no_grad_is_an_op_but_no_graph_op():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g

    a = torch.full((2,), 3.0)
    w = torch.ones(2, requires_grad=True)
    with gradtrace.trace() as t:
        y = Square.apply(a)
        (w * y).sum().backward()
    s = t.steps[0]
    assert [(o.name, o.is_graph, o.grad_fn, o.parent) for o in s.ops] == [
        ("Square", False, None, None), ("mul", False, None, 0),
        ("mul", True, "MulBackward0", None), ("sum", True, "SumBackward0", None)]
    assert [o.name for o in s.graph_ops] == ["mul", "sum"]
    assert s.ops[1].outputs == s.ops[0].outputs and torch.equal(s.value(s.ops[0].outputs[0]).data, a * a)


# -- a bug of gradtrace's never reaches the script; the script's own errors do -----------------
def test_a_bug_after_an_op_leaves_it_unrecorded_and_the_run_as_it_is(monkeypatch, capfd, tmp_path):
    from gradtrace.record.forward import Forward
    t = run_with(monkeypatch, capfd, Forward, "record", tmp_path)
    assert not t.steps[0].ops and len(t.scalars()) == 4  # no op, every step's scalars


def test_an_ops_own_error_reaches_the_script_once():
    X = torch.randn(4, 3)
    w = torch.randn(5, 1, requires_grad=True)
    with gradtrace.trace():
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            X @ w
        y = X @ w[:3]  # and recording goes on
    assert y.shape == (4, 1)
