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
# OR REPLACE: a step written provisionally is written again when it ends
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
        self.pid = os.getpid()
        self.window = window
        #: Bytes of the step rows written (a step written again counts once): the budget's measure.
        self.step_bytes = 0
        self.scalar_bytes = 0
        self._row_bytes: dict[int, int] = {}  # step -> bytes of its row, while it may be written again
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
        self._open_step: tuple | None = None  # (head, sizes) of a step written provisionally
        #: The row of a step written provisionally, held back until the transaction commits:
        #: the step's final row usually replaces it before that (most of a step's bytes are
        #: then written once, not twice); a commit writes it first, so kill -9 keeps it.
        self._deferred: tuple | None = None
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
        # What the step's lists encoded to when it was written provisionally: its final
        # write encodes only the rows added since (rows are never changed once added).
        self._encoded: dict[str, tuple[int, str]] = {}

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

    def commit_step(self, head: StepHead, provisional: bool = False) -> None:
        """Write the step whose rows were added since the last commit, in one transaction.

        ``provisional``: the step is written now (a kill -9 keeps it) and stays open: rows
        added after it belong to it too, and the next ``commit_step`` writes the whole step
        again in its place (nothing, if nothing was added since)."""
        if self.closed:
            return
        sizes = self._sizes()
        if not provisional and self._open_step is not None and self._open_step == (head, sizes):
            self._tensors, self._renames = [], []
            self._reset_step()
            self._open_step = None
            if self._deferred is not None:  # nothing added since: the provisional row is final
                self._write(step_row=self._deferred)
            return
        if head.loss is not None and head.loss != head.loss:
            head = head._replace(loss="nan")  # SQLite would store a NaN REAL as NULL
        body = (f'{{"ops":{self._encode("ops", self._ops)},"backward":{_json(self._backward)},'
                f'"nodes":{self._encode("nodes", self._nodes)},'
                f'"events":{self._encode("events", self._events)},'
                f'"stats":{self._encode("stats", self._stats)},'
                f'"stats_int":{self._encode("stats_int", self._stats_int)},'
                f'"dtypes":{_json(list(self._codes))}}}')
        tensors = None
        if self._tensors or self._renames:
            tensors = _json(self._tensors + [(tid, name) for name, tid in self._renames])
        vidx, vals = ck.to_int64s(self._vints), b"".join(self._chunks)
        row = tuple(head) + (tensors, body, vidx, vals)
        size = 64 + len(body) + len(vidx) + len(vals) + (len(tensors) if tensors else 0)
        self.step_bytes += size - self._row_bytes.pop(head.idx, 0)
        if provisional:
            self._row_bytes[head.idx] = size
        if provisional:
            self._open_step = (head, sizes)
        else:
            self._tensors, self._renames = [], []
            self._reset_step()
            self._open_step = None
        self._write(step_row=row, defer=provisional and self.path is not None)

    def _encode(self, key: str, rows: list) -> str:
        """``_json(rows)``, encoding only the rows added since the step's last write."""
        done, text = self._encoded.get(key, (0, "[]"))
        n = len(rows)
        if n < done:  # not a step's list (they only grow): encoded whole
            done, text = 0, "[]"
        if n != done:
            tail = _json(rows[done:] if done else rows)
            text = tail if not done else f"{text[:-1]},{tail[1:]}"
            self._encoded[key] = (n, text)
        return text

    def _sizes(self) -> tuple:
        """How much the open step holds: equal sizes, nothing added since."""
        return (len(self._ops), len(self._nodes), len(self._events), len(self._vints),
                len(self._tensors), len(self._renames), self._backward is not None)

    def _write(self, step_row: tuple | None = None, meta: dict | None = None,
               defer: bool = False) -> bool:
        """Add to the open transaction (begun if none is) and commit it when the window has
        passed or the run ends (``meta``); False if it was not written (now or at an earlier
        failure). ``defer``: ``step_row`` is a provisional row, held until the commit."""
        if self.error is not None or os.getpid() != self.pid:
            self._sources, self._scalars, self._scalar_params = [], [], []
            self._deferred = None
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
                if step_row is not None and defer:
                    held, self._deferred = self._deferred, step_row
                    if held is not None and held[0] != step_row[0]:  # another step's: written
                        self._pending.append(held[0])
                        c.execute(_STEP_INSERT, held)
                    step_row = None
                elif step_row is not None:
                    if self._deferred is not None and self._deferred[0] == step_row[0]:
                        self._deferred = None  # its final row replaces it, unwritten
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
                    self._committer = threading.Thread(target=self._commit_when_quiet,
                                                       name="gradtrace-commit", daemon=True)
                    self._committer.start()
            except sqlite3.Error as e:
                self._failed(e)
                return False
        return True

    def sync(self) -> None:
        """Commit the open transaction now (the committer does it once the window passes)."""
        if os.getpid() != self.pid:
            return
        with self._mutex:
            if self._in_tx and self.error is None:
                try:
                    self._commit()
                except sqlite3.Error as e:
                    self._failed(e)

    def _commit(self) -> None:
        """Commit the open transaction (the mutex held); the steps in it are kept from now on."""
        if self._deferred is not None:
            row, self._deferred = self._deferred, None
            self._pending.append(row[0])
            self.conn.execute(_STEP_INSERT, row)
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
        self._deferred = None
        self.error = str(e)
        if self._pending:
            self.failed_step = self._pending[0]
        self._pending = []

    def _commit_when_quiet(self) -> None:
        """The committer thread: a transaction left open for a window is committed, so the
        steps of a run that has gone quiet are kept too (kill -9 then loses nothing)."""
        while not self._quit.wait(self.window / 2):
            with self._mutex:
                if self._in_tx and self.error is None and \
                        time.monotonic() - self._tx_since >= self.window:
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
        if self._open_step is not None:
            # A step written provisionally and never ended: the file keeps it as written;
            # its tensors are in its row, not "seen outside a recorded step".
            sizes = self._open_step[1]
            del self._tensors[:sizes[4]], self._renames[:sizes[5]]
            self._open_step = None
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
        if self.path is not None:
            return load(self.path)
        return Trace(self.conn, "<memory>")


def _remove_new(path: Path) -> None:
    """Delete the trace file this writer has just made (and its journal)."""
    for suffix in ("", "-journal"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink()


