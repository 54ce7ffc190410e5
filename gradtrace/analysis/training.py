"""Per-step series of a run (loss, parameters, gradients, events) and its loss surface, for plots.

``training_series(trace)`` reads the recorded steps once and returns plain numpy arrays,
one row per step that ran ``backward()``. ``loss_surface(trace, series)`` recognises a
linear model (:mod:`gradtrace.analysis.linear`) and gives the exact quadratic loss on a
plane of parameter space: the parameters' own axes when there are exactly two numbers to
learn (``w, b`` of a line), otherwise the plane through the closed-form optimum spanned by
the two directions in which the run moved most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..tracefile.model import ACCUMULATIONS
from .sampling import subsample

if TYPE_CHECKING:  # linear needs torch, imported only where a surface is made
    from ..tracefile.model import TensorInfo
    from .linear import LinearFit

__all__ = ["TrainingSeries", "training_series", "Surface", "loss_surface", "ACC_KINDS", "sane_rows"]

#: How an accumulation met ``.grad``: None before, cleared (zeros), or holding an old gradient.
ACC_KINDS = ACCUMULATIONS

#: Steps read in full at most; a longer run is read at evenly spaced steps (losses and event
#: counts still come from every step: they are in the step table).
MAX_READ = 6000
#: Parameters, in numbers, above which values are kept as norms only.
MAX_TRACKED_NUMEL = 100_000


@dataclass
class TrainingSeries:
    """The run, step by step. Arrays have one row per step that ran ``backward()``.

    - ``steps``: run step numbers; ``loss``: the loss each step's backward started from.
    - ``params``: the parameters (leaves that received a gradient), in tid order;
      ``values[tid]`` (n, numel): the value each step's forward pass used; ``final[tid]``
      the value after the last update; ``grads[tid]`` (n, numel): ``.grad`` right after the
      step's backward (what the update used), NaN where only statistics were kept;
      ``grad_norm[tid]`` (n,) its norm (always known).
    - ``events[kind]`` (n,): counts per step of accumulations by kind (fresh, zeros,
      added), ``update``, ``zero`` and ``grad_write``.
    - ``read``: positions (into ``steps``) of the steps whose bodies were read; the value
      arrays hold only those rows when the run was longer than :data:`MAX_READ` steps.
    - ``left_out[tid]``: why a parameter has no ``values`` (kept as statistics only, or too
      many numbers to plot); ``tracked`` lists the parameters that have them.
    """

    steps: np.ndarray
    loss: np.ndarray
    params: list = field(default_factory=list)
    values: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    grads: dict = field(default_factory=dict)
    grad_norm: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    read: np.ndarray | None = None
    names: dict = field(default_factory=dict)
    full_values: bool = True
    left_out: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def sampled(self) -> bool:
        return self.read is not None and len(self.read) < len(self.steps)

    @property
    def tracked(self) -> list:
        """The parameters whose values were kept (``values`` has them), in tid order."""
        return [p for p in self.params if p.tid in self.values]

    def theta(self, tids=None) -> np.ndarray:
        """(rows read, P): the parameters flattened and concatenated in ``tids`` order
        (by default the :attr:`tracked` ones; (rows read, 0) when there are none)."""
        tids = [p.tid for p in self.tracked] if tids is None else list(tids)
        return _concat([self.values[t] for t in tids], len(self.read) if self.read is not None else 0)

    def grad_theta(self, tids=None) -> np.ndarray:
        tids = [p.tid for p in self.tracked] if tids is None else list(tids)
        return _concat([self.grads[t] for t in tids], len(self.read) if self.read is not None else 0)

    def flat_names(self, tids=None) -> list[str]:
        """A name per number of :meth:`theta`: ``w`` for a scalar, ``w[0]``, ``w[1]``... else."""
        info = {p.tid: p for p in self.params}
        tids = [p.tid for p in self.tracked] if tids is None else list(tids)
        names = []
        for t in tids:
            n = math.prod(info[t].shape) if t in info else self.values[t].shape[1]
            label = self.names.get(t, f"t{t}")
            names.extend([label] if n == 1 else [f"{label}[{j}]" for j in range(n)])
        return names


def _concat(arrays: list, rows: int) -> np.ndarray:
    if not arrays:
        return np.zeros((rows, 0))
    return np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1)


def _flat(v) -> np.ndarray | None:
    if v is None or v.array is None:
        return None
    return v.array.astype(np.float64).reshape(-1)


def _every_step(trace):
    """The scalars of a run with steps kept as scalars only (None: every step is in full, or
    the trace has no scalars): then the series has a row for each of them."""
    reader = getattr(trace, "scalars", None)
    sc = reader() if callable(reader) else None
    if sc is None or not sc.has_norms or bool(sc.full.all()):
        return None
    return sc


def training_series(trace, max_read: int = MAX_READ) -> TrainingSeries:
    """Read the run's per-step series (see :class:`TrainingSeries`): a row for every step
    that ran ``backward()``, from the scalars for the steps kept as scalars only (their
    loss, gradient norms and accumulations); values from the steps recorded in full."""
    sc = _every_step(trace)
    if sc is not None:
        return _series_with_scalars(trace, sc, max_read)
    rows = [r for r in trace.step_rows() if r["has_backward"]]
    steps = np.array([r["index"] for r in rows], dtype=np.int64)
    loss = np.array([np.nan if r["loss"] is None else r["loss"] for r in rows], dtype=np.float64)
    n = len(rows)
    read = np.asarray(subsample(n, max_read), dtype=np.int64)
    return _series(trace, rows, steps, loss, read, max_read)


def _series_with_scalars(trace, sc, max_read: int) -> TrainingSeries:
    """The series of a run whose steps in full are a few of all: rows from the scalars (a
    step ran backward when a gradient reached a parameter, or its row in full says so),
    bodies read at up to ``max_read`` of the steps in full, evenly spaced."""
    full_rows = {r["index"]: r for r in trace.step_rows()}
    has_bw = (sc.accumulation >= 0).any(axis=1)
    in_full = np.array([bool(full_rows.get(i, {}).get("has_backward")) for i in sc.steps.tolist()], bool)
    keep = has_bw | in_full
    idx = sc.steps[keep]
    counts = {k: v[keep] for k, v in sc.counts().items()}
    acc = sc.accumulation[keep]
    # a gradient cleared (set to None or zeroed) between two backward passes: a zeroing of the
    # step before (what the steps in full say, as their events count them)
    cleared = np.zeros(len(idx), np.int32)
    if len(idx) > 1:
        cleared[:-1] = ((acc[:-1] >= 0) & (acc[1:] >= 0) & (acc[1:] <= 1)).sum(axis=1)
    rows = []
    for i, index in enumerate(idx.tolist()):
        r = full_rows.get(index)
        if r is not None:
            rows.append(r)
            continue
        fresh, zeros, added = (int(counts[k][i]) for k in ("fresh", "zeros", "added"))
        rows.append({"index": index, "loss": None, "has_backward": True, "updates": int(counts["updated"][i]),
                     "zeroings": int(cleared[i]), "grad_writes": 0, "accumulate_fresh": fresh,
                     "accumulate_added": zeros + added, "accumulate_on_top": added, "scalars_only": True})
    loss = sc.loss[keep].astype(np.float64)
    positions = np.flatnonzero([r.get("scalars_only") is None for r in rows])
    read = positions[np.asarray(subsample(len(positions), max_read), dtype=np.int64)]
    series = _series(trace, rows, idx.astype(np.int64), loss, read, 0)
    # every step's gradient norm, from the scalars (the steps read agree with their statistics)
    cols = {tid: j for j, tid in enumerate(sc.params)}
    for tid in series.grad_norm:
        if tid in cols:
            series.grad_norm[tid] = sc.grad_norm[keep, cols[tid]].astype(np.float64)
    return series


def _series(trace, rows: list, steps: np.ndarray, loss: np.ndarray, read: np.ndarray,
            max_read: int) -> TrainingSeries:
    """The series over ``rows`` (one per step with a backward pass), reading the bodies of
    the steps at positions ``read`` (all of them when there are at most ``max_read`` rows)."""
    n = len(rows)
    events = {k: np.zeros(n, dtype=np.int32) for k in (*ACC_KINDS, "update", "zero", "grad_write")}
    params_info = {p.tid: p for p in trace.params}
    seen_params: dict[int, TensorInfo] = {}
    raw_vals: dict[int, dict[int, np.ndarray | None]] = {}
    raw_grads: dict[int, dict[int, np.ndarray | None]] = {}
    raw_norms: dict[int, np.ndarray] = {}
    final: dict[int, np.ndarray] = {}
    last: dict[int, np.ndarray] = {}
    full = True
    read_set = set(int(i) for i in read)
    # every step's events are counted (the strip shows them all); bodies are read for the
    # sampled steps, plus every step when the run is short.
    positions = range(n) if n <= max_read else sorted(read_set)
    sampled = len(positions) < n
    steps_list = trace.steps
    index_pos = {idx: i for i, idx in enumerate(steps_list.indices)}
    for p in positions:
        step = steps_list[index_pos[int(steps[p])]]
        row_vals: dict[int, np.ndarray | None] = {}
        row_grads: dict[int, np.ndarray | None] = {}
        for e in step.events:
            if e.kind == "accumulate":
                events[e.accumulation][p] += 1
                info = params_info.get(e.tensor) or step.tensors.get(e.tensor)
                if info is not None and e.tensor not in seen_params:
                    seen_params[e.tensor] = info
                row_grads[e.tensor] = _flat(e.after)
                raw_norms.setdefault(e.tensor, np.full(n, np.nan))[p] = (
                    e.after.stats.norm if e.after is not None else np.nan)
            elif e.kind in events:
                events[e.kind][p] += 1
                if e.kind == "update" and e.after is not None:
                    a = _flat(e.after)
                    if a is not None:
                        final[e.tensor] = a
                    if e.tensor not in row_vals:
                        row_vals[e.tensor] = _flat(e.before)
        for tid in list(seen_params):
            v = step.value(tid)
            fv = _flat(v) if v is not None else row_vals.get(tid)
            if fv is None:
                fv = last.get(tid)
                if v is not None and not v.kept:
                    full = False
            if fv is not None:
                last[tid] = fv
            raw_vals.setdefault(tid, {})[p] = fv
            raw_grads.setdefault(tid, {})[p] = row_grads.get(tid)
    if sampled:
        # Steps not read: counts from the step table (whose n_on_top column says how many
        # accumulations landed on a gradient that was not zeroed; without it, the nearest
        # read step's answer stands in).
        read_sorted = np.array(sorted(read_set))
        for i, r in enumerate(rows):
            if i in read_set:
                continue
            events["update"][i] = r["updates"]
            events["zero"][i] = r["zeroings"]
            events["grad_write"][i] = r["grad_writes"]
            events["fresh"][i] = r["accumulate_fresh"]
            on_top = r.get("accumulate_on_top")
            if on_top is None:
                near = int(read_sorted[np.argmin(np.abs(read_sorted - i))])
                on_top = r["accumulate_added"] if events["added"][near] and not events["zeros"][near] else 0
            events["added"][i] = on_top
            events["zeros"][i] = r["accumulate_added"] - on_top
    params = [seen_params[t] for t in sorted(seen_params)]
    values, grads, norms = {}, {}, {}
    left_out: dict[int, str] = {}
    rows_read = list(positions)
    for info in params:
        tid = info.tid
        numel = max(1, math.prod(info.shape))
        # every parameter's gradient norm is known (the statistics have it)
        norms[tid] = raw_norms.get(tid, np.full(n, np.nan))
        if numel * len(params) > MAX_TRACKED_NUMEL:
            full = False
            left_out[tid] = (f"{numel:,} numbers, too many to plot (at most "
                             f"{MAX_TRACKED_NUMEL:,} over all parameters)")
            continue
        vals = np.full((len(rows_read), numel), np.nan)
        gr = np.full((len(rows_read), numel), np.nan)
        for j, p in enumerate(rows_read):
            v = raw_vals.get(tid, {}).get(p)
            if v is not None and v.size == numel:
                vals[j] = v
            g = raw_grads.get(tid, {}).get(p)
            if g is not None and g.size == numel:
                gr[j] = g
        if len(vals) and np.isnan(vals).all():
            full = False
            left_out[tid] = (f"its {numel:,} numbers were kept as statistics only (larger than "
                             "--max-numel, or recorded with --values stats)")
            continue
        # a value missing at the start (the parameter not yet used) takes the first known one
        values[tid] = _fill(vals)
        grads[tid] = gr
        if tid not in final and len(vals):
            final[tid] = values[tid][-1].copy()
    return TrainingSeries(steps=steps, loss=loss, params=params, values=values, final=final,
                          grads=grads, grad_norm=norms, events=events,
                          read=np.array(rows_read, dtype=np.int64),
                          names={p.tid: trace.name(p.tid) for p in params}, full_values=full,
                          left_out=left_out)


def _fill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN rows, then back-fill the leading ones."""
    out = a.copy()
    ok = ~np.isnan(out).any(axis=1)
    if not ok.any():
        return out
    idx = np.where(ok, np.arange(len(out)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    first = int(np.argmax(ok))
    out[:first] = out[first]
    return out


# -- the loss surface ----------------------------------------------------------------------------

@dataclass
class Surface:
    """The loss on a plane of parameter space, exact for a linear model's quadratic loss.

    ``origin`` (P,) is the closed-form optimum θ* (parameters flattened in ``tids`` order,
    the linear fit's order: weight then bias), ``axes`` (2, P) orthonormal directions;
    a point θ has plane coordinates ``axes @ (θ − origin)``. ``exact`` is True when the
    plane is the whole parameter space (two numbers to learn): then the coordinates are the
    parameters themselves (``origin`` is zero and ``axes`` the identity) and
    ``labels`` their names. ``fit`` is the pooled :class:`~gradtrace.analysis.linear.LinearFit`.
    """

    tids: tuple
    origin: np.ndarray
    optimum: np.ndarray
    axes: np.ndarray
    hessian: np.ndarray
    loss_at_optimum: float
    exact: bool
    labels: tuple[str, str]
    description: str
    fit: LinearFit | None = None
    X: np.ndarray | None = None      # unique data rows, for the data panel
    y: np.ndarray | None = None

    def coords(self, theta: np.ndarray) -> np.ndarray:
        """(…, P) parameter vectors -> (…, 2) plane coordinates."""
        with np.errstate(over="ignore", invalid="ignore"):
            return (np.asarray(theta) - self.origin) @ self.axes.T

    def loss(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The loss at plane coordinates (a, b): L* + ½ δᵀHδ with δ = θ(a, b) − θ*."""
        A = self.axes
        H2 = A @ self.hessian @ A.T
        base = self.origin - self.optimum           # zero unless the plane is the parameters
        g0 = self.hessian @ base                    # gradient at the plane's origin
        c0 = self.loss_at_optimum + 0.5 * base @ self.hessian @ base
        g2 = A @ g0
        return (c0 + g2[0] * a + g2[1] * b
                + 0.5 * (H2[0, 0] * a * a + 2 * H2[0, 1] * a * b + H2[1, 1] * b * b))

    def predict(self, theta: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """The model's prediction (n, k) at flattened parameters θ."""
        import torch

        from dataclasses import replace

        fit = self.fit
        assert fit is not None  # loss_surface makes every Surface with its fit
        vals = fit.unflatten(torch.as_tensor(np.asarray(theta, dtype=np.float64)))
        if X is not None:
            fit = replace(fit, X=torch.as_tensor(np.asarray(X, dtype=np.float64)))
        return fit.predict(vals).numpy()


def loss_surface(trace, series: TrainingSeries, max_fits: int = 400):
    """The :class:`Surface` of a run whose steps are a recognised linear model with a
    squared-error loss, or a :class:`~gradtrace.analysis.linear.NotApplicable` saying why not."""
    import torch

    from .linear import NotApplicable, NotApplicableError, SQUARED_ERROR, fit_of, pool

    if len(series) == 0:
        return NotApplicable("the run has no step with a backward pass")
    if not series.full_values:
        return NotApplicable("parameter values were not kept in full (recorded with --values stats?)")
    positions = series.read if series.read is not None else np.arange(len(series))
    pick = positions[np.asarray(subsample(len(positions), max_fits), dtype=np.int64)]
    steps_list = trace.steps
    index_pos = {idx: i for i, idx in enumerate(steps_list.indices)}
    fits = []
    first_reason = None
    for p in pick:
        step = steps_list[index_pos[int(series.steps[p])]]
        f = fit_of(step)
        if f:
            fits.append(f)
        elif first_reason is None:
            first_reason = f
    if not fits:
        return first_reason or NotApplicable("no step was recognised as a linear model")
    if first_reason is not None and len(fits) < len(pick) // 2:
        return first_reason
    try:
        fit = pool(fits)
    except NotApplicableError as e:
        return NotApplicable(str(e))
    if fit.loss_kind != SQUARED_ERROR:
        return NotApplicable("the loss is softmax cross-entropy: no closed-form optimum to draw")
    tids = tuple(p.tid for p in fit.params)
    if not all(t in series.values for t in tids):
        return NotApplicable("the model's parameters are not all tracked")
    try:
        opt = fit.flatten(fit.optimum()).numpy()
        H = fit.hessian().numpy()
    except NotApplicableError as e:
        return NotApplicable(str(e))
    l_opt = fit.loss(fit.unflatten(torch.as_tensor(opt)))
    P = len(opt)
    names = series.flat_names(tids)      # one per number: w[0], w[1] for a weight of two
    X, y = _unique_rows(fit.X.numpy(), fit.y.numpy())
    if P == 1:
        return NotApplicable(f"the model has one number to learn ({names[0]}): there is no plane "
                             "of parameters to draw the loss on")
    if P == 2:
        return Surface(tids, np.zeros(2), opt, np.eye(2), H, l_opt, True, (names[0], names[1]),
                       f"the loss over ({names[0]}, {names[1]}): exact", fit, X, y)
    theta = series.theta(tids)
    d = theta - opt
    # The two directions that explain most of where the run went, relative to θ*; a run
    # that diverges is judged by its steps before the numbers blow up.
    d = d[sane_rows(d)]
    if len(d) == 0:
        return NotApplicable("the parameters are not finite at any step")
    _, _, vt = np.linalg.svd(d, full_matrices=False)
    axes = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt[0], _orth(vt[0])])
    # a deterministic sign: the run starts on the positive side of each axis
    for i in range(2):
        if axes[i] @ d[0] < 0:
            axes[i] = -axes[i]
    return Surface(tids, opt.copy(), opt, axes, H, l_opt, False, ("direction 1", "direction 2"),
                   f"plane through the optimum θ* spanned by the run's two directions of largest "
                   f"movement ({P} parameters)", fit, X, y)


def sane_rows(d: np.ndarray, factor: float = 100.0) -> np.ndarray:
    """Rows that are finite and within ``factor`` times the first row's size (a diverging
    run's later rows, 1e30 and inf, would otherwise decide every direction and scale)."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(np.where(np.isfinite(d), d, np.inf), axis=1)
    ok = np.isfinite(norms)
    if not ok.any():
        return ok
    start = norms[ok]
    nonzero = start[start > 0]
    ref = float(nonzero[0]) if len(nonzero) else 1.0   # how far away the run started
    return ok & (norms <= factor * ref)


def _orth(v: np.ndarray) -> np.ndarray:
    e = np.zeros_like(v)
    e[int(np.argmin(np.abs(v)))] = 1.0
    u = e - (e @ v) * v
    return u / np.linalg.norm(u)


def _unique_rows(X: np.ndarray, y: np.ndarray, limit: int = 5000):
    """The distinct (x, y) rows (a full-batch run repeats its data every step)."""
    both = np.concatenate([X, y], axis=1)
    _, idx = np.unique(both, axis=0, return_index=True)
    idx = np.sort(idx)
    idx = idx[np.asarray(subsample(len(idx), limit), dtype=np.int64)]
    return X[idx], y[idx]
