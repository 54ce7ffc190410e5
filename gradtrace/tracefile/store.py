"""The trace file's writer: a run appended step by step to a versioned SQLite database.

Why SQLite: every committed transaction survives ``kill -9`` (steps are committed in groups,
at most :data:`COMMIT_WINDOW` seconds after they end), a reader never executes anything from the file (tensors are raw bytes
with a dtype and a shape), the schema is self-describing for anyone with ``sqlite3``,
and it comes with Python. coverage.py keeps its data the same way. The schema, the format
version and its history are in :mod:`gradtrace.tracefile.schema`.

This module is also where the trace file's names are found together (``load``, ``Trace``,
``is_trace``, the format constants): the reader's rooms are ``opening`` (the file and its
header), ``tables``, ``index``, ``steps`` and ``reader`` (the ``Trace`` facade).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import sqlite3
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where tensors are written: reading needs none
    import torch

from ..errors import TraceWriteError
from . import checked as ck
from .checked import Limits
from .dtypes import dtype_name
from .lock import TraceLock
from .model import Stats
from .opening import is_trace, load
from .reader import Trace
from .rows import (BackwardRow, EventRow, NodeRow, OpRow, ScalarParamRow, ScalarRow, SourceRow,
                   StepHead, TensorRow)
from .schema import APPLICATION_ID, FORMAT_VERSION, OLDEST_READABLE, SCHEMA

__all__ = ["FORMAT_VERSION", "OLDEST_READABLE", "TraceWriter", "Trace", "load", "is_trace",
           "APPLICATION_ID", "Limits", "dtype_name"]

_SCHEMA = SCHEMA
# OR REPLACE: a step written while marked (TraceWriter.mark_step) is written again when it ends
_STEP_INSERT = "INSERT OR REPLACE INTO step VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

#: Seconds a finished step may wait before its transaction commits (group commit): a
#: ``kill -9`` loses at most the steps of the last this many seconds. One commit per step
#: cost 50-100 us of a small step; one per window costs next to nothing.
COMMIT_WINDOW = 0.2

@lru_cache(maxsize=None)
def numpy_dtypes() -> frozenset:
    """The dtypes numpy can hold; the rest (bfloat16, float8...) are written through a byte view."""
    import torch

    return frozenset({
        torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
    })


def __getattr__(name: str):
    if name == "_NUMPY_DTYPES":  # PEP 562: made on first use, so reading needs no torch
        return numpy_dtypes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw C-order bytes of a CPU tensor (no grad)."""
    flat = t.detach().resolve_conj().resolve_neg().reshape(-1).contiguous()
    if flat.dtype in numpy_dtypes():
        return flat.numpy().tobytes()
    import torch

    return flat.view(torch.uint8).numpy().tobytes()


def _torch_version() -> str:
    import torch

    return torch.__version__


_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _finite(x: float) -> float | None:
    """JSON has no NaN or infinity: those statistics are stored as null."""
    return x if x == x and x not in (math.inf, -math.inf) else None


class TraceWriter:
    """Appends a run to a trace file (or to an in-memory database), one step per commit.

    The recorder adds the rows of :mod:`gradtrace.tracefile.rows` (:meth:`add_source`,
    :meth:`add_tensor`, :meth:`name_tensor`, :meth:`add_op`, :meth:`add_node`,
    :meth:`set_backward`, :meth:`add_event`) and values (:meth:`add_bytes`, :meth:`add_stats`,
    :meth:`add_zeros`), and calls :meth:`commit_step` when a step ends; nothing of a step is
    visible to readers before that.

    Opening takes the trace's lock (see :mod:`gradtrace.tracefile.lock`) and replaces an earlier
    trace at the path, never a file of anything else. A write that fails (a full disk) does
    not break the user's run: later steps are dropped, the steps committed before stay
    readable in place, and :meth:`finish` raises :class:`TraceFileError` saying which.
    """

    def __init__(self, path: Path | None, meta: dict[str, Any], window: float = COMMIT_WINDOW):
        self.path = path
        # The file itself, wherever the run goes (os.chdir) before it reads it back.
        self._file = Path(os.path.abspath(path)) if path is not None else None
        self.pid = os.getpid()
        self.window = window
        #: Bytes of the step rows written (a step written again counts once): the budget's measure.
        self.step_bytes = 0
        self.scalar_bytes = 0
        self._scalars: list[ScalarRow] = []
        self._scalar_params: list[ScalarParamRow] = []
        # Group commit: one transaction stays open for up to `window` seconds; a thread
        # commits it when the run goes quiet (the script sleeps, or waits on I/O).
        self._mutex = threading.Lock()
        self._in_tx = False
        self._tx_since = 0.0
        self._pending: list[int] = []  # steps written in the open transaction
        self._quit = threading.Event()
        self._committer: threading.Thread | None = None
        self.error: str | None = None
        self.failed_step: int | None = None  # the step whose commit failed, if one did
        self.kept: list[int] = []  # the first and last step committed, once there are some
        self.n_kept = 0
        self._lock = None
        if path is not None:
            path = Path(path)
            self._lock = TraceLock(path, writer=True).acquire()
            try:
                self.conn = self._open(path)
            except BaseException:
                self._lock.release()
                raise
        else:
            self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self.conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            self.conn.executescript(_SCHEMA)
        base = {
            "format": "gradtrace-trace",
            "version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": _torch_version(),
            "status": "running",
            "exit_code": None,
            "error": None,
            "steps_seen": 0,
            "ops_dropped": 0,
        }
        base.update(meta)
        self._sources: list[SourceRow] = []
        self._tensors: list[TensorRow] = []
        self._renames: list[tuple[str, int]] = []
        #: A step whose work is done but which has not ended (:meth:`mark_step`): what it
        #: holds then, to be written as it stands if a commit comes before it ends.
        self._mark: tuple | None = None
        self._mark_since = 0.0
        self._held: tuple | None = None  # a marked step's row, made at the end of the run
        self._marked_tensors: list | None = None  # the tensors and names in a marked step's row
        self._write(meta=base)
        self._reset_step()
        self.closed = False
        if self.error is not None and path is not None:  # stop before the script runs
            error = self.error
            self._close()
            _remove_new(path)
            raise TraceWriteError(path, f"cannot write the trace file ({error}); free some space "
                                       "or choose another path with -o")

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        is_trace(path, replacing=True)  # raises for a file that is not an earlier trace
        conn = None
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                p = Path(str(path) + suffix)
                if p.exists() or p.is_symlink():
                    p.unlink()
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            # The header first, straight into the file: from its first write on, the file
            # says it is a trace (a run never replaces a file that does not).
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            # A rollback journal, not WAL: a commit writes the step into the file itself
            # (the OS holds the bytes when the process is killed; a half-written step is
            # rolled back by the next reader), and a write that fails for want of space
            # leaves a file that reads without needing any more space, where a write-ahead
            # log would have to be folded in first. Exclusive: the journal is kept between
            # commits (its header zeroed) instead of being made and deleted for each step.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=PERSIST")
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_SCHEMA)
            return conn
        except (OSError, sqlite3.Error) as e:
            if conn is not None:  # the file is ours now: leave nothing half-made
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                _remove_new(path)
            msg = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise TraceWriteError(path, f"cannot write the trace file ({msg}); choose another "
                                       "path with -o") from None

    def _reset_step(self):
        self._ops: list[OpRow] = []
        self._nodes: list[NodeRow] = []
        self._events: list[EventRow] = []
        self._backward: BackwardRow | None = None
        # The value index, built as values arrive (see the schema: vidx, stats, dtypes).
        self._vints: list[int] = []
        self._chunks: list[bytes] = []
        self._offset = 0
        self._stats: list = []
        self._stats_int: list[int] = []
        self._codes: dict[str, int] = {}

    # -- what the recorder writes: rows of gradtrace.tracefile.rows, and values -------------
    def add_source(self, row: SourceRow) -> None:
        """A line of the user's code (written with the next transaction)."""
        self._sources.append(row)

    def add_tensor(self, row: TensorRow) -> None:
        """A tensor first seen now: in the step being recorded, or in the ``tensor`` table."""
        self._tensors.append(row)

    def name_tensor(self, tid: int, name: str) -> None:
        """A name found now for a tensor added earlier."""
        self._renames.append((name, tid))

    def add_op(self, row: OpRow) -> None:
        self._ops.append(row)

    def add_node(self, row: NodeRow) -> None:
        self._nodes.append(row)

    def set_backward(self, row: BackwardRow) -> None:
        self._backward = row

    def add_event(self, row: EventRow) -> None:
        self._events.append(row)

    def _code(self, dtype: str) -> int:
        c = self._codes.get(dtype)
        if c is None:
            c = self._codes[dtype] = len(self._codes)
        return c

    def add_bytes(self, vid: int, tid: int | None, shape, dtype: str, payload: bytes) -> None:
        """A value kept in full: its raw little-endian C-order bytes (kind 0 of the index)."""
        n = len(payload)
        self._vints += (vid, -1 if tid is None else tid, 0, self._code(dtype), self._offset, n,
                        len(shape), *shape)
        self._chunks.append(payload)
        self._offset += n

    def add_stats(self, vid: int, tid: int | None, shape, dtype: str, stats: Stats) -> None:
        """A value kept as statistics only (kind 1)."""
        self._vints += (vid, -1 if tid is None else tid, 1, self._code(dtype), 0, 0, len(shape), *shape)
        self._stats += (_finite(stats.norm), _finite(stats.mean), _finite(stats.min),
                        _finite(stats.max))
        self._stats_int += (stats.numel, stats.nonfinite)

    def add_zeros(self, vid: int, shape, dtype: str) -> None:
        """A value known to be all zeros: its shape and dtype only (kind 2)."""
        self._vints += (vid, -1, 2, self._code(dtype), 0, 0, len(shape), *shape)

    def add_scalars(self, row: ScalarRow) -> None:
        """A step's scalars (written with the next transaction)."""
        self._scalars.append(row)
        self.scalar_bytes += len(row.vals) + len(row.acc) + 16

    def add_scalar_param(self, row: ScalarParamRow) -> None:
        """A new column of the scalars (written with the next transaction)."""
        self._scalar_params.append(row)

    def flush_scalars(self) -> None:
        """Write the scalars added so far (they go with the next step otherwise)."""
        if self._scalars or self._scalar_params:
            self._write()

    def mark_step(self, head: StepHead) -> None:
        """The step being recorded has done its work (its update, its zeroing) but has not
        ended: if a commit comes before :meth:`commit_step` ends it, the step is written then
        as it stands now, so that a kill -9 keeps it (the run may stop here for long: an
        evaluation, a sleep, the end of the script).

        Nothing is encoded now: most steps end long before a commit comes, and then their
        final row is the only one written. The mark holds each of the step's lists and how
        long it is now; rows are only ever appended, so those prefixes are the step as it
        stands, whatever is added later and whichever thread (the committer's) writes it."""
        if self.closed or os.getpid() != self.pid:
            return
        if head.loss is not None and head.loss != head.loss:
            head = head._replace(loss="nan")  # SQLite would store a NaN REAL as NULL
        lists = (self._ops, self._nodes, self._events, self._stats, self._stats_int,
                 self._vints, self._chunks, self._tensors, self._renames)
        mark = (head, self._backward, list(self._codes), [(x, len(x)) for x in lists])
        with self._mutex:
            self._mark, self._mark_since = mark, time.monotonic()
            self._marked_tensors = mark[3][-2:]
        if self._committer is None and self.path is not None and self.error is None:
            self._start_committer()

    def commit_step(self, head: StepHead) -> None:
        """Write the step whose rows were added since the last commit (one row, replacing
        what a commit wrote of it while it was marked)."""
        if self.closed:
            return
        if head.loss is not None and head.loss != head.loss:
            head = head._replace(loss="nan")  # SQLite would store a NaN REAL as NULL
        row, size = self._step_row(head, self._backward, list(self._codes), self._ops,
                                   self._nodes, self._events, self._stats, self._stats_int,
                                   self._vints, self._chunks, self._tensors, self._renames)
        self.step_bytes += size
        self._tensors, self._renames = [], []
        self._marked_tensors = None
        self._reset_step()
        self._write(step_row=row)

    @staticmethod
    def _step_row(head, backward, codes, ops, nodes, events, stats, stats_int, vints, chunks,
                  tensors, renames) -> tuple[tuple, int]:
        """A step's row of the ``step`` table, and its size in bytes."""
        body = (f'{{"ops":{_json(ops)},"backward":{_json(backward)},"nodes":{_json(nodes)},'
                f'"events":{_json(events)},"stats":{_json(stats)},'
                f'"stats_int":{_json(stats_int)},"dtypes":{_json(codes)}}}')
        text = _json(tensors + [(tid, name) for name, tid in renames]) if tensors or renames \
            else None
        vidx, vals = ck.to_int64s(vints), b"".join(chunks)
        size = 64 + len(body) + len(vidx) + len(vals) + (len(text) if text else 0)
        return tuple(head) + (text, body, vidx, vals), size

    def _marked_row(self) -> tuple:
        """The row of the marked step as it stood when marked (the mutex held)."""
        assert self._mark is not None  # (callers look first)
        head, backward, codes, lists = self._mark
        parts = [x[:n] for x, n in lists]
        return self._step_row(head, backward, codes, *parts)[0]

    def _write(self, step_row: tuple | None = None, meta: dict | None = None) -> bool:
        """Add to the open transaction (begun if none is) and commit it when the window has
        passed or the run ends (``meta``); False if it was not written (now or at an earlier
        failure). ``step_row``: a step's final row (a mark of that step is done with)."""
        if self.error is not None or os.getpid() != self.pid:
            self._sources, self._scalars, self._scalar_params = [], [], []
            self._mark = self._held = None
            return False  # a write failed before, or this is a forked child (DataLoader workers)
        with self._mutex:
            sources, self._sources = self._sources, []
            scalars, self._scalars = self._scalars, []
            params, self._scalar_params = self._scalar_params, []
            c = self.conn
            try:
                if not self._in_tx:
                    c.execute("BEGIN")
                    self._in_tx, self._tx_since = True, time.monotonic()
                if sources:
                    c.executemany("INSERT INTO source VALUES (?,?,?,?,?)", sources)
                if params:
                    c.executemany("INSERT OR REPLACE INTO scalar_param VALUES (?,?)", params)
                if scalars:
                    c.executemany("INSERT OR REPLACE INTO scalars VALUES (?,?,?,?)", scalars)
                if step_row is not None:
                    if self._mark is not None and self._mark[0].idx == step_row[0]:
                        self._mark = None  # it ended: its final row is all there is to write
                    self._pending.append(step_row[0])
                    c.execute(_STEP_INSERT, step_row)
                if meta:
                    if self._tensors:  # seen outside a recorded step
                        c.executemany("INSERT INTO tensor VALUES (?,?,?,?,?,?)",
                                      [r._replace(shape=_json(r.shape)) for r in self._tensors])
                    if self._renames:
                        c.executemany("UPDATE tensor SET name=? WHERE tid=?", self._renames)
                    c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, _json(v)) for k, v in meta.items()])
                if meta or time.monotonic() - self._tx_since >= self.window:
                    self._commit()
                elif self._committer is None and self.path is not None:
                    self._start_committer()
            except sqlite3.Error as e:
                self._failed(e)
                return False
        return True

    def sync(self) -> None:
        """Commit the open transaction and a marked step now (the committer does it once
        the window passes)."""
        if os.getpid() != self.pid:
            return
        with self._mutex:
            if (self._in_tx or self._mark is not None) and self.error is None:
                try:
                    self._commit()
                except sqlite3.Error as e:
                    self._failed(e)

    def _commit(self) -> None:
        """Commit the open transaction (the mutex held), with the row of a step marked and not
        ended (begun here if that is all there is); the steps in it are kept from now on."""
        row = self._held
        if row is None and self._mark is not None:
            row = self._marked_row()
        self._mark = self._held = None
        if row is not None:
            if not self._in_tx:
                self.conn.execute("BEGIN")
                self._in_tx = True
            self._pending.append(row[0])
            self.conn.execute(_STEP_INSERT, row)
        if not self._in_tx:
            return
        self.conn.execute("COMMIT")
        self._in_tx = False
        for idx in self._pending:
            if not (self.kept and self.kept[1] == idx):
                self.kept = [self.kept[0] if self.kept else idx, idx]
                self.n_kept += 1
        self._pending = []

    def _failed(self, e: sqlite3.Error) -> None:
        """A write or commit failed (a full disk): the open transaction is lost, and so are
        the steps in it; the file keeps what was committed before."""
        c = self.conn
        # SQLite has already rolled back after some errors (a full disk): then there is
        # nothing to roll back, and trying would hide the error that matters.
        if c.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
        self._in_tx = False
        self._mark = self._held = None
        self.error = str(e)
        if self._pending:
            # the first step not kept: a kept step written again (its final row, after a commit
            # kept it as marked) stays kept as it was, and writing stopped after it
            last = self.kept[1] if self.kept else -1
            new = [idx for idx in self._pending if idx > last]
            self.failed_step = new[0] if new else last + 1
        self._pending = []

    def _start_committer(self) -> None:
        self._committer = threading.Thread(target=self._commit_when_quiet,
                                           name="gradtrace-commit", daemon=True)
        self._committer.start()

    def _commit_when_quiet(self) -> None:
        """The committer thread: a transaction left open for a window is committed, and a
        step marked half a window ago that has not ended is written as it stood then, so the
        steps of a run that has gone quiet are kept too (kill -9 then loses nothing)."""
        while not self._quit.wait(max(self.window / 2, 0.005)):
            with self._mutex:
                if self.error is not None:
                    continue
                now = time.monotonic()
                if (self._in_tx and now - self._tx_since >= self.window) or \
                        (self._mark is not None and now - self._mark_since >= self.window / 2):
                    try:
                        self._commit()
                    except sqlite3.Error as e:
                        self._failed(e)

    def _stop_committer(self) -> None:
        if self._committer is not None:
            self._quit.set()
            if self._committer is not threading.current_thread():
                self._committer.join()
            self._committer = None

    def finish(self, status: str, exit_code: int | None = None, error: str | None = None,
               **meta) -> None:
        """Mark how the run ended, leave one self-contained file and let go of the lock.
        Raises :class:`TraceFileError` (after all that) if part of the run could not be
        written, saying what the file keeps."""
        if self.closed:
            return
        self.closed = True
        with self._mutex:
            # A step marked and never ended (an interrupt): the file keeps it as it stood then
            # (written already, or now); its tensors are in its row, not "seen outside a
            # recorded step".
            if self._mark is not None:
                self._held = self._marked_row()
                self._mark = None
            if self._marked_tensors is not None:
                (tensors, n_tensors), (renames, n_renames) = self._marked_tensors
                self._marked_tensors = None
                if tensors is self._tensors:
                    del self._tensors[:n_tensors]
                if renames is self._renames:
                    del self._renames[:n_renames]
        meta.update(status=status, exit_code=exit_code, error=error)
        if os.getpid() == self.pid:
            self._stop_committer()
        if self.path is None or os.getpid() != self.pid:
            self._write(meta=meta)
            return
        failed_before = self.error is not None
        ended = not failed_before and self._write(meta=meta)
        # Drop the kept journal: one file to copy. That also frees its space, which may be
        # what the end of the run needs on a full disk. A journal left behind is harmless.
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA journal_mode=DELETE")
        if not ended:
            first, self.error = self.error, None
            ended = self._write(meta=meta)  # how the run ended, at least, if it fits now
            self.error = first if failed_before or not ended else None
        self._close()
        if self.error is not None:
            raise TraceWriteError(self.path, self._fault(ended))

    def _close(self) -> None:
        self._stop_committer()
        try:
            self.conn.close()
        except sqlite3.Error as e:
            self.error = self.error or str(e)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _fault(self, ended: bool) -> str:
        """What went wrong and what the file keeps, in one line."""
        n, kept = self.n_kept, self.kept
        steps = (f"the {n} recorded step{'s' if n != 1 else ''} before it ({kept[0]}..{kept[1]})"
                 if n else "no step before it")
        if self.failed_step is not None:
            what = (f"writing stopped at step {self.failed_step}: {steps} "
                    f"{'are' if n != 1 else 'is'} kept in the file")
        elif n:
            what = f"all {n} recorded steps ({kept[0]}..{kept[1]}) are kept in the file"
        else:
            what = "no step was recorded"
        if not ended:
            what += ", but not how the run ended"
        return (f"could not be written to the end ({self.error}); {what}; free some space or "
                "choose another path with -o")

    def reader(self) -> "Trace":
        """A reader on the same data (the in-memory database stays with the writer)."""
        if self._file is not None:
            return load(self._file)
        return Trace(self.conn, "<memory>")


def _remove_new(path: Path) -> None:
    """Delete the trace file this writer has just made (and its journal)."""
    for suffix in ("", "-journal"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink()


