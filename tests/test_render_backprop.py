"""render/backprop.py, the explainer's renderer and entry point: slide-sized frames, the sizes
asked for, the names its family of modules re-export. (The scene, the plan, the frames and the
panels have test files of their own: tests/test_render_backprop_*.py.)"""

from __future__ import annotations

import textwrap

import pytest
from PIL import Image

from gradtrace.cli.animate import _inches
from gradtrace.render.animate import AnimateOptions, animation_of_trace

from conftest import gradtrace_cmd
from test_render_backprop_scene import wide  # noqa: F401 (a fixture: four wide layers)


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
