"""render/palette.py: the one palette, its roles, its read-only tables and its CSS variables."""

from __future__ import annotations

import colorsys
import re

import pytest

from gradtrace.render import palette

HEX = re.compile(r"^#[0-9a-f]{6}$")

#: The eight hues of Okabe & Ito (2008), "Color Universal Design", as published (RGB 0-255).
PUBLISHED_OKABE_ITO = {
    "black": (0, 0, 0), "orange": (230, 159, 0), "sky": (86, 180, 233),
    "green": (0, 158, 115), "yellow": (240, 228, 66), "blue": (0, 114, 178),
    "vermillion": (213, 94, 0), "purple": (204, 121, 167),
}

KIND_TABLES = ("KIND_LINE", "KIND_FILL", "KIND_LINE_DARK", "KIND_FILL_DARK")
PAIR_TABLES = ("EVENT", "STATUS", "LIT")


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _luminance(colour: str) -> float:
    """WCAG relative luminance of a #rrggbb colour."""
    def lin(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _hue_degrees(colour: str) -> float:
    r, g, b = (c / 255 for c in _rgb(colour))
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def _every_colour() -> list[tuple[str, str]]:
    """(where, colour) for every colour the module defines."""
    out = []
    for name in dir(palette):
        v = getattr(palette, name)
        if name.startswith("_") or callable(v):
            continue
        if isinstance(v, str):
            out.append((name, v))
        elif isinstance(v, tuple):
            out.extend((f"{name}[{i}]", c) for i, c in enumerate(v))
        elif hasattr(v, "items"):
            for k, c in v.items():
                out.extend([(f"{name}[{k}]", c)] if isinstance(c, str)
                           else [(f"{name}[{k}][{i}]", x) for i, x in enumerate(c)])
    return out


def test_every_colour_is_a_lowercase_six_digit_hex():
    colours = _every_colour()
    assert len(colours) > 60          # the tables are all walked, not just the greys
    bad = [(where, c) for where, c in colours if not HEX.match(c)]
    assert bad == []


def test_the_okabe_ito_hues_are_the_published_ones():
    assert {k: _rgb(v) for k, v in palette.OKABE_ITO.items()} == PUBLISHED_OKABE_ITO


def test_the_series_are_the_eight_okabe_ito_hues_each_once():
    assert len(palette.SERIES) == len(set(palette.SERIES)) == 8
    assert set(palette.SERIES) == set(palette.OKABE_ITO.values())


@pytest.mark.parametrize("i", [0, 1, 7, 8, 9, 15, 16, 100])
def test_series_cycles_through_the_series_colours(i):
    assert palette.series(i) == palette.SERIES[i % len(palette.SERIES)]


def test_series_wraps_round_to_the_first_colour():
    n = len(palette.SERIES)
    assert palette.series(n) == palette.series(0) == palette.SERIES[0]
    assert [palette.series(k) for k in range(n)] == list(palette.SERIES)


@pytest.mark.parametrize("table", ["OKABE_ITO", *KIND_TABLES, *PAIR_TABLES])
def test_the_tables_are_read_only(table):
    """A renderer asks the palette for a role; it cannot repaint it for everyone else."""
    t = getattr(palette, table)
    key = next(iter(t))
    before = t[key]
    with pytest.raises(TypeError):
        t[key] = "#123456"
    with pytest.raises(TypeError):
        t["new-role"] = "#123456"
    assert t[key] == before and "new-role" not in t


def test_every_node_kind_has_a_line_and_a_fill_on_both_backgrounds():
    kinds = set(palette.KIND_LINE)
    assert kinds >= {"param", "input", "op", "loss", "grad_fn", "accumulate"}
    for table in KIND_TABLES:
        assert set(getattr(palette, table)) == kinds, table


def test_a_fill_is_lighter_than_its_line_on_light_and_darker_on_dark():
    for kind in palette.KIND_LINE:
        assert _luminance(palette.KIND_FILL[kind]) > _luminance(palette.KIND_LINE[kind]), kind
        assert _luminance(palette.KIND_FILL_DARK[kind]) < _luminance(palette.KIND_LINE_DARK[kind]), kind
    for name, (line, fill) in palette.EVENT.items():
        assert _luminance(fill) > _luminance(line), name
    for name, (fg, bg) in palette.STATUS.items():
        assert _luminance(bg) > _luminance(fg), name


def test_ok_and_bad_are_blue_and_vermillion_not_green_and_red():
    """The pair stays apart under the common colour-vision deficiencies (module docstring)."""
    ok, bad = palette.STATUS["ok"][0], palette.STATUS["bad"][0]
    assert 190 <= _hue_degrees(ok) <= 215            # blue (Okabe–Ito blue is 202°)
    assert 15 <= _hue_degrees(bad) <= 35             # vermillion (26°), not red (0°)
    assert 190 <= _hue_degrees(palette.EVENT["fresh"][0]) <= 215
    assert 15 <= _hue_degrees(palette.EVENT["added"][0]) <= 35   # the bug case reads as "bad"


def test_a_cleared_grad_looks_like_a_fresh_one():
    """Adding onto zeros is as good as a fresh .grad: the same colours."""
    assert palette.EVENT["zeros"] == palette.EVENT["fresh"]
    assert palette.EVENT["added"] != palette.EVENT["fresh"]


def _css() -> dict[str, str]:
    text = palette.css_variables()
    assert text.startswith(":root{") and text.endswith("}")
    body = text[len(":root{"):-1]
    decls = body.split(";")
    assert decls[-1] == ""                     # every declaration ends in a semicolon
    pairs = [d.split(":", 1) for d in decls[:-1]]
    names = [n for n, _ in pairs]
    assert len(names) == len(set(names)), "a CSS variable is declared twice"
    return dict(pairs)


def test_css_variables_name_every_role_of_the_palette():
    css = _css()
    assert all(n.startswith("--gt-") and re.fullmatch(r"--gt-[a-z0-9-]+", n) for n in css)
    assert all(HEX.match(v) for v in css.values())
    for kind in palette.KIND_LINE:
        slug = kind.replace("_", "-")
        assert css[f"--gt-kind-{slug}-line"] == palette.KIND_LINE[kind]
        assert css[f"--gt-kind-{slug}-fill"] == palette.KIND_FILL[kind]
    for name, (line, fill) in palette.EVENT.items():
        slug = name.replace("_", "-")
        assert (css[f"--gt-event-{slug}"], css[f"--gt-event-{slug}-fill"]) == (line, fill)
    for name, (fg, bg) in palette.STATUS.items():
        assert (css[f"--gt-{name}"], css[f"--gt-{name}-fill"]) == (fg, bg)
    assert [css[f"--gt-series-{i}"] for i in range(len(palette.SERIES))] == list(palette.SERIES)
    assert f"--gt-series-{len(palette.SERIES)}" not in css
    for name in ("INK", "TEXT", "SUBTLE", "MUTED", "DIM", "RULE", "PANEL", "BACKGROUND", "GRAD", "TARGET"):
        assert css[f"--gt-{name.lower()}"] == getattr(palette, name)


def test_css_variables_are_the_same_text_every_time():
    assert palette.css_variables() == palette.css_variables()
    assert "\n" not in palette.css_variables()        # one line, inlined in a <style>
