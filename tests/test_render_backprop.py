"""The backprop explainer's scene and frames: one graph model and one layout, slide-sized
frames, text that fits its boxes at a legible size, plain text only."""

from __future__ import annotations

import textwrap

import pytest
import torch
from matplotlib.text import Text
from PIL import Image
from torch import nn

import gradtrace
from gradtrace.cli.animate import _inches
from gradtrace.render.animate import AnimateOptions, animation_of_trace
from gradtrace.render.backprop import MIN_FONT_PX

from conftest import gradtrace_cmd
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


# -- frame size ------------------------------------------------------------------------------------
def test_backprop_frames_are_slide_sized_by_default(wide):
    o = AnimateOptions(kind="backprop").resolved()
    assert o.size[0] * o.dpi >= 1600
    im = animation_of_trace(wide, kind="backprop").frame(0)
    assert im.size == (1920, 1080)


def test_cli_size_takes_pixels_or_inches():
    assert _inches("1600x900", "backprop", None) == (20.0, 11.25)       # 80 dpi
    assert _inches("1000x500", "backprop", 100) == (10.0, 5.0)
    assert _inches("12x6.75", "training", None) == (12.0, 6.75)          # inches pass through
    assert _inches("30x20px", "backprop", 10) == (3.0, 2.0)
    assert _inches("big", "backprop", None) == "big"                      # AnimateOptions says no
    assert _inches(None, "backprop", None) is None


@pytest.mark.slow  # `gradtrace animate` in a forked child
def test_animate_size_is_honoured(tmp_path):
    (tmp_path / "fit.py").write_text(textwrap.dedent("""\
        import torch
        w = torch.tensor([0.5], requires_grad=True)
        x = torch.tensor([1.0, 2.0])
        for _ in range(2):
            ((x * w - 1) ** 2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
        """))
    r = gradtrace_cmd("run", "--no-report", "--no-animate", "-o", "t.gtrace", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for size, dpi, want in (("1280x720", [], (1280, 720)), ("8x4.5", ["--dpi", "40"], (320, 180))):
        r = gradtrace_cmd("animate", "t.gtrace", "--kind", "backprop", "--size", size, *dpi,
                          "-o", "f.png", "--no-progress", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        with Image.open(tmp_path / "f.png") as im:
            assert im.size == want
    r = gradtrace_cmd("animate", "t.gtrace", "--kind", "backprop", "--size", "wide",
                      "-o", "f.png", cwd=tmp_path)
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr


# -- text that fits --------------------------------------------------------------------------------
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


# -- the explainer's modules ------------------------------------------------------------------------
def test_the_explainers_names_import_from_backprop():
    """backprop.py is the entry point of its family of modules: the names that moved to
    backprop_plan, backprop_scene, backprop_frames, backprop_panels and fit are the same
    objects when imported from it."""
    from gradtrace.render import (backprop, backprop_frames, backprop_panels, backprop_plan,
                                  backprop_scene, fit)

    moved = {backprop_plan: ("Plan", "backprop_plan", "pick_step", "_script_name"),
             backprop_scene: ("Scene", "SceneNode", "_scene"),
             backprop_frames: ("Frame", "ParamCell", "_acc_mark"),
             backprop_panels: ("MIN_FONT_PX",),
             fit: ("_Fit",)}
    for module, names in moved.items():
        for name in names:
            assert getattr(backprop, name) is getattr(module, name), name
            assert name in backprop.__all__
    assert issubclass(backprop.BackpropRenderer, (backprop_panels._GraphPanel, backprop_panels._CardsPanel))
