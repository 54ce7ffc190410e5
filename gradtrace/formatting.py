"""Numbers, shapes and values as text: the one place that decides how gradtrace writes them.

Every label, message and report cell goes through these functions, so a number reads the
same in graph.svg, an animation frame, the report and a check message. Plain Python only
(no torch, no numpy): values are duck-typed (``.array``, ``.numel``, ``.stats``, ``.shape``).
"""

from __future__ import annotations

import math
from typing import Any

MINUS = "\u2212"  # a real minus sign, for pictures (a hyphen reads as a dash on slides)


def number(x: Any, digits: int = 4) -> str:
    """A number as a lecturer writes it: ``digits`` significant digits, short exponents
    (``1e-5``, not ``1e-05``); ints and bools as they are; ``nan``, ``inf``, ``-inf``."""
    if x is None:
        return "None"
    if isinstance(x, (bool, int)):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def slide_number(x: Any) -> str:
    """A number for a picture: 4 significant digits between 1e-3 and 1e5, 3 outside, a real
    minus sign and ``∞``; None and nan both read ``nan``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if isinstance(x, bool):
        return str(x)
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else MINUS + "∞"
    if x == 0:
        return "0"
    s = f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3g}"
    return s.replace("-", MINUS)


def table_number(x: Any, digits: int = 6) -> str:
    """A cell of a table: floats to ``digits`` significant digits, anything else as str,
    None as the empty cell."""
    if x is None:
        return ""
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def shape(s: Any) -> str:
    """A shape as Python writes a tuple: ``(2, 1)``, ``(3,)``, ``()``; None as ``""``."""
    if s is None:
        return ""
    s = tuple(s)
    return "(" + ", ".join(str(d) for d in s) + ("," if len(s) == 1 else "") + ")"


def shape_times(s: Any) -> str:
    """A shape for a picture: ``2×1``, ``scalar`` for ``()``."""
    return "×".join(str(d) for d in s) if s else "scalar"


def fraction(c: float) -> str:
    """A constant as a lecture writes it: ``1/2``, ``1/10``, ``-1/6``, ``2``, else 6 digits
    (``inf``, ``nan`` as Python writes them)."""
    if c == 0:
        return "0"
    if not math.isfinite(c):
        return str(c)
    inv = 1 / c
    if abs(inv - round(inv)) < 1e-9 * abs(inv) and abs(round(inv)) != 1:
        return f"1/{round(inv)}" if inv > 0 else f"-1/{round(-inv)}"
    if abs(c - round(c)) < 1e-12:
        return str(int(round(c)))
    return f"{c:.6g}"


def shown_mean(stats: Any) -> float:
    """The mean of a Stats, or 0 when it is float noise next to the spread (a softmax
    gradient sums to zero, so its mean comes out as 1e-11)."""
    return 0.0 if abs(stats.mean) < 1e-6 * max(abs(stats.min), abs(stats.max)) else stats.mean


def value(v: Any, *, max_items: int = 3) -> str:
    """A recorded Value as a reader wants it: the number, a short list, ``zeros``, or the
    mean (or the range, when the mean is 0 but the values are not)."""
    if v is None:
        return "None"
    a = v.array
    if a is not None and v.numel > max_items and v.numel and bool((a == 0).all()):
        return "zeros"
    if a is not None and v.numel <= max_items:
        flat = [float(x) for x in a.reshape(-1).tolist()]
        if len(flat) == 1:
            return slide_number(flat[0])
        return "[" + ", ".join(slide_number(x) for x in flat) + "]"
    s = v.stats
    if s.numel == 0:
        return f"{shape_times(v.shape)} (empty)"
    mean = shown_mean(s)
    if mean == 0 and s.min != s.max:  # the mean says nothing here; the range does
        return f"mean 0, {slide_number(s.min)} … {slide_number(s.max)}"
    return f"mean {slide_number(mean)}"


def short_value(v: Any) -> str:
    """A value for a small box or an edge: 3 significant digits, ``μ`` before a mean."""
    if v is None:
        return "None"
    if v.array is not None and v.numel == 1:
        return short_number(float(v.array.reshape(-1)[0]))
    return "μ " + short_number(shown_mean(v.stats))


def short_number(x: float) -> str:
    """3 significant digits (1 in exponent form far from one), a real minus sign."""
    if x == 0 or math.isnan(x) or math.isinf(x):
        return slide_number(x)
    return (f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.1e}").replace("-", MINUS)


def ellipsize(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when cut."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
