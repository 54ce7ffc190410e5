"""The steps of a trace as an index: per-step counts from the step table, and the recorded
steps as a sequence that reads each from the file on demand and keeps the recent ones."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Callable

from . import checked as ck
from .checked import Malformed
from .model import Step

__all__ = ["StepList", "STEP_ROWS_SQL", "step_row"]

#: The step table's counting columns, every step in order (no body is read).
STEP_ROWS_SQL = ("SELECT idx, has_backward, loss, n_ops, n_nodes, n_fresh, n_added, n_on_top, "
                 "n_zero, n_update, n_grad_write, ops_dropped, first_seq, last_seq FROM step "
                 "ORDER BY idx")

_COUNT_NAMES = ("ops", "nodes", "fresh", "added", "on-top", "zeroing", "update", "grad-write",
                "dropped-ops")


def step_row(r: tuple) -> dict[str, Any]:
    """One row of :data:`STEP_ROWS_SQL`, checked, as the dict ``Trace.step_rows()`` gives."""
    idx = ck.integer(r[0], "a step number", 0)
    w = f"step {idx}"
    loss = r[2]
    if isinstance(loss, str) and loss.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        loss = float(loss)
    elif loss is not None:
        loss = ck.number(loss, f"{w}'s loss")
    counts = [ck.integer(x, f"{w}'s {name} count", 0) for x, name in zip(r[3:12], _COUNT_NAMES)]
    first, last = (ck.integer(x, f"{w}'s {name}") for x, name in zip(r[12:], ("first_seq", "last_seq")))
    if last < first:
        raise Malformed(f"{w} ends (seq {last}) before it begins (seq {first})")
    n_ops, n_nodes, n_fresh, n_added, n_on_top, n_zero, n_update, n_gw, dropped = counts
    return {
        "index": idx, "ops": n_ops, "backward_nodes": n_nodes,
        "accumulate_fresh": n_fresh, "accumulate_added": n_added,
        "accumulate_on_top": n_on_top, "zeroings": n_zero,
        "updates": n_update, "grad_writes": n_gw, "loss": loss,
        "has_backward": ck.flag(r[1], f"{w}'s has_backward"),
        "ops_dropped": dropped,
    }


class StepList(Sequence):
    """The recorded steps, read from the file on demand. Recently read steps are kept, up to
    :data:`CACHE_STEPS` of them and :data:`CACHE_BYTES` of memory (their values and decoded
    rows), so a pass over the run reads each once with bounded memory however long the run,
    and the passes `gradtrace run` makes after a small run (the check, the animations, the
    report) read each of its steps once between them."""

    #: Steps kept: every step of a run that `gradtrace run` animates by itself is a few
    #: hundred; the byte bound below is what keeps a run of big steps in check.
    CACHE_STEPS = 1024
    CACHE_BYTES = 256 << 20

    def __init__(self, read: Callable[[int], tuple[Step, int]], indices: list[int]):
        self._read = read
        self._indices = indices
        self._cache: OrderedDict[int, tuple[Step, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        idx = self._indices[i]
        hit = self._cache.get(idx)
        if hit is not None:
            self._cache.move_to_end(idx)
            return hit[0]
        step, size = self._read(idx)
        self.keep(idx, step, size)
        return step

    def keep(self, idx: int, step: Step, size: int) -> None:
        """Put a step read elsewhere into the cache (the oldest leave past the bounds)."""
        if idx in self._cache:
            return
        self._cache[idx] = (step, size)
        self._bytes += size
        while len(self._cache) > self.CACHE_STEPS or (self._bytes > self.CACHE_BYTES and len(self._cache) > 1):
            _, (_, old) = self._cache.popitem(last=False)
            self._bytes -= old

    def cached(self, idx: int) -> Step | None:
        """The step with run step number ``idx`` if it is in the cache (None otherwise)."""
        hit = self._cache.get(idx)
        return hit[0] if hit is not None else None

    def position(self, index: int) -> int | None:
        """Where the step with run step number ``index`` is in this list (None if not recorded)."""
        pos = bisect.bisect_left(self._indices, index)
        if pos == len(self._indices) or self._indices[pos] != index:
            return None
        return pos

    @property
    def indices(self) -> list[int]:
        """The run's step numbers of the recorded steps, in order."""
        return list(self._indices)
