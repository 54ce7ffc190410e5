"""render/backprop_scene.py: the explainer's fixed picture (boxes, edges, where they are drawn)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.analysis.graph import build_graph, layers
from gradtrace.formatting import slide_number as fmt_num
from gradtrace.render.animate import animation_of_trace
from gradtrace.render.backprop import backprop_plan
from gradtrace.render.backprop_scene import PICTURE, Scene, SceneNode, _expr, _scene
from gradtrace.render.explorer_graph import OPTIONS, geometry
from gradtrace.tracefile.model import Op


_WIDE: list = []   # recorded once per session: three test files use it


@pytest.fixture(scope="module")
def wide():
    """The hard case for text: four parameters, 256-wide layers, long names."""
    if _WIDE:
        return _WIDE[0]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
    X, y = torch.randn(64, 256), torch.randn(64, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradtrace.trace() as t:
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(X), y).backward()
            opt.step()
    _WIDE.append(t.result)
    return t.result


def test_the_scene_is_the_graph_models_forward_view(wide):
    step = wide.steps[1]
    scene = backprop_plan(wide, step).scene
    model = build_graph(step, "forward", expand=True)
    g = model.graph
    boxes = {a["ref"][1] for _, a in g.nodes(data=True) if a["ref"][0] == "tensor"}
    ops = {o.index: o for o in step.ops}
    boxes |= {ops[a["ref"][1]].outputs[0] for _, a in g.nodes(data=True) if a["ref"][0] == "op"}
    assert set(scene.nodes) == boxes          # the same tensors (every op of this step feeds the loss)
    # every edge of the scene is an edge of the model, between the boxes' nodes
    node_of = {a["ref"][1]: n for n, a in g.nodes(data=True) if a["ref"][0] == "tensor"}
    node_of.update({ops[a["ref"][1]].outputs[0]: n for n, a in g.nodes(data=True) if a["ref"][0] == "op"})
    assert all(g.has_edge(node_of[a], node_of[b]) for a, b in scene.edges)


def test_the_scene_is_placed_where_the_explorer_and_gradtrace_graph_place_it(wide):
    """One graph model, one layout: the picture is the explorer's geometry of the step's
    graph (the both view `gradtrace graph` draws): the same nodes, titles and places; each
    tensor's box is the node of its op (or leaf), centred where graphviz put that node."""
    step = wide.steps[1]
    scene = backprop_plan(wide, step).scene
    # the explorer's options (the graph of `gradtrace graph`), in graph.svg's slide theme
    assert PICTURE == dataclasses.replace(OPTIONS, theme="lecture")
    model = build_graph(step, PICTURE.view, budget=PICTURE.budget)
    geo = geometry(model, PICTURE)
    assert geo.engine == "graphviz" and scene.picture.engine == "graphviz"
    assert scene.picture.to_json() == geo.to_json()
    assert [b["title"] for _, b in sorted(scene.picture.nodes.items())] == model.titles()
    ops = {o.index: o for o in step.ops}
    assert set(scene.box_of) == set(scene.nodes)
    for tid, n in scene.box_of.items():
        kind, x = model.graph.nodes[n]["ref"]
        assert (ops[x].outputs[0] if kind == "op" else x) == tid
        b = geo.nodes[n]
        assert scene.pos[tid] == (b["x"] + b["w"] / 2, b["y"] + b["h"] / 2)
    # every scene edge travels along one of the picture's data edges, between its boxes
    carried = {x: e for e, xs in zip(geo.edges, scene.carries) for x in xs if e["kind"] == "data"}
    assert set(carried) == set(scene.edges)
    for (a, b), e in carried.items():
        assert (e["from"], e["to"]) == (scene.box_of[a], scene.box_of[b])
    # each parameter's AccumulateGrad is in the picture, with its dashed edges into .grad
    acc = {n for n, b in geo.nodes.items() if b["kind"] == "accumulate"}
    assert {scene.shows[n][0] for n in acc} == set(scene.params)
    assert {e["to"] for e in geo.edges if e["kind"] == "grad"} >= acc


def test_the_picture_without_graphviz_is_the_explorers_fallback(wide, monkeypatch, tmp_path):
    """No graphviz: the same fallback as the explorer (the graph's layers, straight edges)."""
    from gradtrace.render import explorer_graph

    monkeypatch.setattr(explorer_graph, "available_engine", lambda requested="auto": "matplotlib")
    step = wide.steps[1]
    scene = backprop_plan(wide, step).scene
    model = build_graph(step, PICTURE.view, budget=PICTURE.budget)
    assert scene.picture.engine == "layers"
    column = {n: c for c, layer in enumerate(layers(model)) for n in layer}
    xs = {n: b["x"] for n, b in scene.picture.nodes.items()}
    assert all((xs[u] < xs[v]) == (column[u] < column[v]) for u in xs for v in xs)
    assert all(e["path"].count("L") == 1 for e in scene.picture.edges)   # straight edges
    anim = animation_of_trace(wide, kind="backprop", dpi=20)
    assert anim.save_frame(len(anim) // 2, tmp_path / "f.png").exists()


def test_an_op_fed_its_own_output_draws(tmp_path):
    """loss.to('cpu') returns its input: not a graph op (the recorder leaves it out), and the
    picture has no self-edge, the loss box keeps the op that made it, no KeyError."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.tensor([3.0, 4.0])
    with gradtrace.trace() as t:
        (x * w).sum().to("cpu").backward()
    step = t.result.steps[0]
    assert not any(set(o.outputs) & set(o.inputs) for o in step.ops)
    plan = backprop_plan(t.result, step)
    assert all(a != b for a, b in plan.scene.edges)
    loss = plan.scene.loss
    assert plan.scene.nodes[loss].expr.startswith("sum(")     # the box keeps the op that made it
    box = plan.scene.picture.nodes[plan.scene.box_of[loss]]
    assert (box["kind"], box["title"]) == ("op", "sum")     # the loss's box is its op's node
    anim = animation_of_trace(t.result, kind="backprop", dpi=20)
    assert anim.save_frame(-1, tmp_path / "f.png").exists()


def test_a_collapsed_graph_keeps_every_tensor_in_a_box(tmp_path):
    """Above the node budget the picture is the collapsed graph of graph.svg: a tensor
    inside a folded module call is shown by the module's node (which records what it holds),
    so every frame still has a box to light."""
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(4, 4), nn.Tanh())], nn.Linear(4, 1))
    X, y = torch.randn(8, 4), torch.randn(8, 1)
    with gradtrace.trace() as t:
        for _ in range(2):
            net.zero_grad()
            nn.functional.mse_loss(net(X), y).backward()
    step = t.result.steps[1]
    plan = backprop_plan(t.result, step)
    scene = plan.scene
    model = build_graph(step, PICTURE.view, budget=PICTURE.budget)
    assert model.collapsed and len(scene.picture.nodes) == len(model)
    assert set(scene.box_of) == set(scene.nodes)
    grouped = {n for n, a in model.graph.nodes(data=True) if a.get("members")}
    assert grouped and any(scene.shows[n] for n in grouped)
    for n in grouped:
        refs = model.graph.nodes[n]["members"]
        assert all(scene.box_of[t] == n for t in scene.shows[n] if ("tensor", t) not in refs)
    lit = {scene.box_of[t] for f in plan.frames for t in f.current}
    assert lit & grouped                       # the backward pass lights the folded calls too
    anim = animation_of_trace(t.result, kind="backprop", dpi=30)
    assert anim.save_frame(len(anim) // 2, tmp_path / "f.png").exists()


# -- the scene of a small step, read off its graph -------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """One step of ``h = x * w; h.add_(1); loss = ((h - y.reshape(2)) ** 2).mean()``: a
    parameter, two data leaves, an op in place and a reshape no gradient flows through."""
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    x = torch.tensor([1.0, 2.0])
    y = torch.tensor([[1.0], [0.0]])
    with gradtrace.trace() as t:
        h = x * w
        h.add_(1)
        loss = ((h - y.reshape(2)) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
    step = t.result.steps[0]
    return t.result, step, _scene(step)


def _tid(trace, name: str) -> int:
    return trace.find(name).tid


def test_each_box_has_the_role_of_its_tensor(small):
    trace, step, scene = small
    x, w, y = (_tid(trace, n) for n in ("x", "w", "y"))
    assert scene.loss == step.backward.roots[0]
    roles = {t: n.role for t, n in scene.nodes.items()}
    assert roles[x] == roles[y] == "input" and roles[w] == "param"
    assert roles[scene.loss] == "loss"
    assert {t for t, r in roles.items() if r == "activation"} == set(scene.nodes) - {x, y, w, scene.loss}
    assert scene.params == (w,)
    # a leaf has no op; every other box names the op that produced it and its shape
    for t, n in scene.nodes.items():
        assert n.tid == t and n.label == step.name(t)
        assert n.shape == tuple(step.tensors[t].shape)
        assert (n.op is None) == (t in (x, y, w))


def test_an_ops_box_carries_its_grad_fn_as_the_backward_pass_names_it(small):
    _, step, scene = small
    grad_fn = {n.op: n.name for n in step.backward.nodes if n.op is not None}
    ops = {o.index: o for o in step.ops}
    for n in scene.nodes.values():
        if n.op is not None:
            assert n.grad_fn == grad_fn.get(n.op)
            assert n.title == ops[n.op].name
            assert n.expr == _expr(ops[n.op], step)


def test_an_op_in_place_takes_over_its_inputs_box(small):
    """h.add_(1) writes h: h keeps one box, made by the op that wrote it last."""
    _, step, scene = small
    mul = next(o for o in step.ops if o.name == "mul")
    add_ = next(o for o in step.ops if o.name == "add_")
    h = mul.outputs[0]
    assert add_.outputs == (h,) and add_.inputs == (h,)
    assert scene.nodes[h].op == add_.index
    assert scene.nodes[h].expr == f"{step.name(h)} + 1"
    assert (h, h) not in scene.edges                   # no edge from the box to itself


def test_an_op_no_gradient_flows_through_is_marked_prep(small):
    trace, step, scene = small
    reshape = next(o for o in step.ops if o.name == "reshape")
    box = scene.nodes[reshape.outputs[0]]
    assert not reshape.is_graph
    assert box.prep and box.grad_fn is None and box.role == "activation"
    assert not any(n.prep for t, n in scene.nodes.items() if t != reshape.outputs[0])


def test_edges_run_from_each_ops_inputs_to_its_output_in_order(small):
    """An op in place (h.add_(1)) adds no edge: h's box keeps the edges of the op that made it."""
    _, step, scene = small
    want: list = []
    for o in step.ops:
        out = o.outputs[0]
        want.extend(e for e in ((i, out) for i in o.inputs if i != out) if e not in want)
    assert list(scene.edges) == want
    for out in {b for _, b in scene.edges}:
        assert scene.edges_into(out) == [e for e in want if e[1] == out]


def test_edges_into_a_leaf_are_none(small):
    trace, _, scene = small
    for name in ("x", "w", "y"):
        assert scene.edges_into(_tid(trace, name)) == []


def test_every_box_is_placed_at_the_centre_of_its_picture_node(small):
    _, _, scene = small
    assert set(scene.pos) == set(scene.box_of) == set(scene.nodes)
    for t, n in scene.box_of.items():
        b = scene.picture.nodes[n]
        assert t in scene.shows[n]
        assert scene.pos[t] == pytest.approx((b["x"] + b["w"] / 2, b["y"] + b["h"] / 2))
    assert len(scene.carries) == len(scene.picture.edges)


def test_the_scene_is_the_same_every_time(small):
    """Deterministic: the same step gives the same boxes, edges and places."""
    _, step, scene = small
    again = _scene(step)
    assert again.nodes == scene.nodes and again.edges == scene.edges
    assert again.pos == scene.pos and again.shows == scene.shows and again.carries == scene.carries


def test_scene_edges_into_keeps_the_order_of_the_edges():
    scene = Scene(nodes={}, edges=((3, 9), (1, 5), (2, 9), (9, 12), (3, 9)), loss=12, params=(),
                  picture=None, shows={}, box_of={}, carries=(), pos={})  # type: ignore[arg-type]
    assert scene.edges_into(9) == [(3, 9), (2, 9), (3, 9)]
    assert scene.edges_into(12) == [(9, 12)]
    assert scene.edges_into(3) == [] and scene.edges_into(99) == []


def test_a_scene_node_is_a_leaf_with_nothing_computed_by_default():
    n = SceneNode(4, "w", "param", (2,))
    assert (n.op, n.expr, n.grad_fn, n.prep, n.title) == (None, "", None, False, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.label = "v"  # type: ignore[misc]


# -- what an op computed, in the script's names (_expr) ---------------------------------------------
NAMES = {0: "x", 1: "w", 2: "b", 3: "y"}
STEP = SimpleNamespace(name=lambda t: NAMES.get(t, f"t{t}"))


def T(tid: int) -> dict:
    """A tensor argument, as an op records it."""
    return {"tensor": tid}


def _op(name: str, *args, **kwargs) -> Op:
    """An op called with ``args`` (tensors as :func:`T`), recorded as the recorder records it."""
    inputs = tuple(a["tensor"] for a in args if isinstance(a, dict))
    return Op(index=0, seq=0, step=0, name=name, target=f"torch.{name}", inputs=inputs,
              outputs=(9,), args=args, kwargs=kwargs, grad_fn=None, module=None,
              parent=None, is_graph=True, source=None)


@pytest.mark.parametrize("name, symbol", [("add", "+"), ("sub", "−"), ("mul", "×"), ("div", "÷"),
                                          ("true_divide", "÷"), ("matmul", "@"), ("mm", "@"),
                                          ("bmm", "@"), ("pow", "**"), ("add_", "+")])
def test_a_binary_op_reads_as_its_symbol(name, symbol):
    assert _expr(_op(name, T(0), T(1)), STEP) == f"x {symbol} w"


def test_a_number_operand_is_written_as_a_number():
    assert _expr(_op("pow", T(0), 2), STEP) == f"x ** {fmt_num(2)}"
    assert _expr(_op("mul", T(1), 0.5), STEP) == f"w × {fmt_num(0.5)}"


def test_an_op_of_numbers_only_is_not_written_as_a_symbol():
    """The symbol needs a tensor operand: two numbers read as a call."""
    assert _expr(_op("add", 1, 2), STEP) == f"add({fmt_num(1)}, {fmt_num(2)})"


def test_rsub_puts_the_number_first():
    assert _expr(_op("rsub", T(3), 1), STEP) == f"{fmt_num(1)} − y"


def test_linear_is_input_times_weight_transposed_plus_bias():
    assert _expr(_op("linear", T(0), T(1), T(2)), STEP) == "x @ wᵀ + b"
    assert _expr(_op("linear", T(0), T(1)), STEP) == "x @ wᵀ"


def test_mse_loss_spells_out_its_reduction():
    assert _expr(_op("mse_loss", T(0), T(3)), STEP) == "mean((x − y)²)"
    assert _expr(_op("mse_loss", T(0), T(3), reduction="sum"), STEP) == "sum((x − y)²)"


@pytest.mark.parametrize("name", ["t", "T", "mT", "transpose"])
def test_a_transpose_reads_as_a_superscript_t(name):
    assert _expr(_op(name, T(1)), STEP) == "wᵀ"


def test_a_reshape_shows_its_shape_when_given_as_a_sequence():
    assert _expr(_op("reshape", T(3), [3, 1]), STEP) == "y.reshape(3, 1)"
    assert _expr(_op("view", T(3), (-1,)), STEP) == "y.view(-1)"
    assert _expr(_op("view", T(3)), STEP) == "y.view(…)"


def test_any_other_op_is_a_call_of_its_inputs_and_numbers():
    assert _expr(_op("sigmoid", T(0)), STEP) == "sigmoid(x)"
    assert _expr(_op("clamp", T(0), 0.0, 1.5), STEP) == f"clamp(x, {fmt_num(0.0)}, {fmt_num(1.5)})"
    assert _expr(_op("sum", T(7)), STEP) == "sum(t7)"           # a tensor without a name


def test_a_flag_is_not_written_as_a_number():
    """bool is an int in Python; ``keepdim=True`` passed by position is no operand."""
    assert _expr(_op("sum", T(0), True), STEP) == "sum(x)"
