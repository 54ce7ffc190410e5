"""What every step's scalars say, recorded in full or not, and the steps worth a closer look.

``scalar_timeline(scalars)`` reads :class:`~gradtrace.tracefile.scalars.Scalars` (every step
of the run: loss, per-parameter norms, how each ``.grad`` was met) in a few vectorised
passes and returns a :class:`Timeline`:

- ``forgot``: per parameter column, the steps whose backward pass added the gradient onto
  the one an earlier backward pass left although the parameter changed in between, and
  whose sum an update then used (the forgotten ``zero_grad()``). Several backward passes
  with no change between them (gradient accumulation on purpose) are not counted, nor is
  a sum cleared before the parameter's next change (a GAN's generator pass through the
  discriminator).
- ``non_finite``: the first step whose loss or a gradient or value norm was inf or nan.
- ``jumps``: steps where the loss rose suddenly (ten times its running mean change and
  half again its previous value).
- ``patterns``: steps where a new zeroing / accumulation pattern first showed.

:func:`steps_to_check` picks the steps recorded in full that the expensive per-step checks
read when there are more than a budget: the first, the last, the steps the timeline points
at (and the step before each), then evenly spaced ones (:func:`~.sampling.subsample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .sampling import subsample

__all__ = ["Timeline", "scalar_timeline", "steps_to_check", "MAX_POINTED"]

#: At most this many steps of each kind (jumps, patterns, a parameter's forgot_zero_grad)
#: are pointed at: a run that forgets zero_grad() at every step needs a few, not all.
MAX_POINTED = 16


@dataclass
class Timeline:
    """See the module doc. Steps are the run's step numbers."""

    steps: int
    forgot: dict[int, list[int]] = field(default_factory=dict)   # column -> steps
    forgot_counts: dict[int, int] = field(default_factory=dict)  # column -> how many steps
    non_finite: tuple[int, str] | None = None                     # (step, what, in words)
    jumps: list[tuple[int, float, float]] = field(default_factory=list)  # (step, before, after)
    patterns: list[int] = field(default_factory=list)
    #: whether the accumulation codes were recorded (format 4): else ``forgot`` says nothing
    has_accumulation: bool = True

    def pointed(self) -> list[int]:
        """The steps worth checking, most telling first (each once)."""
        out: list[int] = []
        if self.non_finite is not None:
            out.append(self.non_finite[0])
        for steps in self.forgot.values():
            out.extend(steps[:MAX_POINTED])
        out.extend(s for s, _, _ in self.jumps[:MAX_POINTED])
        out.extend(self.patterns[:MAX_POINTED])
        return list(dict.fromkeys(out))


def scalar_timeline(sc, names: tuple[str, ...] | None = None) -> Timeline:
    """The :class:`Timeline` of every step's scalars ``sc`` (a ``Scalars``)."""
    n = len(sc)
    names = names if names is not None else sc.names
    out = Timeline(steps=n, has_accumulation=bool(sc.has_norms))
    if n == 0:
        return out
    steps = sc.steps
    acc = sc.accumulation
    if sc.has_norms:
        upd = np.nan_to_num(sc.update_norm, nan=0.0) > 0
        # changed[r, j]: how many rows before r moved parameter j (row r's update is its change
        # until the next backward pass)
        changed = np.vstack([np.zeros((1, acc.shape[1]), np.int64), np.cumsum(upd, axis=0)])
        for j in range(acc.shape[1]):
            rows = np.flatnonzero(acc[:, j] >= 0)
            if len(rows) < 2:
                continue
            moved = changed[rows[1:], j] - changed[rows[:-1], j] > 0
            # ... and the sum was used: the parameter moves again before its .grad is next
            # zeroed (a GAN's generator pass adds onto the discriminator's gradient, which
            # the discriminator's zero_grad() then clears before its own next step)
            # (the run's end is such a boundary: the last sum counts if an update used it)
            nxt = np.append(rows[2:], len(acc))
            zeroed = np.append(acc[rows[2:], j] < 2, True)
            used = ~zeroed | (changed[nxt, j] - changed[rows[1:], j] > 0)
            hit = rows[1:][moved & used & (acc[rows[1:], j] == 2)]
            if len(hit):
                out.forgot[j] = steps[hit[:MAX_POINTED]].tolist()
                out.forgot_counts[j] = len(hit)
    out.non_finite = _first_non_finite(sc, names)
    out.jumps = _jumps(steps, sc.loss)
    out.patterns = _new_patterns(steps, acc)
    return out


def _first_non_finite(sc, names) -> tuple[int, str] | None:
    loss = sc.loss
    finite_loss = np.isfinite(loss)
    # A step with no single-number loss (several roots, or a root of several numbers) is
    # marked so (NO_LOSS); in a file older than that mark it is a NaN like any other, which
    # then counts only in a run that has finite losses.
    bad_loss = np.isinf(loss) | (np.isnan(loss) & ~sc.no_loss & bool(finite_loss.any()))
    met = sc.accumulation >= 0
    bad_grad = ~np.isfinite(sc.grad_norm) & met
    bad_value = np.isinf(sc.value_norm)
    rows = bad_loss | bad_grad.any(axis=1) | bad_value.any(axis=1)
    if not rows.any():
        return None
    r = int(np.argmax(rows))
    step = int(sc.steps[r])
    if bad_value[r].any():
        j = int(np.argmax(bad_value[r]))
        what = f"{names[j]}'s value was {_word(sc.value_norm[r, j])} when step {step}'s backward pass began"
    elif bad_loss[r]:
        what = f"the loss was {_word(loss[r])}"
    else:
        j = int(np.argmax(bad_grad[r]))
        what = f"{names[j]}'s gradient was {_word(sc.grad_norm[r, j])} after step {step}'s backward pass"
    return step, what


def _word(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _jumps(steps: np.ndarray, loss: np.ndarray) -> list[tuple[int, float, float]]:
    """Sudden rises of the loss, judged as the recorder judges them (a running mean of the
    loss's change; from the fifth step on)."""
    out: list[tuple[int, float, float]] = []
    prev: float | None = None
    delta = 0.0
    seen = 0
    for i, x in enumerate(loss.tolist()):
        if not math.isfinite(x):
            prev = None if math.isnan(x) else prev
            seen += 1
            continue
        if prev is not None:
            change = x - prev
            if seen >= 5 and change > 10 * delta and x > 1.5 * abs(prev) and change > 0:
                out.append((int(steps[i]), prev, x))
            delta = 0.9 * delta + 0.1 * abs(change) if seen > 1 else abs(change)
        prev = x
        seen += 1
    return out


def _new_patterns(steps: np.ndarray, acc: np.ndarray) -> list[int]:
    """Steps (from the third on) whose zeroing / accumulation pattern no earlier step had."""
    if acc.shape[1] == 0 or len(acc) < 3:
        return []
    _, first = np.unique(acc, axis=0, return_index=True)
    return sorted(int(steps[i]) for i in first if i >= 2)


def steps_to_check(full: list[int], pointed: list[int], budget: int | None) -> list[int]:
    """At most ``budget`` of the steps recorded in full (run step numbers, ascending): the
    first and the last, each step of ``pointed`` that is in full and the step before it
    where that is in full, then evenly spaced others. All of them when ``budget`` is None or
    not smaller."""
    if budget is None or len(full) <= budget:
        return list(full)
    budget = max(budget, 2)
    have = set(full)
    chosen = dict.fromkeys([full[0], full[-1]])
    for s in pointed:
        for t in (s, s - 1):
            if len(chosen) >= budget:
                break
            if t in have:
                chosen.setdefault(t)
    rest = [s for s in full if s not in chosen]
    room = budget - len(chosen)
    if room > 0 and rest:
        chosen.update(dict.fromkeys(rest[j] for j in subsample(len(rest), room)))
    return sorted(chosen)
