"""The training animation: the run over time, one frame per step (or an even subsample).

Panels, chosen by what the model is (each one a small class in
:mod:`gradtrace.render.training_panels`):

- the parameter trajectory on the contour of the loss surface, with the negative recorded
  gradient as an arrow at each point and the closed-form optimum θ* marked (exact for two
  parameters; otherwise the plane through θ* spanned by the two directions of largest
  movement, labelled as such; without a recognised linear model, the trajectory alone);
- the loss so far; the distance to the optimum ‖θ − θ*‖; each parameter's gradient norm;
  a strip of the accumulate / update / zero events of every step;
- the data: for one input feature the scatter and the fitted line moving, otherwise
  predicted against true values (without a linear model: the parameters' values).

The shared state is three small objects: :class:`Run` (the series, the surface, the frames
chosen and the path in the plane, computed once), :class:`Look` (the figure and its font
size) and :class:`Frame` (which step a frame shows). Each panel draws everything static
when it is made, names the artists it moves (``artists()``) and moves them (``draw(frame)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.sampling import subsample
from ..errors import NothingToDrawError
from ..formatting import slide_number as fmt_num
from . import palette

__all__ = ["TrainingRenderer", "Run", "Look", "Frame", "Path"]


def _script_name(trace) -> str:
    from .backprop import _script_name as name

    return name(trace)


@dataclass
class Path:
    """The run's path in the plane drawn, computed once: ``xy`` (rows, 2) the points,
    ``uv`` (rows, 2) −.grad as recorded, ``uv_true`` −∇loss of the drawn surface at the same
    points (``uv`` without a surface), ``dist`` (rows,) ‖θ − θ*‖ and ``opt_xy`` θ* (with a
    surface only), ``labels`` the plane's axes without a surface."""

    xy: np.ndarray | None = None
    uv: np.ndarray | None = None
    uv_true: np.ndarray | None = None
    dist: np.ndarray | None = None
    opt_xy: np.ndarray | None = None
    labels: tuple[str, str] = ("direction 1", "direction 2")


def path_of(series, surface, theta: np.ndarray | None) -> Path:
    """Where the run went, in the plane of ``surface`` (or, without one, in the plane of
    its two directions of largest movement; its own axes for two numbers, a line for one)."""
    s, S = series, surface
    out = Path()
    if S:
        theta = s.theta(S.tids)
        out.xy = S.coords(theta)
        g = s.grad_theta(S.tids)
        out.uv = -(g @ S.axes.T)
        # the surface is quadratic: ∇L(θ) = H (θ − θ*), exactly
        out.uv_true = -((theta - S.optimum) @ S.hessian.T @ S.axes.T)
        out.dist = np.linalg.norm(theta - S.optimum, axis=1)
        out.opt_xy = S.coords(S.optimum)
    elif theta is not None and np.isfinite(theta).all() and len(theta) > 1:
        end = theta[-1]
        d = theta - end
        if theta.shape[1] == 2:
            axes = np.eye(2)
            out.labels = tuple(s.flat_names()[:2])  # type: ignore[assignment]  # two names
        elif theta.shape[1] == 1:      # one number: its path along a line
            axes = np.array([[1.0], [0.0]])
            out.labels = (s.flat_names()[0], "")
        else:
            _, _, vt = np.linalg.svd(d, full_matrices=False)
            axes = vt[:2] if len(vt) >= 2 else np.vstack([vt[0], np.zeros_like(vt[0])])
        out.xy = (theta - (0 if theta.shape[1] <= 2 else end)) @ axes.T
        out.uv = -(s.grad_theta() @ axes.T)
    if out.uv is not None:
        out.uv = np.where(np.isfinite(out.uv), out.uv, 0.0)
    if out.uv_true is None:
        out.uv_true = out.uv
    else:
        out.uv_true = np.where(np.isfinite(out.uv_true), out.uv_true, 0.0)
    return out


def frames_of(series, budget: int) -> list[int]:
    """The rows read (positions into ``series.read``) that the frames show: at most
    ``budget``, evenly spaced over the run's steps (:func:`subsample`), each the nearest
    step read, first and last kept; with every step read, an even subsample of them."""
    read = np.asarray(series.read)
    if not series.sampled or len(read) == 0:
        return subsample(len(read), budget)
    want = np.asarray(subsample(len(series), budget), dtype=np.int64)
    hi = np.searchsorted(read, want).clip(0, len(read) - 1)
    lo = (hi - 1).clip(0)
    nearest = np.where(np.abs(read[lo] - want) <= np.abs(read[hi] - want), lo, hi)
    return sorted(set(nearest.tolist()))


@dataclass
class Run:
    """What every panel reads: the series and surface of the run, the rows the frames show
    (``frames``: positions into the rows read), the tracked parameters flattened
    (``theta``) and the :class:`Path`."""

    series: object
    surface: object
    frames: list
    theta: np.ndarray | None
    path: Path

    def steps_read(self) -> np.ndarray:
        s = self.series
        return s.steps[s.read]  # type: ignore[attr-defined]

    def theta_row(self, i: int) -> np.ndarray:
        """The surface's parameters, flattened, at frame ``i``."""
        return self.series.theta(self.surface.tids)[self.frames[i]]  # type: ignore[attr-defined]

    def frame(self, i: int) -> "Frame":
        r = self.frames[i]
        p = int(self.series.read[r])  # type: ignore[attr-defined]
        return Frame(i, r, p, int(self.series.steps[p]))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Frame:
    """Frame ``i`` shows row ``r`` of the steps read, position ``p`` among all steps, run
    step number ``step``."""

    i: int
    r: int
    p: int
    step: int


class Look:
    """The figure, its font size, and the styling every panel shares."""

    def __init__(self, fig):
        self.fig = fig
        w_in, h_in = fig.get_size_inches()
        self.fs = max(6.5, min(9.0, 8.0 * min(w_in / 12.0, h_in / 6.75) ** 0.5))

    def style(self, ax, title: str) -> None:
        ax.set_title(title, fontsize=self.fs + 0.5, loc="left", pad=3)
        ax.tick_params(labelsize=self.fs - 1, length=2, pad=1.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    def panel_title(self, ax, title: str, sub: str) -> None:
        """A panel's title, and a line or two of small print under it."""
        lines = wrap(sub, int(ax.get_position().width * self.fig.get_size_inches()[0] * 72
                              / ((self.fs - 1.5) * 0.55)))
        n = lines.count("\n") + 1
        ax.set_title(title, fontsize=self.fs + 0.5, loc="left", pad=6 + n * (self.fs - 1.5) * 1.3)
        ax.text(0.0, 1.012, lines, transform=ax.transAxes, fontsize=self.fs - 1.5, color=palette.SUBTLE,
                va="bottom", linespacing=1.1)

    def width_pt(self, ax) -> float:
        """The width of ``ax`` in points."""
        return ax.get_position().width * self.fig.get_size_inches()[0] * 72

    def ylim(self, ax, values, log: bool) -> None:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if log:
            v = v[v > 0]
        if not len(v):
            return
        lo, hi = float(v.min()), float(v.max())
        if log:
            ax.set_ylim(lo / 1.5, hi * 1.5)
            self._log_ticks(ax, lo / 1.5, hi * 1.5)
        else:
            pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
            ax.set_ylim(lo - pad, hi + pad)

    #: Labelled ticks per decade on a log axis, densest first, with the smallest gap between
    #: two of them in decades (1 to 2, 2 to 5, 5 to 10: log10(2) = 0.3 ...)
    _LOG_SUBS = (((1.0, 2.0, 5.0), 0.30), ((1.0, 3.0), 0.48), ((1.0,), 1.0))

    def _log_ticks(self, ax, lo: float, hi: float) -> None:
        """Labels on a log axis that fit its height, none on the minor ticks: matplotlib
        labels those on a range under two decades, and in a panel a few lines high they
        stack on top of each other."""
        from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

        height = ax.get_position().height * self.fig.get_size_inches()[1] * 72  # points
        per_decade = height / max(np.log10(hi) - np.log10(lo), 1e-9)
        label = self.fs - 1  # the tick labels' size (style)
        subs = next((subs for subs, gap in self._LOG_SUBS if gap * per_decade >= 2.0 * label),
                    (1.0,))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(NullFormatter())


class TrainingRenderer:
    """Frames of a run: frame ``i`` shows the state after the ``i``-th chosen step."""

    def __init__(self, trace, options):
        from ..analysis.training import loss_surface, training_series

        s = training_series(trace)
        if len(s) == 0:
            raise NothingToDrawError(f"{trace.path}: no step ran backward(), so there is no "
                                     "training to animate")
        surface = loss_surface(trace, s)
        rows = len(s.read)
        frames = frames_of(s, options.frames)         # positions into the rows read
        theta = s.theta() if s.tracked else None
        with quiet():
            self.run = Run(s, surface, frames, theta, path_of(s, surface, theta))
        span = int(s.steps[-1] - s.steps[0]) + 1
        self.title = (f"{_script_name(trace)} · training over {len(s)} steps" if span == len(s) else
                      f"{_script_name(trace)} · training, {len(s)} recorded steps of {span}")
        notes = []
        if s.sampled:
            every = (len(s) - 1) / max(1, len(frames) - 1)
            notes.append(f"curves: all {len(s)} steps; values: the {rows} in full; "
                         f"{len(frames)} frames, about one every {every:.3g} steps")
        elif len(frames) < rows:
            every = (rows - 1) / max(1, len(frames) - 1)
            kind = "steps" if span == len(s) else "recorded steps"
            notes.append(f"{rows} {kind} shown in {len(frames)} frames (about one frame every "
                         f"{every:.3g} {kind}) to keep within the {options.frames}-frame budget")
        self.note = "; ".join(notes) or None
        self.panels: list = []

    # -- what the run is ------------------------------------------------------------------------------
    series = property(lambda self: self.run.series)
    surface = property(lambda self: self.run.surface)
    frames = property(lambda self: self.run.frames)
    xy = property(lambda self: self.run.path.xy)

    def __len__(self) -> int:
        return len(self.run.frames)

    def step_of(self, i: int) -> int:
        """The run step number frame ``i`` shows."""
        return self.run.frame(i).step

    def caption(self, i: int) -> str:
        f = self.run.frame(i)
        return f"step {f.step}: loss {fmt_num(float(self.run.series.loss[f.p]))}"

    # -- the figure -----------------------------------------------------------------------------------
    def setup(self, fig) -> None:
        from . import training_panels as tp

        with quiet():
            fig.set_facecolor(palette.BACKGROUND)
            self.fig = fig
            look = Look(fig)
            run = self.run
            self.header = tp.Header(run, look, fig.add_axes([0.0, 0.91, 1.0, 0.09]), self.title, self.note)
            self.trajectory = tp.Trajectory(run, look, fig.add_axes([0.05, 0.09, 0.325, 0.72]))
            mid_x, mid_w = 0.44, 0.27
            axes = [fig.add_axes([mid_x, y, mid_w, 0.17]) for y in (0.67, 0.445, 0.22)]
            strip_ax = fig.add_axes([mid_x, 0.075, mid_w, 0.085])
            self.curves = tp.Curves(run, look, *axes)
            self.strip = tp.Strip(run, look, strip_ax)
            self.data = tp.data_panel(run, look, fig.add_axes([0.765, 0.09, 0.22, 0.75]))
            # the order in which the moving artists are listed (and drawn, within an axes)
            self.panels = [self.header, self.curves, self.strip, self.trajectory, self.data]

    def animated(self) -> list:
        """The artists a frame moves; the rest is drawn once (see :class:`Animation`)."""
        return [a for panel in self.panels for a in panel.artists()]

    def draw(self, i: int) -> None:
        frame = self.run.frame(i)
        with quiet():
            for panel in self.panels:
                panel.draw(frame)

    # -- the artists tests and notebooks look at --------------------------------------------------------
    ax_traj = property(lambda self: self.trajectory.ax)
    traj_line = property(lambda self: self.trajectory.line)
    loss_line = property(lambda self: self.curves.loss_line)
    grad_lines = property(lambda self: self.curves.grad_lines)
    fit_line = property(lambda self: getattr(self.data, "fit_line", None))
    pred_scatter = property(lambda self: getattr(self.data, "scatter", None))


def quiet():
    """A diverging run has inf and nan in its series: they are drawn as gaps, quietly."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
