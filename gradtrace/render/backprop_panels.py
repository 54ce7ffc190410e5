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
from .fit import _Fit

__all__ = ["MIN_FONT_PX"]

_C = {
    "param": "#fde6c4", "param_edge": "#d9822b", "input": "#eceff1", "input_edge": "#90a4ae",
    "act": "#ffffff", "act_done": "#e7f1ff", "act_edge": "#4c6ef5", "loss_edge": "#7048e8",
    "lit": "#ffe066", "lit_edge": "#e8590c", "grad": "#c92a2a", "back": "#ffe3e3", "dim": "#ced4da",
    "bad": "#e03131", "bad_fill": "#ffc9c9", "text": "#212529", "muted": "#868e96",
}
_MARK = {  # mark -> (default words, text/edge colour, fill)
    "fresh": ("fresh: .grad was None", "#2b8a3e", "#d3f9d8"),
    "zeros": ("added onto zeros", "#2b8a3e", "#d3f9d8"),
    "added": ("ADDED to old .grad!", "#c92a2a", "#ffc9c9"),
    "update": ("value updated", "#1971c2", "#d0ebff"),
    "zero": (".grad cleared", "#6741d9", "#e5dbff"),
    "write": (".grad changed", "#e67700", "#fff3bf"),
    "none": ("not cleared", "#868e96", "#f1f3f5"),
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
    tw: float                # a box's size in column / row units
    th: float
    ux: float                # points per unit across / per row
    uy: float
    box_w: float             # a box's size in points
    pad: float
    lines_fit: int

    def _fs(self, ref_px: float) -> float:
        """A font size in points for ``ref_px`` reference pixels, never below the minimum."""
        return max(self.min_fs, ref_px * self.px)

    def _text(self, ax, x, y, text, size, box=None, **kw):
        """ax.text, as plain text (never mathtext); ``box``: the patch it must stay inside."""
        t = ax.text(x, y, text, fontsize=size, parse_math=False, **kw)
        if box is not None:
            self.fitted.append((box, t))
        return t


class _GraphPanel(_Drawing):
    """The graph: one box per tensor, value arrows forward and gradient arrows back."""

    def _draw_graph(self, frame: Frame) -> None:
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

        ax = self.ax_graph
        scene = self.plan.scene
        pos, fs = scene.pos, self.fs
        tw, th = self.tw, self.th
        backward = frame.phase not in ("intro", "forward")
        edge_fs = max(self.min_fs, fs * 0.85)
        for a, b in scene.edges:
            (xa, ya), (xb, yb) = pos[a], pos[b]
            p0, p1 = (xa + tw / 2, ya), (xb - tw / 2, yb)
            done = b in frame.computed
            lit = (a, b) in frame.current_edges
            prep = scene.nodes[b].prep
            ax.add_artist(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=14 * self.px,
                                         color=("#e8590c" if lit and not backward else
                                                "#495057" if done else _C["dim"]),
                                         lw=(2.6 if lit and not backward else 1.3) * self.px * 1.4,
                                         ls="--" if prep else "-", shrinkA=0, shrinkB=0, zorder=1))
            g = frame.grad_edges.get((a, b))
            if g is None:
                continue
            off = 0.09
            ax.add_artist(FancyArrowPatch((p1[0], p1[1] - off), (p0[0], p0[1] - off),
                                         arrowstyle="-|>", mutation_scale=15 * self.px, color=_C["grad"],
                                         lw=(3.0 if lit else 1.4) * self.px * 1.4, alpha=1.0 if lit else 0.6,
                                         shrinkA=0, shrinkB=0, zorder=2))
            mx, my = (p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2 - off
            label = _short(g)
            weight = "bold" if lit else "normal"
            if self.fit.width(label, edge_fs, weight) + 0.6 * edge_fs > (p1[0] - p0[0]) * self.ux:
                continue  # no room between the boxes: the box it reaches shows the gradient
            self._text(ax, mx, my - 0.04, label, edge_fs, color=_C["grad"], ha="center",
                       va="top", zorder=6, weight="bold" if lit else "normal",
                       bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=_C["grad"] if lit else "none",
                                 lw=0.8, alpha=0.92))
        inner = self.box_w - 2 * self.pad
        pitch = fs * 1.28 / self.uy                       # one line, in row units
        for tid, n in scene.nodes.items():
            x, y = pos[tid]
            lit = tid in frame.current
            done = tid in frame.computed
            if n.role == "param":
                fc, ec = _C["param"], _C["param_edge"]
            elif n.role == "input":
                fc, ec = _C["input"], _C["input_edge"]
            else:
                fc = _C["act_done"] if done else _C["act"]
                ec = _C["loss_edge"] if n.role == "loss" else _C["act_edge"]
            if lit:
                fc = _C["back"] if backward else _C["lit"]
                ec = _C["grad"] if backward else _C["lit_edge"]
                cell = frame.cells.get(tid)
                if cell is not None and cell.mark in _MARK and cell.mark not in ("none",):
                    fc = _MARK[cell.mark][2]
                    ec = _MARK[cell.mark][1]
            box = FancyBboxPatch((x - tw / 2, y - th / 2), tw, th,
                                 boxstyle="round,pad=0,rounding_size=0.06", fc=fc, ec=ec,
                                 lw=(2.6 if lit else (1.8 if n.role == "loss" else 1.0)) * self.px * 1.4,
                                 ls=(":" if not done else "--" if n.prep else "-"), zorder=3)
            ax.add_artist(box)
            lines = [ln for ln in self._box_lines(n, frame, done) if ln[0]]
            lines = self._keep(lines)
            top = y + (len(lines) - 1) * pitch / 2
            for k, (variants, style) in enumerate(lines):
                size = max(self.min_fs, fs * style.get("scale", 1.0))
                weight = style.get("weight", "normal")
                text = self.fit.first(variants, inner, size, weight)
                if text:
                    self._text(ax, x, top - k * pitch, text, size, box, ha="center", va="center",
                               zorder=4, color=style.get("color", _C["text"]), weight=weight)

    def _keep(self, lines):
        """The lines a box has room for: the name first, then the value and the gradient;
        the grad_fn line goes first when there is not room for all four."""
        order = {"head": 0, "grad": 1, "value": 2, "kind": 3}
        if len(lines) <= self.lines_fit:
            return lines
        kept = sorted(lines, key=lambda ln: order[ln[1]["role"]])[:self.lines_fit]
        return [ln for ln in lines if ln in kept]

    def _box_lines(self, n: SceneNode, frame: Frame, done: bool):
        """The lines of a box: (variants, longest first; style)."""
        tid = n.tid
        if n.op is None:
            head = n.label
            kind = {"param": "parameter", "input": "data", "loss": "loss"}.get(n.role, "tensor")
        else:
            head = f"{n.label} = {n.expr}"
            kind = n.grad_fn or ("no grad_fn" if n.prep else "")
        cell = frame.cells.get(tid)
        v = cell.value if cell is not None and cell.value is not None else self._values.get(tid)
        shape = fmt_shape(n.shape)
        if not done:
            value: tuple = (f"[{shape}] ?", "?") if n.shape else ("?",)
            kind = "" if n.op is not None else kind   # grad_fn exists once the op has run
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
        g = frame.grads.get(tid)
        grad = (f"grad {_short(g)}", _short(g)) if g is not None else ("",)
        if n.role == "loss" and g is None:
            grad = ("the loss",)
        return [((head,), {"weight": "bold", "role": "head"}),
                (value, {"weight": "bold" if updated else "normal", "role": "value",
                         "color": "#1971c2" if updated else (_C["text"] if done else _C["muted"])}),
                ((kind,), {"color": _C["muted"], "scale": 0.85, "role": "kind"}),
                (grad, {"color": _C["grad"] if g is not None else _C["loss_edge"], "role": "grad",
                        "weight": "bold" if tid in frame.current and g is not None else "normal"})]


class _CardsPanel(_Drawing):
    """The parameters' cards and the caption band under them."""

    def _draw_side(self, frame: Frame) -> None:
        """The parameters' cards, side by side (in two rows when there are many): value and
        .grad, and what just happened."""
        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_side
        cells = list(frame.cells.items())
        if not cells:
            self._text(ax, 0.01, 0.5, "(no leaf requires grad)", self._fs(18), va="center",
                       color=_C["muted"])
            return
        per_row = min(len(cells), 5)
        rows = 1 if len(cells) <= per_row else 2
        shown = cells if len(cells) <= per_row * rows else cells[:per_row * rows - 1]
        more = len(cells) - len(shown)
        w = min(0.36, 0.99 / per_row)             # axes fraction
        h = 0.94 / rows
        card_w, card_h = w * self.W - 0.008 * self.W, h * self.H * self._SIDE[3]
        lines = 4
        fs = max(self.min_fs, min(20 * self.px, (card_h - 2 * self.pad) / (lines * 1.3)))
        pitch = fs * 1.3 / (self.H * self._SIDE[3])   # axes fraction per line
        inner = card_w - 2 * self.pad
        for k, (tid, cell) in enumerate(shown + ([(None, None)] if more else [])):
            x = 0.006 + (k % per_row) * w
            y0 = 0.03 + (rows - 1 - k // per_row) * h
            top = y0 + h - 0.03 - pitch * 0.6
            if tid is None:
                box = FancyBboxPatch((x, y0), w - 0.008, h - 0.03, boxstyle="round,pad=0,rounding_size=0.02",
                                     fc="#f8f9fa", ec="#dee2e6", lw=0.8)
                ax.add_artist(box)
                self._text(ax, x + self.pad / self.W, y0 + (h - 0.03) / 2,
                           self.fit.shorten(f"… and {more} more parameters", inner, fs),
                           fs, box, va="center", color=_C["muted"])
                continue
            assert cell is not None
            node = self.plan.scene.nodes.get(tid)
            name = node.label if node is not None else f"t{tid}"
            mark = _MARK.get(cell.mark)
            lit = mark is not None and cell.mark != "none"
            box = FancyBboxPatch((x, y0), w - 0.008, h - 0.03, boxstyle="round,pad=0,rounding_size=0.02",
                                 fc=mark[2] if mark else "#f8f9fa",
                                 ec=mark[1] if mark else "#dee2e6", lw=2.2 if lit else 0.8)
            ax.add_artist(box)
            lx = x + self.pad / self.W
            name_fs = fs * 1.08
            shown_name = self.fit.shorten(name, inner, name_fs, "bold")
            self._text(ax, lx, top, shown_name, name_fs, box, weight="bold", va="center",
                       color=_C["text"])
            tag_x = self.fit.width(shown_name, name_fs, "bold") + 8 * self.px
            tag = self.fit.shorten("parameter", inner - tag_x, self.min_fs)
            if tag:
                self._text(ax, lx + tag_x / self.W, top, tag, self.min_fs, box, va="center",
                           color=_C["muted"])
            label_w = max(self.fit.width(t, fs) for t in ("value", ".grad")) + 14 * self.px
            vx = lx + label_w / self.W
            vtxt = fmt_value(cell.value)
            variants: tuple[str, ...] = (vtxt,)
            if cell.mark == "update" and cell.before is not None:
                variants = (f"{fmt_value(cell.before)} → {vtxt}", f"→ {vtxt}")
            up = cell.mark == "update"
            self._text(ax, lx, top - pitch, "value", fs, box, va="center", color="#495057")
            self._text(ax, vx, top - pitch, self.fit.first(variants, inner - label_w, fs, "bold" if up else "normal"),
                       fs, box, va="center", color="#1971c2" if up else _C["text"],
                       weight="bold" if up else "normal")
            gtxt = "None" if cell.grad is None else fmt_value(cell.grad)
            strong = cell.mark in ("fresh", "zeros", "added", "zero", "write")
            self._text(ax, lx, top - 2 * pitch, ".grad", fs, box, va="center", color="#495057")
            self._text(ax, vx, top - 2 * pitch,
                       self.fit.shorten(gtxt, inner - label_w, fs, "bold" if strong else "normal"), fs, box,
                       va="center", weight="bold" if strong else "normal",
                       color=(_C["grad"] if cell.grad is not None and not _is_zero(cell.grad) else "#495057"))
            if mark is not None:
                self._text(ax, lx, top - 3 * pitch, self.fit.shorten(cell.note or mark[0], inner, fs, "bold"),
                           fs, box, va="center", color=mark[1], weight="bold")

    def _draw_caption(self, frame: Frame) -> None:
        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_cap
        alert = frame.alert
        box = FancyBboxPatch((0.006, 0.05), 0.988, 0.9, boxstyle="round,pad=0,rounding_size=0.03",
                             fc="#fff5f5" if alert else "#f8f9fa",
                             ec=_C["bad"] if alert else "#dee2e6", lw=1.6 if alert else 0.8)
        ax.add_artist(box)
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
                   va="top", ha="left", linespacing=1.3, color="#a51111" if alert else _C["text"])
        if frame.code:
            self._text(ax, 0.006 + 14 * self.px / self.W, 0.05 + self.pad / band,
                       self.fit.shorten(frame.code, inner_w, code_fs, family="monospace"), code_fs, box,
                       family="monospace", color="#495057", va="bottom", ha="left")
