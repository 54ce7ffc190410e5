"""The backprop explainer's scene and frames: one graph model and one layout, slide-sized
frames, text that fits its boxes at a legible size, plain text only."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch
from matplotlib.text import Text
from PIL import Image
from torch import nn

import gradtrace
from gradtrace.analysis.graph import build_graph, layers
from gradtrace.cli.animate import _inches
from gradtrace.render.animate import AnimateOptions, animation_of_trace
from gradtrace.render.backprop import MIN_FONT_PX, backprop_plan
from gradtrace.render.backprop_scene import PICTURE
from gradtrace.render.explorer_graph import OPTIONS, geometry

from conftest import gradtrace_cmd


@pytest.fixture(scope="module")
def wide():
    """The hard case for text: four parameters, 256-wide layers, long names."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
    X, y = torch.randn(64, 256), torch.randn(64, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradtrace.trace() as t:
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(X), y).backward()
            opt.step()
    return t.result


def _frames(trace, frames=None, **options):
    """(renderer, figure) after each frame is drawn (all, or the indices in ``frames``;
    a negative index counts from the end)."""
    anim = animation_of_trace(trace, kind="backprop", **options)
    picked = None if frames is None else [i % len(anim) for i in frames]
    for _ in anim.images(frames=picked):
        yield anim.renderer, anim.renderer.fig


def _texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


# -- one graph model, one ranking ------------------------------------------------------------------
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


# -- frame size ------------------------------------------------------------------------------------
def test_backprop_frames_are_slide_sized_by_default(wide):
    o = AnimateOptions(kind="backprop").resolved()
    assert o.size[0] * o.dpi >= 1600
    im = animation_of_trace(wide, kind="backprop").frame(0)
    assert im.size == (1920, 1080)


def test_cli_size_takes_pixels_or_inches():
    assert _inches("1600x900", "backprop", None) == (20.0, 11.25)       # 80 dpi
    assert _inches("1000x500", "backprop", 100) == (10.0, 5.0)
    assert _inches("12x6.75", "training", None) == (12.0, 6.75)          # inches pass through
    assert _inches("30x20px", "backprop", 10) == (3.0, 2.0)
    assert _inches("big", "backprop", None) == "big"                      # AnimateOptions says no
    assert _inches(None, "backprop", None) is None


@pytest.mark.slow  # `gradtrace animate` in a forked child
def test_animate_size_is_honoured(tmp_path):
    (tmp_path / "fit.py").write_text(textwrap.dedent("""\
        import torch
        w = torch.tensor([0.5], requires_grad=True)
        x = torch.tensor([1.0, 2.0])
        for _ in range(2):
            ((x * w - 1) ** 2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
        """))
    r = gradtrace_cmd("run", "--no-report", "--no-animate", "-o", "t.gtrace", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for size, dpi, want in (("1280x720", [], (1280, 720)), ("8x4.5", ["--dpi", "40"], (320, 180))):
        r = gradtrace_cmd("animate", "t.gtrace", "--kind", "backprop", "--size", size, *dpi,
                          "-o", "f.png", "--no-progress", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        with Image.open(tmp_path / "f.png") as im:
            assert im.size == want
    r = gradtrace_cmd("animate", "t.gtrace", "--kind", "backprop", "--size", "wide",
                      "-o", "f.png", cwd=tmp_path)
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr


# -- text that fits --------------------------------------------------------------------------------
@pytest.mark.slow  # draws every frame of the wide case and measures every text
def test_every_text_fits_its_box_at_a_legible_size(wide):
    """Every frame of the wide case: each text drawn in a box (graph boxes, parameter
    cards, the caption, the title band) lies inside it, and no text is smaller than
    MIN_FONT_PX pixels of a 1600-pixel-wide frame."""
    smallest = float("inf")
    checked = 0
    for renderer, fig in _frames(wide, dpi=40):
        r = fig.canvas.get_renderer()
        for box, text in renderer.fitted:
            assert text.figure is fig
            inner, outer = text.get_window_extent(r), box.get_window_extent(r)
            assert (inner.x0 >= outer.x0 - 1 and inner.x1 <= outer.x1 + 1
                    and inner.y0 >= outer.y0 - 1 and inner.y1 <= outer.y1 + 1), (text.get_text(), inner, outer)
            checked += 1
        width_px = fig.get_size_inches()[0] * fig.dpi
        for t in _texts(fig):
            px = t.get_fontsize() * fig.dpi / 72 * 1600 / width_px
            smallest = min(smallest, px)
    assert checked > 500
    assert smallest >= MIN_FONT_PX - 1e-6


def test_long_heads_fall_back_to_the_graphs_name_of_the_op(wide):
    """A box is headed as gradtrace graph names its node, then the tensor the captions name
    (``linear → t10``) where the box graphviz made has room, else the graph's name alone
    (``mse_loss``), never the op spelled out (``t10 = X @ model.0.weightᵀ + model.0.bias``). A
    parameter in a module's box drops the module's name first (``weight``), and a grad_fn
    its arrow, then ends in an ellipsis."""
    # the last frame, where every op has run (drawn alone: the same texts as after all 20)
    [(renderer, fig)] = _frames(wide, frames=[-1], dpi=40)
    shown = [t.get_text() for t in _texts(fig)]
    titles = {b["title"] for b in renderer.plan.scene.picture.nodes.values()}
    assert "linear → t10" in shown and "relu → t11" in shown and "linear" in titles
    assert {"mse_loss → t13", "mse_loss"} & set(shown) and "loss" in set(shown) & titles
    assert not any(t.startswith("t10 =") for t in shown)
    for name in ("model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"):
        assert {name, name.split(".", 1)[1], name.rsplit(".", 1)[1]} & set(shown), name
    assert {"model", "model.0", "model.2"} <= set(shown)   # the modules' boxes, as in graph.svg
    # the grad_fn, shortened where the box graphviz made for "linear" is narrower
    assert any(len(t) > 4 and ("⟵ AddmmBackward0".startswith(t.rstrip("…"))
                               or "AddmmBackward0".startswith(t.rstrip("…"))) for t in shown)


@pytest.mark.slow  # draws every frame of the explainer
def test_text_is_never_mathtext(tmp_path):
    """A name with dollar signs is drawn as it is written."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("cost$1$", nn.Linear(2, 1))
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        for _ in range(2):
            net.zero_grad()
            net(X).pow(2).mean().backward()
    texts = []
    for _, fig in _frames(t.result, dpi=20):
        texts = _texts(fig)
    dollars = [x for x in texts if "$" in x.get_text()]
    assert dollars
    for x in texts:
        assert x._preprocess_math(x.get_text()) == (x.get_text(), False)


# -- the explainer's modules ------------------------------------------------------------------------
def test_the_explainers_names_import_from_backprop():
    """backprop.py is the entry point of its family of modules: the names that moved to
    backprop_plan, backprop_scene, backprop_frames, backprop_panels and fit are the same
    objects when imported from it."""
    from gradtrace.render import (backprop, backprop_frames, backprop_panels, backprop_plan,
                                  backprop_scene, fit)

    moved = {backprop_plan: ("Plan", "backprop_plan", "pick_step", "_script_name"),
             backprop_scene: ("Scene", "SceneNode", "_scene"),
             backprop_frames: ("Frame", "ParamCell", "_acc_mark"),
             backprop_panels: ("MIN_FONT_PX",),
             fit: ("_Fit",)}
    for module, names in moved.items():
        for name in names:
            assert getattr(backprop, name) is getattr(module, name), name
            assert name in backprop.__all__
    assert issubclass(backprop.BackpropRenderer, (backprop_panels._GraphPanel, backprop_panels._CardsPanel))


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
