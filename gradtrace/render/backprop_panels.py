"""How the back-propagation explainer draws: its colours and sizes, and the two panels that
change every frame, as parts of :class:`~gradtrace.render.backprop.BackpropRenderer`: the
graph of tensor boxes and gradient arrows (:class:`_GraphPanel`) and the parameters' cards
with the caption under them (:class:`_CardsPanel`)."""

from __future__ import annotations

from typing import Any

from ..formatting import shape_times as fmt_shape
from ..formatting import short_number as _num3
from ..formatting import short_value as _short
from ..formatting import value as fmt_value
from .backprop_frames import Frame
from .backprop_plan import Plan
from .backprop_scene import SceneNode
from . import palette
from .fit import _Fit

__all__ = ["MIN_FONT_PX"]

# Every colour comes from the one palette (render/palette.py): a box has the colours of
# its kind in `gradtrace graph`, and what happens to a .grad the colours of its event.
_C = {
    "param": palette.KIND_FILL["param"], "param_edge": palette.KIND_LINE["param"],
    "input": palette.KIND_FILL["input"], "input_edge": palette.KIND_LINE["input"],
    "act": palette.BACKGROUND, "act_done": palette.KIND_FILL["op"], "act_edge": palette.KIND_LINE["op"],
    "loss": palette.KIND_FILL["loss"], "loss_edge": palette.KIND_LINE["loss"],
    "lit": palette.LIT["forward"][1], "lit_edge": palette.LIT["forward"][0],
    "grad": palette.GRAD, "back": palette.LIT["backward"][1], "dim": palette.DIM,
    "bad": palette.STATUS["bad"][0], "bad_fill": palette.STATUS["bad"][1],
    "text": palette.TEXT, "muted": palette.MUTED, "subtle": palette.SUBTLE,
    "panel": palette.PANEL, "rule": palette.RULE, "updated": palette.EVENT["update"][0],
}
_MARK = {  # mark -> (default words, text/edge colour, fill)
    "fresh": ("fresh: .grad was None", *palette.EVENT["fresh"]),
    "zeros": ("added onto zeros", *palette.EVENT["zeros"]),
    "added": ("ADDED to old .grad!", *palette.EVENT["added"]),
    "update": ("value updated", *palette.EVENT["update"]),
    "zero": (".grad cleared", *palette.EVENT["zero"]),
    "write": (".grad changed", *palette.EVENT["grad_write"]),
    "none": ("not cleared", *palette.EVENT["none"]),
}


#: Sizes below are in pixels of a frame 1600 pixels wide (a 1920x1080 slide's picture
#: scaled down) and scale with the figure's width: the same frame at any size or dpi.
_REF_WIDTH = 1600
#: The smallest text drawn, in those pixels: legible on a slide from the back of a room.
MIN_FONT_PX = 14


def _is_zero(v) -> bool:
    if v is None:
        return False
    if v.array is not None:
        return bool((v.array == 0).all())
    s = v.stats
    return s.numel > 0 and s.min == 0 and s.max == 0


class _Drawing:
    """What the panels share with the renderer: the figure's axes and measures, set by
    ``BackpropRenderer.setup``, and the two helpers every text goes through."""

    plan: Plan
    fitted: list
    _values: Any
    _SIDE: list[float]
    _CAP: list[float]
    ax_graph: Any
    ax_side: Any
    ax_cap: Any
    fit: _Fit
    W: float                 # the figure's size in points
    H: float
    px: float                # points per reference pixel
    min_fs: float
    fs: float                # the font of the graph's boxes
    ux: float                # figure points per picture point, across and down
    uy: float
    pad: float

    def _fs(self, ref_px: float) -> float:
        """A font size in points for ``ref_px`` reference pixels, never below the minimum."""
        return max(self.min_fs, ref_px * self.px)

    # The artists of a frame are made through _add and _text, which give back the artist
    # of the frame before when it was made with the same arguments: an artist that did not
    # change is not drawn again (Animation redraws only what changed).
    _made: dict                 # key -> artist, this frame's
    _last: dict                 # key -> artist, the frame before's not (yet) made again

    def _start_frame(self) -> None:
        self._last, self._made = getattr(self, "_made", {}), {}

    def _end_frame(self) -> None:
        """Remove what the frame before had and this one has not."""
        for artist in self._last.values():
            artist.remove()
        self._last = {}

    def _reuse(self, key, make):
        artist = self._last.pop(key, None)
        if artist is None:
            artist = make()
        artist._gt_key = key
        self._made[key] = artist
        return artist

    def _add(self, ax, cls, *args, **kw):
        """``ax.add_artist(cls(*args, **kw))``, or the same artist of the frame before."""
        return self._reuse((id(ax), cls.__name__, _frozen(args), _frozen(kw)),
                           lambda: ax.add_artist(cls(*args, **kw)))

    def _text(self, ax, x, y, text, size, box=None, **kw):
        """ax.text, as plain text (never mathtext); ``box``: the patch it must stay inside."""
        key = (id(ax), "text", x, y, text, size, getattr(box, "_gt_key", None), _frozen(kw))
        t = self._reuse(key, lambda: ax.text(x, y, text, fontsize=size, parse_math=False, **kw))
        if box is not None:
            self.fitted.append((box, t))
        return t


def _frozen(v):
    """``v`` as a hashable key: dicts and lists as tuples."""
    if isinstance(v, dict):
        return tuple(sorted((k, _frozen(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_frozen(x) for x in v)
    return v


def _path_points(d: str) -> tuple[list[tuple[float, float]], list[int]]:
    """An SVG path of the picture (``M x,y C ... L x,y``) as matplotlib path vertices and codes."""
    from matplotlib.path import Path

    verts: list[tuple[float, float]] = []
    codes: list[int] = []
    code = int(Path.MOVETO)
    for tok in d.replace("M", " M ").replace("C", " C ").replace("L", " L ").split():
        if tok in ("M", "C", "L"):
            code = int({"M": Path.MOVETO, "C": Path.CURVE4, "L": Path.LINETO}[tok])
            continue
        x, y = (float(v) for v in tok.split(","))
        verts.append((x, y))
        codes.append(code)
    return verts, codes


def _middle(verts: list[tuple[float, float]], codes: list[int]) -> tuple[float, float]:
    """The point half-way along a path's segments (the middle of its middle Bézier)."""
    from matplotlib.path import Path

    if len(verts) >= 4 and all(c == Path.CURVE4 for c in codes[1:]):
        k = 3 * ((len(verts) - 1) // 3 // 2)
        p0, p1, p2, p3 = verts[k:k + 4]
        return (0.125 * (p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]),
                0.125 * (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]))
    (x0, y0), (x1, y1) = verts[0], verts[-1]
    return (x0 + x1) / 2, (y0 + y1) / 2


def _head(tip, base, width: float = 0.42) -> tuple[tuple[float, float], ...]:
    """An arrow head's triangle: its ``tip`` and the two corners beside ``base``."""
    (tx, ty), (bx, by) = tip, base
    dx, dy = tx - bx, ty - by
    return ((tx, ty), (bx - dy * width, by + dx * width), (bx + dy * width, by - dx * width))


class _GraphPanel(_Drawing):
    """The graph as `gradtrace graph` and the explorer lay it out: its boxes, its edges and
    their arrow heads where graphviz put them; values forward, gradients back in orange."""

    def _edge_shapes(self):
        """Each picture edge's path, arrow heads and label place, made once (the artists
        keyed on them are then kept from frame to frame)."""
        from matplotlib.path import Path

        if getattr(self, "_edges_made", None) is None:
            made = []
            for e in self.plan.scene.picture.edges:
                verts, codes = _path_points(e["path"])
                path = Path(verts, codes)
                heads = tuple(_head(tuple(tip), tuple(base)) for tip, base in e["arrows"])
                # the gradient's head, at the start: pointing back into the node it reaches
                n = 3 if len(verts) >= 4 and codes[1] == Path.CURVE4 else 1
                (x0, y0), (x1, y1) = verts[0], verts[min(n, len(verts) - 1)]
                length = max(1e-6, ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5)
                size = min(9.0, 0.5 * length)
                back = _head((x0, y0), (x0 + (x1 - x0) * size / length, y0 + (y1 - y0) * size / length))
                label_at = tuple(e["label_at"]) if e.get("label_at") else _middle(verts, codes)
                made.append((path, heads, back, label_at))
            self._edges_made = made
        return self._edges_made

    def _draw_graph(self, frame: Frame) -> None:
        ax = self.ax_graph
        scene = self.plan.scene
        backward = frame.phase not in ("intro", "forward")
        # text outside the boxes (module names, edge labels) goes only where it covers no
        # box and no other such text: the picture's font is larger than graphviz planned for
        self._taken = [(b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"])
                       for b in scene.picture.nodes.values()]
        self._labels: list = []
        self._draw_clusters(ax)
        for i, e in enumerate(scene.picture.edges):
            self._draw_edge(ax, frame, i, e, backward)
        # the gradients' labels first (the lit ones before the others), then the shapes'
        for _, x, y, text, size, kw in sorted(self._labels, key=lambda t: t[0]):
            if self._free(x, y, text, size, kw.get("weight", "normal"), kw.get("ha", "center"),
                          kw.get("va", "center")):
                self._text(ax, x, y, text, size, **kw)
        for n, b in scene.picture.nodes.items():
            self._draw_node(ax, frame, n, b, backward)

    def _free(self, x: float, y: float, text: str, size: float, weight: str, ha: str, va: str) -> bool:
        """Whether ``text`` drawn at (x, y) covers no box and no text placed before it; if
        so, its place is taken."""
        w = (self.fit.width(text, size, weight) + 0.3 * size) / self.ux
        h = 1.25 * size / self.uy
        x0 = x - w / 2 if ha == "center" else x
        y0 = y - h / 2 if va == "center" else y
        r = (x0, y0, x0 + w, y0 + h)
        if any(r[0] < q[2] and q[0] < r[2] and r[1] < q[3] and q[1] < r[3] for q in self._taken):
            return False
        self._taken.append(r)
        return True

    def _draw_clusters(self, ax) -> None:
        from matplotlib.patches import FancyBboxPatch

        for c in self.plan.scene.picture.clusters:
            self._add(ax, FancyBboxPatch, (c["x"], c["y"]), c["w"], c["h"],
                      boxstyle="round,pad=0,rounding_size=6", ls="--", lw=0.9 * self.px * 1.4,
                      ec=_C["dim"], fc=palette.PANEL, zorder=0)
            if c["label"]:
                size = self.min_fs
                text = self.fit.shorten(c["label"], c["w"] * self.ux - 2 * self.pad, size, "bold")
                x, y = c["x"] + self.pad / self.ux, c["y"] + 0.5 * self.pad / self.uy
                if text and self._free(x, y, text, size, "bold", "left", "top"):
                    self._text(ax, x, y, text, size, color=_C["muted"], weight="bold", ha="left",
                               va="top", zorder=0.5)

    def _draw_edge(self, ax, frame: Frame, i: int, e: dict, backward: bool) -> None:
        from matplotlib.patches import PathPatch, Polygon

        scene = self.plan.scene
        path, heads, back, label_at = self._edge_shapes()[i]
        carries = scene.carries[i]
        into = scene.shows.get(e["to"], ())
        px = self.px * 1.4
        if e["kind"] == "grad":
            # into .grad: from the op whose backward feeds the AccumulateGrad, and on to the leaf
            lit = backward and any(t in frame.current for t in into)
            known = any(t in frame.grads for t in into)
            colour = _C["grad"] if known or lit else _C["dim"]
            self._add(ax, PathPatch, path, fc="none", ec=colour, lw=(2.6 if lit else 1.3) * px,
                      ls="--", zorder=1, capstyle="butt")
            for h in heads:
                self._add(ax, Polygon, h, closed=True, fc=colour, ec=colour, lw=0.5, zorder=1)
            return
        done = any(t in frame.computed for t in into) or not into
        lit = any(x in frame.current_edges for x in carries)
        g = next((frame.grad_edges[x] for x in carries if x in frame.grad_edges), None)
        prep = any(scene.nodes[t].prep for t in into if t in scene.nodes)
        colour = (_C["lit_edge"] if lit and not backward else _C["subtle"] if done else _C["dim"])
        self._add(ax, PathPatch, path, fc="none", ec=colour, lw=(2.6 if lit and not backward else 1.3) * px,
                  ls="--" if prep else "-", zorder=1, capstyle="butt")
        for h in heads:
            self._add(ax, Polygon, h, closed=True, fc=colour, ec=colour, lw=0.5, zorder=1)
        edge_fs = max(self.min_fs, self.fs * 0.8)
        if g is None:
            if e.get("label"):   # the tensor's shape, as graph.svg labels it
                self._labels.append((2, label_at[0], label_at[1], e["label"], edge_fs,
                                     dict(color=_C["muted"], ha="center", va="center", zorder=5)))
            return
        # the gradient sent back along this edge: over the value's path, its head at the start
        hot = lit and backward
        self._add(ax, PathPatch, path, fc="none", ec=_C["grad"], lw=(3.2 if hot else 1.8) * px,
                  alpha=1.0 if hot else 0.7, zorder=2, capstyle="butt")
        self._add(ax, Polygon, back, closed=True, fc=_C["grad"], ec=_C["grad"], lw=0.5, zorder=2,
                  alpha=1.0 if hot else 0.7)
        weight = "bold" if hot else "normal"
        self._labels.append((0 if hot else 1, label_at[0], label_at[1], _short(g), edge_fs,
                             dict(color=_C["grad"], ha="center", va="center", zorder=6, weight=weight,
                                  bbox=dict(boxstyle="round,pad=0.15", fc=palette.BACKGROUND,
                                            ec=_C["grad"] if hot else "none", lw=0.8, alpha=0.92))))

    def _draw_node(self, ax, frame: Frame, n: int, b: dict, backward: bool) -> None:
        from matplotlib.patches import FancyBboxPatch

        scene = self.plan.scene
        kind = b["kind"]
        tids = scene.shows.get(n, ())
        tid = tids[0] if tids else None
        sn = scene.nodes.get(tid) if tid is not None else None
        if kind == "accumulate":   # it runs in the backward pass: lit with its leaf then
            lit = backward and tid in frame.current
            done = tid in frame.grads
        else:
            lit = any(t in frame.current for t in tids)
            done = (kind in ("param", "input") or any(t in frame.computed for t in tids)) if tids else True
        fc = palette.KIND_FILL.get(kind, _C["act_done"]) if done or kind in ("param", "input") else _C["act"]
        ec = palette.KIND_LINE.get(kind, _C["act_edge"])
        if not tids:    # not part of this explanation (an op after backward())
            fc, ec = palette.BACKGROUND, _C["dim"]
        if lit:
            fc = _C["back"] if backward else _C["lit"]
            ec = _C["grad"] if backward else _C["lit_edge"]
            cell = frame.cells.get(tid)
            if cell is not None and cell.mark in _MARK and cell.mark not in ("none",):
                fc = _MARK[cell.mark][2]
                ec = _MARK[cell.mark][1]
        failed = tid in frame.failed and kind != "accumulate"
        if failed:  # a failed gradient check concerns this box
            fc, ec, lit = _C["bad_fill"], _C["bad"], True
        square = kind in ("param", "input")
        box = self._add(ax, FancyBboxPatch, (b["x"], b["y"]), b["w"], b["h"],
                        boxstyle="square,pad=0" if square else "round,pad=0,rounding_size=6", fc=fc, ec=ec,
                        lw=(2.6 if lit else (1.8 if kind == "loss" else 1.0)) * self.px * 1.4,
                        ls=(":" if not done else "--" if kind == "prep" else "-"), zorder=3)
        inner = b["w"] * self.ux - 2 * self.pad
        pitch = self.fs * 1.28                               # points per line
        room = max(1, int((b["h"] * self.uy - self.pad) / pitch))
        lines = [ln for ln in self._box_lines(n, b, sn, frame, done, failed) if ln[0] and ln[0][0]]
        lines = self._keep(lines, room)
        x = b["x"] + b["w"] / 2
        y = b["y"] + b["h"] / 2
        top = y - (len(lines) - 1) * pitch / self.uy / 2
        for k, (variants, style) in enumerate(lines):
            size = max(self.min_fs, self.fs * style.get("scale", 1.0))
            weight = style.get("weight", "normal")
            text = self.fit.first(variants, inner, size, weight)
            if text:
                self._text(ax, x, top + k * pitch / self.uy, text, size, box, ha="center", va="center",
                           zorder=4, color=style.get("color", _C["text"]), weight=weight)

    def _keep(self, lines, room: int):
        """The lines a box has room for: the name first, then the value and the gradient;
        the grad_fn line goes first when there is not room for all four."""
        order = {"head": 0, "failed": 1, "grad": 2, "value": 3, "kind": 4}
        if len(lines) <= room:
            return lines
        kept = sorted(lines, key=lambda ln: order[ln[1]["role"]])[:room]
        return [ln for ln in lines if ln in kept]

    def _box_lines(self, n: int, b: dict, sn: SceneNode | None, frame: Frame, done: bool, failed: bool):
        """The lines of a box: (variants, longest first; style). The first is the node's
        title in `gradtrace graph`; an op's tensor follows under the name the captions use."""
        kind = b["kind"]
        title = b["title"]
        detail = b["details"][0] if b["details"] else ""
        tid = sn.tid if sn is not None else None
        head: tuple[str, ...] = (title,)
        if sn is not None and kind not in ("param", "input", "accumulate", "loss") and sn.label not in title:
            head = (f"{title} → {sn.label}", title)
        elif kind == "param" and "." in title:   # model.0.weight; its module's box names the rest
            parts = title.split(".")
            head = tuple(".".join(parts[k:]) for k in range(len(parts)))
        muted = {"color": _C["muted"], "scale": 0.85, "role": "kind"}
        if sn is None:   # drawn as in graph.svg, but no frame is about it
            return [(head, {"weight": "bold", "role": "head", "color": _C["muted"]}), ((detail,), muted)]
        g = frame.grads.get(tid)
        grad = (f"grad {_short(g)}", _short(g)) if g is not None else ("",)
        grad_style = {"color": _C["grad"], "role": "grad",
                      "weight": "bold" if tid in frame.current and g is not None else "normal"}
        if kind == "accumulate":
            return [(head, {"weight": "bold", "role": "head"}), (grad, grad_style),
                    ((detail,), muted)]
        if kind == "param":
            note = "parameter"
        elif kind == "input":
            note = "data"
        elif kind in ("module", "repeat", "loss"):
            note = detail
        else:
            note = f"⟵ {sn.grad_fn}" if sn.grad_fn and kind != "loss" else ("no grad_fn" if sn.prep else "")
        notes = (note, note[2:]) if note.startswith("⟵ ") else (note,)
        cell = frame.cells.get(tid)
        v = cell.value if cell is not None and cell.value is not None else self._values.get(tid)
        shape = fmt_shape(sn.shape)
        if not done:
            value: tuple = (f"[{shape}] ?", "?") if sn.shape else ("?",)
            if sn.op is not None and kind in ("op", "prep"):   # grad_fn exists once the op ran
                notes = ("",)
        elif v is None:
            value = (f"[{shape}]",)
        elif v.numel == 1:
            value = (_short(v),)
        else:
            value = (f"[{shape}] {_short(v)}", _short(v))
            if v.numel == 2 and v.array is not None:
                full = "[" + ", ".join(_num3(float(x)) for x in v.array.reshape(-1).tolist()) + "]"
                value = (full,) + value
        updated = cell is not None and cell.mark == "update"
        if updated and cell is not None and cell.before is not None:
            value = (f"{_short(cell.before)} → {_short(v)}", f"→ {_short(v)}")
        if sn.role == "loss" and g is None:
            grad = ("the loss",)
            grad_style = {**grad_style, "color": _C["loss_edge"]}
        if failed:   # said in the box, not only by its colour
            notes = ("✗ check failed",)
        return [(head, {"weight": "bold", "role": "head"}),
                (value, {"weight": "bold" if updated else "normal", "role": "value",
                         "color": _C["updated"] if updated else (_C["text"] if done else _C["muted"])}),
                (notes, {"color": _C["bad"] if failed else _C["muted"], "scale": 0.85,
                           "role": "failed" if failed else "kind",
                           "weight": "bold" if failed else "normal"}),
                (grad, grad_style)]


class _CardsPanel(_Drawing):
    """The parameters' cards and the caption band under them."""

    def _draw_side(self, frame: Frame) -> None:
        """The parameters' cards, side by side (in two rows when there are many) under the
        graph, or under each other beside it: value and .grad, and what just happened."""
        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_side
        cells = list(frame.cells.items())
        if not cells:
            self._text(ax, 0.01, 0.5, "(no leaf requires grad)", self._fs(18), va="center",
                       color=_C["muted"])
            return
        sw = self.W * self._SIDE[2]               # the panel's width in points
        if self._SIDE[3] > 0.5:   # a column beside the graph: cards under each other
            per_row = 1 if self._SIDE[2] < 0.45 or len(cells) < 4 else 2
            rows = min(-(-len(cells) // per_row), 5)
        else:
            per_row = min(len(cells), 5)
            rows = 1 if len(cells) <= per_row else 2
        shown = cells if len(cells) <= per_row * rows else cells[:per_row * rows - 1]
        more = len(cells) - len(shown)
        w = min(0.36 if self._SIDE[3] <= 0.5 else 0.99, 0.99 / per_row)             # axes fraction
        h = 0.94 / rows
        card_w, card_h = w * sw - 0.008 * sw, h * self.H * self._SIDE[3]
        lines = 4
        fs = max(self.min_fs, min(20 * self.px, (card_h - 2 * self.pad) / (lines * 1.3)))
        pitch = fs * 1.3 / (self.H * self._SIDE[3])   # axes fraction per line
        inner = card_w - 2 * self.pad
        for k, (tid, cell) in enumerate(shown + ([(None, None)] if more else [])):
            x = 0.006 + (k % per_row) * w
            y0 = 0.03 + (rows - 1 - k // per_row) * h
            top = y0 + h - 0.03 - pitch * 0.6
            if tid is None:
                box = self._add(ax, FancyBboxPatch, (x, y0), w - 0.008, h - 0.03,
                                boxstyle="round,pad=0,rounding_size=0.02", fc=_C["panel"], ec=_C["rule"], lw=0.8)
                self._text(ax, x + self.pad / sw, y0 + (h - 0.03) / 2,
                           self.fit.shorten(f"… and {more} more parameters", inner, fs),
                           fs, box, va="center", color=_C["muted"])
                continue
            assert cell is not None
            node = self.plan.scene.nodes.get(tid)
            name = node.label if node is not None else f"t{tid}"
            mark = _MARK.get(cell.mark)
            if tid in frame.failed:   # a failed gradient check: the card says so
                mark = ("✗ check failed: this gradient is wrong", _C["bad"], _C["bad_fill"])
            lit = (mark is not None and cell.mark != "none") or tid in frame.failed
            box = self._add(ax, FancyBboxPatch, (x, y0), w - 0.008, h - 0.03,
                            boxstyle="round,pad=0,rounding_size=0.02", fc=mark[2] if mark else _C["panel"],
                            ec=mark[1] if mark else _C["rule"], lw=2.2 if lit else 0.8)
            lx = x + self.pad / sw
            name_fs = fs * 1.08
            shown_name = self.fit.shorten(name, inner, name_fs, "bold")
            self._text(ax, lx, top, shown_name, name_fs, box, weight="bold", va="center",
                       color=_C["text"])
            tag_x = self.fit.width(shown_name, name_fs, "bold") + 8 * self.px
            tag = self.fit.shorten("parameter", inner - tag_x, self.min_fs)
            if tag:
                self._text(ax, lx + tag_x / sw, top, tag, self.min_fs, box, va="center",
                           color=_C["muted"])
            label_w = max(self.fit.width(t, fs) for t in ("value", ".grad")) + 14 * self.px
            vx = lx + label_w / sw
            vtxt = fmt_value(cell.value)
            variants: tuple[str, ...] = (vtxt,)
            if cell.mark == "update" and cell.before is not None:
                variants = (f"{fmt_value(cell.before)} → {vtxt}", f"→ {vtxt}")
            up = cell.mark == "update"
            self._text(ax, lx, top - pitch, "value", fs, box, va="center", color=_C["subtle"])
            self._text(ax, vx, top - pitch, self.fit.first(variants, inner - label_w, fs, "bold" if up else "normal"),
                       fs, box, va="center", color=_C["updated"] if up else _C["text"],
                       weight="bold" if up else "normal")
            gtxt = "None" if cell.grad is None else fmt_value(cell.grad)
            strong = cell.mark in ("fresh", "zeros", "added", "zero", "write")
            self._text(ax, lx, top - 2 * pitch, ".grad", fs, box, va="center", color=_C["subtle"])
            self._text(ax, vx, top - 2 * pitch,
                       self.fit.shorten(gtxt, inner - label_w, fs, "bold" if strong else "normal"), fs, box,
                       va="center", weight="bold" if strong else "normal",
                       color=(_C["grad"] if cell.grad is not None and not _is_zero(cell.grad) else _C["subtle"]))
            if mark is not None:
                note = mark[0] if tid in frame.failed else (cell.note or mark[0])
                self._text(ax, lx, top - 3 * pitch, self.fit.shorten(note, inner, fs, "bold"),
                           fs, box, va="center", color=mark[1], weight="bold")

    def _draw_caption(self, frame: Frame) -> None:
        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_cap
        alert = frame.alert
        box = self._add(ax, FancyBboxPatch, (0.006, 0.05), 0.988, 0.9,
                        boxstyle="round,pad=0,rounding_size=0.03", fc=_C["bad_fill"] if alert else _C["panel"],
                        ec=_C["bad"] if alert else _C["rule"], lw=1.6 if alert else 0.8)
        band = self.H * self._CAP[3]                       # points
        inner_w = 0.988 * self.W - 2 * 14 * self.px
        code_fs = self.min_fs
        code_h = 1.6 * code_fs if frame.code else 0.0
        room = 0.9 * band - 2 * self.pad - code_h          # points for the caption's lines
        lines: list[str] = []
        fs = self.min_fs
        for ref in (22, 20, 18, 16, 15, MIN_FONT_PX):
            fs = self._fs(ref)
            lines = self.fit.wrap(frame.caption, inner_w, fs)
            if len(lines) * fs * 1.3 <= room:
                break
        most = max(1, int(room / (fs * 1.3)))
        if len(lines) > most:
            lines = lines[:most - 1] + [self.fit.shorten(lines[most - 1] + " " + " ".join(lines[most:]),
                                                         inner_w, fs)]
        self._text(ax, 0.006 + 14 * self.px / self.W, 0.95 - self.pad / band, "\n".join(lines), fs, box,
                   va="top", ha="left", linespacing=1.3, color=_C["bad"] if alert else _C["text"])
        if frame.code:
            self._text(ax, 0.006 + 14 * self.px / self.W, 0.05 + self.pad / band,
                       self.fit.shorten(frame.code, inner_w, code_fs, family="monospace"), code_fs, box,
                       family="monospace", color=_C["subtle"], va="bottom", ha="left")
