"""Computation-graph pictures: DOT text, then SVG/PNG/PDF through graphviz or matplotlib.

The DOT text is written here by hand, in node-id order, so the same trace gives the same
bytes every time. Layout, in order of preference: the ``dot`` program when it is on PATH,
the graphviz libraries bundled in pygraphviz's wheel, else a layered drawing with
matplotlib (the same layers, :func:`gradtrace.analysis.graph.layers`) plus a one-line hint.
"""

from __future__ import annotations

import html
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..analysis.graph import BUDGET, VIEWS, GraphModel, build_graph, layers as graph_layers
from ..errors import RenderError, UsageError
from ..formatting import number as fmt_number
from ..formatting import shape as fmt_shape
from ..formatting import shown_mean

__all__ = ["GraphOptions", "GraphPicture", "graph_of_step", "to_dot", "node_label", "Theme", "THEME",
           "FORMATS", "available_engine", "HINT", "VIEWS", "THEMES", "ENGINES"]

THEMES = ("lecture", "light", "dark")
ENGINES = ("auto", "dot", "pygraphviz", "matplotlib")

#: Output formats by file extension.
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
#: The one line shown when neither graphviz route is available.
HINT = ("drawn with matplotlib (no graphviz found); for the real graphviz layout run "
        "`pip install pygraphviz` (its Linux wheel bundles graphviz) or install graphviz's `dot`")
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


_LIGHT_FILL = {"param": "#dbe9ff", "input": "#eeeeee", "op": "#fff3cf", "prep": "#ffffff",
               "loss": "#ffd9d6", "grad_fn": "#fff3cf", "accumulate": "#ddf2dc",
               "module": "#ece3f7", "repeat": "#ece3f7"}
_LIGHT_LINE = {"param": "#2f63b0", "input": "#6b6b6b", "op": "#a8780a", "prep": "#9a9a9a",
               "loss": "#c62828", "grad_fn": "#a8780a", "accumulate": "#2e7d32",
               "module": "#6a4c93", "repeat": "#6a4c93"}
_DARK_FILL = {"param": "#1d3557", "input": "#363636", "op": "#4a3a0e", "prep": "#262626",
              "loss": "#5c1c1c", "grad_fn": "#4a3a0e", "accumulate": "#1c4420",
              "module": "#3b2d56", "repeat": "#3b2d56"}
_DARK_LINE = {"param": "#7fb0ff", "input": "#a0a0a0", "op": "#e0b84a", "prep": "#7a7a7a",
              "loss": "#ff7b72", "grad_fn": "#e0b84a", "accumulate": "#7ed67a",
              "module": "#b79cff", "repeat": "#b79cff"}

THEME = {
    "lecture": Theme("lecture", font=22, small=17, edge_font=17, background="white", text="#111111",
                     muted="#666666", grad="#c0392b", edge="#333333", grad_edge="#e0701b",
                     cluster_fill="#f7f7fb", cluster_line="#8a8aa8", fill=_LIGHT_FILL,
                     line=_LIGHT_LINE, penwidth=2.0),
    "light": Theme("light", font=13, small=10, edge_font=10, background="white", text="#111111",
                   muted="#666666", grad="#c0392b", edge="#444444", grad_edge="#e0701b",
                   cluster_fill="#f7f7fb", cluster_line="#8a8aa8", fill=_LIGHT_FILL,
                   line=_LIGHT_LINE, penwidth=1.2),
    "dark": Theme("dark", font=13, small=10, edge_font=10, background="#1e1e1e", text="#eeeeee",
                  muted="#a8a8a8", grad="#ff8a80", edge="#bbbbbb", grad_edge="#ffab40",
                  cluster_fill="#262630", cluster_line="#6d6d8a", fill=_DARK_FILL,
                  line=_DARK_LINE, penwidth=1.2),
}

_FONT = "Helvetica,Arial,sans-serif"
_MONO = "Menlo,Consolas,DejaVu Sans Mono,monospace"

#: Legend wording per node kind.
LEGEND = {"param": "leaf parameter", "input": "input / data", "op": "op",
          "prep": "prep op (no grad)", "loss": "loss", "grad_fn": "grad_fn (backward of an op)",
          "accumulate": "AccumulateGrad (writes .grad)", "module": "collapsed module",
          "repeat": "collapsed repeats"}


# -- numbers and labels (shared by the DOT and matplotlib routes) ------------------------------
@dataclass(frozen=True)
class Cell:
    """One value block of a node label: a caption (``data``, ``grad``) and rows of text.
    ``matrix`` is True when ``rows`` are a tensor's numbers (aligned in columns)."""

    caption: str
    rows: tuple[tuple[str, ...], ...]
    matrix: bool
    kind: str  # "data" | "grad" | "none"
    alert: str = ""


@dataclass(frozen=True)
class Label:
    title: str
    shape: str
    details: tuple[str, ...]
    cells: tuple[Cell, ...]
    tooltip: str


def value_rows(value, options: GraphOptions) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """(rows, is_matrix): the full numbers of a small tensor, or a summary of a large one."""
    shape = tuple(value.shape)
    data = value.data
    rows_n = shape[0] if len(shape) == 2 else 1
    cols_n = shape[-1] if len(shape) >= 1 else 1
    if (data is not None and len(shape) <= 2 and value.numel <= options.max_values
            and rows_n <= options.max_rows and cols_n <= options.max_cols and value.numel > 0):
        t = data.detach()
        if t.is_complex():
            t = t.abs()
        if t.is_floating_point():
            t = t.double()
        vals = t.reshape(-1).tolist()  # floats, ints or bools, as the tensor holds them
        digits = 4 if len(vals) <= 2 else 3  # fewer digits where many numbers share a node
        texts = [fmt_number(x, digits) for x in vals]
        return tuple(tuple(texts[r * cols_n:(r + 1) * cols_n]) for r in range(rows_n)), True
    st = value.stats
    if st.numel == 0:
        return (("empty",),), False
    if st.min == st.max and not st.nonfinite:
        return ((f"all {fmt_number(st.min)}",),), False
    mean = shown_mean(st)  # float noise next to the spread (a softmax gradient) reads as 0
    return ((f"mean {fmt_number(mean, 3)}",),
            (f"{fmt_number(st.min, 3)} … {fmt_number(st.max, 3)}",)), False


def _alert(value) -> str:
    st = value.stats
    return f"{st.nonfinite} nan/inf" if st.nonfinite else ""


def node_label(attrs: dict, options: GraphOptions, view: str) -> Label:
    """What a node says, independent of how it is drawn."""
    kind = attrs["kind"]
    cells: list[Cell] = []
    if options.values:
        show_grad = view != "forward" and kind in ("param", "op", "loss", "grad_fn", "accumulate",
                                                    "module", "repeat")
        if attrs["data"] is not None and kind not in ("grad_fn", "accumulate"):
            rows, matrix = value_rows(attrs["data"], options)
            cells.append(Cell("data", rows, matrix, "data", _alert(attrs["data"])))
        if kind == "accumulate" and view == "both":
            show_grad = False  # the parameter next to it shows the same gradient
        if show_grad:
            if attrs["grad"] is not None:
                rows, matrix = value_rows(attrs["grad"], options)
                cap = "grad in" if kind == "grad_fn" else "grad"
                cells.append(Cell(cap, rows, matrix, "grad", _alert(attrs["grad"])))
            elif kind in ("param", "op") and cells:
                cells.append(Cell("grad", (("none",),), False, "none"))
    title = attrs["title"]
    details = [attrs["detail"]] if attrs["detail"] else []
    if kind == "op" and view == "both" and attrs["note"].startswith("backward: "):
        details.append("⟵ " + attrs["note"][len("backward: "):])
    return Label(title=title, shape=fmt_shape(attrs["shape"]), details=tuple(details),
                 cells=tuple(cells), tooltip=_tooltip(attrs))


def _tooltip(attrs: dict) -> str:
    lines = []
    src = attrs["source"]
    if src is not None:
        lines.append(f"{src.short}: {src.code.strip()}" if src.code else src.short)
    head = attrs["title"] + (f" {fmt_shape(attrs['shape'])}" if attrs["shape"] is not None else "")
    lines.append(f"{head} [{LEGEND.get(attrs['kind'], attrs['kind'])}]")
    if attrs.get("options"):
        lines.append(f"options: {attrs['options']}")
    if attrs["module"]:
        lines.append(f"module: {attrs['module']}")
    for name in ("data", "grad"):
        v = attrs[name]
        if v is not None and v.numel:
            st = v.stats
            lines.append(f"{name}: norm {fmt_number(st.norm)}, mean {fmt_number(st.mean)}, "
                         f"min {fmt_number(st.min)}, max {fmt_number(st.max)}"
                         + (f", {st.nonfinite} nan/inf" if st.nonfinite else ""))
    if attrs["note"]:
        lines.append(attrs["note"])
    return "\n".join(lines)


# -- DOT ---------------------------------------------------------------------------------------
def _h(text: str) -> str:
    """Text for a graphviz HTML-like label: every markup character escaped, and backslashes
    doubled (graphviz would otherwise read ``\\N`` in a label as the node's name)."""
    return html.escape(text, quote=True).replace("\\", "\\\\")


def _q(text: str) -> str:
    """A double-quoted DOT escString: ``&`` written as an entity (graphviz passes entities
    through to SVG), backslashes that survive both of graphviz's unescaping passes, quotes
    escaped, newlines as graphviz line breaks."""
    text = text.replace("&", "&amp;")
    text = text.replace("\\", "\\\\\\\\").replace('"', '\\"')
    text = text.replace("\r", "").replace("\n", "\\n")
    return f'"{text}"'


def _cell_html(cell: Cell, theme: Theme, inline: bool = False) -> str:
    colour = theme.grad if cell.kind == "grad" else theme.muted if cell.kind == "none" else theme.text
    cap = f'<FONT POINT-SIZE="{theme.small}" COLOR="{theme.muted}"><I>{_h(cell.caption)}</I></FONT>'
    if cell.matrix:
        body = "".join(
            "<TR>" + "".join(f'<TD ALIGN="RIGHT"><FONT FACE="{_MONO}" COLOR="{colour}">'
                             f'{_h(x if i == 0 else "  " + x)}</FONT></TD>'
                             for i, x in enumerate(row)) + "</TR>"
            for row in cell.rows)
    else:
        body = "".join(f'<TR><TD><FONT POINT-SIZE="{theme.small}" COLOR="{colour}">{_h(" ".join(row))}'
                       "</FONT></TD></TR>" for row in cell.rows)
    alert = (f'<TR><TD><FONT POINT-SIZE="{theme.small}" COLOR="{theme.grad}"><B>{_h(cell.alert)}</B>'
             "</FONT></TD></TR>") if cell.alert else ""
    if inline:  # caption to the left of the numbers: narrower nodes
        return (f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1"><TR>'
                f'<TD VALIGN="MIDDLE">{cap}</TD><TD>'
                f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{body}{alert}</TABLE>'
                "</TD></TR></TABLE>")
    return (f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            f"<TR><TD>{cap}</TD></TR><TR><TD>"
            f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{body}</TABLE>'
            f"</TD></TR>{alert}</TABLE>")


def _label_html(label: Label, kind: str, theme: Theme) -> str:
    fill, line = theme.fill[kind], theme.line[kind]
    text = theme.muted if kind == "prep" else theme.text
    width = max(1, len(label.cells))
    border = 3 if kind == "loss" else 2 if theme.name == "lecture" else 1
    style = "" if kind in ("param", "input") else ' STYLE="rounded"'
    head = f'<B>{_h(label.title)}</B>'
    if label.shape:
        head += f'  <FONT POINT-SIZE="{theme.small}" COLOR="{theme.muted}">{_h(label.shape)}</FONT>'
    rows = [f'<TR><TD COLSPAN="{2 * width - 1}"><FONT COLOR="{text}">{head}</FONT></TD></TR>']
    for detail in label.details:
        rows.append(f'<TR><TD COLSPAN="{2 * width - 1}"><FONT POINT-SIZE="{theme.small}" '
                    f'COLOR="{theme.muted}">{_h(detail)}</FONT></TD></TR>')
    if label.cells and all(c.matrix for c in label.cells):
        # micrograd's `data | grad`: small tensors side by side, number for number
        cells = "<VR/>".join(f'<TD VALIGN="TOP">{_cell_html(c, theme)}</TD>' for c in label.cells)
        rows.append("<HR/>")
        rows.append(f"<TR>{cells}</TR>")
    elif label.cells:
        for c in label.cells:
            rows.append("<HR/>")
            rows.append(f'<TR><TD COLSPAN="{2 * width - 1}">{_cell_html(c, theme, inline=True)}</TD></TR>')
    return (f'<TABLE BORDER="{border}" CELLBORDER="0" CELLSPACING="0" CELLPADDING="5" '
            f'BGCOLOR="{fill}" COLOR="{line}"{style}>' + "".join(rows) + "</TABLE>")


def _cluster_id(path: str) -> str:
    return "cluster_" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in path)


def _title(model: GraphModel, options: GraphOptions) -> str:
    if isinstance(options.title, str):
        return options.title
    view = {"forward": "forward", "backward": "backward (grad_fn graph)",
            "both": "forward values and gradients"}[model.view]
    loss = f" · loss {fmt_number(model.loss)}" if model.loss is not None else ""
    return f"step {model.step} · {view}{loss}"


def _legend_html(model: GraphModel, theme: Theme, options: GraphOptions) -> str:
    rows = []
    for kind in model.kinds:
        rows.append(f'<TR><TD BGCOLOR="{theme.fill[kind]}" COLOR="{theme.line[kind]}" BORDER="2" '
                    f'WIDTH="28" HEIGHT="18"> </TD><TD ALIGN="LEFT"><FONT POINT-SIZE="{theme.small}" '
                    f'COLOR="{theme.text}">{_h(LEGEND[kind])}</FONT></TD></TR>')
    if options.values and model.view != "forward":
        rows.append(f'<TR><TD><FONT COLOR="{theme.grad}" POINT-SIZE="{theme.small}"><B>0.5</B></FONT></TD>'
                    f'<TD ALIGN="LEFT"><FONT POINT-SIZE="{theme.small}" COLOR="{theme.text}">'
                    "gradient of the loss</FONT></TD></TR>")
    if model.view == "both":
        rows.append(f'<TR><TD><FONT COLOR="{theme.grad_edge}" POINT-SIZE="{theme.small}"><B>- - &gt;</B>'
                    f'</FONT></TD><TD ALIGN="LEFT"><FONT POINT-SIZE="{theme.small}" COLOR="{theme.text}">'
                    "gradient into .grad</FONT></TD></TR>")
    return (f'<TABLE BORDER="1" COLOR="{theme.muted}" CELLBORDER="0" CELLSPACING="4" CELLPADDING="2" '
            f'BGCOLOR="{theme.background}">' + "".join(rows) + "</TABLE>")


def _label_size(label: Label, theme: Theme) -> tuple[float, float]:
    """A rough size of a node in points, from its text alone (no fonts are measured, so the
    estimate, and the DOT text that depends on it, is the same on every machine)."""
    f, sm = theme.font, theme.small
    w = len(label.title) * 0.62 * f + len(label.shape) * 0.6 * sm + 2 * sm
    h = 1.5 * f
    for d in label.details:
        w = max(w, len(d) * 0.58 * sm)
        h += 1.4 * sm
    if label.cells and all(c.matrix for c in label.cells):
        cw = sum(max(sum(len(x) + 2 for x in row) for row in c.rows) * 0.62 * f for c in label.cells)
        w = max(w, cw)
        h += 1.3 * sm + max(len(c.rows) for c in label.cells) * 1.35 * f
    else:
        for c in label.cells:
            w = max(w, (len(c.caption) + 1) * 0.6 * sm + max(len(" ".join(r)) for r in c.rows) * 0.6 * sm)
            h += len(c.rows) * 1.4 * sm + 6
    return w + 16, h + 12


#: A fold must make the picture this much larger on a slide to be worth the turn it adds.
FOLD_GAIN = 1.25
#: The legend's place in a :class:`Layout` (graph nodes are 0..n-1).
LEGEND_NODE = -1


@dataclass(frozen=True)
class Layout:
    """How the DOT text asks graphviz to arrange a graph on a 16:9 slide.

    ``rankdir`` is graphviz's rank direction. ``bands`` is the graph's layers (nodes that
    share a rank; :data:`LEGEND_NODE` is the legend) cut into bands, which graphviz stacks
    under each other. Every other band runs back, starting on the rank where the one before
    it ended, so a long chain folds like a snake and the edge round each turn is short.
    One band is no fold. ``scale`` is the estimated size on the slide (only comparisons
    between layouts of one graph mean anything)."""

    rankdir: str
    bands: tuple[tuple[tuple[int, ...], ...], ...]
    scale: float

    @property
    def folded(self) -> bool:
        return len(self.bands) > 1

    @property
    def width(self) -> int:
        """The ranks graphviz lays out."""
        return 1 + max((r for band in _ranks_of(self.bands) for r in band), default=-1)

    def place(self) -> dict[int, tuple[int, int]]:
        """{node: (band, rank)}."""
        return {n: (j, r) for j, (band, ranks) in enumerate(zip(self.bands, _ranks_of(self.bands)))
                for layer, r in zip(band, ranks) for n in layer}


def _ranks_of(bands) -> list[list[int]]:
    """The rank of every layer of every band: forward, back, forward..., each band starting
    on the rank where the one before it ended; the lowest rank is 0."""
    out, at = [], 0
    for j, band in enumerate(bands):
        way = 1 if j % 2 == 0 else -1
        out.append([at + way * p for p in range(len(band))])
        at = out[-1][-1] if out[-1] else at
    low = min((r for ranks in out for r in ranks), default=0)
    return [[r - low for r in ranks] for ranks in out]


def _legend_size(model: GraphModel, theme: Theme, options: GraphOptions) -> tuple[float, float]:
    """A rough size of the legend in points, like :func:`_label_size`."""
    texts = [LEGEND[k] for k in model.kinds]
    if options.values and model.view != "forward":
        texts.append("gradient of the loss")
    if model.view == "both":
        texts.append("gradient into .grad")
    w = 28 + 12 + max(len(t) for t in texts) * 0.6 * theme.small
    return w + 16, len(texts) * (1.3 * theme.small + 8) + 12


def _slide_scale(bands, sizes, rankdir: str, theme: Theme) -> float:
    """The scale at which the layers cut into ``bands`` fill a 16:9 slide, from the
    estimated node sizes in points."""
    lr = rankdir == "LR"
    sep, rsep = 0.35 * 72, 0.5 * 72
    ranks = _ranks_of(bands)
    thick = [0.0] * (1 + max(r for band in ranks for r in band))
    across = 0.0
    for band, band_ranks in zip(bands, ranks):
        for layer, r in zip(band, band_ranks):
            thick[r] = max(thick[r], max(sizes[n][0 if lr else 1] for n in layer))
        across += max(sum(sizes[n][1 if lr else 0] for n in layer) + sep * (len(layer) - 1)
                      for layer in band)
    if len(bands) > 1:
        # between bands: a node gap and the label of the edge that turns the corner; and
        # (calibrated like the rest) dot needs more room across bands than estimated
        across = 1.15 * (across + (sep + 1.5 * theme.edge_font) * (len(bands) - 1))
    gap_label = 9 * 0.6 * theme.edge_font          # an edge label such as "(10, 1)"
    along = sum(thick) + (rsep + (gap_label if lr else 1.5 * theme.edge_font)) * (len(thick) - 1)
    # calibrated against dot's layouts of the seed demos: rank gaps take more room top to
    # bottom (edge labels sit beside the edges) and less left to right than estimated
    along *= 0.9 if lr else 1.15
    w, h = (along, across) if lr else (across, along)
    return min(16 / w, 9 / h)


def _has_clusters(model: GraphModel) -> bool:
    """Whether the picture draws a module box: some module holds two nodes or more."""
    tops: dict[str, int] = {}
    for _, a in model.graph.nodes(data=True):
        if a["module"]:
            top = a["module"].split(".")[0]
            tops[top] = tops.get(top, 0) + 1
    return any(k >= 2 for k in tops.values())


def _legend_sink(model: GraphModel) -> int | None:
    """The node the legend stands next to in an unfolded picture: the first loss or
    parameter that nothing comes after (the loss, or a parameter in the backward view)."""
    g = model.graph
    sinks = [n for n in sorted(g.nodes) if g.out_degree(n) == 0
             and g.nodes[n]["kind"] in ("loss", "param")]
    return sinks[0] if sinks else None


def _node_labels(model: GraphModel, options: GraphOptions) -> dict[int, Label]:
    """Every node's label, made once per drawing (the layout sizes them, the drawing shows them)."""
    return {n: node_label(a, options, model.view) for n, a in model.graph.nodes(data=True)}


def layout(model: GraphModel, options: GraphOptions, fold: bool | None = None,
           labels: dict[int, Label] | None = None) -> Layout:
    """The rank direction and fold that let the picture, legend included, fill a 16:9
    slide at the largest scale, estimated from the labels' text (no fonts are measured, so
    the DOT text is the same on every machine). A fold is taken only when it gains
    :data:`FOLD_GAIN` over the best unfolded picture. ``labels``: the nodes' labels, when
    the caller has made them already."""
    fold = options.fold if fold is None else fold
    g = model.graph
    if g.number_of_nodes() == 0:
        return Layout(options.direction if options.direction != "auto" else "LR", (), 1.0)
    theme = THEME[options.theme]
    if labels is None:
        labels = _node_labels(model, options)
    sizes = {n: _label_size(labels[n], theme) for n in g.nodes}
    layers = graph_layers(model)
    flat_layers = [list(layer) for layer in layers]
    if options.legend:
        sizes[LEGEND_NODE] = _legend_size(model, theme, options)
        # unfolded, the legend stands next to a sink (the loss, or a parameter)
        sink = _legend_sink(model)
        at = next((i for i, layer in enumerate(layers) if sink in layer), len(layers) - 1)
        flat_layers[at].append(LEGEND_NODE)
    dirs = ("LR", "TB") if options.direction == "auto" else (options.direction,)
    flat_bands = (tuple(map(tuple, flat_layers)),)
    flat = max((Layout(d, flat_bands, _slide_scale(flat_bands, sizes, d, theme)) for d in dirs),
               key=lambda lay: lay.scale)  # max keeps the first of equals: LR
    if not fold or "LR" not in dirs or _has_clusters(model):
        # Folds are rows read left to right, then right to left, ...: a column that ran
        # back up a slide would read against the data's flow. graphviz does not keep the
        # bands in order around a module's box, so graphs with modules stay unfolded.
        return flat
    best = flat
    for width in range(2, len(layers)):
        # the legend ends the last band: after its last nodes, or one rank further on
        ends = ([layers[:-1] + [layers[-1] + [LEGEND_NODE]], layers + [[LEGEND_NODE]]]
                if options.legend else [layers])
        for cand in ends:
            bands = tuple(tuple(map(tuple, cand[i:i + width])) for i in range(0, len(cand), width))
            if len(bands) < 2:
                continue
            scale = _slide_scale(bands, sizes, "LR", theme)
            if scale > best.scale and scale >= FOLD_GAIN * flat.scale:
                best = Layout("LR", bands, scale)
    return best


def direction(model: GraphModel, options: GraphOptions, labels: dict[int, Label] | None = None) -> str:
    """``TB`` or ``LR`` for an unfolded drawing (the matplotlib fallback does not fold)."""
    return layout(model, options, fold=False, labels=labels).rankdir


def _name(n: int) -> str:
    return "legend" if n == LEGEND_NODE else f"n{n}"


def _fold_lines(lay: Layout, place: dict[int, tuple[int, int]]) -> list[str]:
    """DOT lines that fold the graph: every node pinned to its rank, and within each rank
    an invisible edge from every node of one band to every node of the next, which graphviz
    keeps in order (so the bands stack, first band first)."""
    lines = []
    for r in range(lay.width):
        by_band: dict[int, list[int]] = {}
        for n in sorted(place, key=lambda n: (n == LEGEND_NODE, n)):
            if place[n][1] == r:
                by_band.setdefault(place[n][0], []).append(n)
        ids = [n for j in sorted(by_band) for n in by_band[j]]
        lines.append("  {rank=same; " + "; ".join(_name(n) for n in ids) + "}")
        bands = sorted(by_band)
        for j, k in zip(bands, bands[1:]):
            lines.extend(f"  {_name(a)} -> {_name(b)} [style=invis];"
                         for a in by_band[j] for b in by_band[k])
        if LEGEND_NODE in ids:   # the legend comes after the nodes of its own band too
            lines.extend(f"  {_name(a)} -> legend [style=invis];"
                         for a in by_band[place[LEGEND_NODE][0]] if a != LEGEND_NODE)
    return lines


def to_dot(model: GraphModel, options: GraphOptions) -> str:
    """The DOT text of a graph model: deterministic, every label escaped."""
    theme = THEME[options.theme]
    g = model.graph
    labels = _node_labels(model, options)
    lay = layout(model, options, labels=labels)
    out = ["digraph gradtrace {"]
    out.append(f'  graph [rankdir={lay.rankdir}, bgcolor="{theme.background}", '
               f'fontname="{_FONT}", fontsize={theme.font}, fontcolor="{theme.muted}", '
               f'nodesep=0.35, ranksep=0.5, pad=0.3, newrank=true, labelloc=t, labeljust=l'
               + (f", label={_q(_title(model, options))}" if options.title else "") + "];")
    out.append(f'  node [shape=plain, fontname="{_FONT}", fontsize={theme.font}, '
               f'fontcolor="{theme.text}"];')
    out.append(f'  edge [fontname="{_FONT}", fontsize={theme.edge_font}, color="{theme.edge}", '
               f'fontcolor="{theme.muted}", penwidth={theme.penwidth}, arrowsize=0.9];')
    # nodes, nested in their module clusters
    tree: dict = {}
    loose: list[int] = []
    for n, a in sorted(g.nodes(data=True)):
        if a["module"]:
            t = tree
            parts = a["module"].split(".")
            for i in range(len(parts)):
                t = t.setdefault(".".join(parts[:i + 1]), {})
            t.setdefault(None, []).append(n)
        else:
            loose.append(n)

    def node_line(n: int, indent: str) -> str:
        a = g.nodes[n]
        lab = labels[n]
        return (f"{indent}n{n} [id=\"n{n}\", label=<{_label_html(lab, a['kind'], theme)}>, "
                f"tooltip={_q(lab.tooltip)}];")

    def count(t: dict) -> int:
        return len(t.get(None, [])) + sum(count(v) for k, v in t.items() if k is not None)

    def emit(t: dict, indent: str) -> None:
        for path in sorted(k for k in t if k is not None):
            sub = t[path]
            inner = [k for k in sub if k is not None]
            if count(sub) < 2:
                # a box around one node says nothing the tooltip does not
                for n in sub.get(None, []):
                    out.append(node_line(n, indent))
                emit({k: v for k, v in sub.items() if k is not None}, indent)
                continue
            if None not in sub and len(inner) == 1:
                emit(sub, indent)  # a module that only wraps one other: one box, not two
                continue
            out.append(f"{indent}subgraph {_cluster_id(path)} {{")
            out.append(f'{indent}  graph [label=<<B>{_h(path)}</B>>, style="rounded,dashed,filled", '
                       f'color="{theme.cluster_line}", fillcolor="{theme.cluster_fill}", '
                       f'fontcolor="{theme.muted}", fontsize={theme.small}, penwidth={theme.penwidth}, '
                       'margin=12];')
            for n in sub.get(None, []):
                out.append(node_line(n, indent + "  "))
            emit({k: v for k, v in sub.items() if k is not None}, indent + "  ")
            out.append(f"{indent}}}")

    for n in loose:
        out.append(node_line(n, "  "))
    emit(tree, "  ")
    # AccumulateGrad nodes sit level with the parameter they write (both view)
    if model.view == "both":
        for n, a in sorted(g.nodes(data=True)):
            if a["kind"] == "accumulate":
                params = [v for v in g.successors(n) if g.nodes[v]["kind"] == "param"]
                if params:
                    out.append(f"  {{rank=same; n{params[0]}; n{n}}}")
    place = lay.place() if lay.folded else {}
    for u, v, a in sorted(g.edges(data=True), key=lambda e: (e[0], e[1], e[2]["kind"], e[2]["slot"])):
        attrs = []
        if a["shape"] is not None and not (a["kind"] == "grad" and model.view == "both"):
            attrs.append(f"label={_q(' ' + fmt_shape(a['shape']) + ' ')}")
        if a["kind"] == "grad":
            attrs.append(f'color="{theme.grad_edge}", fontcolor="{theme.grad_edge}"')
            if model.view == "both":
                attrs.append("style=dashed, constraint=false")
        tail, head = u, v
        if place and not (a["kind"] == "grad" and model.view == "both") and place[u][1] > place[v][1]:
            # in a band that runs back, graphviz ranks the edge the other way round and
            # draws the arrow at its tail, so it still points where the data or gradient goes
            tail, head = v, u
            attrs.insert(0, "dir=back")
        out.append(f"  n{tail} -> n{head}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    if options.legend and len(g):
        out.append(f"  legend [id=\"legend\", label=<{_legend_html(model, theme, options)}>, "
                   'tooltip="legend"];')
        if not place:
            # the legend goes with the last nodes (the loss, or the parameters in the
            # backward view), where the layout leaves room
            sink = _legend_sink(model)
            out.append("  {rank=max; legend}" if sink is None else f"  {{rank=same; legend; n{sink}}}")
    if place:
        out.extend(_fold_lines(lay, place))
    out.append("}")
    return "\n".join(out) + "\n"


# -- engines -----------------------------------------------------------------------------------
def _has_pygraphviz() -> bool:
    try:
        import pygraphviz  # noqa: F401
    except Exception:  # ImportError, or a wheel whose libraries fail to load
        return False
    return True


def available_engine(requested: str = "auto") -> str:
    """The layout engine to use: ``dot``, ``pygraphviz`` or ``matplotlib``."""
    if requested == "dot":
        if shutil.which("dot") is None:
            raise RenderError("the `dot` program is not on PATH; install graphviz or use "
                              "--engine auto")
        return "dot"
    if requested == "pygraphviz":
        if not _has_pygraphviz():
            raise RenderError("pygraphviz is not importable; `pip install pygraphviz` or use "
                              "--engine auto")
        return "pygraphviz"
    if requested == "matplotlib":
        return "matplotlib"
    if shutil.which("dot") is not None:
        return "dot"
    if _has_pygraphviz():
        return "pygraphviz"
    return "matplotlib"


def _dot_program(dot: str, fmt: str) -> bytes:
    args = ["dot", f"-T{fmt}"] + ([f"-Gdpi={_PNG_DPI}"] if fmt == "png" else [])
    try:
        r = subprocess.run(args, input=dot.encode("utf-8"), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RenderError(f"running `dot` failed: {e}") from None
    if r.returncode != 0:
        raise RenderError(f"`dot -T{fmt}` failed: {r.stderr.decode(errors='replace').strip()[:300]}")
    return r.stdout


_QUIETED = False


def _pygraphviz(dot: str, fmt: str) -> bytes:
    import warnings

    import pygraphviz

    global _QUIETED
    args = f"-Gdpi={_PNG_DPI}" if fmt == "png" else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = pygraphviz.AGraph(string=dot)
            if _QUIETED:
                return g.draw(format=fmt, prog="dot", args=args)
            # fontconfig prints a warning about the host's config straight to fd 2 the first
            # time the bundled libraries start; it is noise for a lecturer, so hide that once.
            _QUIETED = True
            with _quiet_fd2():
                return g.draw(format=fmt, prog="dot", args=args)
    except Exception as e:  # pygraphviz raises several types for bad input and IO errors
        raise RenderError(f"graphviz (pygraphviz) could not draw the graph: {e}") from None


class _quiet_fd2:
    """Silence the C-level stderr for a moment (falls back to doing nothing)."""

    def __enter__(self):
        self.saved = None
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)


def render_bytes(model: GraphModel, options: GraphOptions, fmt: str, engine: str) -> bytes:
    """The picture in ``fmt`` (svg, png, pdf or dot) drawn by ``engine``."""
    if fmt == "dot":
        return to_dot(model, options).encode("utf-8")
    if engine == "dot":
        return _dot_program(to_dot(model, options), fmt)
    if engine == "pygraphviz":
        return _pygraphviz(to_dot(model, options), fmt)
    if options.engine == "auto":
        _hint_once()
    return draw_layered(model, options, fmt)


_HINTED = False


def _hint_once() -> None:
    global _HINTED
    if not _HINTED:
        _HINTED = True
        print(f"gradtrace: hint: {HINT}", file=sys.stderr)


# -- the matplotlib fallback -------------------------------------------------------------------
def _plain_lines(label: Label, theme: Theme) -> list[tuple[str, str, float, str]]:
    """A node label as text lines: (text, colour, size, weight)."""
    lines: list[tuple[str, str, float, str]] = [
        (f"{label.title}  {label.shape}".rstrip(), theme.text, theme.font, "bold")]
    lines += [(d, theme.muted, theme.small, "normal") for d in label.details]
    for c in label.cells:
        colour = theme.grad if c.kind == "grad" else theme.muted if c.kind == "none" else theme.text
        style = "mono" if c.matrix else "normal"
        if c.matrix:
            width = max(len(x) for row in c.rows for x in row)
            rows = ["  ".join(x.rjust(width) for x in row) for row in c.rows]
        else:
            rows = [" ".join(r) for r in c.rows]
        if len(rows) == 1:
            lines.append((f"{c.caption}: {rows[0]}", colour, theme.small, style))
        else:
            lines.append((f"{c.caption}:", theme.muted, theme.small, "normal"))
            lines += [(r, colour, theme.small, style) for r in rows]
        if c.alert:
            lines.append((c.alert, theme.grad, theme.small, "bold"))
    return lines


def draw_layered(model: GraphModel, options: GraphOptions, fmt: str) -> bytes:
    """The graph drawn with matplotlib: the layers the DOT text asks graphviz for,
    nodes ordered in each layer by the mean position of their inputs (fewer crossings)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    theme = THEME[options.theme]
    g = model.graph
    labels = _node_labels(model, options)
    lr = direction(model, options, labels) == "LR"
    lines = {n: _plain_lines(labels[n], theme) for n in g.nodes}
    for n, a in g.nodes(data=True):
        # this layout does not keep a module's nodes together, so each says where it belongs
        if a["module"] and a["kind"] != "module":
            lines[n].insert(1, (f"in {a['module']}", theme.muted, theme.small, "normal"))
    size = {}  # points
    for n, ls in lines.items():
        w = max(len(t) * (0.62 if wt == "bold" else 0.6) * sz for t, _, sz, wt in ls) + 18
        h = sum(sz * 1.45 for _, _, sz, _ in ls) + 12
        size[n] = (w, h)
    ranks = dict(enumerate(graph_layers(model))) if len(g) else {}
    # order within each layer: two sweeps of the barycentre heuristic
    pos_in: dict[int, float] = {}
    for r, ns in ranks.items():
        for i, n in enumerate(ns):
            pos_in[n] = i
    for _ in range(2):
        for r, ns in ranks.items():
            def key(n):
                nb = [pos_in[u] for u in g.predecessors(n) if u in pos_in and u not in ns]
                nb = nb or [pos_in[v] for v in g.successors(n) if v in pos_in and v not in ns]
                return (sum(nb) / len(nb) if nb else pos_in[n], n)
            ns.sort(key=key)
            for i, n in enumerate(ns):
                pos_in[n] = i
    sep, rsep = 0.45 * 72, 0.9 * 72
    xy: dict[int, tuple[float, float]] = {}   # centre, in points; y grows downwards
    along = 0.0
    across_total = max((sum((size[n][1] if lr else size[n][0]) for n in ns) + sep * (len(ns) - 1)
                        for ns in ranks.values()), default=0.0)
    for r, ns in ranks.items():
        thick = max((size[n][0] if lr else size[n][1]) for n in ns)
        span = sum((size[n][1] if lr else size[n][0]) for n in ns) + sep * (len(ns) - 1)
        at = (across_total - span) / 2
        for n in ns:
            ext = size[n][1] if lr else size[n][0]
            c_across, c_along = at + ext / 2, along + thick / 2
            xy[n] = (c_along, c_across) if lr else (c_across, c_along)
            at += ext + sep
        along += thick + rsep
    width = (along - rsep) if lr else across_total
    height = across_total if lr else (along - rsep)
    margin, top = 24.0, (2.2 * theme.font if options.title else 0) + 12
    legend_w = 0.0
    if options.legend and len(g):
        legend_w = max(len(LEGEND[k]) for k in model.kinds) * 0.6 * theme.small + 60
    fig_w = (width + 2 * margin + legend_w) / 72
    fig_h = (max(height, 40 * len(model.kinds) if options.legend else 0) + 2 * margin + top) / 72
    fig_w, fig_h = min(max(fig_w, 2.0), 200.0), min(max(fig_h, 1.5), 200.0)
    fig = Figure(figsize=(fig_w, fig_h), facecolor=theme.background)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-margin, fig_w * 72 - margin)
    ax.set_ylim(fig_h * 72 - margin - top, -margin - top)   # y downwards, like the layout
    ax.axis("off")
    ax.set_facecolor(theme.background)

    def box(n):
        (x, y), (w, h) = xy[n], size[n]
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2

    # module clusters: a dashed box around each module's nodes
    modules: dict[str, list[int]] = {}
    for n, a in g.nodes(data=True):
        m = a["module"]
        while m:
            modules.setdefault(m, []).append(n)
            m = m.rpartition(".")[0]
    for m in sorted(modules, key=lambda m: (m.count("."), m)):
        members = set(modules[m])
        if len(members) < 2 or any(k.startswith(m + ".") and set(v) == members for k, v in modules.items()):
            continue  # one node, or the same nodes as a sub-module's box
        bs = [box(n) for n in members]
        pad = 10 + 6 * (3 - min(3, m.count(".")))
        x0, y0 = min(b[0] for b in bs) - pad, min(b[1] for b in bs) - pad - theme.small
        x1, y1 = max(b[2] for b in bs) + pad, max(b[3] for b in bs) + pad
        if any(box(n)[0] < x1 and box(n)[2] > x0 and box(n)[1] < y1 and box(n)[3] > y0
               for n in g.nodes if n not in members):
            continue  # the box would take in nodes from outside; the "in ..." lines say it
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=8",
                                    linestyle="--", linewidth=theme.penwidth * 0.8,
                                    edgecolor=theme.cluster_line, facecolor=theme.cluster_fill, zorder=0))
        ax.text(x0 + 6, y0 + 4, m, fontsize=theme.small, fontweight="bold", color=theme.muted,
                va="top", ha="left", zorder=1, parse_math=False)
    # edges
    for u, v, a in sorted(g.edges(data=True), key=lambda e: (e[0], e[1], e[2]["slot"])):
        bu, bv = box(u), box(v)
        if lr:
            p0 = (bu[2], xy[u][1]) if xy[v][0] > xy[u][0] else (bu[0], xy[u][1])
            p1 = (bv[0], xy[v][1]) if xy[v][0] > xy[u][0] else (bv[2], xy[v][1])
        else:
            p0 = (xy[u][0], bu[3]) if xy[v][1] > xy[u][1] else (xy[u][0], bu[1])
            p1 = (xy[v][0], bv[1]) if xy[v][1] > xy[u][1] else (xy[v][0], bv[3])
        grad = a["kind"] == "grad"
        colour = theme.grad_edge if grad else theme.edge
        dashed = grad and model.view == "both"
        ax.add_patch(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=14,
                                     linewidth=theme.penwidth, color=colour,
                                     linestyle="--" if dashed else "-",
                                     connectionstyle="arc3,rad=0.25" if dashed else "arc3,rad=0",
                                     zorder=2))
        if a["shape"] is not None and not dashed:
            ax.text((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2, fmt_shape(a["shape"]),
                    fontsize=theme.edge_font * 0.85, color=theme.muted, ha="center", va="center",
                    zorder=4, bbox=dict(boxstyle="round,pad=0.15", fc=theme.background, ec="none"))
    # nodes
    for n, a in g.nodes(data=True):
        x0, y0, x1, y1 = box(n)
        kind = a["kind"]
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0,
                                    boxstyle="square,pad=0" if kind in ("param", "input")
                                    else "round,pad=0,rounding_size=8",
                                    linewidth=theme.penwidth * (1.5 if kind == "loss" else 1),
                                    edgecolor=theme.line[kind], facecolor=theme.fill[kind], zorder=3))
        y = y0 + 6
        for text, colour, sz, weight in lines[n]:
            y += sz * 1.45
            ax.text(xy[n][0], y - sz * 0.35, text, fontsize=sz, color=colour,
                    fontweight="bold" if weight == "bold" else "normal", ha="center",
                    va="baseline", zorder=5, family="monospace" if weight == "mono" else "sans-serif",
                    parse_math=False)  # a name such as "$x" is text, not mathtext
    if options.title:
        ax.text(-margin + 8, -margin - top + 8, _title(model, options), fontsize=theme.font,
                color=theme.muted, ha="left", va="top", parse_math=False)
    if options.legend and len(g):
        handles = [Patch(facecolor=theme.fill[k], edgecolor=theme.line[k], label=LEGEND[k])
                   for k in model.kinds]
        leg = fig.legend(handles=handles, loc="upper right", fontsize=theme.small, frameon=True,
                         facecolor=theme.background, edgecolor=theme.muted, labelcolor=theme.text)
        leg.set_zorder(10)
    buf = io.BytesIO()
    meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}[fmt]
    # SVG text stays text (selectable, searchable, small) rather than glyph outlines
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gradtrace"}):
        fig.savefig(buf, format=fmt, dpi=_PNG_DPI if fmt == "png" else 72,
                    facecolor=theme.background, metadata=meta)
    return buf.getvalue()


# -- the picture object ------------------------------------------------------------------------
class GraphPicture:
    """A step's computation graph: ``.save(path)``, ``.dot``, ``.svg()``, and inline display
    in Jupyter (``_repr_svg_`` / ``_repr_mimebundle_``, which never raise)."""

    def __init__(self, model: GraphModel, options: GraphOptions):
        self.model = model
        self.options = options
        self._cache: dict[str, bytes] = {}
        self._engine: str | None = None

    @property
    def engine(self) -> str:
        if self._engine is None:
            self._engine = available_engine(self.options.engine)
        return self._engine

    @property
    def hint(self) -> str | None:
        """A one-line hint when the picture is drawn without graphviz."""
        return HINT if self.engine == "matplotlib" and self.options.engine == "auto" else None

    @property
    def dot(self) -> str:
        """The DOT text (the same bytes for the same trace and options)."""
        return self.render("dot").decode("utf-8")

    def render(self, fmt: str = "svg") -> bytes:
        if fmt not in ("svg", "png", "pdf", "dot"):
            raise UsageError(f"unknown graph format {fmt!r}; use svg, png, pdf or dot")
        if fmt not in self._cache:
            self._cache[fmt] = render_bytes(self.model, self.options, fmt, self.engine)
        return self._cache[fmt]

    def svg(self) -> str:
        return self.render("svg").decode("utf-8")

    def save(self, path, format: str | None = None) -> Path:
        """Write the picture; the format comes from the extension (.svg .png .pdf .dot .gv)."""
        path = Path(path)
        fmt = format or FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UsageError(f"{path}: unknown picture type {path.suffix or '(no extension)'!r}; "
                             "use .svg, .png, .pdf or .dot")
        data = self.render(fmt)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as e:
            _remove_partial(path)
            raise RenderError(f"cannot write {path}: {e.strerror or e}") from None
        return path

    def _repr_svg_(self):
        try:
            return self.svg()
        except Exception:  # Jupyter must never see an exception from a repr
            return None

    def _repr_mimebundle_(self, include=None, exclude=None):
        try:
            return {"image/svg+xml": self.svg(), "text/plain": repr(self)}
        except Exception as e:  # noqa: BLE001 - shown to the user instead of raising
            return {"text/plain": f"{self!r} (could not be drawn: {type(e).__name__}: {e})"}

    def __repr__(self) -> str:
        g = self.model.graph
        return (f"<gradtrace graph: step {self.model.step}, view {self.model.view}, "
                f"{g.number_of_nodes()} nodes, {g.number_of_edges()} edges>")


def graph_of_step(step, view: str = "both", options: GraphOptions | None = None, **changes) -> GraphPicture:
    """``Step.graph()``: the computation graph of ``step``, ready to save or show."""
    options = GraphOptions.make(options, view=view, **changes)
    return GraphPicture(build_graph(step, options.view, budget=options.budget, expand=options.expand), options)


def _remove_partial(path: Path) -> None:
    """A picture whose writing failed half-way (a full disk) is not left behind."""
    try:
        if path.is_file():
            path.unlink()
    except OSError:
        pass
