"""The trace file: a versioned SQLite database, written step by step, read without unpickling.

Why SQLite: every committed transaction survives ``kill -9`` (a step is committed the
moment it ends), a reader never executes anything from the file (tensors are raw bytes
with a dtype and a shape), the schema is self-describing for anyone with ``sqlite3``,
and it comes with Python. coverage.py keeps its data the same way.

Schema (format version 3). Ids are the sequential integers the recorder assigned:
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

``body`` holds lists of rows, each a JSON array: ``ops``, ``backward`` (one row, or null),
``nodes`` and ``events``; their fields, in order, are the named tuples of
:mod:`gradtrace.tracefile.rows` (``OpRow``, ``BackwardRow``, ``NodeRow``, ``EventRow``), which
the writer writes and the reader reads (so are the ``source``, ``tensor`` and step-head
columns: ``SourceRow``, ``TensorRow``, ``StepHead``). In an op's ``args``/``kwargs`` a tensor
is the string ``"$t<tid>"`` and a string argument that starts with ``$`` has one more ``$``
in front (readers turn them back into ``{"tensor": tid}`` and the original string); a tuple
(a ``torch.Size`` too) is ``{"tuple": [...]}`` (read back as a tuple), a list a JSON list;
other non-JSON values are ``{"dtype": ...}``, ``{"slice": [start, stop, step]}``,
``{"repr": ...}``. Besides the rows:

- ``stats``, ``stats_int``, ``dtypes``: with the ``vidx`` column, the index of the step's
  values (see docs/trace-format.md): ``vidx`` is a flat list of ints, per value vid, tid
  (-1: an event or gradient snapshot, else the tensor whose forward value this is), kind
  (0: bytes at ``vals[offset:offset+nbytes]``; 1: statistics only; 2: all zeros, no
  bytes), dtype code (an index into ``dtypes``), offset, nbytes, ndim and the ndim sizes.
  Per kind-1 value in order, ``stats`` holds norm, mean, min, max (null when not finite)
  and ``stats_int`` numel and the count of non-finite elements.

Version history (each still read):

- 1 (gradtrace 0.1.0 development versions): no ``tensors`` or ``vidx`` columns: all tensors
  were rows of ``tensor`` and the value index was ``body["values"]``.
- 2: a step's new tensors in its ``tensors`` column, the value index in ``vidx``.
- 3: event rows end with ``accumulation`` (fresh | zeros | added, as the recorder saw the
  ``.grad`` before backward wrote into it) and ``through_data``. For format 1 and 2 files
  the reader derives both from the idiom (and the value before) in ``_old_event_fields``.

The SQLite header carries ``application_id`` = 0x47545243 ("GTRC") and ``user_version`` =
the format version, so a foreign or newer file is told apart before any table is read.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import sqlite3
import stat
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import quote

if TYPE_CHECKING:  # torch is imported where tensors are written: reading needs none
    import torch

from ..errors import NotRecordedError, TraceFileError, TraceWriteError, UsageError
from . import checked as ck
from . import conveniences
from .checked import Limits, Malformed
from .dtypes import dtype_name
from .lock import TraceLock
from .model import (
    ACCUMULATIONS, EVENT_KINDS, Backward, Event, GradNode, Op, RunInfo, Source, Stats, Step,
    TensorInfo, Value,
)
from .rows import (
    BackwardRow, EventRow, NodeRow, OpRow, SourceRow, StepHead, TensorRow, decode, step_columns,
)

__all__ = ["FORMAT_VERSION", "OLDEST_READABLE", "TraceWriter", "Trace", "load", "is_trace",
           "APPLICATION_ID", "Limits", "dtype_name"]

#: Bump when the schema changes; record the change in docs/trace-format.md.
FORMAT_VERSION = 3
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
            return
        if head.loss is not None and head.loss != head.loss:
            head = head._replace(loss="nan")  # SQLite would store a NaN REAL as NULL
        body = _json({"ops": self._ops, "backward": self._backward, "nodes": self._nodes,
                      "events": self._events, "stats": self._stats, "stats_int": self._stats_int,
                      "dtypes": list(self._codes)})
        tensors = None
        if self._tensors or self._renames:
            tensors = _json(self._tensors + [(tid, name) for name, tid in self._renames])
        row = tuple(head) + (tensors, body, ck.to_int64s(self._vints), b"".join(self._chunks))
        if provisional:
            self._open_step = (head, sizes)
        else:
            self._tensors, self._renames = [], []
            self._reset_step()
            self._open_step = None
        self._write(step_row=row)

    def _sizes(self) -> tuple:
        """How much the open step holds: equal sizes, nothing added since."""
        return (len(self._ops), len(self._nodes), len(self._events), len(self._vints),
                len(self._tensors), len(self._renames), self._backward is not None)

    def _write(self, step_row: tuple | None = None, meta: dict | None = None) -> bool:
        """One transaction; False if it was not written (now or at an earlier failure)."""
        sources, self._sources = self._sources, []
        if self.error is not None or os.getpid() != self.pid:
            return False  # a write failed before, or this is a forked child (DataLoader workers)
        c = self.conn
        try:
            c.execute("BEGIN")
            try:
                if sources:
                    c.executemany("INSERT INTO source VALUES (?,?,?,?,?)", sources)
                if step_row is not None:
                    # OR REPLACE: a step written provisionally is written again when it ends
                    c.execute("INSERT OR REPLACE INTO step VALUES "
                              "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", step_row)
                if meta:
                    if self._tensors:  # seen outside a recorded step
                        c.executemany("INSERT INTO tensor VALUES (?,?,?,?,?,?)",
                                      [r._replace(shape=_json(r.shape)) for r in self._tensors])
                    if self._renames:
                        c.executemany("UPDATE tensor SET name=? WHERE tid=?", self._renames)
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
        if step_row is not None and not (self.kept and self.kept[1] == step_row[0]):
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
        if self._open_step is not None:
            # A step written provisionally and never ended: the file keeps it as written;
            # its tensors are in its row, not "seen outside a recorded step".
            sizes = self._open_step[1]
            del self._tensors[:sizes[4]], self._renames[:sizes[5]]
            self._open_step = None
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
            raise TraceWriteError(self.path, self._fault(ended))

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
        raise TraceWriteError(path, f"cannot write the trace file ({e.strerror or e}); choose "
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
    for table, want in (("meta", ("key", "value")), ("source", SourceRow._fields),
                        ("tensor", TensorRow._fields), ("step", step_columns(version))):
        # table_xinfo lists generated and hidden columns too: a reader computes nothing.
        cols = [(r[1], r[6]) for r in conn.execute(f"PRAGMA table_xinfo({table})")]
        if cols != [(c, 0) for c in want]:
            raise TraceFileError(path, f"the {table} table does not have the columns gradtrace "
                                       f"writes (format {version}); record the run again")
    return version


def _sqlite_uri(p: Path, mode: str) -> str:
    """A file: URI SQLite reads as exactly this path (``#``, ``?``, ``%`` included)."""
    return "file:" + quote(p.resolve().as_posix(), safe="/") + f"?mode={mode}"


def load(path, *, limits: Limits | None = None) -> "Trace":
    """Open a trace file for reading. Raises :class:`TraceFileError` with one line if the
    file is missing, not a regular file, foreign, newer than this gradtrace, truncated or
    corrupt; reading a step checks it the same way (see ``trace.checked``). ``limits``
    bounds what reading may allocate."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise TraceFileError(p, "no such file; run `gradtrace run SCRIPT` to record one") from None
    except OSError as e:
        raise TraceFileError(p, f"cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise TraceFileError(p, "is a directory; pass the .gtrace file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise TraceFileError(p, "is not a regular file (a pipe or a device); pass a .gtrace file")
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
    uri = _sqlite_uri(p, "rw" if writable else "ro")
    if not writable and not wal.exists():
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        # Nothing in the file's schema (views, triggers, generated columns) may call
        # functions with side effects while gradtrace reads it.
        conn.execute("PRAGMA trusted_schema=OFF")
        version = _check_header(conn, str(p))
        row = conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            detail = " ".join(str(row[0]).split())[:160] if row else "no answer"
            raise TraceFileError(p, f"truncated or corrupt ({detail}); record the run again")
    except sqlite3.DatabaseError as e:
        raise TraceFileError(p, f"truncated or corrupt ({e}); record the run again") from None
    return Trace(conn, str(p), version, limits=limits)


class _StepList(Sequence):
    """The recorded steps, read from the file on demand. Recently read steps are kept, up to
    :data:`CACHE_STEPS` of them and :data:`CACHE_BYTES` of tensor data, so a pass over the run
    reads each once, and the passes `gradtrace run` makes after a small run (the check, the
    animations, the report) read each of its steps once between them."""

    #: Steps kept: every step of a run that `gradtrace run` animates by itself is a few
    #: hundred; the byte bound below is what keeps a run of big steps in check.
    CACHE_STEPS = 1024
    CACHE_BYTES = 256 << 20

    def __init__(self, trace: "Trace", indices: list[int]):
        self._trace = trace
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
        step, size = self._trace._read_step(idx)
        self._cache[idx] = (step, size)
        self._bytes += size
        while len(self._cache) > self.CACHE_STEPS or (self._bytes > self.CACHE_BYTES and len(self._cache) > 1):
            _, (_, old) = self._cache.popitem(last=False)
            self._bytes -= old
        return step

    @property
    def indices(self) -> list[int]:
        """The run's step numbers of the recorded steps, in order."""
        return list(self._indices)


_STATUSES = ("running", "completed", "raised", "exited", "interrupted")


class Trace:
    """A recorded run, read from a trace file (or the in-memory database of a live trace).

    Everything read from the file is checked on the way in (``trace.checked``): a part that
    is not what gradtrace writes raises :class:`TraceFileError` naming the file, the table
    or step, and what is wrong.
    """

    def __init__(self, conn: sqlite3.Connection, path: str, version: int = FORMAT_VERSION, *,
                 limits: Limits | None = None):
        self._conn = conn
        self.path = path
        self.limits = limits or Limits()
        self._info: RunInfo | None = None
        self._sources: dict[int, Source] | None = None
        self._tensors: dict[int, TensorInfo] | None = None
        self._steps: _StepList | None = None
        self._rows: list[dict[str, Any]] | None = None
        self._version = version

    # -- queries, with file errors turned into one line -----------------------------------
    def _q(self, sql: str, args: Iterable = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as e:
            raise TraceFileError(self.path, f"truncated or corrupt ({e}); record the run again") from None
        except (MemoryError, OverflowError) as e:
            raise TraceFileError(self.path, f"holds a value too large to read ({type(e).__name__})") from None

    def _bad(self, e: Malformed) -> TraceFileError:
        return TraceFileError(self.path, f"{e}; the file is damaged or was not written by "
                                         "gradtrace: record the run again")

    @property
    def info(self) -> RunInfo:
        if self._info is None:
            try:
                self._info = self._read_info()
            except Malformed as e:
                raise self._bad(e) from None
        return self._info

    def _read_info(self) -> RunInfo:
        meta = {}
        for k, v in self._q("SELECT key, value FROM meta"):
            meta[ck.text(k, "a meta key")] = ck.json_value(v, f"meta {str(k)[:40]!r}")

        def get(key, check, default=None):
            v = meta.get(key)
            return default if v is None else check(v, f"meta {key!r}")

        status = get("status", ck.text, "running")
        if status not in _STATUSES:
            raise Malformed(f"meta 'status' is {status[:40]!r}, not one of {', '.join(_STATUSES)}")
        argv = get("argv", lambda v, w: [ck.text(a, w) for a in (v if isinstance(v, list) else [v])], [])
        config = get("config", _obj, {})
        modules = get("modules", _obj, {})
        for k, v in modules.items():
            ck.text(v, f"meta 'modules' of {k[:40]!r}")
        return RunInfo(
            format_version=get("version", ck.integer, FORMAT_VERSION),
            gradtrace_version=get("gradtrace_version", ck.text, ""),
            torch_version=get("torch_version", ck.text, ""),
            created=get("created", ck.text, ""),
            script=get("script", ck.text),
            argv=tuple(argv),
            status=status,
            exit_code=get("exit_code", ck.integer),
            error=get("error", ck.text),
            config=config,
            steps_seen=get("steps_seen", lambda v, w: ck.integer(v, w, 0), 0),
            ops_dropped=get("ops_dropped", lambda v, w: ck.integer(v, w, 0), 0),
            modules=modules,
        )

    @property
    def sources(self) -> dict[int, Source]:
        if self._sources is None:
            out = {}
            try:
                for r in self._q(f"SELECT {', '.join(SourceRow._fields)} FROM source"):
                    r = SourceRow(*r)
                    w = f"source line {r.sid}"
                    out[ck.integer(r.sid, "a source id")] = Source(
                        ck.text(r.file, f"{w}'s file"), ck.integer(r.line, f"{w}'s line number"),
                        ck.opt_text(r.code, f"{w}'s code") or "",
                        ck.opt_text(r.function, f"{w}'s function") or "")
            except Malformed as e:
                raise self._bad(e) from None
            self._sources = out
        return self._sources

    @property
    def tensors(self) -> dict[int, TensorInfo]:
        """Every tensor object the run touched, by tid."""
        if self._tensors is None:
            try:
                self._tensors = self._read_tensors()
            except Malformed as e:
                raise self._bad(e) from None
        return self._tensors

    def _read_tensors(self) -> dict[int, TensorInfo]:
        rows: dict[int, TensorInfo] = {}
        for r in self._q(f"SELECT {', '.join(TensorRow._fields)} FROM tensor"):
            tid = ck.integer(r[0], "a tensor id")
            row = TensorRow(*r)
            shape = ck.json_value(row.shape, f"tensor {tid}'s shape")
            rows[tid] = self._tensor_info(row._replace(shape=shape), f"tensor {tid}")
        if self._version >= 2:
            for idx, raw in self._q("SELECT idx, tensors FROM step WHERE tensors IS NOT NULL "
                                    "ORDER BY idx"):
                where = f"step {idx}'s tensors"
                listed = ck.json_value(raw, where)
                if not isinstance(listed, list):
                    raise Malformed(f"{where} is not a list")
                for row in listed:
                    if isinstance(row, list) and len(row) == 2:  # a name given later
                        tid = ck.integer(row[0], f"{where}: a tensor id")
                        name = ck.opt_text(row[1], f"{where}: tensor {tid}'s name")
                        if tid in rows:
                            rows[tid] = dataclasses.replace(rows[tid], name=name)
                    else:
                        info = self._tensor_info(decode(TensorRow, row, f"{where}: a row", self._version),
                                                 where)
                        rows[info.tid] = info
        return {tid: rows[tid] for tid in sorted(rows)}

    def _tensor_info(self, r: TensorRow, where: str) -> TensorInfo:
        tid = ck.integer(r.tid, f"{where}: a tensor id")
        w = f"{where}: tensor {tid}"
        if r.role not in ("param", "input", "activation"):
            raise Malformed(f"{w} has role {str(r.role)[:20]!r}, not param, input or activation")
        return TensorInfo(tid, ck.opt_text(r.name, f"{w}'s name"), r.role,
                          ck.shape(r.shape, f"{w}'s shape", self.limits), ck.text(r.dtype, f"{w}'s dtype"),
                          ck.flag(r.requires_grad, f"{w}'s requires_grad"))

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
            self._steps = _StepList(self, [r["index"] for r in self.step_rows()])
        return self._steps

    def step(self, index: int) -> Step:
        """The step with run step number ``index`` (equal to ``steps[index]`` when every step
        was recorded)."""
        pos = bisect.bisect_left(self.steps._indices, index)
        if pos == len(self.steps) or self.steps._indices[pos] != index:
            raise NotRecordedError(f"step {index} was not recorded; {self._recorded_steps()}")
        return self.steps[pos]

    def _recorded_steps(self) -> str:
        """What :meth:`step` can give, for its error: ``recorded steps are 0..9``."""
        idx = self.steps.indices
        if not idx:
            return f"{self.path} has no recorded steps"
        gaps = f" ({len(idx)} of them)" if len(idx) != idx[-1] - idx[0] + 1 else ""
        return f"recorded steps are {idx[0]}..{idx[-1]}{gaps}"

    def select(self, spec: str | int | None = "first") -> Step:
        """A step by run step number, ``"first"`` or ``"last"`` (the last with a backward
        pass). Raises :class:`UsageError` with one line saying what was recorded."""
        steps = self.steps
        if len(steps) == 0:
            raise UsageError(f"{self.path} has no recorded steps (did the script call backward()?)")
        if spec is None or spec == "first":
            return steps[0]
        if spec == "last":
            for row in reversed(self.step_rows()):
                if row["has_backward"]:
                    return self.step(row["index"])
            raise UsageError(f"{self.path} has no step with a backward pass")
        try:
            n = int(spec)
        except (TypeError, ValueError):
            raise UsageError(f"--step takes a step number, 'first' or 'last', not {spec!r}") from None
        try:
            return self.step(n)
        except KeyError:
            raise UsageError(f"step {n} was not recorded; {self._recorded_steps()}") from None

    @property
    def events(self) -> list:
        """Every op, backward pass and event of the run, in order."""
        out: list = []
        for s in self.steps:
            out.extend(s.timeline())
        return out

    def step_rows(self) -> list[dict[str, Any]]:
        """Per-step counts straight from the step table (cheap: no bodies are parsed)."""
        if self._rows is None:
            try:
                self._rows = [self._step_row(r) for r in self._q(
                    "SELECT idx, has_backward, loss, n_ops, n_nodes, n_fresh, n_added, n_on_top, "
                    "n_zero, n_update, n_grad_write, ops_dropped, first_seq, last_seq FROM step "
                    "ORDER BY idx")]
            except Malformed as e:
                raise self._bad(e) from None
        return list(self._rows)

    @staticmethod
    def _step_row(r: tuple) -> dict[str, Any]:
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

    # -- reading one step -------------------------------------------------------------------
    def _read_step(self, idx: int) -> tuple[Step, int]:
        """The step, checked, and the bytes of tensor data it holds."""
        if self._version >= 2:
            rows = self._q("SELECT body, vidx, vals, ops_dropped FROM step WHERE idx=?", (idx,))
        else:
            rows = [(b, None, v, d) for b, v, d in
                    self._q("SELECT body, vals, ops_dropped FROM step WHERE idx=?", (idx,))]
        if not rows:
            raise NotRecordedError(f"step {idx} was not recorded; {self._recorded_steps()}")
        body_text, vidx, blob, dropped = rows[0]
        where = f"step {idx}"
        try:
            body = ck.json_value(body_text, f"{where}'s body")
            if not isinstance(body, dict):
                raise Malformed(f"{where}'s body is not an object")
            if vidx is None:
                ints = list(ck.int_list(body.get("values", []), f"{where}'s value index"))
            else:
                ints = ck.from_int64s(vidx, f"{where}'s value index")
            if blob is not None and not isinstance(blob, bytes):
                raise Malformed(f"{where}'s values are not bytes")
            vals, by_tid, size = ck.parse_values(ints, blob or b"", body, self.limits, where)
            dropped = ck.integer(dropped or 0, f"{where}'s dropped-ops count", 0)
            return self._build_step(idx, body, vals, by_tid, dropped, where), size
        except Malformed as e:
            msg = str(e)
            for head, repl in ((f"{where}: ", ""), (f"{where}'s ", "its ")):
                if msg.startswith(head):
                    msg = repl + msg[len(head):]
            raise TraceFileError(self.path, f"step {idx} is corrupt: {msg}; the file is damaged or "
                                            "was not written by gradtrace: record the run again") from None
        except (RecursionError, MemoryError, OverflowError) as e:
            raise TraceFileError(self.path, f"{where} cannot be read ({type(e).__name__}); the "
                                            "file is damaged: record the run again") from None

    def _build_step(self, idx: int, body: dict, vals: dict, by_tid: dict, dropped: int,
                    where: str) -> Step:
        sources = self.sources

        def src(sid, what):
            return None if sid is None else sources.get(ck.integer(sid, f"{what}'s source id"))

        def vv(x, what):
            if x is None:
                return None
            v = vals.get(ck.integer(x, what))
            if v is None:
                raise Malformed(f"{what} refers to value {x}, which the step does not hold")
            return v

        version = self._version
        ops = []
        seen: set[int] = set()
        for raw in _rows(body, "ops", where):
            r = decode(OpRow, raw, f"{where}: an op", version)
            w = f"{where}: op {r.idx!r:.20}"
            i = ck.integer(r.idx, f"{where}: an op's index", 0)
            if i in seen:
                raise Malformed(f"{w} appears twice")
            seen.add(i)
            if not isinstance(r.args, list) or not isinstance(r.kwargs, dict):
                raise Malformed(f"{w}'s arguments are not a list and an object")
            ops.append(Op(
                index=i, seq=ck.integer(r.seq, f"{w}'s seq"), step=idx, name=ck.text(r.name, f"{w}'s name"),
                target=ck.text(r.target, f"{w}'s target"), inputs=ck.int_list(r.inputs, f"{w}'s inputs"),
                outputs=ck.int_list(r.outputs, f"{w}'s outputs"),
                args=tuple(ck.decode_arg(a, f"{w}'s arguments") for a in r.args),
                kwargs={k: ck.decode_arg(a, f"{w}'s arguments") for k, a in r.kwargs.items()},
                grad_fn=ck.opt_text(r.grad_fn, f"{w}'s grad_fn"),
                module=ck.opt_text(r.module, f"{w}'s module"),
                parent=ck.opt_integer(r.parent, f"{w}'s parent"),
                is_graph=ck.flag(r.is_graph, f"{w}'s is_graph"),
                source=src(r.sid, w)))
        ops.sort(key=lambda o: o.index)
        parent_of = {o.index: o.parent for o in ops}
        for o in ops:  # a custom Function's inner ops point at it; the chain must end
            p, hops = o.parent, 0
            while p is not None:
                if p not in parent_of or hops >= len(ops):
                    raise Malformed(f"{where}: op {o.index}'s parent op {o.parent} is not in the "
                                    "step, or its parents form a loop")
                p, hops = parent_of[p], hops + 1
        backward = None
        if body.get("backward"):
            w = f"{where}'s backward pass"
            b = decode(BackwardRow, body["backward"], w, version)
            raw_nodes = _rows(body, "nodes", where)
            n = len(raw_nodes)
            nodes = []
            for pos, raw in enumerate(raw_nodes):
                r = decode(NodeRow, raw, f"{w}: a node", version)
                wn = f"{w}: node {pos}"
                if r.nid != pos:
                    raise Malformed(f"{wn} has id {r.nid!r:.20}; nodes are numbered in order")
                if not isinstance(r.next, list) or not isinstance(r.grad_out_vids, list) \
                        or not isinstance(r.grad_in_vids, list):
                    raise Malformed(f"{wn}'s next nodes or gradients are not lists")
                for x in r.next:  # topological from the root: every edge points further on
                    if x is not None and (type(x) is not int or not pos < x < n):
                        raise Malformed(f"{wn} points back to node {x!r:.20} (the graph must not loop)")
                nodes.append(GradNode(
                    nid=pos, name=ck.text(r.name, f"{wn}'s name"), op=ck.opt_integer(r.op, f"{wn}'s op"),
                    variable=ck.opt_integer(r.variable, f"{wn}'s variable"), next=tuple(r.next),
                    order=ck.opt_integer(r.exec_order, f"{wn}'s execution order", 0),
                    grad_outputs=tuple(vv(x, f"{wn}'s gradient") for x in r.grad_out_vids),
                    grad_inputs=tuple(vv(x, f"{wn}'s gradient") for x in r.grad_in_vids)))
            if not isinstance(b.result_vids, list):
                raise Malformed(f"{w}'s results are not a list")
            backward = Backward(seq=ck.integer(b.seq, f"{w}'s seq"), step=idx,
                                api=ck.text(b.api, f"{w}'s api"),
                                roots=ck.int_list(b.roots, f"{w}'s roots"), nodes=tuple(nodes),
                                source=src(b.sid, w), root_value=vv(b.root_vid, f"{w}'s root value"),
                                inputs=ck.int_list(b.inputs, f"{w}'s inputs"),
                                results=tuple(vv(x, f"{w}'s result") for x in b.result_vids))
        events = []
        for raw in _rows(body, "events", where):
            r = decode(EventRow, raw, f"{where}: an event", version)
            w = f"{where}: event {r.seq!r:.20}"
            if r.kind not in EVENT_KINDS:
                raise Malformed(f"{w} has kind {str(r.kind)[:20]!r}, not one of {', '.join(EVENT_KINDS)}")
            idiom = ck.opt_text(r.idiom, f"{w}'s idiom") or ""
            before = vv(r.before_vid, f"{w}'s value before")
            fresh = ck.opt_flag(r.fresh, f"{w}'s fresh")
            if version >= 3:
                acc, through_data = r.accumulation, ck.flag(r.through_data, f"{w}'s through_data")
                if acc not in (ACCUMULATIONS if r.kind == "accumulate" else (None,)):
                    raise Malformed(f"{w}'s accumulation is {str(acc)[:20]!r}, not "
                                    + (", ".join(ACCUMULATIONS) if r.kind == "accumulate" else "null"))
            else:
                acc, through_data = _old_event_fields(r.kind, idiom, fresh, before)
            events.append(Event(
                seq=ck.integer(r.seq, f"{w}'s seq"), step=idx, kind=r.kind,
                tensor=ck.integer(r.tensor, f"{w}'s tensor"), idiom=idiom,
                before=before, after=vv(r.after_vid, f"{w}'s value after"),
                source=src(r.sid, w), via=ck.opt_text(r.via, f"{w}'s via"), fresh=fresh,
                incoming=vv(r.incoming_vid, f"{w}'s incoming gradient"),
                inferred=ck.flag(r.inferred or 0, f"{w}'s inferred"),
                accumulation=acc, through_data=through_data))
        return Step(index=idx, ops=tuple(ops), backward=backward, events=tuple(events), values=by_tid,
                    tensors=self.tensors, ops_dropped=dropped)

    # -- conveniences that live in upper layers (dispatched through the facade) -------------
    def check(self, **options):
        """Gradient checks and training diagnostics (see ``gradtrace.analysis.check``)."""
        return conveniences.call("check", self, **options)

    def animate(self, kind: str = "training", **options):
        """An animation of this trace that saves to gif/mp4/html and shows in Jupyter."""
        return conveniences.call("animate", self, kind=kind, **options)

    def explore(self, **options):
        """The explorer of this trace: shown inline in Jupyter, or ``.save("explorer.html")``
        (options: ``budget`` in bytes of per-step data, ``check=False`` to skip the checks)."""
        return conveniences.call("explore", self, **options)

    def _repr_html_(self) -> str | None:
        """Jupyter: what ran, how it ended, and its steps at a glance."""
        return conveniences.html(self)

    def close(self) -> None:
        self._conn.close()

    def __repr__(self) -> str:
        return f"<gradtrace.Trace {self.path} steps={len(self.steps)}>"


_COUNT_NAMES = ("ops", "nodes", "fresh", "added", "on-top", "zeroing", "update", "grad-write",
                "dropped-ops")


def _old_event_fields(kind: str, idiom: str, fresh: bool | None,
                      before: Value | None) -> tuple[str | None, bool]:
    """An event's ``accumulation`` and ``through_data`` in files of formats 1 and 2, which did
    not store them: the recorder's idiom says both (``fresh``, ``added onto zeros``,
    ``added``; ``p.data.sub_()``); an accumulation with another idiom is told by its value."""
    through_data = ".data" in idiom
    if kind != "accumulate":
        return None, through_data
    if fresh or before is None:
        return "fresh", through_data
    known = {"added onto zeros": "zeros", "added": "added"}.get(idiom)
    if known is not None:
        return known, through_data
    if before.data is not None:
        zeros = bool((before.data == 0).all())
    else:
        zeros = before.stats.numel > 0 and before.stats.min == 0 and before.stats.max == 0
    return ("zeros" if zeros else "added"), through_data


def _obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise Malformed(f"{what} is not an object")
    return v


def _rows(body: dict, key: str, where: str) -> list:
    rows = body.get(key) or []
    if not isinstance(rows, list):
        raise Malformed(f"{where}'s {key} are not a list of rows")
    return rows
