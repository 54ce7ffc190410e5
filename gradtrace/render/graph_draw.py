"""The matplotlib fallback: a graph drawn in the layers the DOT text asks graphviz for,
used when neither graphviz route is available."""

from __future__ import annotations

import io

from ..analysis.graph import GraphModel, layers as graph_layers
from ..formatting import shape as fmt_shape
from .graph_labels import Label, _node_labels, _title
from .graph_layout import direction
from .graph_options import _PNG_DPI, LEGEND, THEME, GraphOptions, Theme

__all__ = ["draw_layered"]


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


def draw_layered(model: GraphModel, options: GraphOptions, fmt: str, dpi: int = _PNG_DPI) -> bytes:
    """The graph drawn with matplotlib: the layers the DOT text asks graphviz for,
    nodes ordered in each layer by the mean position of their inputs (fewer crossings)."""
    import matplotlib

    theme = THEME[options.theme]
    labels = _node_labels(model, options)
    lr = direction(model, options, labels) == "LR"
    lines = _node_lines(model, labels, theme)
    size = {n: _box_size(ls) for n, ls in lines.items()}   # points
    ranks = _ordered_layers(model)
    xy, width, height = _place(ranks, size, lr)
    fig, ax, margin, top = _figure(model, options, theme, width, height)
    boxes = {n: _box(xy[n], size[n]) for n in xy}
    _draw_clusters(ax, model, theme, boxes)
    _draw_edges(ax, model, theme, xy, boxes, lr)
    _draw_nodes(ax, model, theme, xy, boxes, lines)
    if options.title:
        ax.text(-margin + 8, -margin - top + 8, _title(model, options), fontsize=theme.font,
                color=theme.muted, ha="left", va="top", parse_math=False)
    if options.legend and len(model.graph):
        _draw_legend(fig, model, theme)
    buf = io.BytesIO()
    meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}[fmt]
    # SVG text stays text (selectable, searchable, small) rather than glyph outlines
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gradtrace"}):
        fig.savefig(buf, format=fmt, dpi=dpi if fmt == "png" else 72,
                    facecolor=theme.background, metadata=meta)
    return buf.getvalue()


Box = tuple[float, float, float, float]   # x0, y0, x1, y1 in points, y downwards


def _node_lines(model: GraphModel, labels: dict, theme: Theme) -> dict[int, list]:
    """Each node's text lines; a node in a module says which (this layout does not keep a
    module's nodes together)."""
    lines = {n: _plain_lines(labels[n], theme) for n in model.graph.nodes}
    for n, a in model.graph.nodes(data=True):
        if a["module"] and a["kind"] != "module":
            lines[n].insert(1, (f"in {a['module']}", theme.muted, theme.small, "normal"))
    return lines


def _box_size(lines: list) -> tuple[float, float]:
    """(width, height) in points of a box holding ``lines``, estimated from their text."""
    w = max(len(t) * (0.62 if wt == "bold" else 0.6) * sz for t, _, sz, wt in lines) + 18
    h = sum(sz * 1.45 for _, _, sz, _ in lines) + 12
    return w, h


def _ordered_layers(model: GraphModel) -> dict[int, list[int]]:
    """The graph's layers (its one ranking), each ordered by two sweeps of the barycentre
    heuristic: a node goes where its inputs (or else its outputs) are."""
    g = model.graph
    ranks = dict(enumerate(graph_layers(model))) if len(g) else {}
    pos_in = {n: float(i) for ns in ranks.values() for i, n in enumerate(ns)}
    for _ in range(2):
        for ns in ranks.values():
            def key(n, ns=ns):
                nb = [pos_in[u] for u in g.predecessors(n) if u in pos_in and u not in ns]
                nb = nb or [pos_in[v] for v in g.successors(n) if v in pos_in and v not in ns]
                return (sum(nb) / len(nb) if nb else pos_in[n], n)
            ns.sort(key=key)
            for i, n in enumerate(ns):
                pos_in[n] = i
    return ranks


def _place(ranks: dict[int, list[int]], size: dict, lr: bool):
    """(centres, width, height): each node's centre in points (y downwards), layers one
    after another along the direction, each centred across it."""
    sep, rsep = 0.45 * 72, 0.9 * 72
    xy: dict[int, tuple[float, float]] = {}
    along = 0.0
    across_total = max((sum((size[n][1] if lr else size[n][0]) for n in ns) + sep * (len(ns) - 1)
                        for ns in ranks.values()), default=0.0)
    for ns in ranks.values():
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
    return xy, width, height


def _figure(model: GraphModel, options: GraphOptions, theme: Theme, width: float, height: float):
    """(figure, axes, margin, top): a figure sized to the drawing, its axes in points with y
    downwards, like the layout."""
    from matplotlib.figure import Figure

    margin, top = 24.0, (2.2 * theme.font if options.title else 0) + 12
    legend_w = 0.0
    if options.legend and len(model.graph):
        legend_w = max(len(LEGEND[k]) for k in model.kinds) * 0.6 * theme.small + 60
    fig_w = (width + 2 * margin + legend_w) / 72
    fig_h = (max(height, 40 * len(model.kinds) if options.legend else 0) + 2 * margin + top) / 72
    fig_w, fig_h = min(max(fig_w, 2.0), 200.0), min(max(fig_h, 1.5), 200.0)
    fig = Figure(figsize=(fig_w, fig_h), facecolor=theme.background)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-margin, fig_w * 72 - margin)
    ax.set_ylim(fig_h * 72 - margin - top, -margin - top)
    ax.axis("off")
    ax.set_facecolor(theme.background)
    return fig, ax, margin, top


def _box(centre: tuple[float, float], size: tuple[float, float]) -> Box:
    (x, y), (w, h) = centre, size
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def _draw_clusters(ax, model: GraphModel, theme: Theme, boxes: dict[int, Box]) -> None:
    """A dashed box around each module's nodes, where it takes in no other node."""
    from matplotlib.patches import FancyBboxPatch

    g = model.graph
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
        bs = [boxes[n] for n in members]
        pad = 10 + 6 * (3 - min(3, m.count(".")))
        x0, y0 = min(b[0] for b in bs) - pad, min(b[1] for b in bs) - pad - theme.small
        x1, y1 = max(b[2] for b in bs) + pad, max(b[3] for b in bs) + pad
        if any(boxes[n][0] < x1 and boxes[n][2] > x0 and boxes[n][1] < y1 and boxes[n][3] > y0
               for n in g.nodes if n not in members):
            continue  # the box would take in nodes from outside; the "in ..." lines say it
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=8",
                                    linestyle="--", linewidth=theme.penwidth * 0.8,
                                    edgecolor=theme.cluster_line, facecolor=theme.cluster_fill, zorder=0))
        ax.text(x0 + 6, y0 + 4, m, fontsize=theme.small, fontweight="bold", color=theme.muted,
                va="top", ha="left", zorder=1, parse_math=False)


def _draw_edges(ax, model: GraphModel, theme: Theme, xy: dict, boxes: dict[int, Box], lr: bool) -> None:
    """Arrows from box side to box side, labelled with their shape; gradients into .grad dashed."""
    from matplotlib.patches import FancyArrowPatch

    for u, v, a in sorted(model.graph.edges(data=True), key=lambda e: (e[0], e[1], e[2]["slot"])):
        bu, bv = boxes[u], boxes[v]
        if lr:
            p0 = (bu[2], xy[u][1]) if xy[v][0] > xy[u][0] else (bu[0], xy[u][1])
            p1 = (bv[0], xy[v][1]) if xy[v][0] > xy[u][0] else (bv[2], xy[v][1])
        else:
            p0 = (xy[u][0], bu[3]) if xy[v][1] > xy[u][1] else (xy[u][0], bu[1])
            p1 = (xy[v][0], bv[1]) if xy[v][1] > xy[u][1] else (xy[v][0], bv[3])
        grad = a["kind"] == "grad"
        dashed = grad and model.view == "both"
        ax.add_patch(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=14,
                                     linewidth=theme.penwidth, color=theme.grad_edge if grad else theme.edge,
                                     linestyle="--" if dashed else "-",
                                     connectionstyle="arc3,rad=0.25" if dashed else "arc3,rad=0",
                                     zorder=2))
        if a["shape"] is not None and not dashed:
            ax.text((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2, fmt_shape(a["shape"]),
                    fontsize=theme.edge_font * 0.85, color=theme.muted, ha="center", va="center",
                    zorder=4, bbox=dict(boxstyle="round,pad=0.15", fc=theme.background, ec="none"))


def _draw_nodes(ax, model: GraphModel, theme: Theme, xy: dict, boxes: dict[int, Box], lines: dict) -> None:
    """Each node: a box in its kind's colours (square for leaves) and its lines of text."""
    from matplotlib.patches import FancyBboxPatch

    for n, a in model.graph.nodes(data=True):
        x0, y0, x1, y1 = boxes[n]
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


def _draw_legend(fig, model: GraphModel, theme: Theme) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=theme.fill[k], edgecolor=theme.line[k], label=LEGEND[k])
               for k in model.kinds]
    leg = fig.legend(handles=handles, loc="upper right", fontsize=theme.small, frameon=True,
                     facecolor=theme.background, edgecolor=theme.muted, labelcolor=theme.text)
    leg.set_zorder(10)
