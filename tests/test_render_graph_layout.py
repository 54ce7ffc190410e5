"""render/graph_layout: the rank direction and the fold of a graph on a 16:9 slide (Layout, layout)."""

from __future__ import annotations

import re

import pytest

from gradtrace.analysis.graph import build_graph, layers
from gradtrace.render import graph as rg
from gradtrace.render.graph import GraphOptions, graph_of_step
from gradtrace.render.graph_labels import _node_labels
from gradtrace.render.graph_layout import FOLD_GAIN, LEGEND_NODE, Layout, direction, layout

from synthetic_graph import chain, model, node

BACKWARD = GraphOptions(view="backward")


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _drawn_edges(dot: str) -> list[tuple[int, int]]:
    """The visible edges of DOT text, each the way its arrow points (``dir=back`` turns an
    edge round)."""
    out = []
    for u, v, attrs in re.findall(r"^  n(\d+) -> n(\d+)(?: \[(.*)\])?;$", dot, re.M):
        if "style=invis" not in attrs:
            out.append((int(v), int(u)) if "dir=back" in attrs else (int(u), int(v)))
    return sorted(out)


def _slide_scale(w: int, h: int) -> float:
    """How much a picture of w x h pixels shrinks to fit a 1920 x 1080 slide."""
    return min(1920 / w, 1080 / h)


# -- moved from test_render_graph.py ----------------------------------------------------------
@pytest.mark.parametrize("demo", ["linreg", "crop_yield"])
def test_a_long_backward_chain_folds_to_fit_a_slide(demo, demo_trace):
    step = demo_trace(demo).steps[0]
    picture = graph_of_step(step, view="backward", engine="pygraphviz")
    g = picture.model.graph
    lay = rg.layout(picture.model, picture.options)
    assert lay.rankdir == "LR" and len(lay.bands) >= 2
    place = lay.place()
    assert sorted(n for n in place if n != rg.LEGEND_NODE) == sorted(g.nodes)
    # every edge is drawn once, its arrow where the gradient flows; an edge from one band
    # to the next stays on its rank: the short turn of a snake, not a line across the slide
    assert _drawn_edges(picture.dot) == sorted(g.edges())
    turns = [(u, v) for u, v in g.edges() if place[u][0] != place[v][0]]
    assert turns and all(place[v][0] == place[u][0] + 1 and place[v][1] == place[u][1]
                         for u, v in turns)
    # the pictures: one row was 5-6 times wider than tall (issue 4); folded, it is near
    # 16:9 and its text at least 1.5 times larger on a 1920-pixel slide
    w, h = _png_size(picture.render("png"))
    row = graph_of_step(step, view="backward", engine="pygraphviz", fold=False)
    w0, h0 = _png_size(row.render("png"))
    assert w0 / h0 > 4 and w / h < 2.5
    assert _slide_scale(w, h) > 1.5 * _slide_scale(w0, h0)
    assert "style=invis" not in row.dot and "dir=back" not in row.dot


def test_folding_can_be_turned_off_and_skips_module_boxes(demo_trace):
    d2l = demo_trace("linreg").steps[0]
    assert rg.layout(build_graph(d2l, view="backward"), GraphOptions(view="backward")).folded
    for options in (dict(fold=False), dict(direction="TB")):
        m = build_graph(d2l, view="backward")  # fold and direction are drawing options
        lay = rg.layout(m, GraphOptions(view="backward", **options))
        assert not lay.folded and lay.rankdir == options.get("direction", lay.rankdir)
    # graphviz does not keep bands in order around a cluster box, so nn.Module models
    # stay unfolded (the concise model's backward chain runs through its net.0 box)
    concise = graph_of_step(demo_trace("linreg_concise").steps[0], view="backward")
    assert not rg.layout(concise.model, concise.options).folded
    assert "subgraph cluster_net_2e_0" in concise.dot and "style=invis" not in concise.dot


# -- Layout ------------------------------------------------------------------------------------
def test_one_band_is_no_fold_and_its_ranks_are_its_layers():
    lay = Layout("LR", (((0,), (1, 2), (3,)),), 1.0)
    assert not lay.folded and lay.width == 3
    assert lay.place() == {0: (0, 0), 1: (0, 1), 2: (0, 1), 3: (0, 2)}


def test_every_other_band_runs_back_from_the_rank_the_one_before_ended_on():
    lay = Layout("LR", (((0,), (1,), (2,)), ((3,), (4,), (5,)), ((6,), (7,))), 1.0)
    assert lay.folded and lay.width == 3
    assert lay.place() == {0: (0, 0), 1: (0, 1), 2: (0, 2),
                           3: (1, 2), 4: (1, 1), 5: (1, 0),
                           6: (2, 0), 7: (2, 1)}


def test_a_band_that_runs_back_past_the_first_rank_shifts_every_rank_to_start_at_zero():
    lay = Layout("LR", (((0,),), ((1,), (2,), (3,))), 1.0)
    assert lay.place() == {0: (0, 2), 1: (1, 2), 2: (1, 1), 3: (1, 0)}
    assert lay.width == 3


def test_a_layout_of_no_bands_is_empty():
    lay = Layout("TB", (), 1.0)
    assert (lay.folded, lay.width, lay.place()) == (False, 0, {})


# -- layout ------------------------------------------------------------------------------------
def test_an_empty_graph_has_no_bands_and_takes_the_asked_direction():
    empty = model([], view="forward")
    assert layout(empty, GraphOptions(view="forward")) == Layout("LR", (), 1.0)
    assert layout(empty, GraphOptions(view="forward", direction="TB")).rankdir == "TB"


def test_every_node_is_placed_once_and_the_legend_only_when_asked_for():
    m = chain(12)
    for legend in (True, False):
        lay = layout(m, GraphOptions(view="backward", legend=legend))
        placed = [n for band in lay.bands for layer in band for n in layer]
        assert sorted(placed) == sorted([*m.graph.nodes, *([LEGEND_NODE] if legend else [])])
        assert sorted(placed) == sorted(lay.place())


def test_unfolded_the_legend_stands_in_the_layer_of_the_sink():
    m = model([node("loss", "loss"), node("grad_fn", "B"), node("accumulate", "A"),
               node("param", "w")], [(0, 1, "grad"), (1, 2, "grad"), (2, 3, "grad")], view="backward")
    lay = layout(m, GraphOptions(view="backward", fold=False))
    (band,) = lay.bands
    assert [list(layer) for layer in band] == [[0], [1], [2], [3, LEGEND_NODE]]


def test_a_long_chain_folds_into_bands_of_its_layers_in_order():
    m = chain(20)
    lay = layout(m, BACKWARD)
    flat = layout(m, BACKWARD, fold=False)
    assert lay.folded and lay.rankdir == "LR" and not flat.folded
    assert lay.scale >= FOLD_GAIN * flat.scale                 # a fold has to be worth its turn
    order = [n for band in lay.bands for layer in band for n in layer if n != LEGEND_NODE]
    assert order == [n for layer in layers(m) for n in layer]  # the bands cut the layers in order
    assert lay.bands[-1][-1][-1] == LEGEND_NODE                 # the legend ends the last band


def test_a_short_chain_is_not_folded():
    assert not layout(chain(2), BACKWARD).folded


def test_a_graph_with_a_module_box_is_never_folded():
    assert layout(chain(20), BACKWARD).folded
    assert not layout(chain(20, module="net"), BACKWARD).folded


def test_a_given_direction_is_kept_and_top_to_bottom_never_folds():
    for d in ("TB", "LR"):
        lay = layout(chain(20), GraphOptions(view="backward", direction=d, fold=False))
        assert lay.rankdir == d and not lay.folded
    assert not layout(chain(20), GraphOptions(view="backward", direction="TB")).folded


def test_the_direction_follows_the_graphs_shape():
    """A long chain runs left to right; twelve inputs into one op stand side by side (TB)."""
    assert direction(chain(20, view="forward"), GraphOptions(view="forward")) == "LR"
    fan = model([node("input", f"x{i}") for i in range(12)] + [node("op", "cat")],
                [(i, 12, "data", (1,)) for i in range(12)], view="forward")
    assert direction(fan, GraphOptions(view="forward")) == "TB"
    assert direction(fan, GraphOptions(view="forward")) == layout(fan, GraphOptions(view="forward"),
                                                                   fold=False).rankdir


def test_the_layout_is_the_same_every_time_and_with_labels_given():
    m = chain(15)
    lay = layout(m, BACKWARD)
    assert layout(m, BACKWARD) == lay
    assert layout(m, BACKWARD, labels=_node_labels(m, BACKWARD)) == lay
