"""The training animation: the run over time, one frame per step (or an even subsample).

Panels, chosen by what the model is:

- the parameter trajectory on the contour of the loss surface, with the negative recorded
  gradient as an arrow at each point and the closed-form optimum θ* marked (exact for two
  parameters; otherwise the plane through θ* spanned by the two directions of largest
  movement, labelled as such; without a recognised linear model, the trajectory alone);
- the loss so far; the distance to the optimum ‖θ − θ*‖; each parameter's gradient norm;
  a strip of the accumulate / update / zero events of every step;
- the data: for one input feature the scatter and the fitted line moving, otherwise
  predicted against true values (without a linear model: the parameters' values).

The series come from :mod:`gradtrace.analysis.training`; everything static is drawn once
in :meth:`TrainingRenderer.setup`, and each frame only moves lines and markers.
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.sampling import subsample
from ..errors import NothingToDrawError
from .backprop import fmt_num
from .text import fit_texts

__all__ = ["TrainingRenderer"]

_BLUE, _GREY, _RED, _GREEN = "#1c7ed6", "#adb5bd", "#e03131", "#2f9e44"
_PARAM_COLORS = ["#1c7ed6", "#e8590c", "#2f9e44", "#9c36b5", "#f08c00", "#0c8599", "#c2255c", "#5c940d"]
#: colours of the event strip: accumulations by kind, updates, zeroings, other .grad writes
_EVENT_COLORS = {"fresh": "#8ce99a", "zeros": "#2f9e44", "added": "#e03131", "update": "#1c7ed6",
                 "zero": "#7048e8", "grad_write": "#f08c00"}


def _script_name(trace) -> str:
    from .backprop import _script_name as name

    return name(trace)


class TrainingRenderer:
    """Frames of a run: frame ``i`` shows the state after the ``i``-th chosen step."""

    def __init__(self, trace, options):
        from ..analysis.training import loss_surface, training_series

        self.series = s = training_series(trace)
        if len(s) == 0:
            raise NothingToDrawError(f"{trace.path}: no step ran backward(), so there is no "
                                     "training to animate")
        self.surface = loss_surface(trace, s)
        rows = len(s.read)
        self.frames = subsample(rows, options.frames)      # positions into the rows read

        span = int(s.steps[-1] - s.steps[0]) + 1
        self.title = (f"{_script_name(trace)} · training over {len(s)} steps" if span == len(s) else
                      f"{_script_name(trace)} · training, {len(s)} recorded steps of {span}")
        notes = []
        if s.sampled:
            notes.append(f"the run's {len(s)} steps were read at {rows} evenly spaced steps")
        if len(self.frames) < rows:
            every = (rows - 1) / max(1, len(self.frames) - 1)
            kind = "steps" if span == len(s) else "recorded steps"
            notes.append(f"{rows} {kind} shown in {len(self.frames)} frames (about one frame every "
                         f"{every:.3g} {kind}) to keep within the {options.frames}-frame budget")
        self.note = "; ".join(notes) or None
        self._theta = s.theta() if s.tracked else None
        with _quiet():
            self._prepare()

    def __len__(self) -> int:
        return len(self.frames)

    def step_of(self, i: int) -> int:
        """The run step number frame ``i`` shows."""
        return int(self.series.steps[self.series.read[self.frames[i]]])

    def caption(self, i: int) -> str:
        r = self.frames[i]
        p = self.series.read[r]
        loss = self.series.loss[p]
        return f"step {self.step_of(i)}: loss {fmt_num(float(loss))}"

    # -- data for the panels, computed once ---------------------------------------------------------
    def _prepare(self) -> None:
        s = self.series
        S = self.surface
        self.xy = None             # (rows, 2) trajectory in plane coordinates
        self.uv = None             # (rows, 2) −.grad, as recorded, in plane coordinates
        self.uv_true = None        # (rows, 2) −∇loss of the drawn surface at the same points
        self.dist = None           # (rows,) ‖θ − θ*‖
        if S:
            theta = s.theta(S.tids)
            self.xy = S.coords(theta)
            g = s.grad_theta(S.tids)
            self.uv = -(g @ S.axes.T)
            # the surface is quadratic: ∇L(θ) = H (θ − θ*), exactly
            self.uv_true = -((theta - S.optimum) @ S.hessian.T @ S.axes.T)
            self.dist = np.linalg.norm(theta - S.optimum, axis=1)
            self.opt_xy = S.coords(S.optimum)
        elif self._theta is not None and np.isfinite(self._theta).all() and len(self._theta) > 1:
            theta = self._theta
            end = theta[-1]
            d = theta - end
            if theta.shape[1] == 2:
                axes = np.eye(2)
                self._plane_labels = tuple(s.flat_names()[:2])
            elif theta.shape[1] == 1:      # one number: its path along a line
                axes = np.array([[1.0], [0.0]])
                self._plane_labels = (s.flat_names()[0], "")
            else:
                _, _, vt = np.linalg.svd(d, full_matrices=False)
                axes = vt[:2] if len(vt) >= 2 else np.vstack([vt[0], np.zeros_like(vt[0])])
                self._plane_labels = ("direction 1", "direction 2")
            self.xy = (theta - (0 if theta.shape[1] <= 2 else end)) @ axes.T
            g = s.grad_theta()
            self.uv = -(g @ axes.T)
        if self.uv is not None:
            self.uv = np.where(np.isfinite(self.uv), self.uv, 0.0)
        if self.uv_true is None:
            self.uv_true = self.uv
        elif self.uv_true is not None:
            self.uv_true = np.where(np.isfinite(self.uv_true), self.uv_true, 0.0)

    def _panel_title(self, ax, title: str, sub: str) -> None:
        """A panel's title, and a line or two of small print under it."""
        lines = _wrap(sub, int(ax.get_position().width * self.fig.get_size_inches()[0] * 72
                                / ((self.fs - 1.5) * 0.55)))
        n = lines.count("\n") + 1
        ax.set_title(title, fontsize=self.fs + 0.5, loc="left", pad=6 + n * (self.fs - 1.5) * 1.3)
        ax.text(0.0, 1.012, lines, transform=ax.transAxes, fontsize=self.fs - 1.5, color="#495057",
                va="bottom", linespacing=1.1)

    def _has_surface(self) -> bool:
        return bool(self.surface)

    # -- figure ----------------------------------------------------------------------------------------
    def setup(self, fig) -> None:
        with _quiet():
            self._setup(fig)

    def _setup(self, fig) -> None:
        self.fig = fig
        fig.set_facecolor("white")
        w_in, h_in = fig.get_size_inches()
        self.fs = max(6.5, min(9.0, 8.0 * min(w_in / 12.0, h_in / 6.75) ** 0.5))
        fs = self.fs
        self.ax_title = fig.add_axes([0.0, 0.91, 1.0, 0.09])
        self.ax_title.set_axis_off()
        # the frame's own words are short texts beside static ones: text is what costs
        # most to draw, and only the animated artists are drawn again for every frame
        head = self.ax_title.text(0.01, 0.62, f"{self.title}:  ", fontsize=fs + 3, weight="bold",
                                  va="center", ha="left")
        fit_texts([head])  # the script's name: user text
        fig.canvas.draw()  # to measure the static title
        bb = head.get_window_extent().transformed(self.ax_title.transAxes.inverted())
        self.title_text = self.ax_title.text(bb.x1, 0.62, "", fontsize=fs + 3, weight="bold",
                                             va="center", ha="left", color=_BLUE)
        self.sub_text = self.ax_title.text(0.01, 0.15, "", fontsize=fs, va="center", ha="left",
                                           color="#343a40")
        if self.note:
            self.ax_title.text(0.99, 0.62, f"({self.note})", fontsize=fs - 1, va="center",
                               ha="right", color="#868e96")
        self._setup_trajectory(fig.add_axes([0.05, 0.09, 0.325, 0.72]))
        mid_x, mid_w = 0.44, 0.27
        self.ax_loss = fig.add_axes([mid_x, 0.67, mid_w, 0.17])
        self.ax_dist = fig.add_axes([mid_x, 0.445, mid_w, 0.17])
        self.ax_grad = fig.add_axes([mid_x, 0.22, mid_w, 0.17])
        self.ax_strip = fig.add_axes([mid_x, 0.075, mid_w, 0.085])
        self._setup_curves()
        self._setup_strip()
        self._setup_data(fig.add_axes([0.765, 0.09, 0.22, 0.75]))

    def _style(self, ax, title: str) -> None:
        ax.set_title(title, fontsize=self.fs + 0.5, loc="left", pad=3)
        ax.tick_params(labelsize=self.fs - 1, length=2, pad=1.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    def _steps_read(self) -> np.ndarray:
        return self.series.steps[self.series.read]

    def _setup_curves(self) -> None:
        s = self.series
        fs = self.fs
        steps = s.steps
        x_lo, x_hi = float(steps[0]), float(max(steps[-1], steps[0] + 1))
        # loss: the whole run faint, the part so far drawn over it
        ax = self.ax_loss
        self._style(ax, "loss at each step")
        finite = np.isfinite(s.loss)
        log = bool(finite.any() and (s.loss[finite] > 0).all()
                   and s.loss[finite].max() / max(s.loss[finite].min(), 1e-300) > 30)
        if log:
            ax.set_yscale("log")
        ax.plot(steps, s.loss, color=_GREY, lw=0.8, alpha=0.6)
        self.loss_line, = ax.plot([], [], color=_BLUE, lw=1.3)
        self.loss_dot, = ax.plot([], [], "o", color=_BLUE, ms=4)
        ax.set_xlim(x_lo, x_hi)
        self._ylim(ax, s.loss, log)
        ax.tick_params(labelbottom=False)
        # distance to the optimum
        ax = self.ax_dist
        xs = self._steps_read()
        if self.dist is not None:
            self._style(ax, "distance to the optimum ‖θ − θ*‖")
            d = self.dist
            dlog = bool((d > 0).all() and d.max() / max(d.min(), 1e-300) > 30)
            if dlog:
                ax.set_yscale("log")
            ax.plot(xs, d, color=_GREY, lw=0.8, alpha=0.6)
            self.dist_line, = ax.plot([], [], color="#7048e8", lw=1.3)
            self.dist_dot, = ax.plot([], [], "o", color="#7048e8", ms=4)
            self._ylim(ax, d, dlog)
        else:
            self._style(ax, "distance to the optimum")
            ax.text(0.5, 0.5, "no closed-form optimum\n" + _wrap(_reason(self.surface), 48),
                    ha="center", va="center", fontsize=fs - 0.5, color="#868e96", transform=ax.transAxes)
            ax.set_yticks([])
            self.dist_line = self.dist_dot = None
        ax.set_xlim(x_lo, x_hi)
        ax.tick_params(labelbottom=False)
        # gradient norms, one line per parameter
        ax = self.ax_grad
        self._style(ax, "gradient norm ‖.grad‖ per parameter")
        self.grad_lines = []
        allg = []
        for j, p in enumerate(s.params):
            g = s.grad_norm.get(p.tid)
            if g is None:
                continue
            g = g[s.read]
            allg.append(g)
            color = _PARAM_COLORS[j % len(_PARAM_COLORS)]
            ax.plot(xs, g, color=color, lw=0.7, alpha=0.25)
            line, = ax.plot([], [], color=color, lw=1.2, label=s.names.get(p.tid, f"t{p.tid}"))
            self.grad_lines.append((line, g))
        if allg:
            a = np.concatenate(allg)
            a = a[np.isfinite(a)]
            glog = bool(len(a) and (a > 0).all() and a.max() / max(a.min(), 1e-300) > 30)
            if glog:
                ax.set_yscale("log")
            self._ylim(ax, a, glog)
            ax.legend(fontsize=fs - 1.5 if len(allg) <= 4 else fs - 2.5, loc="upper right",
                      framealpha=0.8, ncol=min(3, len(allg)), handlelength=1.2, borderpad=0.2,
                      columnspacing=0.8, labelspacing=0.2)
        ax.set_xlim(x_lo, x_hi)
        ax.tick_params(labelbottom=False)
        self.cursors = [a.axvline(x_lo, color="#495057", lw=0.6, alpha=0.5)
                        for a in (self.ax_loss, self.ax_dist, self.ax_grad)]

    @staticmethod
    def _ylim(ax, values, log: bool) -> None:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if log:
            v = v[v > 0]
        if not len(v):
            return
        lo, hi = float(v.min()), float(v.max())
        if log:
            ax.set_ylim(lo / 1.5, hi * 1.5)
        else:
            pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
            ax.set_ylim(lo - pad, hi + pad)

    def _setup_strip(self) -> None:
        s = self.series
        ax = self.ax_strip
        n = len(s)
        img = np.ones((3, n, 3))
        ev = s.events

        def rgb(c):
            return [int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]

        for kind in ("fresh", "zeros", "added"):       # the bug colour wins
            img[0, ev[kind] > 0] = rgb(_EVENT_COLORS[kind])
        img[1, ev["update"] > 0] = rgb(_EVENT_COLORS["update"])
        img[2, ev["zero"] > 0] = rgb(_EVENT_COLORS["zero"])
        img[2, (ev["grad_write"] > 0) & (ev["zero"] == 0)] = rgb(_EVENT_COLORS["grad_write"])
        steps = s.steps
        x_lo, x_hi = float(steps[0]) - 0.5, float(steps[-1]) + 0.5
        ax.imshow(img, aspect="auto", interpolation="nearest", extent=(x_lo, x_hi, 2.5, -0.5))
        ax.set_yticks([0, 1, 2], ["accumulate", "update", "zero .grad"], fontsize=self.fs - 1.5)
        for label, kind in zip(ax.get_yticklabels()[1:], ("update", "zero")):
            label.set_color(_EVENT_COLORS[kind])
        ax.tick_params(labelsize=self.fs - 1, length=2, pad=1.5)
        ax.set_xlim(float(steps[0]), float(max(steps[-1], steps[0] + 1)))
        ax.set_xlabel("step", fontsize=self.fs - 0.5, labelpad=1)
        added = int(ev["added"].sum())
        pieces = [("accumulate:", "#495057"), ("■ fresh", _EVENT_COLORS["fresh"]),
                  ("■ onto zeros", _EVENT_COLORS["zeros"])]
        if added:
            pieces.append(("■ ADDED to an old .grad!", _EVENT_COLORS["added"]))
        x = 0.0
        per_char = (self.fs - 0.5) * 0.6 / (ax.get_position().width * self.fig.get_size_inches()[0] * 72)
        for text, color in pieces:
            ax.text(x, 1.06, text, transform=ax.transAxes, fontsize=self.fs - 0.5, color=color,
                    va="bottom", ha="left", weight="bold" if color == _EVENT_COLORS["added"] else "normal")
            x += (len(text) + 1.5) * per_char
        self.strip_cursor = ax.axvline(float(steps[0]), color="black", lw=1.2)
        self.cursors.append(self.strip_cursor)

    # -- the trajectory on the loss surface ----------------------------------------------------------
    def _setup_trajectory(self, ax) -> None:
        fs = self.fs
        self.ax_traj = ax
        S = self.surface
        ax.tick_params(labelsize=fs - 1, length=2, pad=1.5)
        self.traj_line = self.traj_dot = self.opt_marker = None
        self.quiver = self.quiver_now = self.quiver_rec = None
        if self.xy is None or not np.isfinite(self.xy).all(axis=1).any():
            ax.set_title("parameters", fontsize=fs + 0.5, loc="left")
            ax.text(0.5, 0.5, "no trajectory: parameter values were not kept in full\n"
                    + _wrap(_left_out_words(self.series), 52), ha="center", va="center",
                    fontsize=fs - 0.5, color="#868e96", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            self.xy = None
            return
        from ..analysis.training import sane_rows

        xy = self.xy
        # the picture frames the steps before a diverging run blows up
        ref = self.opt_xy if S else xy[np.isfinite(xy).all(axis=1)][-1]
        inside = sane_rows(xy - ref, factor=30.0)
        pts = [xy[inside]]
        if S:
            pts.append(self.opt_xy.reshape(1, 2))
        allp = np.vstack(pts)
        lo, hi = allp.min(0), allp.max(0)
        span = np.maximum(hi - lo, 1e-12)
        # equal scales on both axes when they are the same kind of quantity, so that the
        # gradient arrows cross the contours at right angles as they should
        box = ax.get_position()
        w_in, h_in = self.fig.get_size_inches()
        aspect = (box.height * h_in) / (box.width * w_in)
        pad = 0.12
        lo, hi = lo - pad * span, hi + pad * span
        self.stretch = None
        if S:
            cx, cy = (lo + hi) / 2
            sx, sy = hi - lo
            if sy / sx > 12 * aspect or sx / sy > 12 / aspect:
                self.equal = False        # too thin to read at equal scales: say so
                self.stretch = (sx * aspect) / sy
            else:
                self.equal = True
                if sy < sx * aspect:
                    sy = sx * aspect
                else:
                    sx = sy / aspect
                lo, hi = np.array([cx - sx / 2, cy - sy / 2]), np.array([cx + sx / 2, cy + sy / 2])
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        if S:
            gx = np.linspace(lo[0], hi[0], 160)
            gy = np.linspace(lo[1], hi[1], 160)
            A, B = np.meshgrid(gx, gy)
            L = S.loss(A, B)
            ex = L - S.loss_at_optimum
            pos = ex[np.isfinite(ex) & (ex > 0)]
            if len(pos):
                # contours evenly spaced in log(loss − L*): the valley and the walls both show
                top = float(np.percentile(pos, 99))
                bottom = max(float(pos.min()), top * 1e-6)
                levels = np.unique(S.loss_at_optimum + np.geomspace(bottom, top, 14))
                if len(levels) >= 2:
                    ax.contourf(A, B, L, levels=levels, cmap="Blues_r", alpha=0.22, extend="both")
                    ax.contour(A, B, L, levels=levels, colors="#495057", linewidths=0.5, alpha=0.6)
            self.opt_marker, = ax.plot(*self.opt_xy, marker="*", ms=13, color="#f59f00", mec="#5c3c00",
                                       mew=0.8, zorder=6, ls="none", label="optimum θ* (closed form)")
            if S.exact:
                ax.set_xlabel(S.labels[0], fontsize=fs)
                ax.set_ylabel(S.labels[1], fontsize=fs)
                title = f"loss surface over ({S.labels[0]}, {S.labels[1]})"
            else:
                ax.set_xlabel("direction 1 (most movement)", fontsize=fs)
                ax.set_ylabel("direction 2", fontsize=fs)
                title = "loss on a plane through θ*"
            if self.stretch is not None:
                which, k = (S.labels[1], self.stretch) if self.stretch > 1 else (S.labels[0], 1 / self.stretch)
                ax.text(0.01, 0.01, f"not to scale: {which} is stretched ×{k:.2g}", fontsize=fs - 1.5,
                        color="#495057", transform=ax.transAxes, va="bottom", ha="left")
            sub = ("exact: the model has just these two parameters" if S.exact else
                   f"the plane through the optimum θ* spanned by the run's two directions of "
                   f"largest movement ({len(S.optimum)} parameters; the path is projected onto it)")
            self._panel_title(ax, title, sub)
        else:
            labels = getattr(self, "_plane_labels", ("direction 1", "direction 2"))
            ax.set_xlabel(labels[0], fontsize=fs)
            ax.set_ylabel(labels[1], fontsize=fs)
            sub = (f"no loss surface ({_reason(S)}); the path on the plane of its two "
                   "directions of largest movement")
            if self.series.left_out:
                kept = ", ".join(self.series.names.get(p.tid, f"t{p.tid}") for p in self.series.tracked)
                sub += f"; of {kept} only ({_left_out_words(self.series)})"
            self._panel_title(ax, "parameter trajectory", sub)
        if not inside.all():
            out = int(np.argmin(inside[int(np.argmax(inside)):])) + int(np.argmax(inside))
            step = int(self.series.steps[self.series.read[out]])
            ax.text(0.01, 0.06 if self.stretch is not None else 0.01,
                    f"the path leaves the picture at step {step}: the values blow up",
                    transform=ax.transAxes, fontsize=fs - 1, color=_RED, ha="left", va="bottom",
                    weight="bold")
        ax.plot(xy[0, 0], xy[0, 1], "o", mfc="white", mec=_BLUE, ms=6, zorder=5, label="start")
        self.traj_line, = ax.plot([], [], color=_BLUE, lw=1.2, zorder=4, marker="o", ms=1.6)
        self.traj_dot, = ax.plot([], [], "o", color=_BLUE, ms=6, zorder=7)
        # arrows: −.grad at the points drawn so far (a sample) and, bold, at the current one
        if self.uv is not None:
            # Arrows give directions at a fixed length: gradients shrink by orders of magnitude
            # over a run (their sizes are in the gradient-norm panel). Red: steepest descent on
            # the drawn surface, −∇loss, at right angles to its contours. Orange, at the current
            # point when it points elsewhere: −.grad as recorded, the direction the update
            # used (a minibatch's gradient; or an old one added in, when .grad is not zeroed).
            span = np.array([hi[0] - lo[0], hi[1] - lo[1]])
            assert self.uv_true is not None  # set with uv
            self.arrow_true = _unit(self.uv_true, span) * span
            self.arrow_rec = _unit(self.uv, span) * span
            cos = (self.arrow_true / span * self.arrow_rec / span).sum(1)
            self.rec_differs = (cos < math.cos(math.radians(10))) & self._has_surface()
            self.arrow_at = np.asarray(subsample(len(xy), 40), dtype=int)
            at = self.arrow_at
            true_label = "−∇loss: steepest descent" if self._has_surface() else "direction of −.grad"
            self.quiver = ax.quiver(xy[at, 0], xy[at, 1], 0 * at, 0 * at, angles="xy",
                                    scale_units="xy", scale=1, color=_RED, alpha=0.5,
                                    width=0.004, minlength=0, zorder=3)
            self.quiver_rec = ax.quiver(xy[:1, 0], xy[:1, 1], [0], [0], angles="xy", scale_units="xy",
                                        scale=1, color="#f08c00", width=0.008, minlength=0, zorder=8,
                                        label="−.grad: what the update used" if self.rec_differs.any() else None)
            self.quiver_now = ax.quiver(xy[:1, 0], xy[:1, 1], [0], [0], angles="xy", scale_units="xy",
                                        scale=1, color=_RED, width=0.008, minlength=0, zorder=8,
                                        label=true_label)
        ax.legend(fontsize=fs - 1.5, loc="upper right", framealpha=0.85, handlelength=1.4,
                  borderpad=0.3, labelspacing=0.3)

    # -- the data ----------------------------------------------------------------------------------------
    def _setup_data(self, ax) -> None:
        fs = self.fs
        self.ax_data = ax
        self._style(ax, "")
        S = self.surface
        self.fit_line = self.pred_scatter = self.value_lines = self.fit_text = None
        s = self.series
        if S and S.X is not None and S.X.shape[1] == 1 and S.y.shape[1] == 1:
            X, y = S.X[:, 0], S.y[:, 0]
            ax.scatter(X, y, s=10, color="#868e96", alpha=0.8, zorder=2, label="data")
            lo, hi = float(X.min()), float(X.max())
            pad = (hi - lo) * 0.05 or 1.0
            self.line_x = np.array([[lo - pad], [hi + pad]])
            best = S.predict(S.optimum, self.line_x)[:, 0]
            ax.plot(self.line_x[:, 0], best, ls="--", color="#f59f00", lw=1.2, zorder=3,
                    label="best fit (closed form)")
            self.fit_line, = ax.plot([], [], color=_BLUE, lw=2.0, zorder=4, label="fit at this step")
            preds = np.array([S.predict(self._theta_row(i), self.line_x)[:, 0] for i in range(len(self))])
            fin = preds[np.isfinite(preds)]
            span = float(y.max() - y.min()) or 1.0
            ylo = max(min(float(y.min()), float(fin.min()) if len(fin) else 0.0), float(y.min()) - 3 * span)
            yhi = min(max(float(y.max()), float(fin.max()) if len(fin) else 0.0), float(y.max()) + 3 * span)
            ypad = (yhi - ylo) * 0.06 or 1.0
            ax.set_ylim(ylo - ypad, yhi + ypad)
            ax.set_xlim(lo - pad, hi + pad)
            self._preds = preds
            ax.set_title("the data and the fitted line", fontsize=fs + 0.5, loc="left", pad=3)
            ax.set_xlabel("x (the one input feature)", fontsize=fs)
            ax.set_ylabel("y", fontsize=fs)
            ax.legend(fontsize=fs - 1.5, loc="upper left", frameon=False)
            self.fit_text = ax.text(0.98, 0.03, "", transform=ax.transAxes, ha="right", va="bottom",
                                    fontsize=fs - 0.5, color=_BLUE, zorder=9,
                                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85))
            return
        if S and S.X is not None:
            y = S.y
            preds = np.array([S.predict(self._theta_row(i), S.X) for i in range(len(self))])
            self._preds = preds
            fin = preds[np.isfinite(preds)]
            lo = min(float(y.min()), float(np.percentile(fin, 1)) if len(fin) else float(y.min()))
            hi = max(float(y.max()), float(np.percentile(fin, 99)) if len(fin) else float(y.max()))
            span = float(y.max() - y.min()) or 1.0
            lo, hi = max(lo, float(y.min()) - 3 * span), min(hi, float(y.max()) + 3 * span)
            pad = (hi - lo) * 0.05 or 1.0
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="#f59f00", lw=1.0,
                    label="perfect: predicted = true")
            k = y.shape[1]
            colors = np.array([_PARAM_COLORS[j % len(_PARAM_COLORS)] for j in range(k)])
            self._pred_colors = np.tile(colors, len(y))
            self.pred_scatter = ax.scatter(np.repeat(y.reshape(-1)[:1], 1), preds[0].reshape(-1)[:1],
                                           s=9, alpha=0.7, zorder=3)
            self.pred_scatter.set_offsets(np.column_stack([y.reshape(-1), preds[0].reshape(-1)]))
            self.pred_scatter.set_facecolor(self._pred_colors)
            self.pred_scatter.set_edgecolor("none")
            self._true_flat = y.reshape(-1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            if k > 1:
                for j in range(k):
                    ax.scatter([], [], s=9, color=colors[j], label=f"output {j + 1}")
            ax.set_title("predicted vs true", fontsize=fs + 0.5, loc="left", pad=3)
            ax.set_xlabel("true y" + (f" ({k} outputs, by colour)" if k > 1 else ""), fontsize=fs)
            ax.set_ylabel("predicted ŷ at this step", fontsize=fs)
            ax.legend(fontsize=fs - 1.5, loc="upper left", frameon=False)
            self.fit_text = ax.text(0.98, 0.03, "", transform=ax.transAxes, ha="right", va="bottom",
                                    fontsize=fs - 0.5, color=_BLUE, zorder=9,
                                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85))
            return
        # no linear model: the parameters' values over time (their norms when there are many)
        self.fit_text = None
        if self._theta is None or not np.isfinite(self._theta).all():
            ax.set_title("parameter values", fontsize=fs + 0.5, loc="left", pad=3)
            ax.text(0.5, 0.5, "not kept in full\n" + _wrap(_left_out_words(s), 36), ha="center",
                    va="center", fontsize=fs - 1, color="#868e96", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            return
        xs = self._steps_read()
        theta = self._theta
        if theta.shape[1] <= 8:
            ax.set_title("parameter values", fontsize=fs + 0.5, loc="left", pad=3)
            curves = list(zip(s.flat_names(), theta.T))
        else:
            ax.set_title("parameter sizes ‖p‖", fontsize=fs + 0.5, loc="left", pad=3)
            curves = [(s.names.get(p.tid, f"t{p.tid}"), np.linalg.norm(s.values[p.tid], axis=1))
                      for p in s.tracked]
        self.value_lines = []
        for j, (name, v) in enumerate(curves):
            color = _PARAM_COLORS[j % len(_PARAM_COLORS)]
            ax.plot(xs, v, color=color, lw=0.7, alpha=0.25)
            line, = ax.plot([], [], color=color, lw=1.2, label=name)
            self.value_lines.append((line, v))
        ax.set_xlim(float(xs[0]), float(max(xs[-1], xs[0] + 1)))
        self._ylim(ax, np.concatenate([v for _, v in curves]), False)
        ax.set_xlabel("step", fontsize=fs)
        ax.legend(fontsize=fs - 1.5, loc="best", framealpha=0.8, ncol=1 if len(curves) <= 4 else 2)

    def _theta_row(self, i: int) -> np.ndarray:
        S = self.surface
        return self.series.theta(S.tids)[self.frames[i]]

    # -- one frame ---------------------------------------------------------------------------------------
    def animated(self) -> list:
        """The artists a frame moves; the rest is drawn once (see :class:`Animation`)."""
        arts = [self.title_text, self.sub_text, self.loss_line, self.loss_dot, *self.cursors,
                *(line for line, _ in self.grad_lines)]
        arts += [a for a in (self.dist_line, self.dist_dot, self.quiver, self.traj_line,
                             self.quiver_rec, self.quiver_now, self.traj_dot, self.opt_marker, self.fit_line,
                             self.pred_scatter, self.fit_text) if a is not None]
        arts += [line for line, _ in (self.value_lines or [])]
        return arts

    def draw(self, i: int) -> None:
        with _quiet():
            self._draw(i)

    def _draw(self, i: int) -> None:
        s = self.series
        r = self.frames[i]                  # row among the steps read
        p = int(s.read[r])                  # position among all steps
        step = int(s.steps[p])
        xs = self._steps_read()
        self.loss_line.set_data(s.steps[:p + 1], s.loss[:p + 1])
        self.loss_dot.set_data([step], [s.loss[p]])
        if self.dist_line is not None:
            assert self.dist_dot is not None and self.dist is not None  # made with dist_line
            self.dist_line.set_data(xs[:r + 1], self.dist[:r + 1])
            self.dist_dot.set_data([step], [self.dist[r]])
        for line, g in self.grad_lines:
            line.set_data(xs[:r + 1], g[:r + 1])
        for c in self.cursors:
            c.set_xdata([step, step])
        if self.traj_line is not None and self.xy is not None:
            assert self.traj_dot is not None  # made with traj_line
            xy = self.xy
            self.traj_line.set_data(xy[:r + 1, 0], xy[:r + 1, 1])
            self.traj_dot.set_data([xy[r, 0]], [xy[r, 1]])
            if self.quiver is not None:
                assert self.quiver_now is not None and self.quiver_rec is not None  # made together
                # the arrows of the points reached so far; the others have no length yet
                shown = (self.arrow_at <= r)[:, None]
                uv = np.where(shown, 0.06 * self.arrow_true[self.arrow_at], 0.0)
                self.quiver.set_UVC(uv[:, 0], uv[:, 1])
                self.quiver_now.set_offsets(xy[r:r + 1])
                self.quiver_now.set_UVC(*(0.13 * self.arrow_true[r]))
                self.quiver_rec.set_offsets(xy[r:r + 1])
                rec = 0.13 * self.arrow_rec[r] if self.rec_differs[r] else np.zeros(2)
                self.quiver_rec.set_UVC(*rec)
        if self.fit_line is not None:
            assert self.fit_text is not None  # made with the fit line
            self.fit_line.set_data(self.line_x[:, 0], self._preds[i])
            th = self._theta_row(i)
            self.fit_text.set_text(self._line_words(th))
        elif self.pred_scatter is not None:
            assert self.fit_text is not None  # made with the scatter
            self.pred_scatter.set_offsets(np.column_stack([self._true_flat, self._preds[i].reshape(-1)]))
            err = self._preds[i] - self.surface.y
            rms = float(np.sqrt((err ** 2).mean()))
            self.fit_text.set_text(f"RMS error {fmt_num(rms)}" if math.isfinite(rms) else
                                   "the predictions are not finite numbers")
        if self.value_lines:
            for line, v in self.value_lines:
                line.set_data(xs[:r + 1], v[:r + 1])
        self.title_text.set_text(f"step {step}")
        words = [f"loss {fmt_num(float(s.loss[p]))}"]
        if self.dist is not None:
            words.append(f"‖θ − θ*‖ {fmt_num(float(self.dist[r]))}")
        words.append(self._param_words(r))
        self.sub_text.set_text("   ·   ".join(w for w in words if w))

    def _line_words(self, th: np.ndarray) -> str:
        S = self.surface
        w = S.predict(th, np.array([[1.0]]))[0, 0] - S.predict(th, np.array([[0.0]]))[0, 0]
        b = S.predict(th, np.array([[0.0]]))[0, 0]
        sign = "+" if b >= 0 else "−"
        return f"ŷ = {fmt_num(float(w))}·x {sign} {fmt_num(abs(float(b)))}"

    def _param_words(self, r: int) -> str:
        s = self.series
        parts = []
        for p in s.params:
            v = s.values.get(p.tid)
            if v is None:
                continue
            row = v[r]
            name = s.names.get(p.tid, f"t{p.tid}")
            if row.size == 1:
                parts.append(f"{name} = {fmt_num(float(row[0]))}")
            elif row.size <= 3:
                parts.append(f"{name} = [" + ", ".join(fmt_num(float(x)) for x in row) + "]")
            else:
                parts.append(f"‖{name}‖ = {fmt_num(float(np.linalg.norm(row)))}")
        return ", ".join(parts)


def _quiet():
    """A diverging run has inf and nan in its series: they are drawn as gaps, quietly."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _unit(uv: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Vectors scaled to unit length in axes-fraction units (so that, drawn as
    ``unit * span * k``, every arrow spans the fraction k of the box)."""
    rel = uv / span
    norm = np.hypot(rel[:, 0], rel[:, 1])[:, None]
    return np.divide(rel, norm, out=np.zeros_like(rel), where=norm > 0)


def _left_out_words(series) -> str:
    """Which parameters have no values and why, with the option that would keep them."""
    if not series.left_out:
        return "(recorded with --values stats?)"
    parts = [f"{series.names.get(t, f't{t}')}: {why}" for t, why in sorted(series.left_out.items())]
    sizes = [math.prod(p.shape) for p in series.params
             if "statistics" in series.left_out.get(p.tid, "")]
    parts.append(f"record with --values full --max-numel {max(sizes)} to keep them" if sizes else "")
    return "; ".join(p for p in parts if p)


def _reason(S) -> str:
    return getattr(S, "reason", "") or "not a recognised linear model"


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
