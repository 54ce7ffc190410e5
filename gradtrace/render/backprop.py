"""The back-propagation explainer: one recorded step, frame by frame, on a fixed graph picture.

Two halves, kept apart so the walk can be tested without drawing:

- :func:`backprop_plan` (``backprop_plan.py``, with ``backprop_scene.py``,
  ``backprop_frames.py`` and ``backprop_backward.py``) walks the step (forward ops, the
  backward pass in autograd's execution order, ``.grad`` accumulation, updates, zeroings, in
  the order the script did them) and returns a :class:`Plan`: a fixed :class:`Scene`
  (tensors, edges, and the picture of the step's graph as `gradtrace graph` lays it out) and one :class:`Frame` per moment, each a complete description
  of what is lit, which values and gradients are shown, and a caption in plain words.
- :class:`BackpropRenderer` (here, with its panels in ``backprop_panels.py`` and the text
  fitting in ``fit.py``) draws a frame of a plan on a matplotlib figure.

Every name of the explainer is importable from this module.
"""

from __future__ import annotations

from ..formatting import slide_number as fmt_num
from ..formatting import value as fmt_value
from . import palette
from .backprop_backward import _accumulate_words
from .backprop_checks import failed_steps, mark_failures
from .backprop_frames import Frame, ParamCell, _acc_mark, _acc_note, _code
from .backprop_panels import _C, _REF_WIDTH, MIN_FONT_PX, _CardsPanel, _GraphPanel
from .backprop_plan import Plan, _script_name, backprop_plan, pick_step
from .backprop_scene import PICTURE, Scene, SceneNode, _expr, _scene
from .graph_options import THEME
from .fit import _Fit

__all__ = ["Scene", "Frame", "Plan", "ParamCell", "backprop_plan", "BackpropRenderer",
           "fmt_num", "fmt_value", "pick_step"]
# names that moved to the modules beside this one, still importable from here
__all__ += ["MIN_FONT_PX", "SceneNode", "_Fit", "_scene", "_expr", "_script_name",
            "_code", "_acc_mark", "_acc_note", "_accumulate_words"]

_PHASE_LABEL = {"forward": "forward", "zero": "zero .grad", "backward": "backward",
                "accumulate": "accumulate .grad", "update": "update", "grad_write": "change .grad",
                "no_zero": "zero .grad?"}


class BackpropRenderer(_GraphPanel, _CardsPanel):
    """Draws the frames of a :func:`backprop_plan` on one figure; nothing moves between frames.

    Every text is measured and shortened to fit the box it is drawn in, at no less than
    :data:`MIN_FONT_PX`; every text is plain text (no mathtext: a ``$`` in a name is a
    ``$``). :attr:`fitted` lists (box, text) pairs: each text drawn inside a box."""

    def __init__(self, trace, options):
        checks = getattr(options, "checks", None)
        step = pick_step(trace, options.step, failed=failed_steps(checks))
        self._values = step.values
        self.plan = backprop_plan(trace, step, budget=options.frames)
        self.checks_failed = mark_failures(self.plan, checks)
        self.title = self.plan.title
        self.note = self.plan.note
        self.fitted: list = []

    def __len__(self) -> int:
        return len(self.plan.frames)

    def caption(self, i: int) -> str:
        return self.plan.frames[i].caption

    _HEAD = [0.0, 0.905, 1.0, 0.095]
    _GRAPH = [0.005, 0.385, 0.99, 0.515]
    _SIDE = [0.0, 0.19, 1.0, 0.19]
    _CAP = [0.0, 0.0, 1.0, 0.19]

    # header (title, phases), graph, parameter cards, caption
    def setup(self, fig) -> None:
        self.fig = fig
        fig.set_facecolor(palette.BACKGROUND)
        self.W, self.H = (float(v) * 72 for v in fig.get_size_inches())   # points
        self.px = self.W / _REF_WIDTH            # points per reference pixel
        self.min_fs = MIN_FONT_PX * self.px
        self._arrange()
        self.ax_head = fig.add_axes(self._HEAD)
        self.ax_graph = fig.add_axes(self._GRAPH)
        self.ax_side = fig.add_axes(self._SIDE)
        self.ax_cap = fig.add_axes(self._CAP)
        for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap):
            ax.set_axis_off()
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        self.fit = _Fit(fig)
        self._start_frame()
        self._geometry()
        self.ax_graph.set_xlim(*self.xlim)
        self.ax_graph.set_ylim(*self.ylim)
        self._draw_static()

    def _arrange(self) -> None:
        """The graph over the cards, or (a picture taller than the band over the cards
        leaves room for) the graph on the left and the cards in a column beside it:
        whichever draws the picture larger."""
        geo = self.plan.scene.picture
        gw, gh = max(geo.width, 1.0) + 12, max(geo.height, 1.0) + 12
        band = 2 * 1.9 * self.min_fs
        wide = min(0.99 * self.W / gw, (self.H * 0.515 - band / 2) / gh)
        tall_h = self.H * 0.715 - band
        frac = min(0.70, max(0.45, gw * tall_h / gh / self.W + 0.01))
        beside = min(frac * self.W / gw, tall_h / gh)
        if beside > 1.15 * wide:
            self._GRAPH = [0.005, 0.19, frac, 0.715]
            self._SIDE = [frac + 0.01, 0.19, 0.985 - frac, 0.715]

    def _geometry(self) -> None:
        """The graph axes in the picture's own points (y down, as graphviz and the explorer
        have them), one scale both ways, the picture centred above the legend line."""
        geo = self.plan.scene.picture
        self.legend_fs = self.min_fs
        self.legend_lines = 1 if self._GRAPH[2] > 0.8 else 2
        legend_band = (0.6 + 1.3 * self.legend_lines) * self.legend_fs   # points, under the graph
        w_pt = self.W * self._GRAPH[2]
        h_pt = self.H * self._GRAPH[3] - legend_band
        margin = 6.0                             # picture points around it
        gw, gh = max(geo.width, 1.0) + 2 * margin, max(geo.height, 1.0) + 2 * margin
        s = min(w_pt / gw, h_pt / gh)            # figure points per picture point
        self.ux = self.uy = s
        half = w_pt / s / 2
        self.xlim = (geo.width / 2 - half, geo.width / 2 + half)
        top = -margin - (h_pt / s - gh) / 2
        self.ylim = (top + (h_pt + legend_band) / s, top)   # inverted: y grows downwards
        self.pad = 6 * self.px
        # one font for every box: four lines in a typical box, between the minimum and 22
        # reference pixels; a smaller box shows fewer lines (_keep)
        heights = sorted(b["h"] for b in geo.nodes.values() if b["kind"] != "accumulate") \
            or [b["h"] for b in geo.nodes.values()] or [60.0]
        typical = heights[len(heights) // 2] * s
        # and no larger than graphviz's own font scaled with the picture: then the titles
        # fit the boxes graphviz made for them
        drawn = THEME[PICTURE.theme].font * s * 1.05
        self.fs = max(self.min_fs, min(22 * self.px, drawn, (typical - self.pad) / (4 * 1.28)))

    def draw(self, i: int) -> None:
        frame = self.plan.frames[i]
        # The frame before's artists that this one makes again with the same arguments are
        # kept (not drawn again); the others are removed. The static ones stay.
        self._start_frame()
        self.fitted = [(b, t) for b, t in self.fitted if t in self._static]
        self._draw_head(frame, i)
        self._draw_graph(frame)
        self._draw_side(frame)
        self._draw_caption(frame)
        self._end_frame()

    def animated(self) -> list:
        """This frame's artists; the title and the legend are drawn once."""
        return [a for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap)
                for a in (*ax.patches, *ax.texts, *ax.lines) if a not in self._static]

    def _draw_static(self) -> None:
        from matplotlib.patches import Rectangle

        # the head's title and counter, and the graph's legend line, each within its band
        counter_w = self.fit.width(f"frame {len(self)} of {len(self)}", self._fs(17)) + 30 * self.px
        title_fs = self._fs(26)
        title = self.fit.shorten(self.title, self.W * 0.99 - counter_w - 16 * self.px, title_fs, "bold")
        self.head_band = Rectangle((0, 0.5), 1, 0.5, visible=False, transform=self.ax_head.transAxes)
        self.ax_head.add_artist(self.head_band)
        self._text(self.ax_head, 0.01, 0.72, title, title_fs, self.head_band, weight="bold",
                   va="center", ha="left", color=_C["text"])
        legend = ("a box is a node of gradtrace graph: the op → its tensor, value (μ: mean), ⟵ grad_fn, "
                  "grad = ∂loss/∂tensor;  dark arrows: values, forward;  orange: gradients, back, "
                  "and into .grad")
        room = self.W * self._GRAPH[2] - 12 * self.px
        lines = self.fit.wrap(legend, room, self.legend_fs)
        if len(lines) > self.legend_lines:
            lines = lines[:self.legend_lines - 1] + [self.fit.shorten(
                " ".join(lines[self.legend_lines - 1:]), room, self.legend_fs)]
        self._text(self.ax_graph, self.xlim[0] + 4 * self.px / self.ux, self.ylim[0] - 0.25 * self.legend_fs / self.uy,
                   "\n".join(lines), self.legend_fs, color=_C["muted"], ha="left", va="bottom",
                   linespacing=1.3)
        self._static = {*self.ax_head.texts, *self.ax_graph.texts, self.head_band}
        self._made, self._last = {}, {}   # the static artists are never removed

    def _draw_head(self, frame: Frame, i: int) -> None:
        ax = self.ax_head
        self._text(ax, 0.99, 0.72, f"frame {i + 1} of {len(self)}", self._fs(17), color=_C["muted"],
                   va="center", ha="right")
        phases = self.plan.phases
        labels = [_PHASE_LABEL.get(p, p) for p in phases]
        pad, arrow = 10 * self.px, 34 * self.px      # points: a chip's padding, the gap with →
        fs = self._fs(17)
        for size in (17, 16, 15, MIN_FONT_PX):
            fs = self._fs(size)
            total = sum(self.fit.width(lab, fs, "bold" if p == frame.phase else "normal") + 2 * pad
                        for p, lab in zip(phases, labels)) + arrow * (len(labels) - 1)
            if total <= self.W * 0.98:
                break
        x = 0.01
        for j, (p, label) in enumerate(zip(phases, labels)):
            lit = p == frame.phase
            bad = lit and frame.alert
            self._text(ax, x + pad / self.W, 0.24, label, fs, va="center", ha="left",
                       color=_C["text"] if lit else _C["muted"], weight="bold" if lit else "normal",
                       bbox=dict(boxstyle=f"round,pad={pad / fs:.3f}", lw=1.6 if lit else 1.0,
                                 fc=(_C["bad_fill"] if bad else _C["lit"]) if lit else _C["panel"],
                                 ec=(_C["bad"] if bad else _C["lit_edge"]) if lit else _C["rule"]))
            x += (self.fit.width(label, fs, "bold" if lit else "normal") + 2 * pad) / self.W
            if j < len(phases) - 1:
                self._text(ax, x + arrow / 2 / self.W, 0.24, "→", fs, va="center", ha="center",
                           color=_C["dim"])
                x += arrow / self.W
