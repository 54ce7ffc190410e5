"""render/backprop_panels.py: how the explainer draws its graph and cards: colours, box lines,
edge shapes, artists kept from frame to frame, text that fits at a legible size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.path import Path
from matplotlib.text import Text
from torch import nn

import gradtrace
from gradtrace.formatting import shape_times as fmt_shape
from gradtrace.formatting import short_value as fmt_short
from gradtrace.render import palette
from gradtrace.render.animate import animation_of_trace
from gradtrace.render.backprop_frames import Frame, ParamCell
from gradtrace.render.backprop_panels import (_C, _MARK, MIN_FONT_PX, _Drawing, _frozen, _GraphPanel,
                                              _head, _is_zero, _middle, _path_points)
from gradtrace.render.backprop_scene import SceneNode
from gradtrace.tracefile.model import Value

from test_render_backprop_scene import wide  # noqa: F401 (a fixture: four wide layers)


def _frames(trace, frames=None, **options):
    """(renderer, figure) after each frame is drawn (all, or the indices in ``frames``;
    a negative index counts from the end)."""
    anim = animation_of_trace(trace, kind="backprop", **options)
    picked = None if frames is None else [i % len(anim) for i in frames]
    for _ in anim.images(frames=picked):
        yield anim.renderer, anim.renderer.fig


def _texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


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


def test_backprop_keeps_the_artists_that_did_not_change(demo_trace):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    anim = animation_of_trace(demo_trace("linreg"), kind="backprop", frames=12)
    r = anim.renderer
    fig = Figure(figsize=(12, 6.75), dpi=40)
    FigureCanvasAgg(fig)
    r.setup(fig)
    r.draw(2)
    before = {id(a) for a in r.animated()}
    r.draw(3)
    after = {id(a) for a in r.animated()}
    kept = before & after
    assert kept and len(kept) > len(after) / 2   # most of the picture stays: X, w, b, y ...
    assert after - before                        # and what changed is new


# -- colours: every one from the palette ----------------------------------------------------------------
def test_a_boxs_colours_are_its_kinds_in_gradtrace_graph():
    for kind, key in (("param", "param"), ("input", "input"), ("loss", "loss")):
        assert _C[key] == palette.KIND_FILL[kind] and _C[f"{key}_edge"] == palette.KIND_LINE[kind]
    assert (_C["act_done"], _C["act_edge"]) == (palette.KIND_FILL["op"], palette.KIND_LINE["op"])
    assert (_C["bad"], _C["bad_fill"]) == palette.STATUS["bad"]
    assert _C["grad"] == palette.GRAD


def test_every_mark_has_words_and_its_events_colours():
    event = {"write": "grad_write"}
    assert set(_MARK) == {"fresh", "zeros", "added", "update", "zero", "write", "none"}
    for mark, (words, line, fill) in _MARK.items():
        assert words and (line, fill) == palette.EVENT[event.get(mark, mark)], mark
    assert "ADDED" in _MARK["added"][0]               # the bug is said in words, not only colour


def test_every_colour_used_is_one_of_the_palettes():
    known = {c for c in vars(palette).values() if isinstance(c, str) and c.startswith("#")}
    for table in ("KIND_LINE", "KIND_FILL", "EVENT", "STATUS", "LIT"):
        for v in getattr(palette, table).values():
            known.update([v] if isinstance(v, str) else v)
    assert set(_C.values()) <= known
    assert {c for _, line, fill in _MARK.values() for c in (line, fill)} <= known


# -- edge shapes ---------------------------------------------------------------------------------------
def _bezier(p0, p1, p2, p3, t):
    """A cubic Bézier at t, by de Casteljau's construction."""
    def lerp(a, b):
        return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)

    a, b, c = lerp(p0, p1), lerp(p1, p2), lerp(p2, p3)
    d, e = lerp(a, b), lerp(b, c)
    return lerp(d, e)


def test_an_svg_path_becomes_matplotlib_vertices_and_codes():
    verts, codes = _path_points("M1,2C3,4 5,6 7,8 L9.5,-10")
    assert verts == [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0), (9.5, -10.0)]
    assert codes == [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4, Path.LINETO]


def test_a_straight_paths_middle_is_half_way_between_its_ends():
    verts, codes = _path_points("M 0,0 L 10,4")
    assert _middle(verts, codes) == (5.0, 2.0)


def test_a_curves_middle_is_the_middle_of_its_middle_bezier():
    one = [(0.0, 0.0), (0.0, 10.0), (10.0, 10.0), (10.0, 0.0)]
    codes = [Path.MOVETO] + [Path.CURVE4] * 3
    assert _middle(one, codes) == pytest.approx(_bezier(*one, 0.5))
    three = one + [(10.0, -5.0), (20.0, -5.0), (20.0, 0.0), (20.0, 4.0), (30.0, 4.0), (30.0, 0.0)]
    codes3 = [Path.MOVETO] + [Path.CURVE4] * 9
    assert _middle(three, codes3) == pytest.approx(_bezier(*three[3:7], 0.5))


def test_an_arrow_head_is_an_isosceles_triangle_at_its_tip():
    tip, base, width = (10.0, 4.0), (7.0, 0.0), 0.42
    t, left, right = _head(tip, base, width)
    assert t == tip
    length = math.dist(tip, base)
    # the two corners sit either side of the base, at right angles to the arrow
    assert math.dist(left, base) == pytest.approx(width * length)
    assert math.dist(right, base) == pytest.approx(width * length)
    mid = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
    assert mid == pytest.approx(base)
    ax, ay = tip[0] - base[0], tip[1] - base[1]
    assert (left[0] - right[0]) * ax + (left[1] - right[1]) * ay == pytest.approx(0.0)


# -- values ---------------------------------------------------------------------------------------------
def _v(*xs: float) -> Value:
    return Value(-1, (len(xs),), "float32", array=np.array(xs, dtype=np.float32))


def test_a_value_is_zero_only_when_every_element_is():
    assert _is_zero(_v(0.0, 0.0)) and not _is_zero(_v(0.0, 1e-30))
    assert not _is_zero(None)


def test_a_value_kept_as_statistics_is_zero_when_its_range_is():
    zeros, ones = _v(0.0, 0.0, 0.0).stats, _v(0.0, 1.0).stats
    assert _is_zero(Value(-1, (3,), "float32", stored_stats=zeros))
    assert not _is_zero(Value(-1, (2,), "float32", stored_stats=ones))


def test_frozen_makes_dicts_and_lists_hashable_keys():
    a = _frozen({"b": [1, {"c": 2}], "a": (3,)})
    assert a == (("a", (3,)), ("b", (1, (("c", 2),))))
    assert hash(a) == hash(_frozen({"a": [3], "b": ((1, {"c": 2}))}))
    assert _frozen(4.5) == 4.5 and _frozen("x") == "x"


# -- the lines of a box ----------------------------------------------------------------------------------
def _panel(values=None) -> _GraphPanel:
    p = object.__new__(_GraphPanel)
    p._values = values or {}
    return p


def _texts_of(lines):
    return [variants for variants, _ in lines]


def test_a_parameters_box_drops_its_modules_names_first():
    sn = SceneNode(3, "model.0.weight", "param", (4, 2))
    b = {"kind": "param", "title": "model.0.weight", "details": []}
    lines = _panel()._box_lines(0, b, sn, Frame("intro", ""), True, False)
    assert lines[0][0] == ("model.0.weight", "0.weight", "weight")
    assert lines[2][0] == ("parameter",)
    assert lines[1][0] == (f"[{fmt_shape((4, 2))}]",)      # no value known: its shape


def test_an_ops_box_is_headed_by_its_graph_name_and_its_tensor():
    sn = SceneNode(10, "t10", "activation", (3, 1), op=5, grad_fn="AddmmBackward0", title="linear")
    b = {"kind": "op", "title": "linear", "details": ["⟵ AddmmBackward0"]}
    v = Value(-1, (3, 1), "float32", array=np.array([[1.0], [2.0], [4.0]], dtype=np.float32))
    f = Frame("forward", "", computed={10})
    head, value, note, grad = _texts_of(_panel({10: v})._box_lines(0, b, sn, f, True, False))
    assert head == ("linear → t10", "linear")
    assert value == (f"[{fmt_shape((3, 1))}] {fmt_short(v)}", fmt_short(v))
    assert note == ("⟵ AddmmBackward0", "AddmmBackward0")
    assert grad == ("",)                                   # no gradient yet


def test_an_op_not_yet_run_shows_a_question_mark_and_no_grad_fn():
    sn = SceneNode(10, "t10", "activation", (3,), op=5, grad_fn="MulBackward0", title="mul")
    b = {"kind": "op", "title": "mul", "details": ["⟵ MulBackward0"]}
    _, value, note, _ = _texts_of(_panel()._box_lines(0, b, sn, Frame("intro", ""), False, False))
    assert value == (f"[{fmt_shape((3,))}] ?", "?")
    assert note == ("",)


def test_a_two_number_value_is_shown_in_full_first():
    sn = SceneNode(7, "t7", "activation", (2,), op=1, grad_fn="MulBackward0", title="mul")
    b = {"kind": "op", "title": "mul", "details": []}
    v = _v(0.5, -1.25)
    _, value, _, _ = _texts_of(_panel({7: v})._box_lines(0, b, sn, Frame("forward", ""), True, False))
    assert value[0] == "[0.5, −1.25]" and value[1:] == (f"[{fmt_shape((2,))}] {fmt_short(v)}", fmt_short(v))


def test_an_updated_parameter_shows_before_and_after():
    sn = SceneNode(1, "w", "param", (1,))
    b = {"kind": "param", "title": "w", "details": []}
    before, after = _v(2.0), _v(1.5)
    f = Frame("update", "", cells={1: ParamCell(after, None, "update", "", before)})
    lines = _panel()._box_lines(0, b, sn, f, True, False)
    assert lines[1][0] == (f"{fmt_short(before)} → {fmt_short(after)}", f"→ {fmt_short(after)}")
    assert lines[1][1]["weight"] == "bold" and lines[1][1]["color"] == _C["updated"]


def test_a_boxs_gradient_line_once_its_gradient_is_known():
    sn = SceneNode(1, "w", "param", (1,))
    b = {"kind": "param", "title": "w", "details": []}
    g = _v(-0.25)
    f = Frame("backward", "", grads={1: g}, current={1})
    *_, (grad, style) = _panel({1: _v(1.0)})._box_lines(0, b, sn, f, True, False)
    assert grad == (f"grad {fmt_short(g)}", fmt_short(g))
    assert style["color"] == _C["grad"] and style["weight"] == "bold"       # lit: bold


def test_the_loss_box_says_it_is_the_loss_until_its_gradient_is_known():
    sn = SceneNode(9, "loss", "loss", ())
    b = {"kind": "loss", "title": "loss", "details": []}
    *_, (grad, style) = _panel({9: _v(0.5)})._box_lines(0, b, sn, Frame("forward", ""), True, False)
    assert grad == ("the loss",) and style["color"] == _C["loss_edge"]


def test_a_failed_check_is_said_in_the_box():
    sn = SceneNode(1, "w", "param", (1,))
    b = {"kind": "param", "title": "w", "details": []}
    lines = _panel({1: _v(1.0)})._box_lines(0, b, sn, Frame("backward", ""), True, True)
    (note, style) = lines[2]
    assert note == ("✗ check failed",) and style["role"] == "failed" and style["color"] == _C["bad"]


def test_a_box_no_frame_is_about_is_drawn_muted():
    b = {"kind": "op", "title": "sub_", "details": ["after backward()"]}
    lines = _panel()._box_lines(0, b, None, Frame("intro", ""), True, False)
    assert _texts_of(lines) == [("sub_",), ("after backward()",)]
    assert lines[0][1]["color"] == _C["muted"]


def test_a_box_without_room_keeps_the_name_then_what_matters_most():
    lines = [(("v",), {"role": "value"}), (("h",), {"role": "head"}), (("k",), {"role": "kind"}),
             (("g",), {"role": "grad"})]
    keep = _GraphPanel._keep
    assert keep(None, lines, 4) == lines
    assert [ln[0] for ln in keep(None, lines, 3)] == [("v",), ("h",), ("g",)]   # in the box's order
    assert [ln[0] for ln in keep(None, lines, 2)] == [("h",), ("g",)]
    assert [ln[0] for ln in keep(None, lines, 1)] == [("h",)]


# -- artists kept from frame to frame ----------------------------------------------------------------------
@pytest.fixture
def drawing():
    fig = Figure(figsize=(2, 1), dpi=24)
    FigureCanvasAgg(fig)
    d = _Drawing()
    d.fitted = []
    d.min_fs, d.px = 7.0, 0.5
    return d, fig.add_axes([0, 0, 1, 1])


def test_a_font_size_scales_with_the_frame_but_never_below_the_minimum(drawing):
    d, _ = drawing
    assert d._fs(30) == 15.0 and d._fs(10) == 7.0


def test_a_text_made_again_with_the_same_arguments_is_the_same_artist(drawing):
    d, ax = drawing
    d._start_frame()
    a = d._text(ax, 0.1, 0.2, "kept", 8, color="red")
    b = d._text(ax, 0.1, 0.6, "gone", 8)
    d._end_frame()
    d._start_frame()
    a2 = d._text(ax, 0.1, 0.2, "kept", 8, color="red")
    c = d._text(ax, 0.1, 0.6, "new", 8)
    d._end_frame()
    assert a2 is a and c is not b
    assert a in ax.texts and c in ax.texts and b not in ax.texts     # what this frame lacks goes


def test_a_text_is_plain_text_and_remembers_the_box_it_must_fit(drawing):
    d, ax = drawing
    d._start_frame()
    box = d._add(ax, Rectangle, (0, 0), 1, 1)
    t = d._text(ax, 0.5, 0.5, "$x^2$", 8, box)
    d._end_frame()
    assert not t.get_parse_math() and t.get_text() == "$x^2$"
    assert d.fitted == [(box, t)]


def test_a_patch_made_again_is_kept_and_a_changed_one_replaced(drawing):
    d, ax = drawing
    d._start_frame()
    p = d._add(ax, Rectangle, (0, 0), 1, 1, fc="#ffffff")
    q = d._add(ax, Rectangle, (0, 0), 1, 1, fc="#000000")
    d._end_frame()
    d._start_frame()
    p2 = d._add(ax, Rectangle, (0, 0), 1, 1, fc="#ffffff")
    q2 = d._add(ax, Rectangle, (0, 0), 1, 1, fc="#0072b2")
    d._end_frame()
    assert p2 is p and q2 is not q
    assert q not in ax.get_children() and q2 in ax.get_children()

