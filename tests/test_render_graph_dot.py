"""render/graph_dot: the DOT text of a graph model (to_dot): golden, deterministic, escaped."""

from __future__ import annotations

import os
import re
from pathlib import Path

import networkx as nx
import pytest

import gradtrace
from gradtrace.render.graph import graph_of_step
from gradtrace.render.graph_dot import to_dot
from gradtrace.render.graph_options import LEGEND, THEME, GraphOptions

from conftest import record_demo
from synthetic_graph import chain, linear_step, model, node

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GRADTRACE_UPDATE_GOLDEN") == "1"
LIGHT = GraphOptions(theme="light")


# -- moved from test_render_graph.py ----------------------------------------------------------
def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        pytest.skip(f"wrote {path}")
    assert text == path.read_text(), (
        f"DOT differs from {path}; if the change is intended, rerun with GRADTRACE_UPDATE_GOLDEN=1")


@pytest.mark.parametrize("demo,view", [("linreg", "both"), ("linreg", "backward"),
                                       ("linreg_concise", "both")])
def test_golden_dot(demo, view, demo_trace):
    step = demo_trace(demo).steps[0]
    _golden(f"{demo}_step0_{view}.dot", graph_of_step(step, view=view).dot)


def test_dot_is_byte_identical_for_the_same_trace(tmp_path):
    record_demo("crop_yield", tmp_path / "a.gtrace", step_range=(0, 1))
    record_demo("crop_yield", tmp_path / "b.gtrace", step_range=(0, 1))
    dots = [graph_of_step(gradtrace.load(tmp_path / f).steps[0]).dot for f in ("a.gtrace", "b.gtrace")]
    assert dots[0] == dots[1]
    assert dots[0] == graph_of_step(gradtrace.load(tmp_path / "a.gtrace").steps[0]).dot


def test_module_clusters(demo_trace):
    dot = graph_of_step(demo_trace("linreg_concise").steps[0], view="forward").dot
    start = dot.index("subgraph cluster_net_2e_0 {")
    body = dot[start:dot.index("\n  }", start)]
    for name in ("net.0.weight", "net.0.bias", "linear"):
        assert f"<B>{name}</B>" in body
    assert "<B>X</B>" not in body and "mse_loss" not in body


# -- the text ----------------------------------------------------------------------------------
def _node_order(dot: str) -> list[int]:
    return [int(n) for n in re.findall(r"^\s*n(\d+) \[id=", dot, re.M)]


def test_the_header_carries_the_theme_and_the_title():
    m = linear_step("both")
    dot = to_dot(m, LIGHT)
    theme = THEME["light"]
    assert dot.startswith("digraph gradtrace {\n  graph [rankdir=") and dot.endswith("}\n")
    assert f'bgcolor="{theme.background}"' in dot and f"fontsize={theme.font}," in dot
    assert 'label="step 0 · forward values and gradients · loss -4"];' in dot
    assert "label=\"step" not in to_dot(m, GraphOptions(title=False))
    assert 'label="my \\"graph\\""];' in to_dot(m, GraphOptions(title='my "graph"'))


def test_the_nodes_are_written_in_id_order_whatever_order_the_graph_holds_them():
    m = linear_step("both")
    g = nx.MultiDiGraph()
    for n in reversed(list(m.graph.nodes)):
        g.add_node(n, **m.graph.nodes[n])
    for u, v, a in reversed(list(m.graph.edges(data=True))):
        g.add_edge(u, v, **a)
    shuffled = model([], view="both", loss=m.loss)
    shuffled.graph = g
    assert _node_order(to_dot(m, LIGHT)) == list(range(len(m)))
    assert to_dot(shuffled, LIGHT) == to_dot(m, LIGHT)


def test_a_title_of_markup_is_escaped_in_the_label_and_the_tooltip():
    m = model([node("op", 'a<b>&"c\\N\r\nd')], view="forward")
    dot = to_dot(m, GraphOptions(view="forward", values=False, legend=False))
    # an HTML-like label: markup characters as entities, a backslash doubled (no \N)
    assert r"<B>a&lt;b&gt;&amp;&quot;c\\N" + "\r\nd</B>" in dot
    # a quoted tooltip: & as an entity, the quote escaped, backslashes quadrupled (graphviz
    # unescapes twice), \r dropped and the newline as graphviz's \n
    assert r'tooltip="a<b>&amp;\"c\\\\N\nd [op]"' in dot


def test_a_data_edge_is_labelled_with_its_shape():
    dot = to_dot(linear_step("forward"), GraphOptions(view="forward"))
    assert '  n1 -> n2 [label=" (2, 1) "];' in dot and '  n3 -> n4 [label=" () "];' in dot


def test_gradients_into_grad_are_dashed_unlabelled_and_do_not_rank_in_the_both_view():
    theme = THEME["light"]
    dot = to_dot(linear_step("both"), LIGHT)
    assert (f'  n2 -> n5 [color="{theme.grad_edge}", fontcolor="{theme.grad_edge}", '
            "style=dashed, constraint=false];") in dot
    # the backward view: gradient edges are the graph, labelled and solid
    back = to_dot(chain(3), GraphOptions(view="backward", theme="light", fold=False))
    assert (f'  n0 -> n1 [label=" (1,) ", color="{theme.grad_edge}", '
            f'fontcolor="{theme.grad_edge}"];') in back
    assert "dashed" not in back


def test_an_accumulate_node_stands_level_with_its_parameter_in_the_both_view():
    assert "  {rank=same; n1; n5}" in to_dot(linear_step("both"), LIGHT)


def test_the_legend_lists_the_graphs_kinds_in_order_and_stands_by_the_sink():
    m = linear_step("both")
    dot = to_dot(m, LIGHT)
    legend = dot[dot.index("  legend [id=\"legend\""):]
    words = re.findall(r'ALIGN="LEFT"><FONT [^>]*>([^<]*)</FONT>', legend)
    assert words == [LEGEND[k] for k in m.kinds] + ["gradient of the loss", "gradient into .grad"]
    assert "  {rank=same; legend; n4}" in dot                  # n4: the loss


def test_the_forward_legend_has_no_gradient_rows_and_without_a_sink_goes_last():
    m = model([node("input", "x"), node("op", "relu")], [(0, 1, "data", (2,))], view="forward")
    dot = to_dot(m, GraphOptions(view="forward"))
    assert "gradient of the loss" not in dot and "gradient into .grad" not in dot
    assert "  {rank=max; legend}" in dot
    assert "legend" not in to_dot(m, GraphOptions(view="forward", legend=False))


def test_an_empty_graph_is_a_header_without_nodes_or_legend():
    dot = to_dot(model([], view="forward"), GraphOptions(view="forward"))
    assert _node_order(dot) == [] and "legend" not in dot and "->" not in dot
    assert dot.count("\n") == 5 and dot.endswith("];\n}\n")


def _modules(*paths) -> str:
    m = model([node("op", f"op{i}", module=p) for i, p in enumerate(paths)], view="forward")
    return to_dot(m, GraphOptions(view="forward", values=False, legend=False))


def test_a_module_of_one_node_gets_no_box():
    assert "subgraph" not in _modules("net.0", None)


def test_a_module_of_two_nodes_gets_a_box_its_id_spelled_in_safe_characters():
    dot = _modules("a&b.0", "a&b.0")
    assert "  subgraph cluster_a_26_b_2e_0 {\n    graph [label=<<B>a&amp;b.0</B>>," in dot
    assert _node_order(dot) == [0, 1]


def test_a_module_that_only_wraps_one_other_is_one_box_not_two():
    dot = _modules("enc.block", "enc.block")
    assert dot.count("subgraph") == 1 and "subgraph cluster_enc_2e_block {" in dot


def test_a_module_with_its_own_nodes_and_a_sub_module_nests_the_boxes():
    dot = _modules("enc", "enc.block", "enc.block")
    outer = dot.index("  subgraph cluster_enc {")
    inner = dot.index("    subgraph cluster_enc_2e_block {")
    assert outer < inner and dot.count("subgraph") == 2


def test_a_folded_graph_pins_its_ranks_and_draws_every_edge_once_the_way_it_flows():
    m = chain(20)
    dot = to_dot(m, GraphOptions(view="backward"))
    assert "style=invis" in dot and "  {rank=same; " in dot
    for u, v in m.graph.edges():
        ahead = len(re.findall(rf"^  n{u} -> n{v}\b(?!.*(dir=back|style=invis))", dot, re.M))
        back = len(re.findall(rf"^  n{v} -> n{u} \[dir=back", dot, re.M))
        assert ahead + back == 1, (u, v)
    assert "dir=back" in dot                                   # the second band runs back
    flat = to_dot(m, GraphOptions(view="backward", fold=False))
    assert "style=invis" not in flat and "dir=back" not in flat
