"""User text in matplotlib pictures: never mathtext, and drawn with a font that has its glyphs.

A script's source lines, names and comments reach the animations as text. Two things go
wrong with them in matplotlib: ``$...$`` is read as mathtext (and ``$\\argmin$`` stops the
drawing), and a glyph the font lacks (a Chinese comment in DejaVu Sans) is drawn as an
empty box, with a warning per character. Every matplotlib renderer passes its figure's
texts through :func:`fit_texts` before drawing them:

- mathtext is turned off on each text;
- a text with characters its font lacks gets a font list, its own font first and then
  installed fonts that have them (matplotlib falls back along the list glyph by glyph);
- when no installed font has them, the comment of a source line is dropped
  (:func:`code_line`), and any other such character is replaced by ``?``.

Nothing here changes matplotlib's global settings; the fonts found are remembered per
process (installed fonts matplotlib's font cache does not know yet are added to it).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tokenize
from typing import Iterable

__all__ = ["fit_texts", "fit_text", "fit_source", "code_line", "fallback_fonts", "has_glyphs",
           "no_mathtext", "quiet_fonts", "user_text"]

#: Families tried first for characters the default fonts lack (CJK mostly), in this order;
#: any other installed font that has the glyphs comes after them, by name.
PREFERRED = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR",
             "Source Han Sans SC", "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "Droid Sans Fallback", "AR PL UMing CN", "AR PL UKai CN", "Noto Sans", "Noto Sans Symbols")

#: Fonts that claim every code point but draw each as a placeholder box (matplotlib ships
#: "Last Resort High-Efficiency" as its own last fallback): never a fallback here, since the
#: box is what the fallback is for avoiding.
PLACEHOLDER_FAMILIES = ("Last Resort",)

#: What stands for a character no installed font can draw.
REPLACEMENT = "?"


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.lru_cache(maxsize=None)
def _family_of(path: str) -> str:
    from matplotlib.ft2font import FT2Font

    return FT2Font(path).family_name


def _needed(text: str) -> set[int]:
    """The code points that need a glyph (not spaces or control characters)."""
    return {ord(c) for c in text if not c.isspace() and ord(c) >= 32}


def has_glyphs(text: str, path: str) -> bool:
    """Whether the font file at ``path`` has a glyph for every visible character of ``text``."""
    return _needed(text) <= _charmap(path)


@functools.lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[str, str], ...]:
    """(family, path) of every installed font, preferred families first, then by name."""
    from matplotlib import font_manager as fm

    known = {f.fname for f in fm.fontManager.ttflist}
    # fonts installed after matplotlib made its font cache (apt-get install fonts-...)
    for path in sorted(fm.findSystemFonts()):
        if path not in known:
            try:
                fm.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
    fonts = sorted({(f.name, f.fname) for f in fm.fontManager.ttflist
                    if not f.name.startswith(PLACEHOLDER_FAMILIES)})
    rank = {name: i for i, name in enumerate(PREFERRED)}
    return tuple(sorted(fonts, key=lambda f: (rank.get(f[0], len(rank)), f[0], f[1])))


def fallback_fonts(codepoints: Iterable[int]) -> list[str]:
    """Family names of installed fonts that between them have glyphs for ``codepoints``
    (as few as the greedy pick finds), or ``[]`` when some of them are in no font."""
    missing = set(codepoints)
    return _fallback(frozenset(missing))


@functools.lru_cache(maxsize=256)
def _fallback(missing: frozenset) -> list[str]:
    left = set(missing)
    picked: list[str] = []
    for name, path in _candidates():
        if not left:
            break
        have = left & _charmap(path)
        if have and name not in picked:
            picked.append(name)
            left -= have
    return [] if left else picked


def no_mathtext():
    """A context in which the texts made read ``$`` as a dollar sign (matplotlib's settings
    are restored on leaving it)."""
    import matplotlib

    return matplotlib.rc_context({"text.parse_math": False})


class _NoWeightNotes(logging.Filter):
    """A fallback font without a bold face is drawn at its own weight, quietly (matplotlib
    says so once per text otherwise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to find font weight" not in str(record.msg)


_FILTER = _NoWeightNotes()


@contextlib.contextmanager
def quiet_fonts():
    """While drawing: no note that a fallback font lacks a bold face (the filter is
    removed on leaving)."""
    log = logging.getLogger("matplotlib.font_manager")
    log.addFilter(_FILTER)
    try:
        yield
    finally:
        log.removeFilter(_FILTER)


@contextlib.contextmanager
def user_text():
    """Making and drawing a picture's texts: no mathtext, no notes about font weights."""
    with no_mathtext(), quiet_fonts():
        yield


def fit_source(code: str, family: str = "monospace") -> str:
    """A source line as it can be drawn in ``family`` (with fallback fonts): unchanged, or
    without its comment when no installed font has the comment's glyphs."""
    from matplotlib.font_manager import FontProperties, findfont

    if code.isascii():
        return code
    return fit_text(code, findfont(FontProperties(family=family), fallback_to_default=True),
                    code=True)[0]


def code_line(text: str) -> str:
    """A source line without its comment (``x = 1  # 损失`` -> ``x = 1``); the text itself
    when it does not parse as a line of Python."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                return text[:_offset(text, tok.start)].rstrip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return text


def _offset(text: str, start: tuple[int, int]) -> int:
    row, col = start
    lines = text.splitlines(keepends=True)
    return sum(len(x) for x in lines[:row - 1]) + col


def fit_text(text: str, path: str, *, code: bool = False) -> tuple[str, list[str]]:
    """(text, fallback families) to draw ``text`` in the font at ``path`` without a missing
    glyph: the text unchanged and the families that have what the font lacks; else, with
    ``code``, the line without its comment; and what is still missing replaced by ``?``."""
    missing = _needed(text) - _charmap(path)
    if not missing:
        return text, []
    families = fallback_fonts(missing)
    if families:
        return text, families
    if code:
        text = code_line(text)
        missing = _needed(text) - _charmap(path)
    return "".join(REPLACEMENT if ord(c) in missing else c for c in text), []


def drawn_as(text: str, prop) -> tuple[str, list[str]]:
    """(text, font families) as ``text`` is drawn with font properties ``prop`` once
    :func:`fit_texts` has made it safe: its own font then the fallbacks that have the
    glyphs it lacks, or, with no such font, the text with those characters replaced."""
    from matplotlib.font_manager import findfont

    path = findfont(prop, fallback_to_default=True)
    own = _family_of(path)
    new, families = fit_text(text, path)
    return new, [own, *[f for f in families if f != own]]


def fit_texts(artists, *, code_texts: Iterable = ()) -> None:
    """Make matplotlib ``Text`` artists (and the texts inside figures or axes given) safe
    to draw: mathtext off, a font list that has their glyphs, or the text fitted as
    :func:`fit_text` says; ``code_texts``: those that show source lines."""
    from matplotlib.font_manager import findfont
    from matplotlib.text import Text

    code_ids = {id(t) for t in code_texts}
    for artist in artists:
        texts = [artist] if isinstance(artist, Text) else artist.findobj(Text)
        axis_texts = set() if isinstance(artist, Text) else _axis_texts(artist)
        for t in texts:
            if id(t) in axis_texts:
                # made by matplotlib's tick formatters, never from user text: a log axis
                # writes its labels as mathtext (10^-2)
                t.set_parse_math(True)
                continue
            t.set_parse_math(False)
            s = t.get_text()
            if not s or s.isascii():
                continue
            prop = t.get_fontproperties()
            path = findfont(prop, fallback_to_default=True)
            new, families = fit_text(s, path, code=id(t) in code_ids)
            if families:
                own = _family_of(path)
                wanted = [own, *[f for f in families if f != own]]
                if list(t.get_fontfamily()) != wanted:  # a kept text is not made stale again
                    t.set_fontfamily(wanted)
            elif new != s:
                t.set_text(new)


def _axis_texts(container) -> set[int]:
    """The ids of the tick labels and offset texts of every axis inside ``container``."""
    from matplotlib.axis import Axis, Tick

    ids = {id(t.label1) for t in container.findobj(Tick)} | {id(t.label2) for t in container.findobj(Tick)}
    return ids | {id(a.offsetText) for a in container.findobj(Axis)}
