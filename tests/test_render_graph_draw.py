"""render/graph_draw: the matplotlib fallback drawing (draw_layered) of a graph model."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from gradtrace.formatting import shape as fmt_shape
from gradtrace.render.graph_draw import draw_layered
from gradtrace.render.graph_options import LEGEND, GraphOptions

from synthetic_graph import chain, linear_step, model, node

LIGHT = GraphOptions(theme="light")


def _texts(svg: bytes) -> list[str]:
    """The text elements of an SVG drawn with svg.fonttype none, in drawing order."""
    root = ET.fromstring(svg)
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.fixture(scope="module")
def both():
    m = linear_step("both")
    return m, draw_layered(m, LIGHT, "svg")


def test_every_node_is_drawn_with_its_title_and_shape(both):
    m, svg = both
    texts = _texts(svg)
    for _, a in m.graph.nodes(data=True):
        assert f"{a['title']}  {fmt_shape(a['shape'])}" in texts


def test_a_small_tensor_is_drawn_as_right_aligned_rows_under_its_caption(both):
    texts = _texts(both[1])
    at = texts.index("w  (2, 1)")
    # w = [[0.5], [-1]] and its gradient [[4], [6]]: columns as wide as the widest number
    assert texts[at + 1:at + 7] == ["data:", "0.5", " -1", "grad:", "4", "6"]
    x = texts.index("X  (2, 2)")
    assert texts[x + 1:x + 4] == ["data:", "1  2", "3  4"]


def test_a_one_line_cell_is_written_after_its_caption(both):
    texts = _texts(both[1])
    at = texts.index("loss  ()")
    assert texts[at + 1:at + 3] == ["data: -4", "grad: 1"]
    assert texts[texts.index("sum  ()") + 2] == "grad: none"     # an op without a gradient


def test_data_edges_are_labelled_with_their_shape_and_gradients_into_grad_are_not(both):
    m, svg = both
    shapes = sorted(fmt_shape(a["shape"]) for _, _, a in m.graph.edges(data=True) if a["kind"] == "data")
    titles = {f"{a['title']}  {fmt_shape(a['shape'])}" for _, a in m.graph.nodes(data=True)}
    texts = _texts(svg)
    start = texts.index(next(t for t in texts if t in titles))   # the edge labels come first
    assert sorted(texts[1:start]) == shapes
    # in the backward view the gradient edges are the graph, labelled
    back = _texts(draw_layered(chain(3), GraphOptions(view="backward", theme="light", legend=False,
                                                       title=False), "svg"))
    assert back.count("(1,)") == 2


def test_the_legend_names_the_graphs_kinds_in_order(both):
    m, svg = both
    texts = _texts(svg)
    assert texts[-len(m.kinds):] == [LEGEND[k] for k in m.kinds]
    bare = _texts(draw_layered(m, GraphOptions(theme="light", legend=False, title=False), "svg"))
    assert not set(bare) & set(LEGEND.values()) - {"op"}
    assert "step 0 · forward values and gradients · loss -4" not in bare


def test_the_title_is_the_first_text_or_the_given_string(both):
    assert _texts(both[1])[0] == "step 0 · forward values and gradients · loss -4"
    m = model([node("op", "a")], view="forward")
    assert _texts(draw_layered(m, GraphOptions(view="forward", title="mine"), "svg"))[0] == "mine"


def test_a_node_in_a_module_says_which_and_the_module_gets_a_box():
    m = model([node("op", "a", module="net"), node("op", "b", module="net")],
              [(0, 1, "data", (2,))], view="forward")
    texts = _texts(draw_layered(m, GraphOptions(view="forward", legend=False, title=False), "svg"))
    assert texts[0] == "net"                                      # the box's label, drawn first
    assert texts[texts.index("a") + 1] == "in net" and texts[texts.index("b") + 1] == "in net"


def test_dollar_signs_in_a_name_are_text_not_mathtext():
    m = model([node("op", "$x_1$")], view="forward")
    texts = _texts(draw_layered(m, GraphOptions(view="forward", title="$\\alpha$"), "svg"))
    assert texts[0] == "$\\alpha$" and "$x_1$" in texts


def test_an_empty_graph_draws_its_title_alone():
    empty = model([], view="forward")
    assert _texts(draw_layered(empty, GraphOptions(view="forward"), "svg")) == ["step 0 · forward"]


def test_the_same_model_draws_the_same_svg_bytes(both):
    m, svg = both
    assert draw_layered(m, LIGHT, "svg") == svg


def test_a_png_has_dpi_pixels_per_inch_and_a_pdf_is_a_pdf():
    m = linear_step("forward")
    options = GraphOptions(view="forward", legend=False, title=False)

    def size(png: bytes) -> tuple[int, int]:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")

    (w1, h1), (w2, h2) = size(draw_layered(m, options, "png", dpi=36)), size(draw_layered(m, options, "png", dpi=72))
    assert abs(w2 - 2 * w1) <= 1 and abs(h2 - 2 * h1) <= 1
    assert draw_layered(m, options, "pdf").startswith(b"%PDF-")
