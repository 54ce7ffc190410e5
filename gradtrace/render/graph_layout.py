"""Where a graph goes on a 16:9 slide: the rank direction and the fold (:func:`layout`),
estimated from the labels' text alone so that the DOT text is the same on every machine."""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.graph import GraphModel, layers as graph_layers
from .graph_labels import Label, _node_labels
from .graph_options import LEGEND, THEME, GraphOptions, Theme

__all__ = ["Layout", "layout", "direction", "FOLD_GAIN", "LEGEND_NODE"]


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
