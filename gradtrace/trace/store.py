"""The trace file: a versioned SQLite database, written step by step, read without unpickling.

Why SQLite: every committed transaction survives ``kill -9`` (a step is committed the
moment it ends), a reader never executes anything from the file (tensors are raw bytes
with a dtype and a shape), the schema is self-describing for anyone with ``sqlite3``,
and it comes with Python. coverage.py keeps its data the same way.

Schema (format version 2). Ids are the sequential integers the recorder assigned:
``tid`` a tensor object, ``vid`` a snapshot of a value, ``seq`` a position in the run's
event order, ``sid`` a source line. Everything a step adds goes into its one row (its new
tensors too), so writing a step costs one INSERT and one COMMIT (about 25 us): that is
what makes per-step durability cheap.

- ``meta(key, value)``: ``format`` = ``gradtrace-trace``, ``version``, ``gradtrace_version``,
  ``torch_version``, ``created``, ``script``, ``argv`` (JSON), ``config`` (JSON),
  ``status`` (running | completed | raised | exited | interrupted), ``exit_code``,
  ``error``, ``steps_seen``, ``ops_dropped``, ``modules`` (module path -> class name).
  Every value is JSON.
- ``source(sid, file, line, code, function)``: a line of the user's code.
- ``tensor(tid, name, role, shape, dtype, requires_grad)``: role is param | input |
  activation; ``shape`` JSON. Only tensors first seen outside a recorded step are here;
  the others are in the ``tensors`` column of the step that first saw them.
- ``step(idx, first_seq, last_seq, has_backward, loss, n_ops, n_nodes, n_fresh, n_added,
  n_on_top, n_zero, n_update, n_grad_write, ops_dropped, tensors, body, vidx, vals)``: one
  recorded step. The ``n_*`` columns are counts for summaries (``n_on_top``: the added
  accumulations that landed on a gradient that was not zeroed). ``tensors`` is JSON: a
  list of rows, ``[tid, name, role, shape, dtype, requires_grad]`` for a tensor first seen
  in this step and ``[tid, name]`` for a name given in this step to a tensor seen earlier.
  ``body`` is JSON (below); ``vidx`` the index of the step's values (below) as
  little-endian int64s; ``vals`` the raw little-endian C-order bytes of the values kept in
  full, concatenated.

``body`` holds lists of rows (each a JSON array, fields in this order):

- ``ops``: idx, seq, name, target, inputs, outputs, args, kwargs, grad_fn, module,
  parent, is_graph, sid. In ``args``/``kwargs`` a tensor is the string ``"$t<tid>"`` and a
  string argument that starts with ``$`` has one more ``$`` in front (readers turn them
  back into ``{"tensor": tid}`` and the original string); a tuple (a ``torch.Size`` too) is
  ``{"tuple": [...]}`` (read back as a tuple), a list a JSON list; other non-JSON values are
  ``{"dtype": ...}``, ``{"slice": [start, stop, step]}``, ``{"repr": ...}``.
- ``backward``: seq, api, roots, root_vid, inputs, result_vids, sid (or null).
- ``nodes``: nid, name, op, variable, next, exec_order, grad_out_vids, grad_in_vids.
- ``events``: seq, kind, tensor, idiom, before_vid, after_vid, incoming_vid, fresh, via,
  inferred, sid.
- ``stats``, ``stats_int``, ``dtypes``: with the ``vidx`` column, the index of the step's
  values (see docs/trace-format.md): ``vidx`` is a flat list of ints, per value vid, tid
  (-1: an event or gradient snapshot, else the tensor whose forward value this is), kind
  (0: bytes at ``vals[offset:offset+nbytes]``; 1: statistics only; 2: all zeros, no
  bytes), dtype code (an index into ``dtypes``), offset, nbytes, ndim and the ndim sizes.
  Per kind-1 value in order, ``stats`` holds norm, mean, min, max (null when not finite)
  and ``stats_int`` numel and the count of non-finite elements.

Format 1 (gradtrace 0.1.0 development versions) had no ``tensors`` or ``vidx`` columns: all
tensors were rows of ``tensor`` and the value index was ``body["values"]``. It is still read.

The SQLite header carries ``application_id`` = 0x47545243 ("GTRC") and ``user_version`` =
the format version, so a foreign or newer file is told apart before any table is read.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import sqlite3
import sys
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Iterable

import torch

from ..errors import TraceFileError, UsageError
from .lock import TraceLock
from .model import (
    Backward, Event, GradNode, Op, RunInfo, Source, Stats, Step, TensorInfo, Value,
)

__all__ = ["FORMAT_VERSION", "OLDEST_READABLE", "TraceWriter", "Trace", "load", "is_trace",
           "APPLICATION_ID"]

#: Bump when the schema changes; record the change in docs/trace-format.md.
FORMAT_VERSION = 2
#: The oldest format this version of gradtrace still reads.
OLDEST_READABLE = 1
APPLICATION_ID = 0x47545243  # "GTRC"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE source (sid INTEGER PRIMARY KEY, file TEXT, line INTEGER, code TEXT, function TEXT);
CREATE TABLE tensor (tid INTEGER PRIMARY KEY, name TEXT, role TEXT, shape TEXT, dtype TEXT,
                     requires_grad INTEGER);
CREATE TABLE step (idx INTEGER PRIMARY KEY, first_seq INTEGER, last_seq INTEGER,
                   has_backward INTEGER, loss REAL, n_ops INTEGER, n_nodes INTEGER,
                   n_fresh INTEGER, n_added INTEGER, n_on_top INTEGER, n_zero INTEGER,
                   n_update INTEGER, n_grad_write INTEGER, ops_dropped INTEGER,
                   tensors TEXT, body TEXT, vidx BLOB, vals BLOB);
"""

_TABLES = {"meta", "source", "tensor", "step"}
_STEP_COLUMNS_V1 = ["idx", "first_seq", "last_seq", "has_backward", "loss", "n_ops", "n_nodes",
                    "n_fresh", "n_added", "n_on_top", "n_zero", "n_update", "n_grad_write",
                    "ops_dropped", "body", "vals"]
_STEP_COLUMNS = {1: _STEP_COLUMNS_V1,
                 2: _STEP_COLUMNS_V1[:-2] + ["tensors", "body", "vidx", "vals"]}
_LITTLE = sys.byteorder == "little"

# dtypes numpy can hold; the rest (bfloat16, float8...) are written through a byte view.
_NUMPY_DTYPES = {
    torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dt


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw C-order bytes of a CPU tensor (no grad)."""
    flat = t.detach().resolve_conj().resolve_neg().reshape(-1).contiguous()
    if flat.dtype in _NUMPY_DTYPES:
        return flat.numpy().tobytes()
    return flat.view(torch.uint8).numpy().tobytes()


def tensor_from_bytes(blob: bytes, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
    dt = _dtype_from_name(dtype)
    if math.prod(shape) == 0:
        return torch.empty(shape, dtype=dt)
    return torch.frombuffer(bytearray(blob), dtype=dt).reshape(shape)


_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _finite(x: float) -> float | None:
    """JSON has no NaN or infinity: those statistics are stored as null."""
    return x if x == x and x not in (math.inf, -math.inf) else None


def _int64s(ints: list[int]) -> bytes:
    a = array("q", ints)
    if not _LITTLE:
        a.byteswap()
    return a.tobytes()


def _from_int64s(blob: bytes) -> list[int]:
    a = array("q")
    a.frombytes(blob)
    if not _LITTLE:
        a.byteswap()
    return a.tolist()


def _decode(a):
    """An op argument as the model has it: tensors as {"tensor": tid} (see the schema)."""
    if isinstance(a, str):
        if a.startswith("$t"):
            return {"tensor": int(a[2:])}
        return a[1:] if a.startswith("$$") else a
    if isinstance(a, list):
        return [_decode(x) for x in a]
    if isinstance(a, dict) and "tuple" in a:
        return tuple(_decode(x) for x in a["tuple"])
    if isinstance(a, dict) and "dict" in a:
        return {"dict": {k: _decode(v) for k, v in a["dict"].items()}}
    if isinstance(a, dict) and "slice" in a:
        return {"slice": [_decode(v) for v in a["slice"]]}
    return a


class TraceWriter:
    """Appends a run to a trace file (or to an in-memory database), one step per commit.

    The recorder appends plain rows to the buffers (``sources``, ``tensors``, ``renames``,
    ``ops``, ``nodes``, ``events``, ``backward``), adds values with :meth:`add_stats` and
    :meth:`add_zeros` or, for bytes, appends to ``vints``/``chunks`` itself (its hot path:
    vid, tid or -1, 0, :meth:`code` of the dtype, ``offset``, nbytes, ndim, sizes), and calls
    :meth:`commit_step` when a step ends; nothing of a step is visible to readers before that.

    Opening takes the trace's lock (see :mod:`gradtrace.trace.lock`) and replaces an earlier
    trace at the path, never a file of anything else. A write that fails (a full disk) does
    not break the user's run: later steps are dropped, the steps committed before stay
    readable in place, and :meth:`finish` raises :class:`TraceFileError` saying which.
    """

    def __init__(self, path: Path | None, meta: dict[str, Any]):
        self.path = path
        self.pid = os.getpid()
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
            "torch_version": torch.__version__,
            "status": "running",
            "exit_code": None,
            "error": None,
            "steps_seen": 0,
            "ops_dropped": 0,
        }
        base.update(meta)
        self.sources: list[tuple] = []
        self.tensors: list[tuple] = []
        self.renames: list[tuple] = []
        self._write(meta=base)
        self._reset_step()
        self.closed = False
        if self.error is not None and path is not None:  # stop before the script runs
            error = self.error
            self._close()
            _remove_new(path)
            raise TraceFileError(path, f"cannot write the trace file ({error}); free some space "
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
            raise TraceFileError(path, f"cannot write the trace file ({msg}); choose another "
                                       "path with -o") from None

    def _reset_step(self):
        self.ops: list[list] = []
        self.nodes: list[list] = []
        self.events: list[list] = []
        self.backward: list | None = None
        # The value index, built as values arrive (see the schema: vidx, stats, dtypes).
        self.vints: list[int] = []
        self.chunks: list[bytes] = []
        self.offset = 0
        self.stats: list = []
        self.stats_int: list[int] = []
        self.codes: dict[str, int] = {}

    def code(self, dtype: str) -> int:
        c = self.codes.get(dtype)
        if c is None:
            c = self.codes[dtype] = len(self.codes)
        return c

    def add_stats(self, vid: int, tid: int | None, shape, dtype: str, stats: Stats) -> None:
        self.vints += (vid, -1 if tid is None else tid, 1, self.code(dtype), 0, 0, len(shape), *shape)
        self.stats += (_finite(stats.norm), _finite(stats.mean), _finite(stats.min),
                       _finite(stats.max))
        self.stats_int += (stats.numel, stats.nonfinite)

    def add_zeros(self, vid: int, shape, dtype: str) -> None:
        self.vints += (vid, -1, 2, self.code(dtype), 0, 0, len(shape), *shape)

    def commit_step(self, head: tuple) -> None:
        """Write one step. ``head`` = (idx, first_seq, last_seq, has_backward, loss, n_ops,
        n_nodes, n_fresh, n_added, n_on_top, n_zero, n_update, n_grad_write, ops_dropped)."""
        if self.closed:
            return
        loss = head[4]
        if loss is not None and loss != loss:
            head = head[:4] + ("nan",) + head[5:]  # SQLite would store a NaN REAL as NULL
        body = _json({"ops": self.ops, "backward": self.backward, "nodes": self.nodes,
                      "events": self.events, "stats": self.stats, "stats_int": self.stats_int,
                      "dtypes": list(self.codes)})
        tensors = None
        if self.tensors or self.renames:
            tensors = _json(self.tensors + [(tid, name) for name, tid in self.renames])
            self.tensors, self.renames = [], []
        row = head + (tensors, body, _int64s(self.vints), b"".join(self.chunks))
        self._reset_step()
        self._write(step_row=row)

    def _write(self, step_row: tuple | None = None, meta: dict | None = None) -> bool:
        """One transaction; False if it was not written (now or at an earlier failure)."""
        sources, self.sources = self.sources, []
        if self.error is not None or os.getpid() != self.pid:
            return False  # a write failed before, or this is a forked child (DataLoader workers)
        c = self.conn
        try:
            c.execute("BEGIN")
            try:
                if sources:
                    c.executemany("INSERT INTO source VALUES (?,?,?,?,?)", sources)
                if step_row is not None:
                    c.execute("INSERT INTO step VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                              step_row)
                if meta:
                    if self.tensors:  # seen outside a recorded step
                        c.executemany("INSERT INTO tensor VALUES (?,?,?,?,?,?)",
                                      [(tid, name, role, _json(shape), dtype, rg)
                                       for tid, name, role, shape, dtype, rg in self.tensors])
                    if self.renames:
                        c.executemany("UPDATE tensor SET name=? WHERE tid=?", self.renames)
                    c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, _json(v)) for k, v in meta.items()])
                c.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk): then there
                # is nothing to roll back, and trying would hide the error that matters.
                if c.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        c.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self.error = str(e)
            if step_row is not None:
                self.failed_step = step_row[0]
            return False
        if step_row is not None:
            self.kept = [self.kept[0] if self.kept else step_row[0], step_row[0]]
            self.n_kept += 1
        return True

    def finish(self, status: str, exit_code: int | None = None, error: str | None = None,
               **meta) -> None:
        """Mark how the run ended, leave one self-contained file and let go of the lock.
        Raises :class:`TraceFileError` (after all that) if part of the run could not be
        written, saying what the file keeps."""
        if self.closed:
            return
        self.closed = True
        meta.update(status=status, exit_code=exit_code, error=error)
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
            raise TraceFileError(self.path, self._fault(ended))

    def _close(self) -> None:
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


_SQLITE_MAGIC = b"SQLite format 3\x00"


def is_trace(path, *, replacing: bool = False) -> bool:
    """Whether a gradtrace trace file is at ``path`` (by its SQLite header: the magic string
    and ``application_id``; nothing is opened as a database). With ``replacing``, a file
    there that is not one raises :class:`TraceFileError`: a run overwrites an earlier trace,
    never a file of anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return False
    except OSError as e:
        if not replacing:
            return False
        if isinstance(e, IsADirectoryError):
            raise TraceFileError(path, "is a directory; give a file path such as "
                                       f"{Path(path) / 'trace.gtrace'}") from None
        raise TraceFileError(path, f"cannot write the trace file ({e.strerror or e}); choose "
                                   "another path with -o") from None
    ours = head[:16] == _SQLITE_MAGIC and (int.from_bytes(head[68:72], "big") == APPLICATION_ID
                                           or _wal_says_trace(Path(f"{path}-wal")))
    if not ours and replacing:
        raise TraceFileError(path, "exists and is not a gradtrace trace; choose another path "
                                   "with -o")
    return ours


def _wal_says_trace(wal: Path) -> bool:
    """A trace of an earlier gradtrace (which wrote through a write-ahead log) whose run was
    killed has its header in the log: look there for a copy of page 1 with our id."""
    try:
        with open(wal, "rb") as f:
            header = f.read(32)
            if len(header) < 32 or header[:4] not in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83"):
                return False
            page_size = int.from_bytes(header[8:12], "big")
            page_size = 65536 if page_size == 1 else page_size
            for _ in range(256):  # page 1 is among the first frames of a run
                frame = f.read(24 + page_size)
                if len(frame) < 24 + 72:
                    return False
                if int.from_bytes(frame[:4], "big") == 1 and \
                        int.from_bytes(frame[24 + 68:24 + 72], "big") == APPLICATION_ID:
                    return True
    except OSError:
        pass
    return False


def _check_header(conn: sqlite3.Connection, path: str) -> int:
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise TraceFileError(path, f"truncated or corrupt ({e}); record the run again") from None
    if app != APPLICATION_ID or "meta" not in tables:
        raise TraceFileError(path, "not a gradtrace trace file (an SQLite database of something "
                                   "else); pass a .gtrace file written by `gradtrace run`")
    if version > FORMAT_VERSION:
        raise TraceFileError(path, f"written in trace format {version} by a newer gradtrace; "
                                   f"this one reads formats {OLDEST_READABLE} to {FORMAT_VERSION}: "
                                   "upgrade gradtrace (pip install -U gradtrace)")
    if version < OLDEST_READABLE:
        raise TraceFileError(path, f"trace format {version} is older than this gradtrace reads "
                                   f"({OLDEST_READABLE} to {FORMAT_VERSION}); record it again")
    missing = _TABLES - tables
    if missing:
        raise TraceFileError(path, f"truncated or corrupt: tables {', '.join(sorted(missing))} "
                                   "are missing; record the run again")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(step)")]
    if columns != _STEP_COLUMNS[version]:
        raise TraceFileError(path, f"written by a development version of gradtrace with another "
                                   f"step table (format {version}); record the run again")
    return version


def load(path) -> "Trace":
    """Open a trace file for reading. Raises :class:`TraceFileError` with one line if the
    file is missing, foreign, newer than this gradtrace, truncated or corrupt."""
    p = Path(path)
    if not p.exists():
        raise TraceFileError(p, "no such file; run `gradtrace run SCRIPT` to record one")
    if p.is_dir():
        raise TraceFileError(p, "is a directory; pass the .gtrace file inside it")
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise TraceFileError(p, f"cannot read ({e.strerror})") from None
    if head != b"SQLite format 3\x00":
        what = "empty" if not head else "not a gradtrace trace file"
        raise TraceFileError(p, f"{what}; pass a .gtrace file written by `gradtrace run`")
    wal = Path(str(p) + "-wal")
    # A file whose run was killed still has its write-ahead log beside it: open it
    # read-write so SQLite folds the committed steps in. Otherwise read-only.
    writable = os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)
    uri = f"file:{p.resolve().as_posix()}?mode={'rw' if writable else 'ro'}"
    if not writable and not wal.exists():
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        version = _check_header(conn, str(p))
        row = conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            detail = " ".join(str(row[0]).split())[:160] if row else "no answer"
            raise TraceFileError(p, f"truncated or corrupt ({detail}); record the run again")
    except sqlite3.DatabaseError as e:
        raise TraceFileError(p, f"truncated or corrupt ({e}); record the run again") from None
    return Trace(conn, str(p), version)


class _StepList(Sequence):
    """The recorded steps, read from the file on demand (a few kept in a small cache)."""

    def __init__(self, trace: "Trace", indices: list[int]):
        self._trace = trace
        self._indices = indices
        self._cache: OrderedDict[int, Step] = OrderedDict()

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        idx = self._indices[i]
        step = self._cache.get(idx)
        if step is None:
            step = self._trace._read_step(idx)
            self._cache[idx] = step
            if len(self._cache) > 64:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(idx)
        return step

    @property
    def indices(self) -> list[int]:
        """The run's step numbers of the recorded steps, in order."""
        return list(self._indices)


class Trace:
    """A recorded run, read from a trace file (or the in-memory database of a live trace)."""

    def __init__(self, conn: sqlite3.Connection, path: str, version: int = FORMAT_VERSION):
        self._conn = conn
        self.path = path
        self._sources: dict[int, Source] | None = None
        self._tensors: dict[int, TensorInfo] | None = None
        self._steps: _StepList | None = None
        self._version = version

    # -- queries, with file errors turned into one line -----------------------------------
    def _q(self, sql: str, args: Iterable = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as e:
            raise TraceFileError(self.path, f"truncated or corrupt ({e}); record the run again") from None

    @property
    def info(self) -> RunInfo:
        meta = {k: json.loads(v) for k, v in self._q("SELECT key, value FROM meta")}
        return RunInfo(
            format_version=int(meta.get("version", FORMAT_VERSION)),
            gradtrace_version=str(meta.get("gradtrace_version", "")),
            torch_version=str(meta.get("torch_version", "")),
            created=str(meta.get("created", "")),
            script=meta.get("script"),
            argv=tuple(meta.get("argv") or ()),
            status=str(meta.get("status", "running")),
            exit_code=meta.get("exit_code"),
            error=meta.get("error"),
            config=dict(meta.get("config") or {}),
            steps_seen=int(meta.get("steps_seen") or 0),
            ops_dropped=int(meta.get("ops_dropped") or 0),
            modules=dict(meta.get("modules") or {}),
        )

    @property
    def sources(self) -> dict[int, Source]:
        if self._sources is None:
            self._sources = {sid: Source(f, l, c or "", fn or "")
                             for sid, f, l, c, fn in self._q("SELECT * FROM source")}
        return self._sources

    @property
    def tensors(self) -> dict[int, TensorInfo]:
        """Every tensor object the run touched, by tid."""
        if self._tensors is None:
            rows = {tid: [tid, name, role, json.loads(shape), dtype, rg]
                    for tid, name, role, shape, dtype, rg in self._q("SELECT * FROM tensor")}
            if self._version >= 2:
                for idx, text in self._q("SELECT idx, tensors FROM step WHERE tensors IS NOT NULL "
                                         "ORDER BY idx"):
                    try:
                        for row in json.loads(text):
                            if len(row) == 2:  # a name given later
                                if row[0] in rows:
                                    rows[row[0]][1] = row[1]
                            else:
                                rows[row[0]] = list(row)
                    except (ValueError, TypeError, IndexError) as e:
                        raise TraceFileError(self.path, f"step {idx} is corrupt ({type(e).__name__}: "
                                                        f"{e}); record the run again") from None
            self._tensors = {
                tid: TensorInfo(tid, name, role, tuple(shape), dtype, bool(rg))
                for tid, name, role, shape, dtype, rg in (rows[k] for k in sorted(rows))
            }
        return self._tensors

    def name(self, tid: int) -> str:
        info = self.tensors.get(tid)
        return info.label if info else f"t{tid}"

    def find(self, name: str) -> TensorInfo | None:
        """The tensor named ``name`` (``w``, ``net.0.weight``); the first one seen."""
        for info in self.tensors.values():
            if info.name == name:
                return info
        return None

    @property
    def params(self) -> list[TensorInfo]:
        return [t for t in self.tensors.values() if t.role == "param"]

    @property
    def steps(self) -> _StepList:
        if self._steps is None:
            idx = [r[0] for r in self._q("SELECT idx FROM step ORDER BY idx")]
            self._steps = _StepList(self, idx)
        return self._steps

    def step(self, index: int) -> Step:
        """The step with run step number ``index`` (equal to ``steps[index]`` when every step
        was recorded)."""
        try:
            pos = self.steps.indices.index(index)
        except ValueError:
            raise KeyError(f"step {index} was not recorded") from None
        return self.steps[pos]

    def select(self, spec: str | int | None = "first") -> Step:
        """A step by run step number, ``"first"`` or ``"last"`` (the last with a backward
        pass). Raises :class:`UsageError` with one line saying what was recorded."""
        steps = self.steps
        if len(steps) == 0:
            raise UsageError(f"{self.path} has no recorded steps (did the script call backward()?)")
        if spec is None or spec == "first":
            return steps[0]
        if spec == "last":
            for i in range(len(steps) - 1, -1, -1):
                if steps[i].backward is not None:
                    return steps[i]
            raise UsageError(f"{self.path} has no step with a backward pass")
        try:
            n = int(spec)
        except (TypeError, ValueError):
            raise UsageError(f"--step takes a step number, 'first' or 'last', not {spec!r}") from None
        try:
            return self.step(n)
        except KeyError:
            idx = steps.indices
            gaps = f" ({len(idx)} of them)" if len(idx) != idx[-1] - idx[0] + 1 else ""
            raise UsageError(f"step {n} was not recorded; recorded steps are {idx[0]}..{idx[-1]}"
                             f"{gaps}") from None

    @property
    def events(self) -> list:
        """Every op, backward pass and event of the run, in order."""
        out: list = []
        for s in self.steps:
            out.extend(s.timeline())
        return out

    def step_rows(self) -> list[dict[str, Any]]:
        """Per-step counts straight from the step table (cheap: no bodies are parsed)."""
        rows = []
        for (idx, has_bw, loss, n_ops, n_nodes, n_fresh, n_added, n_on_top, n_zero, n_update, n_gw,
             dropped) in self._q("SELECT idx, has_backward, loss, n_ops, n_nodes, n_fresh, n_added, "
                                 "n_on_top, n_zero, n_update, n_grad_write, ops_dropped FROM step "
                                 "ORDER BY idx"):
            if isinstance(loss, (str, bytes)):
                loss = float(loss)
            rows.append({
                "index": idx, "ops": n_ops, "backward_nodes": n_nodes,
                "accumulate_fresh": n_fresh, "accumulate_added": n_added,
                "accumulate_on_top": n_on_top, "zeroings": n_zero,
                "updates": n_update, "grad_writes": n_gw, "loss": loss,
                "has_backward": bool(has_bw), "ops_dropped": dropped,
            })
        return rows

    # -- reading one step -------------------------------------------------------------------
    def _read_step(self, idx: int) -> Step:
        if self._version >= 2:
            rows = self._q("SELECT body, vidx, vals, ops_dropped FROM step WHERE idx=?", (idx,))
        else:
            rows = [(b, None, v, d) for b, v, d in
                    self._q("SELECT body, vals, ops_dropped FROM step WHERE idx=?", (idx,))]
        if not rows:
            raise KeyError(f"step {idx} was not recorded")
        body_text, vidx, blob, dropped = rows[0]
        try:
            body = json.loads(body_text)
            ints = body["values"] if vidx is None else _from_int64s(vidx)
            return self._build_step(idx, body, ints, blob or b"", int(dropped or 0))
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
            raise TraceFileError(self.path, f"step {idx} is corrupt ({type(e).__name__}: {e}); "
                                            "record the run again") from None

    def _build_step(self, idx: int, body: dict, ints: list[int], blob: bytes, dropped: int) -> Step:
        src = self.sources.get
        vals: dict[int, Value] = {}
        by_tid: dict[int, Value] = {}
        nan = float("nan")
        floats, stats_int, dtypes = body["stats"], body["stats_int"], body["dtypes"]
        i = si = 0
        while i < len(ints):
            vid, tid, kind, code, offset, nbytes, ndim = ints[i:i + 7]
            shp = tuple(ints[i + 7:i + 7 + ndim])
            i += 7 + ndim
            dtype = dtypes[code]
            if kind == 0:
                v = Value(vid, shp, dtype, tensor_from_bytes(blob[offset:offset + nbytes], shp, dtype))
            elif kind == 2:
                v = Value(vid, shp, dtype, torch.zeros(shp, dtype=_dtype_from_name(dtype)))
            else:
                norm, mean, mn, mx = floats[4 * si:4 * si + 4]
                n, nonfinite = stats_int[2 * si:2 * si + 2]
                si += 1
                v = Value(vid, shp, dtype, None,
                          Stats(int(n), *(nan if x is None else float(x) for x in (norm, mean, mn, mx)),
                                int(nonfinite or 0)))
            vals[vid] = v
            if tid >= 0:
                by_tid.setdefault(tid, v)
        v = vals.get

        def vv(x):
            return None if x is None else vals[x]

        ops = tuple(
            Op(index=i, seq=seq, step=idx, name=name, target=target, inputs=tuple(inputs),
               outputs=tuple(outputs), args=tuple(_decode(a) for a in args),
               kwargs={k: _decode(a) for k, a in kwargs.items()}, grad_fn=grad_fn,
               module=module, parent=parent, is_graph=bool(is_graph),
               source=src(sid) if sid is not None else None)
            for i, seq, name, target, inputs, outputs, args, kwargs, grad_fn, module, parent,
            is_graph, sid in sorted(body["ops"], key=lambda r: r[0])
        )
        backward = None
        if body.get("backward"):
            seq, api, roots, root_vid, inputs, result_vids, sid = body["backward"]
            nodes = tuple(
                GradNode(nid=nid, name=name, op=op, variable=variable, next=tuple(nxt), order=order,
                         grad_outputs=tuple(vv(x) for x in go), grad_inputs=tuple(vv(x) for x in gi))
                for nid, name, op, variable, nxt, order, go, gi in body["nodes"]
            )
            backward = Backward(seq=seq, step=idx, api=api, roots=tuple(roots), nodes=nodes,
                                source=src(sid) if sid is not None else None,
                                root_value=vv(root_vid), inputs=tuple(inputs),
                                results=tuple(vv(x) for x in result_vids))
        events = tuple(
            Event(seq=seq, step=idx, kind=kind, tensor=tensor, idiom=idiom, before=vv(b),
                  after=vv(a), source=src(sid) if sid is not None else None, via=via,
                  fresh=None if fresh is None else bool(fresh), incoming=vv(inc),
                  inferred=bool(inferred))
            for seq, kind, tensor, idiom, b, a, inc, fresh, via, inferred, sid in body["events"]
        )
        return Step(index=idx, ops=ops, backward=backward, events=events, values=by_tid,
                    tensors=self.tensors, ops_dropped=dropped)

    # -- conveniences that live in upper layers (imported on use) ----------------------------
    def check(self, **options):
        """Gradient checks and training diagnostics (see ``gradtrace.analysis.check``)."""
        from ..analysis.check import check_trace

        return check_trace(self, **options)

    def animate(self, kind: str = "training", **options):
        """An animation of this trace that saves to gif/mp4/html and shows in Jupyter."""
        from ..render.animate import animation_of_trace

        return animation_of_trace(self, kind=kind, **options)

    def close(self) -> None:
        self._conn.close()

    def __repr__(self) -> str:
        return f"<gradtrace.Trace {self.path} steps={len(self.steps)}>"
