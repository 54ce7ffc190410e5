"""The one colour palette: graph, animations, report and explorer all take their colours here.

Built on the Okabe–Ito palette, which stays distinguishable under the common colour-vision
deficiencies. Meaning is never carried by colour alone: every "bad" mark also has words or a
symbol next to it. The "ok" / "bad" pair is blue / vermillion, not green / red.

Colours are named by what they mean (``KIND_LINE["param"]``, ``EVENT["added"]``,
``STATUS["bad"]``), never by hue, so a renderer asks for a role and the palette can change in
one place.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

#: The Okabe–Ito hues, by name (the only saturated colours used anywhere).
OKABE_ITO: Mapping[str, str] = MappingProxyType({
    "black": "#000000", "orange": "#e69f00", "sky": "#56b4e9", "green": "#009e73",
    "yellow": "#f0e442", "blue": "#0072b2", "vermillion": "#d55e00", "purple": "#cc79a7",
})

#: Neutral greys, darkest first.
INK = "#1d2330"
TEXT = "#212529"
SUBTLE = "#495057"
MUTED = "#6b7280"
DIM = "#ced4da"
RULE = "#dee2e6"
PANEL = "#f8f9fa"
BACKGROUND = "#ffffff"

#: Neutrals on a dark background.
DARK_BACKGROUND = "#1e1e1e"
DARK_PANEL = "#262630"
DARK_TEXT = "#eeeeee"
DARK_MUTED = "#a8a8a8"
DARK_EDGE = "#bbbbbb"

#: Outline colour of each graph node kind (light backgrounds).
KIND_LINE: Mapping[str, str] = MappingProxyType({
    "param": "#0072b2", "input": "#6b6b6b", "op": "#a36f00", "prep": "#9a9a9a",
    "loss": "#b1477f", "grad_fn": "#a36f00", "accumulate": "#007a59",
    "module": "#5e5e9e", "repeat": "#5e5e9e",
})

#: Fill colour of each graph node kind (light backgrounds): light tints of KIND_LINE.
KIND_FILL: Mapping[str, str] = MappingProxyType({
    "param": "#d6e8f5", "input": "#eeeeee", "op": "#fcefd2", "prep": "#ffffff",
    "loss": "#f6e1ec", "grad_fn": "#fcefd2", "accumulate": "#d2efe6",
    "module": "#e6e6f4", "repeat": "#e6e6f4",
})

#: The same roles on a dark background.
KIND_LINE_DARK: Mapping[str, str] = MappingProxyType({
    "param": "#56b4e9", "input": "#a0a0a0", "op": "#e6b84a", "prep": "#7a7a7a",
    "loss": "#e89ac4", "grad_fn": "#e6b84a", "accumulate": "#3fd0a4",
    "module": "#a9a9e8", "repeat": "#a9a9e8",
})
KIND_FILL_DARK: Mapping[str, str] = MappingProxyType({
    "param": "#15364d", "input": "#363636", "op": "#4a3a0e", "prep": "#262626",
    "loss": "#4d2238", "grad_fn": "#4a3a0e", "accumulate": "#0f3f31",
    "module": "#2f2f4d", "repeat": "#2f2f4d",
})

#: Gradients (values flowing backward) and the edges they flow along.
GRAD = "#c45200"
GRAD_EDGE = "#e69f00"
GRAD_DARK = "#ff9e5e"

#: What happened to a leaf's ``.grad`` or value: (line/text colour, fill colour).
EVENT: Mapping[str, tuple[str, str]] = MappingProxyType({
    "fresh": ("#0072b2", "#d6e8f5"),       # .grad was None
    "zeros": ("#0072b2", "#d6e8f5"),       # added onto zeros: as good as fresh
    "added": ("#d55e00", "#fbdcc8"),       # added on top of an old .grad: the classic bug
    "update": ("#007a59", "#d2efe6"),      # the parameter's value changed
    "zero": ("#5e5e9e", "#e6e6f4"),        # .grad cleared
    "grad_write": ("#a36f00", "#fcefd2"),  # .grad changed by hand
    "none": ("#6b7280", "#f1f3f5"),        # not cleared
})

#: Verdicts: ok / bad / warn / not applicable: (text colour, background colour).
STATUS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "ok": ("#005a8c", "#e3f0f9"),
    "bad": ("#b84a00", "#f8cfb5"),
    "warn": ("#7a5a00", "#fdf3d2"),
    "na": ("#6b7280", "#f1f3f5"),
})

#: What the backprop animation is doing right now: (line, fill) of the node lit in the
#: forward pass (an op being computed) and in the backward pass (a gradient arriving).
LIT: Mapping[str, tuple[str, str]] = MappingProxyType({
    "forward": ("#8a6d00", "#fff3b0"),
    "backward": ("#c45200", "#fff3b0"),   # lit is yellow in both passes; the edge tells them apart
})

#: A step on the loss surface: the update's own direction (-.grad) and steepest descent.
UPDATE_ARROW = "#e69f00"
DESCENT_ARROW = "#cc79a7"

#: Distinct colours for series (one per parameter in a plot), in order.
SERIES: tuple[str, ...] = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
                           "#000000", "#f0e442")

#: The marker for a closed-form optimum or a target.
TARGET = "#e69f00"


def series(i: int) -> str:
    """The colour of series ``i`` (cycling)."""
    return SERIES[i % len(SERIES)]


def css_variables() -> str:
    """The palette as CSS custom properties (``--gt-kind-param-line`` ...), for HTML pages."""
    lines = [f"--gt-ink:{INK};", f"--gt-text:{TEXT};", f"--gt-subtle:{SUBTLE};",
             f"--gt-muted:{MUTED};", f"--gt-dim:{DIM};", f"--gt-rule:{RULE};",
             f"--gt-panel:{PANEL};", f"--gt-background:{BACKGROUND};", f"--gt-grad:{GRAD};",
             f"--gt-target:{TARGET};"]
    for kind in KIND_LINE:
        lines.append(f"--gt-kind-{kind.replace('_', '-')}-line:{KIND_LINE[kind]};")
        lines.append(f"--gt-kind-{kind.replace('_', '-')}-fill:{KIND_FILL[kind]};")
    for name, (line, fill) in EVENT.items():
        lines.append(f"--gt-event-{name.replace('_', '-')}:{line};")
        lines.append(f"--gt-event-{name.replace('_', '-')}-fill:{fill};")
    for name, (fg, bg) in STATUS.items():
        lines.append(f"--gt-{name}:{fg};")
        lines.append(f"--gt-{name}-fill:{bg};")
    for i, colour in enumerate(SERIES):
        lines.append(f"--gt-series-{i}:{colour};")
    return ":root{" + "".join(lines) + "}"
