"""The trace file's schema: its tables, format version and version history (one home for both sides).

The file is a versioned SQLite database, written step by step, read without unpickling.

Why SQLite: every committed transaction survives ``kill -9`` (steps are committed in groups,
at most :data:`COMMIT_WINDOW` seconds after they end), a reader never executes anything from the file (tensors are raw bytes
with a dtype and a shape), the schema is self-describing for anyone with ``sqlite3``,
and it comes with Python. coverage.py keeps its data the same way.

Schema (format version 4). Ids are the sequential integers the recorder assigned:
``tid`` a tensor object, ``vid`` a snapshot of a value, ``seq`` a position in the run's
event order, ``sid`` a source line. Everything a step adds goes into its one row (its new
tensors too), so writing a step costs one INSERT and one COMMIT (about 25 us): that is
what makes per-step durability cheap.

- ``meta(key, value)``: ``format`` = ``gradtrace-trace``, ``version``, ``gradtrace_version``,
  ``torch_version``, ``created``, ``script``, ``argv`` (JSON), ``config`` (JSON),
  ``status`` (running | completed | raised | exited | interrupted), ``exit_code``,
  ``error``, ``steps_seen``, ``ops_dropped``, ``modules`` (module path -> class name),
  ``optimizers`` (each optimizer's param groups at its first step: tids and the
  hyper-parameters that are numbers; written when the run ends). Format 4 adds ``policy``
  (``full``, ``budget``: what the recording policy was asked) and ``kept`` (what it kept in
  full: ``first``, the first steps; ``spaced``; ``events``, the steps where something
  happened and why). Every value is JSON.
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

- ``scalars(idx, full, vals, acc)`` and ``scalar_param(col, tid)`` (format 4): every step's
  loss and per-parameter norms, whether or not it is recorded in full (``full`` = 1: its
  row is in ``step``); row layouts ``ScalarRow`` and ``ScalarParamRow``, read by
  :mod:`gradtrace.tracefile.scalars`.

Version history (each still read):

- 1 (gradtrace 0.1.0 development versions): no ``tensors`` or ``vidx`` columns: all tensors
  were rows of ``tensor`` and the value index was ``body["values"]``.
- 2: a step's new tensors in its ``tensors`` column, the value index in ``vidx``.
- 3: event rows end with ``accumulation`` (fresh | zeros | added, as the recorder saw the
  ``.grad`` before backward wrote into it) and ``through_data``. For format 1 and 2 files
  the reader derives both from the idiom (and the value before) in ``_old_event_fields``.
- 4: the ``scalars`` and ``scalar_param`` tables, meta ``policy`` and ``kept``; the backward
  row ends with ``left_out`` (nodes beyond ``max_nodes_per_backward``, not recorded); the
  ``allreduce`` event kind (DistributedDataParallel) and meta ``distributed`` and
  ``optimizers``.
  Earlier files read as if every step were recorded in full, with scalars from the step
  table (loss, counts; no norms).

The SQLite header carries ``application_id`` = 0x47545243 ("GTRC") and ``user_version`` =
the format version, so a foreign or newer file is told apart before any table is read.

The writer is :mod:`gradtrace.tracefile.store` (``TraceWriter``); the reader opens a file in
:mod:`~gradtrace.tracefile.opening` and reads it through :class:`~gradtrace.tracefile.reader.Trace`
(see docs/architecture.md for its rooms).
"""

from __future__ import annotations

__all__ = ["FORMAT_VERSION", "OLDEST_READABLE", "APPLICATION_ID", "SCHEMA", "TABLES", "TABLES_ADDED"]

#: Bump when the schema changes; record the change in docs/trace-format.md.
FORMAT_VERSION = 4
#: The oldest format this version of gradtrace still reads.
OLDEST_READABLE = 1
APPLICATION_ID = 0x47545243  # "GTRC"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE source (sid INTEGER PRIMARY KEY, file TEXT, line INTEGER, code TEXT, function TEXT);
CREATE TABLE tensor (tid INTEGER PRIMARY KEY, name TEXT, role TEXT, shape TEXT, dtype TEXT,
                     requires_grad INTEGER);
CREATE TABLE step (idx INTEGER PRIMARY KEY, first_seq INTEGER, last_seq INTEGER,
                   has_backward INTEGER, loss REAL, n_ops INTEGER, n_nodes INTEGER,
                   n_fresh INTEGER, n_added INTEGER, n_on_top INTEGER, n_zero INTEGER,
                   n_update INTEGER, n_grad_write INTEGER, ops_dropped INTEGER,
                   tensors TEXT, body TEXT, vidx BLOB, vals BLOB);
CREATE TABLE scalars (idx INTEGER PRIMARY KEY, full INTEGER, vals BLOB, acc BLOB);
CREATE TABLE scalar_param (col INTEGER PRIMARY KEY, tid INTEGER);
"""

#: The tables every trace file has.
TABLES = frozenset({"meta", "source", "tensor", "step"})
#: Tables added by a format: they must be there in files of that format or later.
TABLES_ADDED = {"scalars": 4, "scalar_param": 4}
