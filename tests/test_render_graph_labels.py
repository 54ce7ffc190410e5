"""render/graph_labels: what a graph node says (value_rows, node_label, the tooltip and title)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradtrace.render.graph import graph_of_step
from gradtrace.render.graph_labels import Cell, Label, _node_labels, _title, node_label, value_rows
from gradtrace.render.graph_options import GraphOptions
from gradtrace.tracefile.model import Source, Stats

from synthetic_graph import linear_step, node, stats_only, value

OPTIONS = GraphOptions()


def _node(m, title: str) -> dict:
    (n,) = m.find(title)
    return m.graph.nodes[n]


# -- moved from test_render_graph.py ----------------------------------------------------------
def test_labels_show_full_small_values_and_summaries_of_big_ones(demo_trace):
    from gradtrace.render.graph import fmt_number

    d2l = demo_trace("linreg").steps[0]
    picture = graph_of_step(d2l, view="both")
    dot = picture.dot
    m = picture.model
    for name in "wb":
        a = _node(m, name)
        for x in a["data"].data.reshape(-1).tolist() + a["grad"].data.reshape(-1).tolist():
            assert f">{fmt_number(x)}<" in dot or f">  {fmt_number(x)}<" in dot
    X = _node(m, "X")["data"].stats
    assert f"mean {fmt_number(X.mean, 3)}" in dot  # (10, 2): a summary, not 20 numbers
    assert f"{fmt_number(X.min, 3)} … {fmt_number(X.max, 3)}" in dot
    assert "all 0.5" in dot                         # d(div by 2)/d(pow) is 0.5 everywhere
    assert 'tooltip="linreg.py:39: return torch.matmul(X, w) + b' in dot


# -- value_rows -------------------------------------------------------------------------------
def test_a_small_matrix_is_shown_number_for_number_in_its_rows():
    rows, matrix = value_rows(value([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), OPTIONS)
    assert matrix and rows == (("1", "2", "3"), ("4", "5", "6"))


def test_one_or_two_numbers_get_four_digits_and_more_get_three():
    assert value_rows(value([1 / 3, 1 / 3]), OPTIONS)[0] == (("0.3333", "0.3333"),)
    assert value_rows(value([1 / 3] * 3), OPTIONS)[0] == (("0.333",) * 3,)


def test_a_scalar_is_one_row_of_one_number():
    assert value_rows(value(2.5), OPTIONS) == ((("2.5",),), True)


def test_ints_and_bools_are_shown_as_the_tensor_holds_them():
    assert value_rows(value([3, -1], dtype="int64"), OPTIONS)[0] == (("3", "-1"),)
    assert value_rows(value([True, False], dtype="bool"), OPTIONS)[0] == (("True", "False"),)


def test_complex_numbers_are_shown_by_their_magnitude():
    rows, matrix = value_rows(value([3 + 4j, -1j], dtype="complex64"), OPTIONS)
    assert matrix and rows == (("5", "1"),)


@pytest.mark.parametrize("limit,shape", [("max_values", (3, 4)), ("max_rows", (5, 1)),
                                         ("max_cols", (1, 7))])
def test_a_tensor_just_over_a_limit_is_summarised_and_one_at_it_is_not(limit, shape):
    n = math.prod(shape)
    numbers = np.arange(1.0, n + 1).reshape(shape)
    # at the limit: in full
    at = {"max_values": n, "max_rows": shape[0], "max_cols": shape[1]}[limit]
    rows, matrix = value_rows(value(numbers), GraphOptions(**{limit: at}))
    assert matrix and sum(len(r) for r in rows) == n
    # one less room: mean and range of 1..n, the mean (n+1)/2
    rows, matrix = value_rows(value(numbers), GraphOptions(**{limit: at - 1}))
    from gradtrace.formatting import number

    assert not matrix and rows == ((f"mean {number((n + 1) / 2, 3)}",), (f"1 … {number(float(n), 3)}",))


def test_a_tensor_of_three_dimensions_is_summarised_however_small():
    rows, matrix = value_rows(value([[[1.0, 3.0]]]), OPTIONS)
    assert not matrix and rows == (("mean 2",), ("1 … 3",))


def test_a_constant_tensor_says_all_and_its_number():
    assert value_rows(value(np.full((10, 10), 0.5)), OPTIONS) == ((("all 0.5",),), False)


def test_an_empty_tensor_says_empty():
    assert value_rows(value(np.zeros((0, 3))), OPTIONS) == ((("empty",),), False)


def test_a_value_kept_as_statistics_only_is_summarised_even_when_small():
    v = stats_only((2,), Stats(2, 5.0, 2.0, 1.0, 3.0, 0))
    assert value_rows(v, OPTIONS) == ((("mean 2",), ("1 … 3",)), False)


def test_a_mean_that_is_float_noise_next_to_the_spread_reads_as_zero():
    v = stats_only((100,), Stats(100, 1.0, 1e-12, -0.5, 0.5, 0))
    assert value_rows(v, OPTIONS)[0] == (("mean 0",), ("-0.5 … 0.5",))


# -- node_label ---------------------------------------------------------------------------------
def test_a_parameter_shows_its_data_and_grad_side_by_side():
    m = linear_step("both")
    lab = node_label(_node(m, "w"), OPTIONS, "both")
    assert isinstance(lab, Label) and (lab.title, lab.shape) == ("w", "(2, 1)")
    assert lab.cells == (Cell("data", (("0.5",), ("-1",)), True, "data"),
                         Cell("grad", (("4",), ("6",)), True, "grad"))


def test_the_forward_view_shows_no_gradient():
    a = _node(linear_step("both"), "w")
    assert [c.caption for c in node_label(a, OPTIONS, "forward").cells] == ["data"]


def test_without_values_a_node_has_no_cells():
    a = _node(linear_step("both"), "w")
    assert node_label(a, GraphOptions(values=False), "both").cells == ()


def test_a_grad_fn_shows_the_gradient_coming_in_and_never_data():
    a = node("grad_fn", "MmBackward0", data=value([1.0]), grad=value([2.0]))
    assert node_label(a, OPTIONS, "backward").cells == (Cell("grad in", (("2",),), True, "grad"),)


def test_an_accumulate_node_shows_its_gradient_only_in_the_backward_view():
    a = _node(linear_step("both"), "AccumulateGrad")
    assert node_label(a, OPTIONS, "both").cells == ()   # the parameter next to it shows it
    assert [c.caption for c in node_label(a, OPTIONS, "backward").cells] == ["grad"]


def test_an_op_without_a_gradient_says_none():
    a = node("op", "relu", data=value([1.0]))
    assert node_label(a, OPTIONS, "both").cells[-1] == Cell("grad", (("none",),), False, "none")
    # an input never shows a gradient cell
    assert [c.caption for c in node_label(node("input", "x", data=value([1.0])), OPTIONS, "both").cells] \
        == ["data"]


def test_a_cell_of_nonfinite_numbers_says_how_many():
    a = node("op", "log", data=value([np.nan, np.inf, 1.0]))
    assert node_label(a, OPTIONS, "forward").cells[0].alert == "2 nan/inf"
    assert node_label(node("op", "exp", data=value([1.0])), OPTIONS, "forward").cells[0].alert == ""


def test_an_op_in_the_both_view_names_its_backward_under_its_detail():
    a = _node(linear_step("both"), "matmul")
    a = dict(a, detail="· @ ·")
    assert node_label(a, OPTIONS, "both").details == ("· @ ·", "⟵ MmBackward0")
    assert node_label(a, OPTIONS, "forward").details == ("· @ ·",)


def test_the_tooltip_says_where_what_and_the_statistics():
    src = Source("/home/u/train.py", 7, "  y = w * x  ")
    a = node("op", "mul", shape=(2,), data=value([1.0, -3.0]), source=src, module="net.0",
             options="alpha=2", note="backward: MulBackward0")
    lines = node_label(a, OPTIONS, "both").tooltip.split("\n")
    norm = math.sqrt(1 + 9)
    from gradtrace.formatting import number

    assert lines == ["train.py:7: y = w * x", "mul (2,) [op]", "options: alpha=2", "module: net.0",
                     f"data: norm {number(norm)}, mean -1, min -3, max 1", "backward: MulBackward0"]


def test_the_tooltip_of_an_unknown_kind_names_the_kind():
    assert node_label(node("widget", "thing"), GraphOptions(values=False), "forward").tooltip \
        == "thing [widget]"


def test_the_title_says_step_view_and_loss_or_is_the_given_text():
    m = linear_step("both")
    assert _title(m, OPTIONS) == "step 0 · forward values and gradients · loss -4"
    assert _title(linear_step("backward"), OPTIONS) == "step 0 · backward (grad_fn graph) · loss -4"
    assert _title(m, GraphOptions(title="my graph")) == "my graph"
    m.loss = None
    assert _title(m, OPTIONS) == "step 0 · forward values and gradients"


def test_every_node_gets_a_label_from_the_models_view():
    m = linear_step("both")
    labels = _node_labels(m, OPTIONS)
    assert sorted(labels) == sorted(m.graph.nodes)
    assert labels[1] == node_label(m.graph.nodes[1], OPTIONS, "both")
