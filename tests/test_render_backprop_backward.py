"""render/backprop_backward.py: the backward pass told node by node, and what .grad does with it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.formatting import value as fmt_value
from gradtrace.render.backprop import backprop_plan
from gradtrace.render.backprop_backward import (_accumulate_summary, _accumulate_words,
                                                _backward_frames, _local_words, _sum_values,
                                                _target)
from gradtrace.render.backprop_frames import Frame
from gradtrace.tracefile.model import Value

from test_render_backprop_frames import varied  # noqa: F401 (a fixture: 4 steps, every .grad event)


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return 2 * a * g


def _inputs():
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 1)
    X = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    y = torch.tensor([[1.0], [0.0]])
    w = torch.tensor([0.5, -1.5], requires_grad=True)
    return lin, X, y, w


def _loss(lin, X, y, w):
    return torch.nn.functional.mse_loss(lin(X), y) + Square.apply(w).sum() + (w * w).sum()


@pytest.fixture(scope="module")
def mixed():
    """One step with a linear layer (its TBackward0 is a node with no op of its own), a custom
    Function, a tensor that is both inputs of a mul and data that needs no gradient; and the
    gradients torch computes for the same loss, apart from gradtrace."""
    lin, X, y, w = _inputs()
    with gradtrace.trace() as t:
        _loss(lin, X, y, w).backward()
    lin2, X2, y2, w2 = _inputs()
    params = [lin2.weight, lin2.bias, w2]
    expected = [g.detach().numpy() for g in torch.autograd.grad(_loss(lin2, X2, y2, w2), params)]
    step = t.result.steps[0]
    linear = next(o for o in step.ops if o.name == "linear")
    square = next(o for o in step.ops if o.is_function)
    tids = {"weight": linear.inputs[1], "bias": linear.inputs[2], "w": square.inputs[0]}
    want = dict(zip(("weight", "bias", "w"), expected))
    return t.result, step, backprop_plan(t.result, step), tids, want


def _node_frames(plan):
    """The frames of the backward pass after backward()'s start: one per node here."""
    return [f for f in plan.frames if f.phase == "backward"][1:]


def test_the_backward_pass_starts_at_the_loss_with_a_gradient_of_one(mixed):
    _, step, plan, _, _ = mixed
    start = next(f for f in plan.frames if f.phase == "backward")
    loss = plan.scene.loss
    assert start.current == {loss} and start.current_edges == set()
    assert float(start.grads[loss].item()) == 1.0
    assert start.caption.startswith(f"backward() starts at the loss {step.name(loss)} = "
                                    f"{fmt_value(step.value(loss))}: its gradient with respect to itself is 1.")


def test_one_frame_per_node_in_execution_order_each_lighting_its_box(mixed):
    _, step, plan, _, _ = mixed
    nodes = step.backward.execution_order
    frames = _node_frames(plan)
    assert len(frames) == len(nodes)
    out_of = {o.index: o.outputs[0] for o in step.ops if o.outputs}
    for k, (f, n) in enumerate(zip(frames, nodes), 1):
        assert f.caption.startswith(f"Backward {k}/{len(nodes)}: {n.name}")
        if n.variable is not None:
            assert f.current == {n.variable}
        elif n.op is not None:
            assert f.current == {out_of[n.op]}
        else:
            assert f.current == set()            # a step inside an op: only its edge is lit


def test_each_leaf_gets_the_gradient_torch_computes(mixed):
    _, _, plan, tids, want = mixed
    acc = next(f for f in plan.frames if f.phase == "accumulate")
    for name, tid in tids.items():
        np.testing.assert_allclose(acc.grads[tid].array, want[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(acc.cells[tid].grad.array, want[name], rtol=1e-6, err_msg=name)
        assert acc.cells[tid].mark == "fresh"


def test_a_tensor_that_is_both_inputs_gets_the_sum_of_its_two_gradients(mixed):
    """w * w sends w·g to each input: the edge from w carries 2·w·g, and the caption says why."""
    _, step, plan, tids, _ = mixed
    w = tids["w"]
    mul = next(o for o in step.ops if o.name == "mul" and o.inputs == (w, w) and o.parent is None)
    out = mul.outputs[0]
    f = next(f for f in _node_frames(plan) if out in f.current)
    w0 = np.array([0.5, -1.5], dtype=np.float32)          # w; the sum after it sends g = 1
    np.testing.assert_allclose(f.grad_edges[(w, out)].array, 2 * w0)
    assert (w, out) in f.current_edges
    assert f"({step.name(w)} is both inputs, so the two gradients it gets are added)" in f.caption


def test_a_custom_function_runs_its_authors_backward(mixed):
    _, step, plan, tids, _ = mixed
    square = next(o for o in step.ops if o.is_function)
    f = next(f for f in _node_frames(plan) if square.outputs[0] in f.current)
    assert " runs the backward() the Function's author wrote: " in f.caption
    assert "multiplies it by" not in f.caption
    w0 = np.array([0.5, -1.5], dtype=np.float32)
    np.testing.assert_allclose(f.grad_edges[(tids["w"], square.outputs[0])].array, 2 * w0)


def test_a_step_inside_an_op_puts_its_gradient_on_the_ops_edge(mixed):
    """linear's TBackward0 has no op: the weight's gradient it passes on is drawn on the
    weight's edge into linear's box."""
    _, step, plan, tids, want = mixed
    f = next(f for f in _node_frames(plan) if "TBackward0" in f.caption.split(":")[1])
    linear = next(o for o in step.ops if o.name == "linear")
    edge = (tids["weight"], linear.outputs[0])
    assert f.caption.startswith(f"Backward {_node_frames(plan).index(f) + 1}/")
    assert "TBackward0, a step inside an op, transposes it back: " in f.caption
    assert f.current_edges == {edge}
    np.testing.assert_allclose(f.grad_edges[edge].array.reshape(-1), want["weight"].reshape(-1), rtol=1e-6)


def test_an_input_that_needs_no_gradient_is_named(mixed):
    trace, step, plan, _, _ = mixed
    linear = next(o for o in step.ops if o.name == "linear")
    f = next(f for f in _node_frames(plan) if linear.outputs[0] in f.current)
    x = linear.inputs[0]
    assert f"nothing for {step.name(x)}, which does not need a gradient" in f.caption
    assert (x, linear.outputs[0]) not in f.grad_edges


def test_several_nodes_share_a_frame_in_order(mixed):
    _, step, plan, _, _ = mixed
    nodes = step.backward.execution_order
    intro = plan.frames[0]
    acc_by_tid = {e.tensor: e for e in step.accumulations}
    st = intro.snapshot("intro", "")          # the state before backward(), a copy of its own
    frames = _backward_frames(st, step, plan.scene, acc_by_tid, 5)
    assert len(frames) == 1 + -(-len(nodes) // 5)
    body = [f.caption for f in frames[1:]]
    assert body[0].startswith(f"Backward 1/{len(nodes)}: ") and f"  2/{len(nodes)}: " in body[0]
    assert body[-1].startswith(f"Backward {5 * (len(body) - 1) + 1}/{len(nodes)}: ")
    # the running state ends where the walk one node to a frame ends
    one = next(f for f in plan.frames if f.phase == "accumulate")
    assert set(st.grads) == set(one.grads) and set(st.grad_edges) == set(one.grad_edges)


# -- the accumulation summary ----------------------------------------------------------------------------
def test_the_summary_of_fresh_gradients(varied):
    trace, plans = varied
    (e,) = trace.step(0).accumulations
    f = next(f for f in plans[0].frames if f.phase == "accumulate")
    assert f.caption == (f"backward() is done. The leaves' .grad now hold: w.grad = {fmt_value(e.after)} "
                         "(fresh). .grad was None before, so each is exactly this step's gradient.")
    assert not f.alert and f.current == {e.tensor} and f.cells[e.tensor].mark == "fresh"


def test_the_summary_of_gradients_added_onto_zeros(varied):
    trace, plans = varied
    (e,) = trace.step(2).accumulations
    f = next(f for f in plans[2].frames if f.phase == "accumulate")
    assert e.accumulation == "zeros" and not f.alert
    assert fmt_value(e.incoming).startswith("[")         # a list: no parentheses needed
    assert f"w.grad = 0 + {fmt_value(e.incoming)} = {fmt_value(e.after)} (added onto zeros)" in f.caption
    assert f.caption.endswith(" .grad had been cleared, so each is exactly this step's gradient.")
    assert (f.cells[e.tensor].mark, f.cells[e.tensor].note) == ("zeros", "added onto zeros")


def test_the_summary_of_a_gradient_added_to_an_old_one_is_an_alert(varied):
    trace, plans = varied
    (e,) = trace.step(3).accumulations
    f = next(f for f in plans[3].frames if f.phase == "accumulate")
    assert e.accumulation == "added" and f.alert
    assert "(ADDED to the old gradient)" in f.caption
    assert f.caption.endswith("it still contains the previous step's, because nothing cleared .grad "
                              "in between.")
    np.testing.assert_allclose(e.after.array, e.before.array + e.incoming.array, rtol=1e-6)
    assert f.cells[e.tensor].note == f"ADDED to old {fmt_value(e.before)}!"


def test_the_accumulate_grad_frame_of_an_old_gradient_is_an_alert(varied):
    trace, plans = varied
    f = next(f for f in plans[3].frames if f.phase == "backward" and "AccumulateGrad" in f.caption)
    (e,) = trace.step(3).accumulations
    assert f.alert and "backward() ADDS: " in f.caption and "The old gradient was never cleared." in f.caption
    assert f.cells[e.tensor].mark == "added"


def test_a_summary_without_any_gradient_says_so():
    st = Frame("intro", "")
    scene = SimpleNamespace(params=(4,))
    f = _accumulate_summary(st, SimpleNamespace(name=lambda t: "w"), scene, {})
    assert f.caption == "backward() is done, but no leaf received a gradient."
    assert f.phase == "accumulate" and not f.alert and f.current == set()


# -- the small helpers -------------------------------------------------------------------------------------
def _v(*xs: float) -> Value:
    return Value(-1, (len(xs),), "float32", array=np.array(xs, dtype=np.float32))


def _node(name: str, *grad_inputs) -> SimpleNamespace:
    return SimpleNamespace(name=name, grad_inputs=grad_inputs)


def test_a_mean_spreads_its_gradient_over_the_elements_it_averaged():
    assert _local_words(_node("MeanBackward0", _v(*range(6)))) == \
        "spreads it evenly: each of the 6 elements gets 1/6 of it"
    assert _local_words(_node("MeanBackward1", None)) == \
        "spreads it evenly: each of the n elements gets 1/n of it"


def test_a_nodes_words_ignore_its_number():
    assert _local_words(_node("MulBackward0")) == _local_words(_node("MulBackward1")) == \
        "multiplies it by the other factor"


def test_a_node_without_words_of_its_own_is_the_chain_rule():
    assert _local_words(_node("SqBackward")) == "multiplies it by its local derivative (the chain rule)"


def _bw(*nodes) -> SimpleNamespace:
    return SimpleNamespace(nodes=[SimpleNamespace(nid=i, name=n[0], op=n[1], variable=n[2], next=n[3])
                                  for i, n in enumerate(nodes)])


def test_a_gradient_edge_lands_on_a_leaf_or_an_op_through_nodes_without_ops():
    bw = _bw(("AddmmBackward0", 0, None, (1, 3)),
             ("TBackward0", None, None, (2,)),
             ("AccumulateGrad", None, 7, ()),
             ("MulBackward0", 5, None, (None,)))
    assert _target(bw, 2) == (("leaf", 7), [])
    assert _target(bw, 3) == (("op", 5), [])
    where, hidden = _target(bw, 1)
    assert where == ("leaf", 7) and [h.name for h in hidden] == ["TBackward0"]
    assert _target(bw, None) == (None, [])


def test_a_gradient_edge_that_forks_or_loops_lands_nowhere():
    fork = _bw(("CloneBackward0", None, None, (1, 2)), ("AccumulateGrad", None, 1, ()),
               ("AccumulateGrad", None, 2, ()))
    where, hidden = _target(fork, 0)
    assert where is None and [h.name for h in hidden] == ["CloneBackward0"]
    loop = _bw(("A", None, None, (1,)), ("B", None, None, (0,)))
    where, hidden = _target(loop, 0)
    assert where is None and [h.name for h in hidden] == ["A", "B"]


def test_two_gradients_along_one_edge_are_added():
    a, b = _v(1.0, 2.0), _v(0.5, -4.0)
    s = _sum_values(a, b)
    np.testing.assert_array_equal(s.array, np.array([1.5, -2.0], dtype=np.float32))
    assert s.shape == a.shape and s.dtype == a.dtype
    assert _sum_values(None, b) is b


def test_gradients_that_cannot_be_added_keep_the_first():
    a = _v(1.0, 2.0)
    assert _sum_values(a, None) is a
    assert _sum_values(a, _v(1.0, 2.0, 3.0)) is a                        # shapes differ
    stats_only = Value(-1, (2,), "float32", stored_stats=_v(1.0, 1.0).stats)
    assert _sum_values(stats_only, a) is stats_only


def test_the_words_for_a_leaf_reached_without_an_accumulation():
    g = _v(0.25)
    assert _accumulate_words(SimpleNamespace(name=lambda t: "w"), 3, None, g) == \
        (f"the gradient {fmt_value(g)} reaches w.", False)


@pytest.mark.parametrize("kind, bad", [("fresh", False), ("zeros", False), ("added", True)])
def test_the_words_for_each_kind_of_accumulation(kind, bad):
    """A negative incoming gradient is put in parentheses where it is added."""
    before = {"fresh": None, "zeros": _v(0.0), "added": _v(1.25)}[kind]
    inc = _v(-0.5)
    after = inc if before is None else _v(float(before.array[0]) - 0.5)
    e = SimpleNamespace(accumulation=kind, before=before, after=after, incoming=inc)
    words, alert = _accumulate_words(SimpleNamespace(name=lambda t: "w"), 3, e, inc)
    assert alert is bad
    assert fmt_value(inc).startswith("−")
    assert words == {
        "fresh": f"w.grad was None, so it becomes the incoming gradient {fmt_value(inc)} (fresh).",
        "zeros": f"w.grad held zeros (it was cleared), so it becomes 0 + ({fmt_value(inc)}) = "
                 f"{fmt_value(after)} (added onto zeros).",
        "added": f"w.grad still held {fmt_value(before)} from before, and backward() ADDS: "
                 f"{fmt_value(before)} + ({fmt_value(inc)}) = {fmt_value(after)}. The old gradient "
                 "was never cleared.",
    }[kind]


def test_the_incoming_gradient_is_the_nodes_when_the_event_has_none():
    e = SimpleNamespace(accumulation="zeros", before=_v(0.0), after=_v(2.0), incoming=None)
    words, _ = _accumulate_words(SimpleNamespace(name=lambda t: "w"), 3, e, _v(2.0))
    assert words == f"w.grad held zeros (it was cleared), so it becomes 0 + {fmt_value(_v(2.0))} = " \
                    f"{fmt_value(_v(2.0))} (added onto zeros)."
