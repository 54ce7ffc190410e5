"""The panels of the training animation, one small class each (see :mod:`.training`).

Every panel is made with the :class:`~.training.Run`, the :class:`~.training.Look` and its
axes, and draws everything static then; ``artists()`` are the artists it moves, and
``draw(frame)`` moves them to a :class:`~.training.Frame`.
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.sampling import subsample
from ..formatting import slide_number as fmt_num
from . import palette
from .text import fit_texts
from .training import wrap

# every colour from the one palette (render/palette.py)
_BLUE, _GREY, _RED = palette.SERIES[0], palette.DIM, palette.STATUS["bad"][0]
_PARAM_COLORS = list(palette.SERIES)
#: colours of the event strip: accumulations by kind, updates, zeroings, other .grad writes
_EVENT_COLORS = {kind: palette.EVENT[kind][0] for kind in ("zeros", "added", "update", "zero", "grad_write")}
_EVENT_COLORS["fresh"] = palette.OKABE_ITO["sky"]   # told apart from "onto zeros" in the strip


def _log_scale(values: np.ndarray) -> bool:
    """Positive values spanning more than a factor of 30 are drawn on a log scale."""
    v = values[np.isfinite(values)]
    return bool(len(v) and (v > 0).all() and v.max() / max(v.min(), 1e-300) > 30)


class Header:
    """The title (the script; the step, in colour), the frame's numbers under it, the note."""

    def __init__(self, run, look, ax, title: str, note: str | None):
        self.run = run
        fs = look.fs
        ax.set_axis_off()
        # the frame's own words are short texts beside static ones: text is what costs
        # most to draw, and only the animated artists are drawn again for every frame
        head = ax.text(0.01, 0.62, f"{title}:  ", fontsize=fs + 3, weight="bold", va="center", ha="left")
        fit_texts([head])  # the script's name: user text
        look.fig.canvas.draw()  # to measure the static title
        bb = head.get_window_extent().transformed(ax.transAxes.inverted())
        self.title_text = ax.text(bb.x1, 0.62, "", fontsize=fs + 3, weight="bold", va="center",
                                  ha="left", color=_BLUE)
        self.sub_text = ax.text(0.01, 0.15, "", fontsize=fs, va="center", ha="left", color=palette.TEXT)
        if note:
            ax.text(0.99, 0.62, f"({note})", fontsize=fs - 1, va="center", ha="right", color=palette.MUTED)

    def artists(self) -> list:
        return [self.title_text, self.sub_text]

    def draw(self, f) -> None:
        s, dist = self.run.series, self.run.path.dist
        self.title_text.set_text(f"step {f.step}")
        words = [f"loss {fmt_num(float(s.loss[f.p]))}"]
        if dist is not None:
            words.append(f"‖θ − θ*‖ {fmt_num(float(dist[f.r]))}")
        words.append(self._param_words(f.r))
        self.sub_text.set_text("   ·   ".join(w for w in words if w))

    def _param_words(self, r: int) -> str:
        s = self.run.series
        parts = []
        for p in s.tracked:
            row = s.values[p.tid][r]
            name = s.names.get(p.tid, f"t{p.tid}")
            if row.size == 1:
                parts.append(f"{name} = {fmt_num(float(row[0]))}")
            elif row.size <= 3:
                parts.append(f"{name} = [" + ", ".join(fmt_num(float(x)) for x in row) + "]")
            else:
                parts.append(f"‖{name}‖ = {fmt_num(float(np.linalg.norm(row)))}")
        return ", ".join(parts)


class _Growing:
    """A curve drawn faint for the whole run (in grey, or in its own colour when several
    share the axes), and over it in colour up to the frame, with a dot at its end."""

    def __init__(self, ax, xs, ys, color: str, label: str | None = None, dot: bool = False,
                 own_colour: bool = False, lw: float = 1.3):
        if own_colour:
            ax.plot(xs, ys, color=color, lw=0.7, alpha=0.25)
        else:
            ax.plot(xs, ys, color=_GREY, lw=0.8, alpha=0.6)
        self.xs, self.ys = xs, ys
        self.line, = ax.plot([], [], color=color, lw=lw, label=label)
        self.dot = ax.plot([], [], "o", color=color, ms=4)[0] if dot else None

    def artists(self) -> list:
        return [self.line] + ([self.dot] if self.dot is not None else [])

    def draw(self, upto: int, x_now=None) -> None:
        self.line.set_data(self.xs[:upto + 1], self.ys[:upto + 1])
        if self.dot is not None:
            self.dot.set_data([self.xs[upto] if x_now is None else x_now], [self.ys[upto]])


class Curves:
    """Three curves over the steps: the loss, the distance to the optimum (or why there is
    none) and each parameter's gradient norm, with a cursor at the frame's step."""

    def __init__(self, run, look, ax_loss, ax_dist, ax_grad):
        self.run = run
        s, fs = run.series, look.fs
        steps, xs = s.steps, run.steps_read()
        x_lo, x_hi = float(steps[0]), float(max(steps[-1], steps[0] + 1))
        look.style(ax_loss, "loss at each step")
        log = _log_scale(s.loss)
        if log:
            ax_loss.set_yscale("log")
        self.loss = _Growing(ax_loss, steps, s.loss, _BLUE, dot=True)
        ax_loss.set_xlim(x_lo, x_hi)
        look.ylim(ax_loss, s.loss, log)
        ax_loss.tick_params(labelbottom=False)
        self.dist = None
        d = run.path.dist
        if d is not None:
            look.style(ax_dist, "distance to the optimum ‖θ − θ*‖")
            dlog = bool((d > 0).all() and d.max() / max(d.min(), 1e-300) > 30)
            if dlog:
                ax_dist.set_yscale("log")
            self.dist = _Growing(ax_dist, xs, d, palette.SERIES[3], dot=True)
            look.ylim(ax_dist, d, dlog)
        else:
            look.style(ax_dist, "distance to the optimum")
            ax_dist.text(0.5, 0.5, "no closed-form optimum\n" + wrap(reason(run.surface), 48),
                         ha="center", va="center", fontsize=fs - 0.5, color=palette.MUTED,
                         transform=ax_dist.transAxes)
            ax_dist.set_yticks([])
        ax_dist.set_xlim(x_lo, x_hi)
        ax_dist.tick_params(labelbottom=False)
        look.style(ax_grad, "gradient norm ‖.grad‖ per parameter")
        self.grads = []
        allg = []
        for j, p in enumerate(s.params):
            g = s.grad_norm.get(p.tid)
            if g is None:
                continue
            g = g[s.read]
            allg.append(g)
            self.grads.append(_Growing(ax_grad, xs, g, _PARAM_COLORS[j % len(_PARAM_COLORS)],
                                       label=s.names.get(p.tid, f"t{p.tid}"), own_colour=True, lw=1.2))
        if allg:
            a = np.concatenate(allg)
            a = a[np.isfinite(a)]
            glog = _log_scale(a)
            if glog:
                ax_grad.set_yscale("log")
            look.ylim(ax_grad, a, glog)
        ax_grad.set_xlim(x_lo, x_hi)
        if allg:
            ax_grad.legend(fontsize=fs - 1.5 if len(allg) <= 4 else fs - 2.5,
                           loc="best", framealpha=0.8,  # (judged on the faint whole-run curves)
                           ncol=min(3, len(allg)), handlelength=1.2, borderpad=0.2,
                           columnspacing=0.8, labelspacing=0.2)
        ax_grad.tick_params(labelbottom=False)
        self.cursors = [a.axvline(x_lo, color=palette.SUBTLE, lw=0.6, alpha=0.5)
                        for a in (ax_loss, ax_dist, ax_grad)]

    @property
    def loss_line(self):
        return self.loss.line

    @property
    def grad_lines(self) -> list:
        """(line, the norms it follows) per parameter."""
        return [(g.line, g.ys) for g in self.grads]

    def artists(self) -> list:
        return [*self.loss.artists(), *self.cursors, *(g.line for g in self.grads),
                *(self.dist.artists() if self.dist is not None else [])]

    def draw(self, f) -> None:
        self.loss.draw(f.p, x_now=f.step)
        if self.dist is not None:
            self.dist.draw(f.r, x_now=f.step)
        for g in self.grads:
            g.draw(f.r)
        for c in self.cursors:
            c.set_xdata([f.step, f.step])


class Strip:
    """Every step's events as three rows of colour: accumulations by kind, updates, zeroings."""

    def __init__(self, run, look, ax):
        s = run.series
        ev = s.events
        img = np.ones((3, len(s), 3))

        def rgb(c):
            return [int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]

        for kind in ("fresh", "zeros", "added"):       # the bug colour wins
            img[0, ev[kind] > 0] = rgb(_EVENT_COLORS[kind])
        img[1, ev["update"] > 0] = rgb(_EVENT_COLORS["update"])
        img[2, ev["zero"] > 0] = rgb(_EVENT_COLORS["zero"])
        img[2, (ev["grad_write"] > 0) & (ev["zero"] == 0)] = rgb(_EVENT_COLORS["grad_write"])
        steps = s.steps
        ax.imshow(img, aspect="auto", interpolation="nearest",
                  extent=(float(steps[0]) - 0.5, float(steps[-1]) + 0.5, 2.5, -0.5))
        ax.set_yticks([0, 1, 2], ["accumulate", "update", "zero .grad"], fontsize=look.fs - 1.5)
        for label, kind in zip(ax.get_yticklabels()[1:], ("update", "zero")):
            label.set_color(_EVENT_COLORS[kind])
        ax.tick_params(labelsize=look.fs - 1, length=2, pad=1.5)
        ax.set_xlim(float(steps[0]), float(max(steps[-1], steps[0] + 1)))
        ax.set_xlabel("step", fontsize=look.fs - 0.5, labelpad=1)
        pieces = [("accumulate:", palette.SUBTLE), ("■ fresh", _EVENT_COLORS["fresh"]),
                  ("■ onto zeros", _EVENT_COLORS["zeros"])]
        if int(ev["added"].sum()):
            pieces.append(("■ ADDED to an old .grad!", _EVENT_COLORS["added"]))
        x = 0.0
        per_char = (look.fs - 0.5) * 0.6 / look.width_pt(ax)
        for text, color in pieces:
            ax.text(x, 1.06, text, transform=ax.transAxes, fontsize=look.fs - 0.5, color=color,
                    va="bottom", ha="left", weight="bold" if color == _EVENT_COLORS["added"] else "normal")
            x += (len(text) + 1.5) * per_char
        self.cursor = ax.axvline(float(steps[0]), color=palette.OKABE_ITO["black"], lw=1.2)

    def artists(self) -> list:
        return [self.cursor]

    def draw(self, f) -> None:
        self.cursor.set_xdata([f.step, f.step])


class Trajectory:
    """The parameters' path on the plane drawn: on the loss surface's contours with the
    optimum when there is one, with the −.grad arrows; or why there is no path."""

    def __init__(self, run, look, ax):
        self.run, self.look, self.ax = run, look, ax
        ax.tick_params(labelsize=look.fs - 1, length=2, pad=1.5)
        self.line = self.dot = self.opt_marker = None
        self.arrows: Arrows | None = None
        xy = run.path.xy
        if xy is None or not np.isfinite(xy).all(axis=1).any():
            ax.set_title("parameters", fontsize=look.fs + 0.5, loc="left")
            ax.text(0.5, 0.5, "no trajectory: parameter values were not kept in full\n"
                    + wrap(left_out_words(run.series), 52), ha="center", va="center",
                    fontsize=look.fs - 0.5, color=palette.MUTED, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            self.xy = None
            return
        self.xy = xy
        lo, hi, inside, stretch = self._frame_box(xy)
        if run.surface:
            self._surface(lo, hi, stretch)
        else:
            self._no_surface()
        if not inside.all():
            out = int(np.argmin(inside[int(np.argmax(inside)):])) + int(np.argmax(inside))
            step = int(run.series.steps[run.series.read[out]])
            ax.text(0.01, 0.06 if stretch is not None else 0.01,
                    f"the path leaves the picture at step {step}: the values blow up",
                    transform=ax.transAxes, fontsize=look.fs - 1, color=_RED, ha="left", va="bottom",
                    weight="bold")
        ax.plot(xy[0, 0], xy[0, 1], "o", mfc=palette.BACKGROUND, mec=_BLUE, ms=6, zorder=5, label="start")
        self.line, = ax.plot([], [], color=_BLUE, lw=1.2, zorder=4, marker="o", ms=1.6)
        self.dot, = ax.plot([], [], "o", color=_BLUE, ms=6, zorder=7)
        if run.path.uv is not None:
            self.arrows = Arrows(ax, xy, run.path, np.array([hi[0] - lo[0], hi[1] - lo[1]]),
                                 bool(run.surface))
        ax.legend(fontsize=look.fs - 1.5, loc="upper right", framealpha=0.85, handlelength=1.4,
                  borderpad=0.3, labelspacing=0.3)

    def _frame_box(self, xy):
        """(lo, hi) of the picture, the rows inside it, and how much one axis is stretched
        (None at equal scales)."""
        from ..analysis.training import sane_rows

        S, opt_xy = self.run.surface, self.run.path.opt_xy
        # the picture frames the steps before a diverging run blows up
        ref = opt_xy if S else xy[np.isfinite(xy).all(axis=1)][-1]
        inside = sane_rows(xy - ref, factor=30.0)
        pts = [xy[inside]] + ([opt_xy.reshape(1, 2)] if S else [])
        allp = np.vstack(pts)
        lo, hi = allp.min(0), allp.max(0)
        span = np.maximum(hi - lo, 1e-12)
        # equal scales on both axes when they are the same kind of quantity, so that the
        # gradient arrows cross the contours at right angles as they should
        box = self.ax.get_position()
        w_in, h_in = self.look.fig.get_size_inches()
        aspect = (box.height * h_in) / (box.width * w_in)
        lo, hi = lo - 0.12 * span, hi + 0.12 * span
        stretch = None
        if S:
            cx, cy = (lo + hi) / 2
            sx, sy = hi - lo
            if sy / sx > 12 * aspect or sx / sy > 12 / aspect:
                stretch = (sx * aspect) / sy       # too thin to read at equal scales: say so
            else:
                if sy < sx * aspect:
                    sy = sx * aspect
                else:
                    sx = sy / aspect
                lo, hi = np.array([cx - sx / 2, cy - sy / 2]), np.array([cx + sx / 2, cy + sy / 2])
        self.ax.set_xlim(lo[0], hi[0])
        self.ax.set_ylim(lo[1], hi[1])
        return lo, hi, inside, stretch

    def _surface(self, lo, hi, stretch) -> None:
        ax, S, fs = self.ax, self.run.surface, self.look.fs
        A, B = np.meshgrid(np.linspace(lo[0], hi[0], 160), np.linspace(lo[1], hi[1], 160))
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
                ax.contour(A, B, L, levels=levels, colors=palette.SUBTLE, linewidths=0.5, alpha=0.6)
        self.opt_marker, = ax.plot(*self.run.path.opt_xy, marker="*", ms=13, color=palette.TARGET,
                                   mec=palette.INK, mew=0.8, zorder=6, ls="none",
                                   label="optimum θ* (closed form)")
        if S.exact:
            ax.set_xlabel(S.labels[0], fontsize=fs)
            ax.set_ylabel(S.labels[1], fontsize=fs)
            title = f"loss surface over ({S.labels[0]}, {S.labels[1]})"
        else:
            ax.set_xlabel("direction 1 (most movement)", fontsize=fs)
            ax.set_ylabel("direction 2", fontsize=fs)
            title = "loss on a plane through θ*"
        if stretch is not None:
            which, k = (S.labels[1], stretch) if stretch > 1 else (S.labels[0], 1 / stretch)
            ax.text(0.01, 0.01, f"not to scale: {which} is stretched ×{k:.2g}", fontsize=fs - 1.5,
                    color=palette.SUBTLE, transform=ax.transAxes, va="bottom", ha="left")
        sub = ("exact: the model has just these two parameters" if S.exact else
               f"the plane through the optimum θ* spanned by the run's two directions of "
               f"largest movement ({len(S.optimum)} parameters; the path is projected onto it)")
        self.look.panel_title(ax, title, sub)

    def _no_surface(self) -> None:
        ax, s = self.ax, self.run.series
        labels = self.run.path.labels
        ax.set_xlabel(labels[0], fontsize=self.look.fs)
        ax.set_ylabel(labels[1], fontsize=self.look.fs)
        sub = (f"no loss surface ({reason(self.run.surface)}); the path on the plane of its two "
               "directions of largest movement")
        if s.left_out:
            kept = ", ".join(s.names.get(p.tid, f"t{p.tid}") for p in s.tracked)
            sub += f"; of {kept} only ({left_out_words(s)})"
        self.look.panel_title(ax, "parameter trajectory", sub)

    def artists(self) -> list:
        a = self.arrows
        return [x for x in (a and a.quiver, self.line, a and a.quiver_rec, a and a.quiver_now,
                            self.dot, self.opt_marker) if x is not None]

    def draw(self, f) -> None:
        if self.line is None or self.xy is None:
            return
        assert self.dot is not None  # made with the line
        xy, r = self.xy, f.r
        self.line.set_data(xy[:r + 1, 0], xy[:r + 1, 1])
        self.dot.set_data([xy[r, 0]], [xy[r, 1]])
        if self.arrows is not None:
            self.arrows.draw(r)


class Arrows:
    """Arrows on the path, giving directions at a fixed length: gradients shrink by orders
    of magnitude over a run (their sizes are in the gradient-norm panel). Red: steepest
    descent on the drawn surface, −∇loss, at right angles to its contours (a sample of the
    points reached, and bold at the current one). Orange, at the current point when it
    points elsewhere: −.grad as recorded, the direction the update used (a minibatch's
    gradient; or an old one added in, when .grad is not zeroed)."""

    def __init__(self, ax, xy, path, span, has_surface: bool):
        assert path.uv_true is not None and path.uv is not None  # set together
        self.xy = xy
        self.arrow_true = _unit(path.uv_true, span) * span
        self.arrow_rec = _unit(path.uv, span) * span
        cos = (self.arrow_true / span * self.arrow_rec / span).sum(1)
        self.rec_differs = (cos < math.cos(math.radians(10))) & has_surface
        self.arrow_at = at = np.asarray(subsample(len(xy), 40), dtype=int)
        true_label = "−∇loss: steepest descent" if has_surface else "direction of −.grad"
        self.quiver = ax.quiver(xy[at, 0], xy[at, 1], 0 * at, 0 * at, angles="xy",
                                scale_units="xy", scale=1, color=palette.DESCENT_ARROW, alpha=0.5,
                                width=0.004, minlength=0, zorder=3)
        self.quiver_rec = ax.quiver(xy[:1, 0], xy[:1, 1], [0], [0], angles="xy", scale_units="xy",
                                    scale=1, color=palette.UPDATE_ARROW, width=0.008, minlength=0, zorder=8,
                                    label="−.grad: what the update used" if self.rec_differs.any() else None)
        self.quiver_now = ax.quiver(xy[:1, 0], xy[:1, 1], [0], [0], angles="xy", scale_units="xy",
                                    scale=1, color=palette.DESCENT_ARROW, width=0.008, minlength=0, zorder=8,
                                    label=true_label)

    def draw(self, r: int) -> None:
        xy = self.xy
        # the arrows of the points reached so far; the others have no length yet
        shown = (self.arrow_at <= r)[:, None]
        uv = np.where(shown, 0.06 * self.arrow_true[self.arrow_at], 0.0)
        self.quiver.set_UVC(uv[:, 0], uv[:, 1])
        self.quiver_now.set_offsets(xy[r:r + 1])
        self.quiver_now.set_UVC(*(0.13 * self.arrow_true[r]))
        self.quiver_rec.set_offsets(xy[r:r + 1])
        self.quiver_rec.set_UVC(*(0.13 * self.arrow_rec[r] if self.rec_differs[r] else np.zeros(2)))


def data_panel(run, look, ax):
    """The data panel that fits the model: the fitted line for one input feature, predicted
    against true for more, the parameters' values without a linear model."""
    S = run.surface
    look.style(ax, "")
    if S and S.X is not None and S.X.shape[1] == 1 and S.y.shape[1] == 1:
        return FittedLine(run, look, ax)
    if S and S.X is not None:
        return PredictedVsTrue(run, look, ax)
    return ParameterValues(run, look, ax)


def _fit_text(ax, look):
    return ax.text(0.98, 0.03, "", transform=ax.transAxes, ha="right", va="bottom",
                   fontsize=look.fs - 0.5, color=_BLUE, zorder=9,
                   bbox=dict(boxstyle="round,pad=0.2", fc=palette.BACKGROUND, ec="none", alpha=0.85))


class FittedLine:
    """One input feature: the data, the closed-form best line, and the line at this step."""

    def __init__(self, run, look, ax):
        self.run = run
        S, fs = run.surface, look.fs
        X, y = S.X[:, 0], S.y[:, 0]
        ax.scatter(X, y, s=10, color=palette.MUTED, alpha=0.8, zorder=2, label="data")
        lo, hi = float(X.min()), float(X.max())
        pad = (hi - lo) * 0.05 or 1.0
        self.line_x = np.array([[lo - pad], [hi + pad]])
        best = S.predict(S.optimum, self.line_x)[:, 0]
        ax.plot(self.line_x[:, 0], best, ls="--", color=palette.TARGET, lw=1.2, zorder=3,
                label="best fit (closed form)")
        self.fit_line, = ax.plot([], [], color=_BLUE, lw=2.0, zorder=4, label="fit at this step")
        self.preds = preds = np.array([S.predict(run.theta_row(i), self.line_x)[:, 0]
                                       for i in range(len(run.frames))])
        fin = preds[np.isfinite(preds)]
        span = float(y.max() - y.min()) or 1.0
        ylo = max(min(float(y.min()), float(fin.min()) if len(fin) else 0.0), float(y.min()) - 3 * span)
        yhi = min(max(float(y.max()), float(fin.max()) if len(fin) else 0.0), float(y.max()) + 3 * span)
        ypad = (yhi - ylo) * 0.06 or 1.0
        ax.set_ylim(ylo - ypad, yhi + ypad)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_title("the data and the fitted line", fontsize=fs + 0.5, loc="left", pad=3)
        ax.set_xlabel("x (the one input feature)", fontsize=fs)
        ax.set_ylabel("y", fontsize=fs)
        ax.legend(fontsize=fs - 1.5, loc="upper left", frameon=False)
        self.fit_text = _fit_text(ax, look)

    def artists(self) -> list:
        return [self.fit_line, self.fit_text]

    def draw(self, f) -> None:
        self.fit_line.set_data(self.line_x[:, 0], self.preds[f.i])
        S, th = self.run.surface, self.run.theta_row(f.i)
        b = S.predict(th, np.array([[0.0]]))[0, 0]
        w = S.predict(th, np.array([[1.0]]))[0, 0] - b
        sign = "+" if b >= 0 else "−"
        self.fit_text.set_text(f"ŷ = {fmt_num(float(w))}·x {sign} {fmt_num(abs(float(b)))}")


class PredictedVsTrue:
    """More input features or outputs: each prediction at this step against its target."""

    def __init__(self, run, look, ax):
        self.run = run
        S, fs = run.surface, look.fs
        y = S.y
        self.preds = preds = np.array([S.predict(run.theta_row(i), S.X) for i in range(len(run.frames))])
        fin = preds[np.isfinite(preds)]
        lo = min(float(y.min()), float(np.percentile(fin, 1)) if len(fin) else float(y.min()))
        hi = max(float(y.max()), float(np.percentile(fin, 99)) if len(fin) else float(y.max()))
        span = float(y.max() - y.min()) or 1.0
        lo, hi = max(lo, float(y.min()) - 3 * span), min(hi, float(y.max()) + 3 * span)
        pad = (hi - lo) * 0.05 or 1.0
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color=palette.TARGET, lw=1.0,
                label="perfect: predicted = true")
        k = y.shape[1]
        colors = np.array([_PARAM_COLORS[j % len(_PARAM_COLORS)] for j in range(k)])
        self.scatter = ax.scatter(np.repeat(y.reshape(-1)[:1], 1), preds[0].reshape(-1)[:1],
                                  s=9, alpha=0.7, zorder=3)
        self.true_flat = y.reshape(-1)
        self.scatter.set_offsets(np.column_stack([self.true_flat, preds[0].reshape(-1)]))
        self.scatter.set_facecolor(np.tile(colors, len(y)))
        self.scatter.set_edgecolor("none")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        if k > 1:
            for j in range(k):
                ax.scatter([], [], s=9, color=colors[j], label=f"output {j + 1}")
        ax.set_title("predicted vs true", fontsize=fs + 0.5, loc="left", pad=3)
        ax.set_xlabel("true y" + (f" ({k} outputs, by colour)" if k > 1 else ""), fontsize=fs)
        ax.set_ylabel("predicted ŷ at this step", fontsize=fs)
        ax.legend(fontsize=fs - 1.5, loc="upper left", frameon=False)
        self.fit_text = _fit_text(ax, look)

    def artists(self) -> list:
        return [self.scatter, self.fit_text]

    def draw(self, f) -> None:
        self.scatter.set_offsets(np.column_stack([self.true_flat, self.preds[f.i].reshape(-1)]))
        err = self.preds[f.i] - self.run.surface.y
        rms = float(np.sqrt((err ** 2).mean()))
        self.fit_text.set_text(f"RMS error {fmt_num(rms)}" if math.isfinite(rms) else
                               "the predictions are not finite numbers")


class ParameterValues:
    """No linear model: the parameters' values over time (their norms when there are many)."""

    def __init__(self, run, look, ax):
        self.curves: list[_Growing] = []
        s, fs, theta = run.series, look.fs, run.theta
        if theta is None or not np.isfinite(theta).all():
            ax.set_title("parameter values", fontsize=fs + 0.5, loc="left", pad=3)
            ax.text(0.5, 0.5, "not kept in full\n" + wrap(left_out_words(s), 36), ha="center",
                    va="center", fontsize=fs - 1, color=palette.MUTED, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            return
        xs = run.steps_read()
        if theta.shape[1] <= 8:
            ax.set_title("parameter values", fontsize=fs + 0.5, loc="left", pad=3)
            curves = list(zip(s.flat_names(), theta.T))
        else:
            ax.set_title("parameter sizes ‖p‖", fontsize=fs + 0.5, loc="left", pad=3)
            curves = [(s.names.get(p.tid, f"t{p.tid}"), np.linalg.norm(s.values[p.tid], axis=1))
                      for p in s.tracked]
        for j, (name, v) in enumerate(curves):
            self.curves.append(_Growing(ax, xs, v, _PARAM_COLORS[j % len(_PARAM_COLORS)], label=name,
                                        own_colour=True, lw=1.2))
        ax.set_xlim(float(xs[0]), float(max(xs[-1], xs[0] + 1)))
        look.ylim(ax, np.concatenate([v for _, v in curves]), False)
        ax.set_xlabel("step", fontsize=fs)
        ax.legend(fontsize=fs - 1.5, loc="best", framealpha=0.8, ncol=1 if len(curves) <= 4 else 2)

    def artists(self) -> list:
        return [c.line for c in self.curves]

    def draw(self, f) -> None:
        for c in self.curves:
            c.draw(f.r)


def _unit(uv: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Vectors scaled to unit length in axes-fraction units (so that, drawn as
    ``unit * span * k``, every arrow spans the fraction k of the box)."""
    rel = uv / span
    norm = np.hypot(rel[:, 0], rel[:, 1])[:, None]
    return np.divide(rel, norm, out=np.zeros_like(rel), where=norm > 0)


def left_out_words(series) -> str:
    """Which parameters have no values and why, with the option that would keep them."""
    if not series.left_out:
        return "(recorded with --values stats?)"
    parts = [f"{series.names.get(t, f't{t}')}: {why}" for t, why in sorted(series.left_out.items())]
    sizes = [math.prod(p.shape) for p in series.params
             if "statistics" in series.left_out.get(p.tid, "")]
    parts.append(f"record with --values full --max-numel {max(sizes)} to keep them" if sizes else "")
    return "; ".join(p for p in parts if p)


def reason(S) -> str:
    return getattr(S, "reason", "") or "not a recognised linear model"
