"""The DOT text of a graph model, written by hand in node-id order, so the same trace gives
the same bytes every time; every label escaped."""

from __future__ import annotations

import html

from ..analysis.graph import GraphModel
from ..formatting import shape as fmt_shape
from .graph_labels import Cell, Label, _node_labels, _title
from .graph_layout import LEGEND_NODE, Layout, _legend_sink, layout
from .graph_options import LEGEND, THEME, GraphOptions, Theme

__all__ = ["to_dot"]

_FONT = "Helvetica,Arial,sans-serif"
_MONO = "Menlo,Consolas,DejaVu Sans Mono,monospace"


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
    labels = _node_labels(model, options)
    lay = layout(model, options, labels=labels)
    place = lay.place() if lay.folded else {}
    out = ["digraph gradtrace {", *_header_lines(model, options, theme, lay.rankdir)]
    out += _node_lines(model, labels, theme)
    out += _rank_lines(model)
    out += _edge_lines(model, theme, place)
    out += _legend_lines(model, options, theme, folded=bool(place))
    if place:
        out.extend(_fold_lines(lay, place))
    out.append("}")
    return "\n".join(out) + "\n"


def _header_lines(model: GraphModel, options: GraphOptions, theme: Theme, rankdir: str) -> list[str]:
    """The graph's, the nodes' and the edges' default attributes."""
    return [f'  graph [rankdir={rankdir}, bgcolor="{theme.background}", '
            f'fontname="{_FONT}", fontsize={theme.font}, fontcolor="{theme.muted}", '
            f'nodesep=0.35, ranksep=0.5, pad=0.3, newrank=true, labelloc=t, labeljust=l'
            + (f", label={_q(_title(model, options))}" if options.title else "") + "];",
            f'  node [shape=plain, fontname="{_FONT}", fontsize={theme.font}, '
            f'fontcolor="{theme.text}"];',
            f'  edge [fontname="{_FONT}", fontsize={theme.edge_font}, color="{theme.edge}", '
            f'fontcolor="{theme.muted}", penwidth={theme.penwidth}, arrowsize=0.9];']


def _module_tree(model: GraphModel) -> tuple[dict, list[int]]:
    """(tree, loose): the nodes nested by module path (``tree[path][None]`` holds a module's
    own nodes, ``tree[path][subpath]`` its sub-modules) and the nodes of no module."""
    tree: dict = {}
    loose: list[int] = []
    for n, a in sorted(model.graph.nodes(data=True)):
        if a["module"]:
            t = tree
            parts = a["module"].split(".")
            for i in range(len(parts)):
                t = t.setdefault(".".join(parts[:i + 1]), {})
            t.setdefault(None, []).append(n)
        else:
            loose.append(n)
    return tree, loose


def _count(t: dict) -> int:
    """The nodes in a module tree."""
    return len(t.get(None, [])) + sum(_count(v) for k, v in t.items() if k is not None)


def _node_lines(model: GraphModel, labels: dict[int, Label], theme: Theme) -> list[str]:
    """Every node, nested in its module's cluster."""
    g = model.graph
    out: list[str] = []

    def node_line(n: int, indent: str) -> str:
        lab = labels[n]
        return (f"{indent}n{n} [id=\"n{n}\", label=<{_label_html(lab, g.nodes[n]['kind'], theme)}>, "
                f"tooltip={_q(lab.tooltip)}];")

    def emit(t: dict, indent: str) -> None:
        for path in sorted(k for k in t if k is not None):
            sub = t[path]
            inner = {k: v for k, v in sub.items() if k is not None}
            if _count(sub) < 2:
                # a box around one node says nothing the tooltip does not
                out.extend(node_line(n, indent) for n in sub.get(None, []))
                emit(inner, indent)
                continue
            if None not in sub and len(inner) == 1:
                emit(sub, indent)  # a module that only wraps one other: one box, not two
                continue
            out.append(f"{indent}subgraph {_cluster_id(path)} {{")
            out.append(f'{indent}  graph [label=<<B>{_h(path)}</B>>, style="rounded,dashed,filled", '
                       f'color="{theme.cluster_line}", fillcolor="{theme.cluster_fill}", '
                       f'fontcolor="{theme.muted}", fontsize={theme.small}, penwidth={theme.penwidth}, '
                       'margin=12];')
            out.extend(node_line(n, indent + "  ") for n in sub.get(None, []))
            emit(inner, indent + "  ")
            out.append(f"{indent}}}")

    tree, loose = _module_tree(model)
    out.extend(node_line(n, "  ") for n in loose)
    emit(tree, "  ")
    return out


def _rank_lines(model: GraphModel) -> list[str]:
    """AccumulateGrad nodes sit level with the parameter they write (both view)."""
    g = model.graph
    out: list[str] = []
    if model.view == "both":
        for n, a in sorted(g.nodes(data=True)):
            if a["kind"] == "accumulate":
                params = [v for v in g.successors(n) if g.nodes[v]["kind"] == "param"]
                if params:
                    out.append(f"  {{rank=same; n{params[0]}; n{n}}}")
    return out


def _edge_lines(model: GraphModel, theme: Theme, place: dict[int, tuple[int, int]]) -> list[str]:
    """Every edge: its shape as a label, gradients in their colour (dashed into .grad)."""
    g = model.graph
    both = model.view == "both"
    out: list[str] = []
    for u, v, a in sorted(g.edges(data=True), key=lambda e: (e[0], e[1], e[2]["kind"], e[2]["slot"])):
        attrs = []
        into_grad = a["kind"] == "grad" and both
        if a["shape"] is not None and not into_grad:
            attrs.append(f"label={_q(' ' + fmt_shape(a['shape']) + ' ')}")
        if a["kind"] == "grad":
            attrs.append(f'color="{theme.grad_edge}", fontcolor="{theme.grad_edge}"')
            if both:
                attrs.append("style=dashed, constraint=false")
        tail, head = u, v
        if place and not into_grad and place[u][1] > place[v][1]:
            # in a band that runs back, graphviz ranks the edge the other way round and
            # draws the arrow at its tail, so it still points where the data or gradient goes
            tail, head = v, u
            attrs.insert(0, "dir=back")
        out.append(f"  n{tail} -> n{head}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    return out


def _legend_lines(model: GraphModel, options: GraphOptions, theme: Theme, folded: bool) -> list[str]:
    """The legend node and where it goes."""
    if not (options.legend and len(model.graph)):
        return []
    out = [f"  legend [id=\"legend\", label=<{_legend_html(model, theme, options)}>, "
           'tooltip="legend"];']
    if not folded:
        # the legend goes with the last nodes (the loss, or the parameters in the
        # backward view), where the layout leaves room
        sink = _legend_sink(model)
        out.append("  {rank=max; legend}" if sink is None else f"  {{rank=same; legend; n{sink}}}")
    return out
