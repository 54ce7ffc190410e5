"""Graph picture settings: :class:`GraphOptions`, the colour themes and the legend's words."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..analysis.graph import BUDGET, VIEWS
from ..errors import UsageError

from . import palette

__all__ = ["GraphOptions", "Theme", "THEME", "THEMES", "ENGINES", "LEGEND"]

THEMES = ("lecture", "light", "dark")
ENGINES = ("auto", "dot", "pygraphviz", "matplotlib")
_PNG_DPI = 144


# -- options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphOptions:
    """Every option of a graph picture; the CLI and ``Step.graph(**options)`` both build one.

    - ``view``: ``forward``, ``backward`` or ``both``.
    - ``values``: show values (and gradients) on the nodes.
    - ``max_values``: a tensor is shown in full up to this many elements (and at most
      ``max_rows`` rows and ``max_cols`` columns); larger ones as shape plus a summary.
    - ``theme``: ``lecture`` (large fonts for slides), ``light`` or ``dark``.
    - ``legend``, ``title``: draw the colour legend and the title line; ``title`` may also be
      a string to use as the title.
    - ``budget``: above this many nodes, module calls and repeated sub-graphs collapse.
    - ``expand``: never collapse.
    - ``engine``: ``auto`` (the ``dot`` program, else pygraphviz's bundled graphviz, else a
      matplotlib drawing), or one of them by name.
    - ``direction``: ``TB`` (top to bottom) or ``LR``; ``auto`` picks by the graph's shape.
    - ``fold``: fold a long graph into bands (a snake) when that makes it larger on a
      16:9 slide.
    """

    view: str = "both"
    values: bool = True
    max_values: int = 12
    max_rows: int = 4
    max_cols: int = 6
    theme: str = "lecture"
    legend: bool = True
    title: bool | str = True
    budget: int = BUDGET
    expand: bool = False
    engine: str = "auto"
    direction: str = "auto"
    fold: bool = True

    def __post_init__(self):
        for name, allowed in (("view", VIEWS), ("theme", THEMES), ("engine", ENGINES),
                              ("direction", ("auto", "TB", "LR"))):
            value = getattr(self, name)
            if value not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        for name in ("max_values", "max_rows", "max_cols", "budget"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UsageError(f"{name} must be a whole number, 0 or more, not {getattr(self, name)!r}")

    @classmethod
    def make(cls, options: "GraphOptions | None" = None, **changes) -> "GraphOptions":
        """Options from defaults (or ``options``) with ``changes``; unknown names are an error."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"unknown graph option {unknown[0]!r}; the options are "
                             f"{', '.join(sorted(known))}")
        return replace(options or cls(), **changes)


# -- themes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Theme:
    """Colours and font sizes. ``fill``/``line`` hold one entry per node kind."""

    name: str
    font: int
    small: int
    edge_font: int
    background: str
    text: str
    muted: str
    grad: str
    edge: str
    grad_edge: str
    cluster_fill: str
    cluster_line: str
    fill: dict = field(default_factory=dict)
    line: dict = field(default_factory=dict)
    penwidth: float = 1.2


# Every colour comes from the one palette (render/palette.py): the same roles as the
# animations and the report.
THEME = {
    "lecture": Theme("lecture", font=22, small=17, edge_font=17, background=palette.BACKGROUND,
                     text=palette.INK, muted=palette.MUTED, grad=palette.GRAD, edge=palette.SUBTLE,
                     grad_edge=palette.GRAD_EDGE, cluster_fill=palette.PANEL,
                     cluster_line=palette.KIND_LINE["module"], fill=dict(palette.KIND_FILL),
                     line=dict(palette.KIND_LINE), penwidth=2.0),
    "light": Theme("light", font=13, small=10, edge_font=10, background=palette.BACKGROUND,
                   text=palette.INK, muted=palette.MUTED, grad=palette.GRAD, edge=palette.SUBTLE,
                   grad_edge=palette.GRAD_EDGE, cluster_fill=palette.PANEL,
                   cluster_line=palette.KIND_LINE["module"], fill=dict(palette.KIND_FILL),
                   line=dict(palette.KIND_LINE), penwidth=1.2),
    "dark": Theme("dark", font=13, small=10, edge_font=10, background=palette.DARK_BACKGROUND,
                  text=palette.DARK_TEXT, muted=palette.DARK_MUTED, grad=palette.GRAD_DARK,
                  edge=palette.DARK_EDGE, grad_edge=palette.GRAD_EDGE,
                  cluster_fill=palette.DARK_PANEL, cluster_line=palette.KIND_LINE_DARK["module"],
                  fill=dict(palette.KIND_FILL_DARK), line=dict(palette.KIND_LINE_DARK), penwidth=1.2),
}

#: Legend wording per node kind.
LEGEND = {"param": "leaf parameter", "input": "input / data", "op": "op",
          "prep": "prep op (no grad)", "loss": "loss", "grad_fn": "grad_fn (backward of an op)",
          "accumulate": "AccumulateGrad (writes .grad)", "module": "collapsed module",
          "repeat": "collapsed repeats"}
