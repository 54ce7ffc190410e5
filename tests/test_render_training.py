"""render/training.py: the training animation draws what a trace has, whatever it lacks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.render.animate import animation_of_trace

from test_analysis_training import _linear, _two_layer

DPI = 24


def _frames(trace, kind="training"):
    """Every frame of a 3-frame animation, with the warnings raised while drawing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        anim = animation_of_trace(trace, kind=kind, frames=3, dpi=DPI)
        images = [np.asarray(im) for im in anim.images()]
    return anim, images, [str(w.message) for w in caught]


def _texts(anim) -> str:
    from matplotlib.text import Text

    fig = anim.renderer.fig
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_stats_only_parameter_is_drawn_with_what_is_there():
    """The tutorial's two-layer net with w1 above --max-numel (was a KeyError)."""
    with gradtrace.trace(max_value_numel=1000) as t:
        _two_layer()
    anim, images, caught = _frames(t.result)
    assert len(images) == 3 and not caught
    r = anim.renderer
    assert r.traj_line is not None                  # w2's path, the one kept
    words = _texts(anim)
    assert "w1: its 12,000 numbers were kept as statistics only" in words.replace("\n", " ")
    assert "--max-numel 12000" in words.replace("\n", " ")
    assert len(r.grad_lines) == 2                   # both gradient norms, from the statistics


def test_huge_model_is_drawn_without_values():
    """Over 100,000 numbers to learn: no trajectory, but loss, norms and events (was KeyError: 0)."""
    torch.manual_seed(0)
    with gradtrace.trace() as t:
        model = nn.Linear(400, 300)                # 120,300 numbers
        X = torch.randn(4, 400)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(3):
            loss = model(X).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    anim, images, caught = _frames(t.result)
    assert len(images) == 3 and not caught
    r = anim.renderer
    assert [p.shape for p in r.series.tracked] == [(300,)]   # the bias's path is drawn
    assert r.traj_line is not None and len(r.grad_lines) == 2
    assert "120,000 numbers, too many to plot" in _texts(anim).replace("\n", " ")
    xs, ys = r.loss_line.get_data()
    assert list(xs) == [0, 1, 2] and ys[-1] == pytest.approx(t.result.steps[2].loss)


@pytest.mark.parametrize("n_in", [1, 2, 3])
def test_bias_free_linear_models(n_in):
    """nn.Linear(n, 1, bias=False): one parameter of 1, 2 (was an IndexError) or 3 numbers."""
    with gradtrace.trace() as t:
        _linear(n_in)
    anim, images, caught = _frames(t.result)
    assert len(images) == 3 and not caught
    for a, b in zip(images, images[1:]):
        assert (a != b).any()
    r = anim.renderer
    assert bool(r.surface) == (n_in > 1)
    xs, _ = r.traj_line.get_data()
    assert len(xs) == len(t.result.steps)           # after the last frame: the whole path


def test_a_single_parameter_without_a_linear_model():
    with gradtrace.trace() as t:
        p = torch.zeros(2, requires_grad=True)
        for _ in range(5):
            loss = (p.sin() - torch.tensor([0.5, -0.5])).pow(2).sum()
            loss.backward()
            with torch.no_grad():
                p -= 0.3 * p.grad
                p.grad.zero_()
    anim, images, caught = _frames(t.result)
    assert len(images) == 3 and not caught
    xs, ys = anim.renderer.traj_line.get_data()
    np.testing.assert_allclose([xs[-1], ys[-1]], t.result.steps[-1].value(t.result.find("p").tid)
                               .data.double().numpy(), rtol=1e-6)


@pytest.mark.parametrize("lo, hi", [(0.02, 0.5), (2e-5, 3.0), (0.2, 0.6), (1e-12, 1e3)])
def test_a_log_axis_labels_only_ticks_that_fit_its_height(lo, hi):
    """A gradient-norm panel is a few lines high: matplotlib's own labels of a range under
    two decades (2×10⁻¹, 3×10⁻¹, ... on every minor tick) were drawn on top of each other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradtrace.render.training import Look

    fig = plt.figure(figsize=(8.64, 4.86), dpi=100)
    look = Look(fig)
    ax = fig.add_axes((0.45, 0.3, 0.27, 0.15))  # the training frame's gradient panel
    look.style(ax, "gradient norm")
    ax.set_yscale("log")
    ax.plot([0, 1], [lo, hi])
    look.ylim(ax, [lo, hi], True)
    fig.canvas.draw()
    shown = [t for t in ax.yaxis.get_major_ticks() if t.label1.get_visible()
             and t.label1.get_text() and lo / 1.5 <= t.get_loc() <= hi * 1.5]
    assert shown, "no labelled tick at all"
    ys = sorted(t.label1.get_window_extent().y0 for t in shown)
    label_px = (look.fs - 1) * fig.dpi / 72
    assert all(b - a >= 1.5 * label_px for a, b in zip(ys, ys[1:])), (ys, label_px)
    assert not any(t.label1.get_text() for t in ax.yaxis.get_minor_ticks())
    plt.close(fig)
