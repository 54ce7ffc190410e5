"""render/explorer_graph: the explorer's graph geometry (shape_key, geometry by pygraphviz, by the
dot program's JSON and on layers without graphviz)."""

from __future__ import annotations

import subprocess
import types

import pytest

from gradtrace.analysis.graph import layers
from gradtrace.errors import RenderError
from gradtrace.render import explorer_graph
from gradtrace.render.explorer_graph import OPTIONS, Geometry, geometry, shape_key
from gradtrace.render.graph_dot import to_dot

from synthetic_graph import chain, linear_step, model, node, value


def _edges(m) -> list[tuple[int, int]]:
    return sorted((u, v) for u, v in m.graph.edges())


def _modules() -> object:
    """X -> linear -> relu -> loss, linear and relu in a module whose name is markup."""
    return model([node("input", "X"), node("op", "linear", module="a&b.0"),
                  node("op", "relu", module="a&b.0"), node("loss", "loss")],
                 [(0, 1, "data", (2,)), (1, 2, "data", (2,)), (2, 3, "data", ())], view="forward")


def test_the_options_are_the_graph_commands_both_view_without_legend_or_title():
    assert (OPTIONS.view, OPTIONS.theme, OPTIONS.legend, OPTIONS.title) == ("both", "light", False, False)


# -- shape_key -----------------------------------------------------------------------------------
def test_the_values_are_not_part_of_a_shape():
    a, b = linear_step(), linear_step()
    b.graph.nodes[1]["data"] = value([[9.0], [9.0]])
    assert shape_key(a) == shape_key(b)


def test_an_unnamed_input_titled_by_its_id_stands_for_any_id_of_its_length():
    def one(kind: str, title: str):
        return model([node(kind, title), node("op", "relu")], [(0, 1, "data", (2,))], view="forward")

    assert shape_key(one("input", "t67")) == shape_key(one("input", "t68"))
    assert shape_key(one("input", "t67")) != shape_key(one("input", "t123"))
    assert shape_key(one("param", "t67")) != shape_key(one("param", "t68"))  # a name, not an id
    assert shape_key(one("input", "x")) != shape_key(one("input", "y"))


def test_the_edges_and_the_view_are_part_of_a_shape():
    a = linear_step("both")
    b = linear_step("both")
    b.graph.remove_edge(5, 1)
    assert shape_key(a) != shape_key(b)
    c = linear_step("both")
    c.view = "forward"
    assert shape_key(a) != shape_key(c)


# -- Geometry and the spline -----------------------------------------------------------------------
def test_geometry_json_has_string_node_ids():
    geo = Geometry(width=10.0, height=5.0, nodes={3: {"x": 1}}, engine="layers")
    assert geo.to_json() == {"width": 10.0, "height": 5.0, "nodes": {"3": {"x": 1}}, "edges": [],
                             "clusters": [], "engine": "layers"}


def test_a_spline_becomes_an_svg_path_and_its_arrow_heads():
    def flip(x, y):
        return [x, 100 - y]

    path, arrows = explorer_graph._spline("s,0,0 e,9,9 1.5,1 2,2 3,3 4,4", flip)
    assert path == "M1.5,99.0 C2.0,98.0 3.0,97.0 4.0,96.0"
    assert arrows == [[[9, 91], [4, 96]], [[0, 100], [1.5, 99]]]   # [tip, the point it comes from]
    assert explorer_graph._spline("e,1,1 5,5", flip) == ("", [])    # under two points: no edge


# -- graphviz ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pygraphviz_geometry():
    return {name: explorer_graph._graphviz(m, OPTIONS, "pygraphviz")
            for name, m in (("step", linear_step("both")), ("modules", _modules()),
                            ("chain", chain(20)))}


def test_graphviz_places_every_node_in_the_picture_and_no_legend(pygraphviz_geometry):
    m = linear_step("both")
    geo = pygraphviz_geometry["step"]
    assert geo.engine == "graphviz" and sorted(geo.nodes) == sorted(m.graph.nodes)
    for n, box in geo.nodes.items():
        assert 0 <= box["x"] and box["x"] + box["w"] <= geo.width + 0.01
        assert 0 <= box["y"] and box["y"] + box["h"] <= geo.height + 0.01
        assert (box["kind"], box["title"]) == (m.graph.nodes[n]["kind"], m.graph.nodes[n]["title"])
    assert geo.nodes[2]["details"] == ["⟵ MmBackward0"] and geo.nodes[1]["shape"] == "(2, 1)"
    assert geo.nodes[1]["module"] == ""


def test_graphviz_gives_every_edge_its_path_kind_and_label(pygraphviz_geometry):
    m = linear_step("both")
    geo = pygraphviz_geometry["step"]
    assert sorted((e["from"], e["to"]) for e in geo.edges) == _edges(m)
    for e in geo.edges:
        kind = m.graph.edges[e["from"], e["to"], 0]["kind"]
        assert e["kind"] == kind and e["path"].startswith("M") and e["arrows"]
        assert ("label" in e) == (kind == "data")               # gradients into .grad: unlabelled


def test_a_folded_picture_keeps_each_edge_the_way_the_gradient_flows(pygraphviz_geometry):
    assert "dir=back" in to_dot(chain(20), OPTIONS)
    geo = pygraphviz_geometry["chain"]
    assert sorted((e["from"], e["to"]) for e in geo.edges) == _edges(chain(20))


def test_a_module_box_is_a_cluster_with_the_modules_name(pygraphviz_geometry):
    geo = pygraphviz_geometry["modules"]
    (box,) = geo.clusters
    assert box["label"] == "a&b.0"
    inner = [geo.nodes[n] for n in (1, 2)]
    assert all(box["x"] <= b["x"] and b["x"] + b["w"] <= box["x"] + box["w"] + 0.01 for b in inner)


@pytest.mark.parametrize("name", ["step", "modules", "chain"])
def test_the_dot_programs_json_reads_as_pygraphviz_does(name, pygraphviz_geometry, monkeypatch):
    """The `dot` route, with a stand-in for the program: pygraphviz's graphviz writing json0."""
    import pygraphviz

    m = {"step": linear_step("both"), "modules": _modules(), "chain": chain(20)}[name]
    calls = []

    def run(args, input, **kw):
        calls.append(args)
        out = pygraphviz.AGraph(string=input.decode()).draw(format="json0", prog="dot")
        return subprocess.CompletedProcess(args, 0, out, b"")

    monkeypatch.setattr(explorer_graph, "subprocess",
                        types.SimpleNamespace(run=run, TimeoutExpired=subprocess.TimeoutExpired))
    geo = explorer_graph._graphviz(m, OPTIONS, "dot")
    assert calls == [["dot", "-Tjson0"]]
    assert geo.to_json() == pygraphviz_geometry[name].to_json()


def _failing_dot(monkeypatch, run) -> None:
    monkeypatch.setattr(explorer_graph, "available_engine", lambda requested="auto": "dot")
    monkeypatch.setattr(explorer_graph, "subprocess",
                        types.SimpleNamespace(run=run, TimeoutExpired=subprocess.TimeoutExpired))


def test_a_failing_dot_program_is_warned_about_and_the_graph_drawn_on_layers(monkeypatch):
    _failing_dot(monkeypatch, lambda args, **kw: subprocess.CompletedProcess(
        args, 1, b"", b"Error: syntax error in line 3\n"))
    warned = []
    geo = geometry(linear_step(), OPTIONS, warn=warned.append)
    assert geo.engine == "layers" and sorted(geo.nodes) == sorted(linear_step().graph.nodes)
    assert warned == ["explorer: graphviz could not lay out a graph (Error: syntax error in line 3); "
                      "drawn on layers instead"]


def test_a_dot_program_that_cannot_start_is_a_render_error(monkeypatch):
    def run(args, **kw):
        raise FileNotFoundError(2, "No such file or directory", "dot")

    _failing_dot(monkeypatch, run)
    with pytest.raises(RenderError, match=r"^running `dot` failed: .*No such file or directory"):
        explorer_graph._graphviz(linear_step(), OPTIONS, "dot")
    assert geometry(linear_step(), OPTIONS).engine == "layers"     # no warn callback: quiet


def test_a_pygraphviz_failure_falls_back_to_layers(monkeypatch):
    import pygraphviz

    def broken(*a, **k):
        raise ValueError("bad graph")

    monkeypatch.setattr(explorer_graph, "available_engine", lambda requested="auto": "pygraphviz")
    monkeypatch.setattr(pygraphviz, "AGraph", broken)
    warned = []
    assert geometry(linear_step(), OPTIONS, warn=warned.append).engine == "layers"
    assert warned == ["explorer: graphviz could not lay out a graph (pygraphviz: bad graph); "
                      "drawn on layers instead"]


# -- without graphviz ------------------------------------------------------------------------------
def test_without_graphviz_the_nodes_stand_on_the_layers_with_straight_edges(monkeypatch):
    monkeypatch.setattr(explorer_graph, "available_engine", lambda requested="auto": "matplotlib")
    m = linear_step("both")
    geo = geometry(m, OPTIONS)
    assert geo.engine == "layers"
    w, h = 150.0, 90.0
    for r, layer in enumerate(layers(m)):
        for j, n in enumerate(layer):
            box = geo.nodes[n]
            assert (box["x"], box["y"], box["w"], box["h"]) == (r * (w + 60) + 10, j * (h + 24) + 10, w, h)
    assert geo.width == max(b["x"] + w for b in geo.nodes.values()) + 10
    assert geo.height == max(b["y"] + h for b in geo.nodes.values()) + 10
    assert sorted((e["from"], e["to"]) for e in geo.edges) == _edges(m)
    for e in geo.edges:
        assert e["path"].count("L") == 1 and e["kind"] == m.graph.edges[e["from"], e["to"], 0]["kind"]
        p, q = geo.nodes[e["from"]], geo.nodes[e["to"]]
        (x1, y1), _ = e["arrows"][0]
        # the arrow ends on the side of the box it enters
        assert y1 == q["y"] + h / 2 and x1 in (q["x"], q["x"] + w)
        assert (x1 == q["x"]) == (q["x"] >= p["x"] + w)


def test_without_graphviz_a_self_loop_is_not_drawn(monkeypatch):
    monkeypatch.setattr(explorer_graph, "available_engine", lambda requested="auto": "matplotlib")
    m = model([node("input", "x"), node("op", "to")], [(0, 1, "data"), (1, 1, "data")], view="forward")
    assert [(e["from"], e["to"]) for e in geometry(m, OPTIONS).edges] == [(0, 1)]
