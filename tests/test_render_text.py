"""render/text.py: user text is never mathtext, and is drawn with glyphs or left out, quietly."""

from __future__ import annotations

import textwrap
import warnings

import pytest

import gradtrace
from gradtrace.render import text as text_mod
from gradtrace.render.animate import animation_of_trace
from gradtrace.render.text import code_line, fallback_fonts, fit_text

CJK_COMMENT = "# 损失函数 (均方误差)"

CJK_SCRIPT = textwrap.dedent(f"""\
    import torch
    torch.manual_seed(0)
    x = torch.rand(20)
    y = 3 * x + 0.8
    权重 = torch.zeros(1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for i in range(4):
        loss = (x * 权重 + b - y).pow(2).mean()  {CJK_COMMENT}
        loss.backward()
        with torch.no_grad():
            权重 -= 0.1 * 权重.grad
            b -= 0.1 * b.grad
            权重.grad.zero_()
            b.grad.zero_()
    """)

MATH_SCRIPT = textwrap.dedent("""\
    import torch
    p = torch.zeros(2, requires_grad=True)
    for i in range(4):
        loss = ((p - torch.tensor([1.0, -1.0])) ** 2).sum()  # $\\argmin_w \\|w - t\\|^2$
        loss.backward()
        with torch.no_grad():
            p -= 0.1 * p.grad
            p.grad.zero_()
    """)


def _record(tmp_path, source: str, name: str):
    script = tmp_path / name
    script.write_text(source, encoding="utf-8")
    code = compile(source, str(script), "exec")
    with gradtrace.trace() as t:
        exec(code, {"__name__": "__main__", "__file__": str(script)})
    return t.result


@pytest.fixture
def no_fallback_font(monkeypatch):
    """Pretend no installed font has the glyphs the default fonts lack."""
    monkeypatch.setattr(text_mod, "_candidates", lambda: ())
    text_mod._fallback.cache_clear()
    yield
    text_mod._fallback.cache_clear()


def _render_all(trace):
    """Every frame of both animations; (animations, glyph/mathtext warnings raised)."""
    anims = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kind in ("backprop", "training"):
            anims[kind] = a = animation_of_trace(trace, kind=kind, frames=4, dpi=30)
            assert len(list(a.images())) == len(a)
    return anims, [str(w.message) for w in caught]


def _code_texts(anim):
    from matplotlib.text import Text

    return [t for t in anim.renderer.fig.findobj(Text) if "loss = (" in t.get_text()]


def _last_code_frame(anim):
    frames = anim.renderer.plan.frames
    return max(i for i, f in enumerate(frames) if "loss = (" in (f.code or ""))


def test_a_placeholder_font_is_never_a_fallback(monkeypatch):
    """matplotlib ships "Last Resort High-Efficiency", which maps every code point to a box:
    on a machine with no CJK font it must not count as having the glyphs."""
    from matplotlib import font_manager as fm

    cjk = [ord(c) for c in "损失权重"]
    real = list(fm.fontManager.ttflist)
    drawing = [f for f in real if not text_mod.has_glyphs("损失权重", f.fname)
               or f.name.startswith(text_mod.PLACEHOLDER_FAMILIES)]
    assert any(f.name.startswith("Last Resort") for f in drawing), "matplotlib ships it"
    monkeypatch.setattr(fm.fontManager, "ttflist", drawing)
    monkeypatch.setattr(fm, "findSystemFonts", lambda *a, **k: [])
    text_mod._candidates.cache_clear()
    text_mod._fallback.cache_clear()
    try:
        assert not [n for n, _ in text_mod._candidates() if n.startswith("Last Resort")]
        assert fallback_fonts(cjk) == []
    finally:
        text_mod._candidates.cache_clear()
        text_mod._fallback.cache_clear()


def test_code_line_drops_only_the_comment():
    assert code_line("loss = f(x)  # 损失") == "loss = f(x)"
    assert code_line("s = '# not a comment'  # 注释") == "s = '# not a comment'"
    assert code_line("model = nn.Sequential(  # 模型") == "model = nn.Sequential("
    assert code_line("x = 1") == "x = 1"


def test_fit_text_without_a_font_drops_the_comment_then_replaces(no_fallback_font):
    from matplotlib.font_manager import FontProperties, findfont

    path = findfont(FontProperties(family="monospace"))
    assert fit_text(f"loss = f(x)  {CJK_COMMENT}", path, code=True) == ("loss = f(x)", [])
    assert fit_text("权重 = w  # 注释", path, code=True) == ("?? = w", [])
    assert fit_text("权重", path) == ("??", [])
    assert fit_text("w = 1.5 · x", path) == ("w = 1.5 · x", [])     # DejaVu has these


@pytest.mark.slow  # records a script and draws every frame of both animations
def test_cjk_comment_and_name_are_drawn_with_a_fallback_font(tmp_path, caplog):
    assert fallback_fonts([ord(c) for c in "损失函数均方误差权重"]), (
        "no installed font has CJK glyphs: apt-get install fonts-wqy-microhei (.ci/run does)")
    trace = _record(tmp_path, CJK_SCRIPT, "cjk_fit.py")
    anims, caught = _render_all(trace)
    assert not caught, caught[:3]
    # the fallback font has no bold face: drawn at its own weight without a note per text
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]
    bp = anims["backprop"]
    list(bp.images(frames=[_last_code_frame(bp)]))
    (code,) = _code_texts(bp)
    assert CJK_COMMENT in code.get_text()
    families = code.get_fontfamily()
    assert len(families) >= 2 and families[0] == "DejaVu Sans Mono"
    # the legend of the gradient norms names the parameter 权重, in a font that has it
    from matplotlib.text import Text

    named = [t for t in anims["training"].renderer.fig.findobj(Text) if t.get_text() == "权重"]
    assert named and all(len(t.get_fontfamily()) >= 2 for t in named)


@pytest.mark.slow  # records a script and draws every frame of both animations
def test_cjk_without_a_font_drops_the_comment_quietly(tmp_path, no_fallback_font):
    trace = _record(tmp_path, CJK_SCRIPT, "cjk_fit.py")
    anims, caught = _render_all(trace)
    assert not caught, caught[:3]
    bp = anims["backprop"]
    list(bp.images(frames=[_last_code_frame(bp)]))
    (code,) = _code_texts(bp)
    assert code.get_text().endswith("loss = (x * ?? + b - y).pow(2).mean()")
    assert "#" not in code.get_text()


@pytest.mark.slow  # records a script and draws every frame of both animations
def test_dollar_signs_are_text_not_mathtext(tmp_path):
    trace = _record(tmp_path, MATH_SCRIPT, "argmin.py")
    anims, caught = _render_all(trace)
    assert not caught, caught[:3]
    bp = anims["backprop"]
    list(bp.images(frames=[_last_code_frame(bp)]))
    (code,) = _code_texts(bp)
    assert code.get_text().endswith("# $\\argmin_w \\|w - t\\|^2$")
    assert not code.get_parse_math()
