"""Every step's scalars (trace format 4): the loss and per-parameter norms, as numpy columns.

The recorder writes one ``scalars`` row per step whether or not the step is recorded in
full (:class:`~gradtrace.tracefile.rows.ScalarRow`), so curves and the zeroing /
accumulation timeline are complete for a run of any length. ``trace.scalars()`` reads
them in one pass, :data:`CHUNK` rows at a time, into arrays sized from the row count (no
list of every row is held); a file of an older format reads as scalars made from its step
table (every step recorded in full; the loss and the accumulation counts, no norms).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import TraceFileError
from .rows import ACC_CODES, NO_LOSS_BITS, ScalarParamRow, ScalarRow

if TYPE_CHECKING:
    from .store import Trace

__all__ = ["Scalars", "read_scalars", "MAX_CELLS"]

#: The most (step, parameter) cells a reader allocates for one column.
MAX_CELLS = 1 << 26
#: Rows of the scalars table fetched at a time.
CHUNK = 4096


@dataclass(frozen=True, eq=False)
class Scalars:
    """Per step (rows, in step order) and per parameter (columns, in the order gradtrace first
    saw them): ``steps`` the run's step numbers; ``full`` whether the step is recorded in
    full (``trace.step(n)`` reads it); ``loss`` (NaN: the backward root was not a single
    number); ``grad_norm`` after the step's backward pass, ``value_norm`` at it,
    ``update_norm`` of the change until the next step's backward pass (NaN where there is
    none, e.g. a parameter not yet seen); ``accumulation`` how the backward pass met each
    ``.grad``: -1 no gradient arrived, 0 fresh (``.grad`` was None), 1 onto zeros, 2 added
    onto a gradient that was not zeroed (:data:`~gradtrace.tracefile.rows.ACC_CODES`)."""

    steps: np.ndarray
    full: np.ndarray
    loss: np.ndarray
    params: tuple[int, ...]
    names: tuple[str, ...]
    grad_norm: np.ndarray
    value_norm: np.ndarray
    update_norm: np.ndarray
    accumulation: np.ndarray
    #: False for a file older than format 4: the norms were not recorded (all NaN).
    has_norms: bool = True

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def no_loss(self) -> np.ndarray:
        """Per row: the step had no single-number loss (its ``loss`` is the NaN
        :data:`~gradtrace.tracefile.rows.NO_LOSS`, not a loss that was NaN)."""
        return np.ascontiguousarray(self.loss, dtype="<f8").view(np.uint64) == NO_LOSS_BITS

    def column(self, name: str) -> int:
        """The column of the parameter named ``name`` (``w``, ``net.0.weight``)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no parameter named {name!r} in the scalars; they are "
                           f"{', '.join(self.names) or 'none'}") from None

    def counts(self) -> dict[str, np.ndarray]:
        """Per step: accumulations by kind (``fresh``, ``zeros``, ``added``) and ``updated``
        (parameters whose value changed before the next step's backward pass)."""
        acc = self.accumulation
        return {"fresh": (acc == 0).sum(axis=1), "zeros": (acc == 1).sum(axis=1),
                "added": (acc == 2).sum(axis=1),
                "updated": (np.nan_to_num(self.update_norm, nan=0.0) > 0).sum(axis=1)}

    def accumulation_kind(self, row: int, col: int) -> str | None:
        """``fresh``, ``zeros``, ``added`` or None, as the event rows say it."""
        return ACC_CODES[int(self.accumulation[row, col])]


def read_scalars(trace: "Trace") -> Scalars:
    """All the scalars of ``trace`` (see :class:`Scalars`); :class:`TraceFileError` naming the
    file for a table that is not what gradtrace writes."""
    if trace._version < 4:
        return _from_step_rows(trace)
    path = trace.path
    try:
        cols = [ScalarParamRow(*r) for r in trace._q(
            f"SELECT {', '.join(ScalarParamRow._fields)} FROM scalar_param ORDER BY col")]
        n, widest = trace._q("SELECT count(*), coalesce(max(length(vals)), 0) FROM scalars")[0]
    except sqlite3.Error as e:  # pragma: no cover - _q turns these into TraceFileError
        raise TraceFileError(path, f"truncated or corrupt ({e})") from None
    for i, c in enumerate(cols):
        if c.col != i or type(c.tid) is not int:
            raise TraceFileError(path, f"the scalar_param table's column {i} is {c!r:.60}; the "
                                       "file is damaged: record the run again")
    k = len(cols)
    if type(widest) is not int or widest > 8 * (1 + 3 * k):
        raise TraceFileError(path, "a scalars row holds more norms than there are parameter "
                                   "columns; the file is damaged: record the run again")
    if n * max(k, 1) > MAX_CELLS:
        raise TraceFileError(path, f"holds scalars of {n} steps x {k} parameters, more than "
                                   f"gradtrace reads at once ({MAX_CELLS} cells)")
    steps = np.empty(n, np.int64)
    full = np.zeros(n, bool)
    loss = np.full(n, np.nan)
    norms = np.full((3, n, k), np.nan)
    acc = np.full((n, k), -1, np.int8)
    last = -1
    i = -1
    # rows of one width (columns known at their step) are decoded together, a block at a time
    block: list[tuple[bytes, bytes]] = []
    block_at, block_j = 0, -1

    def decode() -> None:
        m = len(block)
        if not m:
            return
        v = np.frombuffer(b"".join(x for x, _ in block), "<f8").reshape(m, 1 + 3 * block_j)
        loss[block_at:block_at + m] = v[:, 0]
        norms[:, block_at:block_at + m, :block_j] = v[:, 1:].reshape(m, block_j, 3).transpose(2, 0, 1)
        if block_j:
            a = np.frombuffer(b"".join(y for _, y in block), np.int8).reshape(m, block_j)
            if a.min() < -1 or a.max() > 2:
                bad = int(steps[block_at + int(np.flatnonzero(((a < -1) | (a > 2)).any(axis=1))[0])])
                raise TraceFileError(path, f"step {bad}'s scalars hold an accumulation code out "
                                           "of range; the file is damaged: record the run again")
            acc[block_at:block_at + m, :block_j] = a
        block.clear()

    for raw in _rows(trace, f"SELECT {', '.join(ScalarRow._fields)} FROM scalars ORDER BY idx"):
        i += 1
        if i >= n:  # a run still recording: the rows counted are the ones read
            i -= 1
            break
        idx, is_full, vals, codes = raw
        if type(idx) is not int or idx <= last or is_full not in (0, 1) \
                or not isinstance(vals, bytes) or not isinstance(codes, bytes):
            raise TraceFileError(path, f"step {idx!r:.20}'s scalars are not what gradtrace "
                                       "writes; the file is damaged: record the run again")
        j, rest = divmod(len(vals) // 8 - 1, 3)
        if len(vals) % 8 or len(vals) < 8 or rest or len(codes) != j:
            raise TraceFileError(path, f"step {idx}'s scalars have {len(vals)} bytes of norms "
                                       f"and {len(codes)} of accumulations, which do not match; "
                                       "the file is damaged: record the run again")
        last = steps[i] = idx
        full[i] = bool(is_full)
        if j != block_j or len(block) >= CHUNK:
            decode()
            block_at, block_j = i, j
        block.append((vals, codes))
    decode()
    if i + 1 < n:  # rows went missing between the count and the read
        n = i + 1
        steps, full, loss, norms, acc = steps[:n], full[:n], loss[:n], norms[:, :n], acc[:n]
    tensors = trace.tensors
    names = tuple(tensors[c.tid].label if c.tid in tensors else f"t{c.tid}" for c in cols)
    return Scalars(steps, full, loss, tuple(c.tid for c in cols), names, norms[0], norms[1],
                   norms[2], acc)


def _rows(trace: "Trace", sql: str) -> Iterator[tuple]:
    """The rows of ``sql``, :data:`CHUNK` at a time (the arrays are allocated once, from the
    count: no list of every row is held)."""
    chunks = getattr(trace, "_chunks", None)
    if chunks is None:  # a reader without cursors (a test double): one query
        yield from trace._q(sql)
        return
    for rows in chunks(sql, CHUNK):
        yield from rows


def _from_step_rows(trace: "Trace") -> Scalars:
    """An older file: every step recorded in full; the loss from the step table, no norms."""
    rows = trace.step_rows()
    n = len(rows)
    params = tuple(t.tid for t in trace.params)
    k = len(params)
    loss = np.array([np.nan if r["loss"] is None else float(r["loss"]) for r in rows], float)
    nan = np.full((n, k), np.nan)
    return Scalars(np.array([r["index"] for r in rows], np.int64), np.ones(n, bool), loss,
                   params, tuple(trace.name(t) for t in params), nan, nan.copy(), nan.copy(),
                   np.full((n, k), -1, np.int8), has_norms=False)
