"""render/training_panels.py: the training animation's panels, what each draws and moves per frame."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import gradtrace
from gradtrace.formatting import slide_number as fmt_num
from gradtrace.render import palette
from gradtrace.render import training_panels as tp
from gradtrace.render.animate import AnimateOptions
from gradtrace.render.training import Look, TrainingRenderer
from test_render_animate import _train

STEPS = 6


def _record(script) -> tuple:
    with gradtrace.trace() as t:
        script()
    r = TrainingRenderer(t.result, AnimateOptions(kind="training", frames=4).resolved())
    return t.result, r.run


def _line_script(zero: bool = True):
    """y = 3x + 0.8 fitted by gradient descent on w, b (test_render_animate's loop)."""
    return lambda: _train(STEPS, zero, lr=0.2)


@pytest.fixture(scope="module")
def line():
    """y = 3x + 0.8 fitted by w, b (one input feature: an exact surface and the fitted line)."""
    return _record(_line_script())


@pytest.fixture(scope="module")
def plane():
    """Two input features, w (2,) and b: a plane through the optimum, predicted against true."""
    def run():
        torch.manual_seed(1)
        X = torch.randn(12, 2)
        y = X @ torch.tensor([2.0, -1.0]) + 0.5
        w = torch.zeros(2, requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        for _ in range(STEPS):
            loss = (X @ w + b - y).pow(2).mean()
            loss.backward()
            with torch.no_grad():
                for p in (w, b):
                    p -= 0.1 * p.grad
                    p.grad.zero_()
    return _record(run)


def _sine(n: int):
    def run():
        p = torch.zeros(n, requires_grad=True)
        target = torch.linspace(-0.5, 0.5, n)
        for _ in range(STEPS):
            loss = (p.sin() - target).pow(2).sum()
            loss.backward()
            with torch.no_grad():
                p -= 0.3 * p.grad
                p.grad.zero_()
    return run


@pytest.fixture(scope="module")
def sine():
    """No linear model: p (2,) through sin()."""
    return _record(_sine(2))


def _look():
    fig = Figure(figsize=(6, 3.4), dpi=24)
    FigureCanvasAgg(fig)
    return Look(fig)


def _ax(look):
    return look.fig.add_axes([0.1, 0.1, 0.8, 0.8])


def _values(trace, name: str) -> np.ndarray:
    """(steps, numel): a parameter's value as each step's forward pass used it, from the trace."""
    tid = trace.find(name).tid
    return np.array([s.value(tid).array.astype(np.float64).reshape(-1) for s in trace.steps])


# -- the helpers ----------------------------------------------------------------------------------------
def test_a_log_scale_for_positive_values_spanning_more_than_thirty_times():
    assert tp._log_scale(np.array([1.0, 31.0]))
    assert not tp._log_scale(np.array([1.0, 30.0]))
    assert not tp._log_scale(np.array([0.0, 1.0, 100.0]))          # a zero: no log scale
    assert not tp._log_scale(np.array([-1.0, 100.0]))
    assert tp._log_scale(np.array([1.0, np.nan, np.inf, 1000.0]))  # what is not finite is left out
    assert not tp._log_scale(np.array([np.nan, np.inf])) and not tp._log_scale(np.array([]))


def test_unit_vectors_are_one_long_in_the_boxs_fractions():
    span = np.array([10.0, 0.5])
    uv = np.array([[3.0, 0.0], [0.0, -2.0], [5.0, 0.25], [0.0, 0.0]])
    out = tp._unit(uv, span)
    np.testing.assert_allclose(np.hypot(out[:3, 0], out[:3, 1]), 1.0)
    np.testing.assert_array_equal(out[3], [0.0, 0.0])                 # no direction: no nan
    rel = uv / span
    np.testing.assert_allclose(out[2], rel[2] / np.hypot(*rel[2]))   # same direction


def _series(left_out, params):
    return SimpleNamespace(left_out=left_out, names={p.tid: p.name for p in params},
                           params=[SimpleNamespace(tid=p.tid, shape=p.shape) for p in params])


def test_left_out_words_name_each_parameter_and_the_option_that_keeps_it():
    params = [SimpleNamespace(tid=4, name="w1", shape=(30, 400)), SimpleNamespace(tid=2, name="w2", shape=(3, 30)),
              SimpleNamespace(tid=7, name="big", shape=(400, 300))]
    s = _series({4: "its 12,000 numbers were kept as statistics only (...)",
                 2: "its 90 numbers were kept as statistics only (...)",
                 7: "120,000 numbers, too many to plot"}, params)
    assert tp.left_out_words(s) == ("w2: its 90 numbers were kept as statistics only (...); "
                                    "w1: its 12,000 numbers were kept as statistics only (...); "
                                    "big: 120,000 numbers, too many to plot; "
                                    "record with --values full --max-numel 12000 to keep them")


def test_left_out_words_without_statistics_give_no_option():
    p = SimpleNamespace(tid=1, name="big", shape=(400, 300))
    assert tp.left_out_words(_series({1: "120,000 numbers, too many to plot"}, [p])) == \
        "big: 120,000 numbers, too many to plot"


def test_left_out_words_when_nothing_was_left_out_guess_the_recording():
    assert tp.left_out_words(_series({}, [])) == "(recorded with --values stats?)"


def test_the_reason_there_is_no_surface():
    assert tp.reason(SimpleNamespace(reason="the loss is softmax cross-entropy")) == \
        "the loss is softmax cross-entropy"
    assert tp.reason(SimpleNamespace(reason="")) == "not a recognised linear model"
    assert tp.reason(None) == "not a recognised linear model"


# -- which data panel ------------------------------------------------------------------------------------
def test_the_data_panel_fits_the_model(line, plane, sine):
    look = _look()
    assert isinstance(tp.data_panel(line[1], look, _ax(look)), tp.FittedLine)
    assert isinstance(tp.data_panel(plane[1], look, _ax(look)), tp.PredictedVsTrue)
    assert isinstance(tp.data_panel(sine[1], look, _ax(look)), tp.ParameterValues)


# -- the header ----------------------------------------------------------------------------------------
def test_the_header_names_the_step_the_loss_the_distance_and_the_parameters(line):
    trace, run = line
    look = _look()
    h = tp.Header(run, look, look.fig.add_axes([0, 0.9, 1, 0.1]), "fit.py · training", "a note")
    f = run.frame(2)
    h.draw(f)
    assert h.title_text.get_text() == f"step {f.step}"
    w, b = _values(trace, "w")[f.step, 0], _values(trace, "b")[f.step, 0]
    step = trace.step(f.step)
    # θ* by least squares on the data, apart from the surface's own fit
    x, y = run.surface.X[:, 0], run.surface.y[:, 0]
    opt, *_ = np.linalg.lstsq(np.column_stack([x, np.ones_like(x)]), y, rcond=None)
    dist = float(np.hypot(w - opt[0], b - opt[1]))
    parts = h.sub_text.get_text().split("   ·   ")
    assert parts[0] == f"loss {fmt_num(step.loss)}"
    assert parts[1].startswith("‖θ − θ*‖ ") and float(parts[1].split()[-1].replace("−", "-")) == \
        pytest.approx(dist, rel=1e-3)
    assert parts[2] == f"w = {fmt_num(w)}, b = {fmt_num(b)}"
    assert "(a note)" in [t.get_text() for t in look.fig.texts + look.fig.axes[0].texts]
    assert h.artists() == [h.title_text, h.sub_text]


def test_the_header_shows_a_vector_up_to_three_numbers_and_a_norm_beyond():
    row = {1: np.array([[0.5, -1.0]]), 2: np.array([[1.0, 2.0, 2.0, 4.0]])}
    s = SimpleNamespace(tracked=[SimpleNamespace(tid=1), SimpleNamespace(tid=2)], values=row,
                        names={1: "w"})
    h = object.__new__(tp.Header)
    h.run = SimpleNamespace(series=s)
    assert h._param_words(0) == (f"w = [{fmt_num(0.5)}, {fmt_num(-1.0)}], "
                                 f"‖t2‖ = {fmt_num(5.0)}")


# -- the curves and the strip ---------------------------------------------------------------------------
def test_the_curves_grow_to_the_frames_step(line):
    trace, run = line
    look = _look()
    axes = [_ax(look) for _ in range(3)]
    c = tp.Curves(run, look, *axes)
    losses = [r["loss"] for r in trace.step_rows()]
    f = run.frame(2)
    c.draw(f)
    xs, ys = c.loss_line.get_data()
    assert list(xs) == list(range(f.p + 1))
    np.testing.assert_allclose(ys, losses[:f.p + 1], rtol=1e-6)
    assert all(list(cur.get_xdata()) == [f.step, f.step] for cur in c.cursors)
    assert [line.get_label() for line, _ in c.grad_lines] == ["w", "b"]
    for (gline, norms), name in zip(c.grad_lines, ("w", "b")):
        tid = trace.find(name).tid
        want = [float(np.linalg.norm(e.after.array)) for s in trace.steps for e in s.accumulations
                if e.tensor == tid]
        np.testing.assert_allclose(norms, want, rtol=1e-5)
        assert len(gline.get_xdata()) == f.r + 1
    assert len(c.artists()) == 2 + 3 + 2 + 2          # loss and its dot, cursors, norms, distance


def test_without_a_surface_the_distance_panel_says_why(sine):
    _, run = sine
    look = _look()
    axes = [_ax(look) for _ in range(3)]
    c = tp.Curves(run, look, *axes)
    assert c.dist is None
    words = " ".join(t.get_text() for t in axes[1].texts).replace("\n", " ")
    assert words.startswith("no closed-form optimum ") and tp.reason(run.surface) in words


def _strip_rgb(kind: str) -> list[float]:
    c = tp._EVENT_COLORS[kind]
    return [int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]


def test_the_strip_colours_each_steps_events(line):
    trace, run = line
    look = _look()
    ax = _ax(look)
    tp.Strip(run, look, ax)
    img = ax.images[0].get_array()
    rows = trace.step_rows()
    assert img.shape == (3, len(rows), 3)
    for i, r in enumerate(rows):
        acc = "fresh" if r["accumulate_fresh"] else "zeros"
        np.testing.assert_allclose(img[0, i], _strip_rgb(acc))
        np.testing.assert_allclose(img[1, i], _strip_rgb("update"))
        np.testing.assert_allclose(img[2, i], _strip_rgb("zero") if r["zeroings"] else [1.0, 1.0, 1.0])
    legend = [t.get_text() for t in ax.texts]
    assert "■ fresh" in legend and "■ onto zeros" in legend
    assert "■ ADDED to an old .grad!" not in legend        # said only when it happened


def test_the_strip_of_a_script_that_never_zeroes_shows_the_bug():
    trace, run = _record(_line_script(zero=False))
    look = _look()
    ax = _ax(look)
    tp.Strip(run, look, ax)
    img = ax.images[0].get_array()
    np.testing.assert_allclose(img[0, 1:], [_strip_rgb("added")] * (STEPS - 1))
    np.testing.assert_allclose(img[2], np.ones((STEPS, 3)))       # no zeroing anywhere
    assert "■ ADDED to an old .grad!" in [t.get_text() for t in ax.texts]
    assert tp._EVENT_COLORS["added"] == palette.EVENT["added"][0]


# -- the trajectory ---------------------------------------------------------------------------------------
def test_the_trajectory_ends_at_the_frames_parameters(line):
    trace, run = line
    look = _look()
    t = tp.Trajectory(run, look, _ax(look))
    f = run.frame(2)
    t.draw(f)
    w, b = _values(trace, "w")[:, 0], _values(trace, "b")[:, 0]
    xs, ys = t.line.get_data()
    np.testing.assert_allclose(np.column_stack([xs, ys]), np.column_stack([w, b])[:f.r + 1], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(t.dot.get_data()), [w[f.r], b[f.r]], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(t.opt_marker.get_data()), run.path.opt_xy)
    assert t.arrows is not None and t.opt_marker in t.artists()


def test_the_arrows_have_one_length_whatever_the_gradients_size(line):
    _, run = line
    look = _look()
    t = tp.Trajectory(run, look, _ax(look))
    (x0, x1), (y0, y1) = t.ax.get_xlim(), t.ax.get_ylim()
    span = np.array([x1 - x0, y1 - y0])                      # the box drawn, in data units
    for arrows in (t.arrows.arrow_true, t.arrows.arrow_rec):
        rel = arrows / span
        np.testing.assert_allclose(np.hypot(rel[:, 0], rel[:, 1]), 1.0, rtol=1e-6)
    # −∇loss of the surface: at right angles to the contours, so along −H(θ − θ*)
    S = run.surface
    theta = run.path.xy
    g = -(theta - S.optimum) @ S.hessian.T
    np.testing.assert_allclose(t.arrows.arrow_true / span,
                               (g / span) / np.hypot(*(g / span).T)[:, None], rtol=1e-6, atol=1e-9)


def test_no_trajectory_without_parameter_values():
    run = SimpleNamespace(path=SimpleNamespace(xy=None), series=SimpleNamespace(left_out={}),
                          surface=None)
    look = _look()
    t = tp.Trajectory(run, look, _ax(look))
    assert t.line is None and t.xy is None and t.artists() == []
    assert t.ax.texts[0].get_text().startswith("no trajectory: parameter values were not kept in full")
    t.draw(SimpleNamespace(r=0))                          # nothing to move, and no error


# -- the data panels --------------------------------------------------------------------------------------
def test_the_fitted_line_is_the_model_at_the_frames_parameters(line):
    trace, run = line
    look = _look()
    fl = tp.FittedLine(run, look, _ax(look))
    for i in range(len(run.frames)):
        f = run.frame(i)
        fl.draw(f)
        w, b = _values(trace, "w")[f.step, 0], _values(trace, "b")[f.step, 0]
        lx, ly = fl.fit_line.get_data()
        np.testing.assert_allclose(ly, w * np.asarray(lx) + b, rtol=1e-6, atol=1e-9)
        sign = "+" if b >= 0 else "−"
        assert fl.fit_text.get_text() == f"ŷ = {fmt_num(w)}·x {sign} {fmt_num(abs(b))}"


def test_predicted_against_true_and_the_rms_error(plane):
    trace, run = plane
    look = _look()
    p = tp.PredictedVsTrue(run, look, _ax(look))
    f = run.frame(len(run.frames) - 1)
    p.draw(f)
    X, y = run.surface.X, run.surface.y[:, 0]
    pred = X @ _values(trace, "w")[f.step] + _values(trace, "b")[f.step, 0]
    xy = p.scatter.get_offsets()
    np.testing.assert_allclose(xy[:, 0], y)
    np.testing.assert_allclose(xy[:, 1], pred, rtol=1e-6, atol=1e-9)
    assert p.fit_text.get_text() == f"RMS error {fmt_num(float(np.sqrt(np.mean((pred - y) ** 2))))}"


def test_without_a_linear_model_the_parameters_values_are_plotted(sine):
    trace, run = sine
    look = _look()
    ax = _ax(look)
    pv = tp.ParameterValues(run, look, ax)
    assert ax.get_title(loc="left") == "parameter values"
    assert [c.line.get_label() for c in pv.curves] == ["p[0]", "p[1]"]
    f = run.frame(len(run.frames) - 1)
    pv.draw(f)
    p = _values(trace, "p")
    for j, c in enumerate(pv.curves):
        np.testing.assert_allclose(c.line.get_ydata(), p[:f.r + 1, j], rtol=1e-6)


def test_more_than_eight_numbers_are_plotted_as_their_norm():
    trace, run = _record(_sine(9))
    look = _look()
    ax = _ax(look)
    pv = tp.ParameterValues(run, look, ax)
    assert ax.get_title(loc="left") == "parameter sizes ‖p‖"
    (c,) = pv.curves
    np.testing.assert_allclose(c.ys, np.linalg.norm(_values(trace, "p"), axis=1), rtol=1e-6)


def test_parameter_values_not_kept_say_so():
    run = SimpleNamespace(series=SimpleNamespace(left_out={}), theta=None)
    look = _look()
    ax = _ax(look)
    pv = tp.ParameterValues(run, look, ax)
    assert pv.curves == [] and pv.artists() == []
    assert ax.texts[0].get_text().startswith("not kept in full\n")
