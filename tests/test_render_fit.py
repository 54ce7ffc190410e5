"""Text fitted to a width with the figure's own renderer (render/fit.py)."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gradtrace.render.fit import _Fit

SIZE = 12.0
SENTENCE = "the gradient of the loss travels back along every edge of the graph"


@pytest.fixture(scope="module")
def fit():
    fig = Figure(figsize=(4, 3), dpi=50)
    FigureCanvasAgg(fig)
    return _Fit(fig)


def test_widths_are_in_points_whatever_the_dpi(fit):
    fig = Figure(figsize=(4, 3), dpi=200)
    FigureCanvasAgg(fig)
    sharp = _Fit(fig)
    w = fit.width(SENTENCE, SIZE)
    assert w > 0
    assert sharp.width(SENTENCE, SIZE) == pytest.approx(w, rel=0.05)
    assert fit.width(SENTENCE, SIZE, "bold") > w
    assert fit.width(SENTENCE, 2 * SIZE) == pytest.approx(2 * w, rel=0.05)


def test_shorten_keeps_what_fits_and_marks_the_cut(fit):
    w = fit.width(SENTENCE, SIZE)
    assert fit.shorten(SENTENCE, w + 1, SIZE) == SENTENCE
    cut = fit.shorten(SENTENCE, w / 2, SIZE)
    assert cut.endswith("…") and SENTENCE.startswith(cut[:-1])
    assert fit.width(cut, SIZE) <= w / 2
    assert len(cut) > 5   # the longest start that fits, not a stub
    assert fit.shorten(SENTENCE, 1.0, SIZE) == ""   # not even the ellipsis fits


def test_first_takes_the_longest_variant_that_fits(fit):
    variants = ("[3, 1] mean 0.25", "mean 0.25", "0.25")
    widths = [fit.width(v, SIZE) for v in variants]
    assert fit.first(variants, widths[0] + 1, SIZE) == variants[0]
    assert fit.first(variants, widths[1] + 1, SIZE) == variants[1]
    last = fit.first(variants, widths[2] * 0.7, SIZE)
    assert last.endswith("…") and fit.width(last, SIZE) <= widths[2] * 0.7


def test_wrap_breaks_between_words_and_every_line_fits(fit):
    width = fit.width(SENTENCE, SIZE) / 3
    lines = fit.wrap(SENTENCE, width, SIZE)
    assert len(lines) >= 3
    assert " ".join(lines) == SENTENCE
    assert all(fit.width(line, SIZE) <= width for line in lines)
    # a word wider than a line is shortened, not spilled
    (only,) = fit.wrap("backpropagation", fit.width("back", SIZE) * 1.5, SIZE)
    assert only.endswith("…") and "backpropagation".startswith(only[:-1])
