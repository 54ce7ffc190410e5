"""Opening a trace file for reading: what is at the path, its header, its tables, one line if not.

Nothing is read from a file's tables before its SQLite header says it is a trace of a
format this gradtrace reads, and nothing in its schema may compute (views, triggers,
generated columns). :func:`load` returns the :class:`~gradtrace.tracefile.reader.Trace`.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from ..errors import TraceFileError, TraceWriteError
from .checked import Limits
from .lock import database_error
from .reader import Trace
from .rows import ScalarParamRow, ScalarRow, SourceRow, TensorRow, step_columns
from .schema import APPLICATION_ID, FORMAT_VERSION, OLDEST_READABLE, TABLES, TABLES_ADDED

__all__ = ["load", "is_trace", "check_header"]


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


def check_header(conn: sqlite3.Connection, path: str) -> int:
    """The file's format version, once its header, tables and columns are what gradtrace
    writes (a foreign, newer or damaged file raises :class:`TraceFileError`)."""
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise database_error(path, e) from None
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
    missing = (TABLES | {t for t, v in TABLES_ADDED.items() if v <= version}) - tables
    if missing:
        raise TraceFileError(path, f"truncated or corrupt: tables {', '.join(sorted(missing))} "
                                   "are missing; record the run again")
    for table, want in (("meta", ("key", "value")), ("source", SourceRow._fields),
                        ("tensor", TensorRow._fields), ("step", step_columns(version)),
                        *((("scalars", ScalarRow._fields), ("scalar_param", ScalarParamRow._fields))
                          if version >= 4 else ())):
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
        # (a run still writing holds the file: a short wait, then it says so)
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=0.5)
        # Nothing in the file's schema (views, triggers, generated columns) may call
        # functions with side effects while gradtrace reads it.
        conn.execute("PRAGMA trusted_schema=OFF")
        version = check_header(conn, str(p))
        row = conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            detail = " ".join(str(row[0]).split())[:160] if row else "no answer"
            raise TraceFileError(p, f"truncated or corrupt ({detail}); record the run again")
    except sqlite3.DatabaseError as e:
        raise database_error(p, e) from None
    return Trace(conn, str(p), version, limits=limits)
