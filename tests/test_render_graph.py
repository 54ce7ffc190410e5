"""The graph model (analysis.graph) and its pictures (render.graph), on recorded seed steps."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import xml.etree.ElementTree as ET

import networkx as nx
import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.analysis.graph import build_graph
from gradtrace.errors import UsageError
from gradtrace.render import graph as rg
from gradtrace.render.graph import GraphOptions, fmt_number, graph_of_step, to_dot

from conftest import DEMOS, record_demo

_TRACES: dict = {}


def first_steps(name: str):
    """demos/<name>.py with only steps 0-1 recorded (the rest runs unrecorded, so it is quick)."""
    if name not in _TRACES:
        _TRACES[name] = record_demo(name, None, step_range=(0, 2))[0].result
    return _TRACES[name]


@pytest.fixture(scope="module")
def d2l():
    return first_steps("linreg").steps[0]


def label(m, n) -> str:
    """A node as a reader tells it apart: AccumulateGrad nodes by the .grad they write."""
    a = m.graph.nodes[n]
    return f"{a['title']} {a['detail']}" if a["kind"] == "accumulate" else a["title"]


def edges(m) -> set[tuple[str, str, str]]:
    return {(label(m, u), label(m, v), a["kind"]) for u, v, a in m.graph.edges(data=True)}


def node(m, title: str, kind: str | None = None) -> dict:
    (n,) = m.find(title, kind)
    return m.graph.nodes[n]


# -- the graph model of the d2l step ----------------------------------------------------------
def test_d2l_forward_view(d2l):
    m = build_graph(d2l, view="forward")
    assert m.titles() == ["X", "w", "matmul", "b", "add", "y", "reshape", "sub", "pow", "div",
                          "sum", "loss"]
    kinds = {a["title"]: a["kind"] for _, a in m.graph.nodes(data=True)}
    assert kinds["w"] == kinds["b"] == "param" and kinds["X"] == kinds["y"] == "input"
    assert kinds["reshape"] == "prep" and kinds["loss"] == "loss"
    assert edges(m) == {(u, v, "data") for u, v in [
        ("X", "matmul"), ("w", "matmul"), ("matmul", "add"), ("b", "add"), ("add", "sub"),
        ("y", "reshape"), ("reshape", "sub"), ("sub", "pow"), ("pow", "div"), ("div", "sum"),
        ("sum", "loss")]}
    shape = {(label(m, u), label(m, v)): a["shape"] for u, v, a in m.graph.edges(data=True)}
    assert shape[("X", "matmul")] == (10, 2) and shape[("w", "matmul")] == (2, 1)
    assert shape[("b", "add")] == (1,) and shape[("sum", "loss")] == ()
    assert node(m, "pow")["detail"] == "· ** 2" and node(m, "div")["detail"] == "· / 2"
    assert node(m, "matmul")["source"].short == "linreg.py:39"
    assert all(a["grad"] is None for _, a in m.graph.nodes(data=True))  # forward: no gradients


def test_d2l_backward_view(d2l):
    m = build_graph(d2l, view="backward")
    assert sorted(m.titles()) == sorted(["loss", "SumBackward0", "DivBackward0", "PowBackward0",
                                         "SubBackward0", "AddBackward0", "MmBackward0",
                                         "AccumulateGrad", "AccumulateGrad", "w", "b"])
    assert edges(m) == {(u, v, "grad") for u, v in [
        ("loss", "SumBackward0"), ("SumBackward0", "DivBackward0"), ("DivBackward0", "PowBackward0"),
        ("PowBackward0", "SubBackward0"), ("SubBackward0", "AddBackward0"),
        ("AddBackward0", "MmBackward0"), ("AddBackward0", "AccumulateGrad → b.grad"),
        ("MmBackward0", "AccumulateGrad → w.grad"), ("AccumulateGrad → b.grad", "b"),
        ("AccumulateGrad → w.grad", "w")]}
    assert node(m, "MmBackward0")["detail"] == "of matmul"
    # no gradient flows to the data: X and y are not in the grad_fn graph
    assert not m.find("X") and not m.find("y")


def test_d2l_both_view(d2l):
    m = build_graph(d2l, view="both")
    fwd = build_graph(d2l, view="forward")
    assert m.titles()[:len(fwd)] == fwd.titles()
    assert m.titles()[len(fwd):] == ["AccumulateGrad", "AccumulateGrad"]
    assert edges(m) == {(u, v, "data") for u, v, _ in edges(fwd)} | {
        ("matmul", "AccumulateGrad → w.grad", "grad"), ("AccumulateGrad → w.grad", "w", "grad"),
        ("add", "AccumulateGrad → b.grad", "grad"), ("AccumulateGrad → b.grad", "b", "grad")}
    assert node(m, "matmul")["note"] == "backward: MmBackward0"
    assert m.kinds == ["param", "input", "op", "prep", "loss", "accumulate"]


@pytest.mark.parametrize("view", ["forward", "backward", "both"])
def test_ids_are_sequential_and_topological(d2l, view):
    m = build_graph(d2l, view=view)
    assert list(m.graph.nodes) == list(range(len(m)))
    for u, v, a in m.graph.edges(data=True):
        if a["kind"] == "data" or view == "backward":
            assert u < v
    again = build_graph(d2l, view=view)
    assert list(again.graph.nodes(data="title")) == list(m.graph.nodes(data="title"))
    assert list(again.graph.edges(data="shape")) == list(m.graph.edges(data="shape"))


def test_values_and_grads_are_the_recorded_ones(d2l):
    m = build_graph(d2l, view="both")
    tid = {d2l.name(t): t for t in d2l.values}
    X, y, w, b = (d2l.value(tid[k]).data for k in "Xywb")
    for name in "wb":
        a = node(m, name)
        assert torch.equal(a["data"].data, d2l.value(tid[name]).data)
        (acc,) = [n for n in d2l.backward.nodes if n.variable == tid[name]]
        (event,) = [e for e in d2l.accumulations if e.tensor == tid[name]]
        assert torch.equal(a["grad"].data, acc.grad_outputs[0].data)
        assert torch.equal(a["grad"].data, event.incoming.data)
    # and they are the calculus of the lesson: L = sum((Xw + b - y)^2 / 2)
    diff = X @ w + b - y
    assert torch.allclose(node(m, "w")["grad"].data, X.T @ diff, rtol=1e-5, atol=1e-5)
    assert torch.allclose(node(m, "b")["grad"].data, diff.sum(0), rtol=1e-5, atol=1e-5)
    assert torch.allclose(node(m, "matmul")["data"].data, X @ w)
    assert torch.allclose(node(m, "sub")["grad"].data, diff, rtol=1e-5, atol=1e-6)
    assert torch.allclose(node(m, "pow")["grad"].data, torch.full((10, 1), 0.5))
    loss = node(m, "loss")
    assert loss["data"].item() == pytest.approx(float((diff ** 2 / 2).sum()), rel=1e-5)
    assert loss["grad"].item() == 1.0


def test_number_format():
    assert [fmt_number(x) for x in (0.0, -0.0, 188.02503, 1e-6, -2.5e-5, 12345678.0, float("nan"),
                                     float("-inf"), 3, True)] == \
        ["0", "0", "188", "1e-6", "-2.5e-5", "1.235e7", "nan", "-inf", "3", "True"]


# -- pictures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def script_param():
    """A parameter whose name is markup, recorded for real (as test_report does)."""
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    evil = "<script>alert(1)</script>"
    net.register_parameter(evil, nn.Parameter(torch.ones(1)))
    with gradtrace.trace() as t:
        (net(torch.randn(3, 2)).sum() * getattr(net, evil)).backward()
    return t.result.steps[0]


def test_labels_are_escaped(script_param):
    step = script_param
    # one more name with every character DOT and XML care about
    (tid,) = [t for t, i in step.tensors.items() if i.name == "net.weight"]
    tensors = dict(step.tensors)
    tensors[tid] = dataclasses.replace(tensors[tid], name='w"\\N<b>&amp;</b>\n]$')
    step = dataclasses.replace(step, tensors=tensors)
    picture = graph_of_step(step, view="both")
    labels = re.findall(r"label=<(.*)>, tooltip=", picture.dot)
    assert labels and not any("<script" in x or "<b>" in x for x in labels)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in picture.dot
    # tooltips are DOT strings: quotes and backslashes escaped, so they cannot end early
    assert 'tooltip="net.<script>alert(1)</script> (1,)' in picture.dot
    assert 'tooltip="w\\"\\\\\\\\N<b>&amp;amp;</b>\\n]$ (1, 2)' in picture.dot
    svg = picture.svg()
    ET.fromstring(svg)                       # well-formed: no label broke out of its element
    assert "<script" not in svg.lower() and "<b>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "w&quot;\\N&lt;b&gt;&amp;amp;&lt;/b&gt;" in svg   # the backslash survives graphviz
    mpl = graph_of_step(step, view="both", engine="matplotlib").svg()
    assert "<script" not in mpl.lower() and "&lt;script&gt;" in mpl
    assert 'w"\\N&lt;b&gt;&amp;amp;&lt;/b&gt;' in mpl            # and "$" is not mathtext
    ET.fromstring(mpl)


def test_jupyter_repr(d2l, monkeypatch):
    picture = d2l.graph(view="forward")
    svg = picture._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and ">w<" in svg
    bundle = picture._repr_mimebundle_()
    # the notebook's SVG fits the cell's width (issue 14); otherwise it is the same picture
    fitted = bundle["image/svg+xml"]
    assert '<svg style="max-width:100%;height:auto"' in fitted
    assert fitted.replace(' style="max-width:100%;height:auto"', "", 1) == svg
    assert "view forward" in bundle["text/plain"]

    def broken(*a, **k):
        raise RuntimeError("no layout today")

    monkeypatch.setattr(rg, "render_bytes", broken)
    fresh = d2l.graph(view="forward")
    assert fresh._repr_svg_() is None                       # never raises in a notebook
    assert "no layout today" in fresh._repr_mimebundle_()["text/plain"]


def test_fallback_without_graphviz(d2l, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rg.shutil, "which", lambda name: None)   # no `dot` on PATH
    monkeypatch.setitem(sys.modules, "pygraphviz", None)         # and pygraphviz not importable
    monkeypatch.setattr(rg, "_HINTED", False)
    assert rg.available_engine() == "matplotlib"
    with pytest.raises(gradtrace.RenderError, match="pygraphviz"):
        rg.available_engine("pygraphviz")
    picture = d2l.graph(view="both")
    assert picture.engine == "matplotlib" and picture.hint == rg.HINT
    svg = picture.save(tmp_path / "g.svg").read_text()
    png = picture.save(tmp_path / "g.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "g.dot").exists() is False and picture.save(tmp_path / "g.dot").read_text() \
        == graph_of_step(d2l, view="both").dot               # DOT text always works
    ET.fromstring(svg)
    for text in ("w  (2, 1)", "b  (1,)", "X  (10, 2)", "y  (10, 1)", "matmul  (10, 1)",
                 "AccumulateGrad  (2, 1)", "grad: -48.13", "loss  ()"):
        assert f">{text}</text>" in svg
    err = capsys.readouterr().err
    assert err.count("gradtrace: hint:") == 1 and "pip install pygraphviz" in err


def test_the_dot_program_is_used_when_on_path(d2l, tmp_path, monkeypatch):
    # a stand-in `dot` that lays out with the bundled libraries and logs its arguments
    log = tmp_path / "args.txt"
    fake = tmp_path / "dot"
    fake.write_text(f"""#!{sys.executable}
import sys, pygraphviz
open({str(log)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
fmt = [a[2:] for a in sys.argv[1:] if a.startswith("-T")][0]
sys.stdout.buffer.write(pygraphviz.AGraph(string=sys.stdin.read()).draw(format=fmt, prog="dot"))
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    picture = d2l.graph(view="forward")
    assert picture.engine == "dot"
    assert ">matmul<" in picture.svg()
    assert picture.render("png").startswith(b"\x89PNG")
    assert log.read_text().splitlines() == ["-Tsvg", "-Tpng -Gdpi=144"]
    fake.write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n")
    with pytest.raises(gradtrace.RenderError, match="syntax error in line 1"):
        d2l.graph(view="forward").svg()


def test_themes_and_options(d2l):
    lecture = graph_of_step(d2l, view="forward").dot
    light = graph_of_step(d2l, view="forward", theme="light").dot
    dark = graph_of_step(d2l, view="forward", theme="dark").dot
    assert "fontsize=22" in lecture and "fontsize=13" in light
    assert 'bgcolor="#1e1e1e"' in dark and 'bgcolor="#ffffff"' in light
    bare = graph_of_step(d2l, view="forward", values=False, legend=False, title=False).dot
    assert "<I>data</I>" not in bare and "legend" not in bare and "label=\"step 0" not in bare
    assert "<I>data</I>" in lecture and "legend [" in lecture
    assert "rankdir=TB" in graph_of_step(d2l, view="forward", direction="TB").dot
    with pytest.raises(UsageError, match="view must be one of"):
        d2l.graph(view="sideways")
    with pytest.raises(UsageError, match="unknown graph option 'colour'"):
        d2l.graph(colour="red")
    with pytest.raises(UsageError, match="unknown picture type"):
        d2l.graph().save("graph.jpg")


def test_step_without_backward():
    w = torch.ones(2, 1, requires_grad=True)
    with gradtrace.trace() as t:
        (torch.ones(3, 2) @ w).sum()
    step = t.result.steps[-1]
    assert step.backward is None
    m = build_graph(step, view="forward")
    assert m.titles() == ["ones", "w", "matmul", "sum"] and "loss" not in m.kinds  # no loss yet
    with pytest.raises(UsageError, match="no backward pass"):
        build_graph(step, view="both")


def test_in_place_ops_and_autograd_grad():
    w = torch.randn(2, 1, requires_grad=True)
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        h = X @ w
        h.relu_()
        h.sum().backward()
        (g,) = torch.autograd.grad((X @ w).pow(2).sum(), [w])
    first, second = t.result.steps
    m = build_graph(first, view="both")
    # sum reads the relu'd tensor (same tid as matmul's result): the edge comes from relu_
    assert ("relu_", "sum") in m.edge_titles() and ("matmul", "sum") not in m.edge_titles()
    relu = node(m, "relu_")
    assert relu["data"] is None and "in place" in relu["detail"]  # the trace keeps one value per tid
    m = build_graph(second, view="both")
    assert torch.allclose(node(m, "w")["grad"].data, g)          # what autograd.grad returned
    assert "autograd.grad" in node(m, "w")["note"]
    assert node(m, "AccumulateGrad")["note"].startswith("did not run")


def test_an_op_in_place_on_a_view_feeds_the_readers_of_what_it_views():
    """h.narrow(1, 1, 1).mul_(2) writes h: the clone that reads h after it reads mul_'s
    result (the edge comes from mul_, not from the matmul that made h)."""
    w = torch.randn(2, 2, requires_grad=True)
    X = torch.randn(4, 2)
    with gradtrace.trace() as t:
        h = X @ w
        h.narrow(1, 1, 1).mul_(2.0)
        h.clone().sum().backward()
    m = build_graph(t.result.steps[0], view="both")
    assert ("matmul", "narrow") in m.edge_titles() and ("narrow", "mul_") in m.edge_titles()
    assert ("mul_", "clone") in m.edge_titles() and ("matmul", "clone") not in m.edge_titles()
    assert ("clone", "sum") in m.edge_titles()


def test_custom_function_is_one_node():
    if not (DEMOS / "custom_function.py").exists():
        pytest.skip("demos/custom_function.py is not there yet")
    m = build_graph(first_steps("custom_function").steps[0], view="both")
    sq = node(m, "Square")
    assert sq["detail"] == "custom autograd.Function" and sq["note"] == "backward: SquareBackward"
    assert m.titles().count("mul") == 1     # x * w; the Function's inner x * x is not drawn


# -- large graphs -----------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.fc(x)) + x


@pytest.fixture(scope="module")
def deep_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(*[_Block() for _ in range(12)]),
                          nn.Linear(4, 1))
    X, y = torch.randn(5, 3), torch.randn(5, 1)
    with gradtrace.trace() as t:
        ((model(X) - y) ** 2).mean().backward()
    return t.result.steps[0]


@pytest.mark.parametrize("view", ["forward", "backward", "both"])
def test_large_graphs_collapse_above_the_budget(deep_step, view):
    full = build_graph(deep_step, view=view, expand=True)
    small = build_graph(deep_step, view=view)
    assert len(full) > 70 and len(small) <= GraphOptions.budget
    assert small.collapsed == len(full) - len(small) and "expand" in small.notes[-1]
    kinds = {a["kind"] for _, a in small.graph.nodes(data=True)}
    assert "repeat" in kinds
    (rep,) = [a for _, a in small.graph.nodes(data=True) if a["kind"] == "repeat"]
    assert rep["title"].startswith("× ") and rep["count"] >= 27   # nine or ten blocks of 3-4 ops
    # still one picture of one computation: ids topological, the loss reachable
    assert list(small.graph.nodes) == list(range(len(small)))
    skeleton = nx.DiGraph([(u, v) for u, v, a in small.graph.edges(data=True) if a["kind"] == "data"]
                          or list(small.graph.edges()))
    assert nx.is_directed_acyclic_graph(skeleton)
    start = small.find("X")[0] if view != "backward" else small.find("loss")[0]
    assert len(nx.descendants(skeleton, start)) >= len(small) // 2
    assert len(build_graph(deep_step, view=view, budget=1000)) == len(full)
    # a smaller budget folds whole module calls too
    tiny = build_graph(deep_step, view=view, budget=12)
    assert len(tiny) < len(small) and "module" in {a["kind"] for _, a in tiny.graph.nodes(data=True)}
    assert graph_of_step(deep_step, view=view).svg().count("<g id=\"n") == len(small)


def test_a_python_loop_collapses_into_one_repeat_node():
    W = torch.randn(4, 4, requires_grad=True)
    with gradtrace.trace() as t:
        h = torch.randn(2, 4)
        for _ in range(30):
            h = torch.tanh(h @ W)
        h.sum().backward()
    m = build_graph(t.result.steps[0], view="both")
    assert m.titles() == ["h", "W", "matmul", "tanh", "× 28 more", "matmul", "tanh", "sum",
                          "loss", "AccumulateGrad"]
    assert node(m, "× 28 more")["detail"] == "matmul → tanh"


# -- every seed demo draws, without the dot program -------------------------------------------
SEEDS = ["linreg", "linreg_concise", "crop_yield", "gd_backprop", "softmax_regression",
         "custom_function"]


@pytest.mark.parametrize("demo", SEEDS)
def test_every_seed_demo_draws(demo, tmp_path):
    if not (DEMOS / f"{demo}.py").exists():
        pytest.skip(f"demos/{demo}.py is not there yet")
    step = first_steps(demo).steps[0]
    names = [step.name(t) for t in step.values if step.tensors[t].role == "param"]
    for view in ("forward", "backward", "both"):
        svg = graph_of_step(step, view=view).save(tmp_path / f"{view}.svg").read_text()
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
        for name in names:
            assert f">{name}<" in svg
    png = graph_of_step(step, view="both").save(tmp_path / "both.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert to_dot(build_graph(step), GraphOptions()) == graph_of_step(step).dot


def test_the_graph_names_import_from_graph():
    """graph.py is the entry point of its family of modules: what moved to graph_options,
    graph_labels, graph_layout, graph_dot and graph_draw is the same object imported from it."""
    from gradtrace.render import graph_dot, graph_draw, graph_labels, graph_layout, graph_options

    moved = {graph_options: ("GraphOptions", "Theme", "THEME", "THEMES", "ENGINES", "LEGEND"),
             graph_labels: ("Cell", "Label", "node_label", "value_rows"),
             graph_layout: ("Layout", "layout", "direction", "FOLD_GAIN", "LEGEND_NODE"),
             graph_dot: ("to_dot",), graph_draw: ("draw_layered",)}
    for module, names in moved.items():
        for name in names:
            assert getattr(rg, name) is getattr(module, name), name
            assert name in rg.__all__
