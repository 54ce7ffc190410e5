"""Text fitted to a width in a matplotlib figure: measured with the figure's own renderer,
shortened with an ellipsis, the first of several wordings that fits, or wrapped by words."""

from __future__ import annotations

from .text import drawn_as

__all__: list[str] = []


class _Fit:
    """Text measured with the figure's own renderer (the extents matplotlib will draw),
    and shortened with an ellipsis to fit a width. Widths are in points."""

    def __init__(self, fig):
        self.renderer = fig.canvas.get_renderer()
        self.scale = 72.0 / fig.dpi
        self.cache: dict[tuple, float] = {}

    def width(self, text: str, size: float, weight: str = "normal", family: str = "sans-serif") -> float:
        key = (text, size, weight, family)
        w = self.cache.get(key)
        if w is None:
            from matplotlib.font_manager import FontProperties

            prop = FontProperties(family=family, size=size, weight=weight)
            shown = text
            if not text.isascii():  # measured as it will be drawn (render/text.py)
                shown, families = drawn_as(text, prop)
                prop.set_family(families)
            w = self.renderer.get_text_width_height_descent(shown, prop, ismath=False)[0] * self.scale
            self.cache[key] = w
        return w

    def shorten(self, text: str, width: float, size: float, weight: str = "normal",
                family: str = "sans-serif") -> str:
        """``text``, or its longest start that fits ``width`` with an ellipsis after it."""
        if self.width(text, size, weight, family) <= width:
            return text
        lo, hi = 0, len(text)          # text[:lo] + "…" fits, text[:hi] + "…" does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.width(text[:mid].rstrip() + "…", size, weight, family) <= width:
                lo = mid
            else:
                hi = mid
        out = text[:lo].rstrip() + "…"
        return out if self.width(out, size, weight, family) <= width else ""

    def first(self, variants, width: float, size: float, weight: str = "normal",
              family: str = "sans-serif") -> str:
        """The first of ``variants`` (longest, most complete first) that fits, else the
        last one shortened."""
        for v in variants:
            if self.width(v, size, weight, family) <= width:
                return v
        return self.shorten(variants[-1], width, size, weight, family)

    def wrap(self, text: str, width: float, size: float) -> list[str]:
        """Greedy word wrap by measured width; a word wider than a line is shortened.

        Lines are filled by the words' own widths and a space's (measuring every longer
        start of a caption again costs more than drawing it), and each line is then
        measured whole: one that does not fit gives its last word to the next line."""
        words = []
        for word in text.split():
            words.append(word if self.width(word, size) <= width else self.shorten(word, width, size))
        space = self.width("x x", size) - self.width("xx", size)
        lines: list[str] = []
        i = 0
        while i < len(words):
            j, used = i + 1, self.width(words[i], size)
            while j < len(words) and used + space + self.width(words[j], size) <= width:
                used += space + self.width(words[j], size)
                j += 1
            while j - i > 1 and self.width(" ".join(words[i:j]), size) > width:
                j -= 1
            lines.append(" ".join(words[i:j]))
            i = j
        return [ln for ln in lines if ln]
