"""The trace file's row layouts, each defined once: the writer encodes these, the reader decodes them.

Every row the file holds is one of the named tuples below, its fields in file order: the
writer (:class:`~gradtrace.tracefile.store.TraceWriter`) takes them and writes them as
JSON arrays (a named tuple is a tuple, so it encodes as one) or SQL rows; the reader
(:class:`~gradtrace.tracefile.reader.Trace`) turns a stored array back into the same tuple
with :func:`decode`, then checks each field by name (``gradtrace.tracefile.checked``). No
other code knows a field's position.

Ids are the sequential integers the recorder assigned: ``tid`` a tensor object, ``vid`` a
snapshot of a value, ``seq`` a position in the run's event order, ``sid`` a source line.
A field added in a later format is listed in :data:`ADDED_IN`; rows of files written
before it have fewer fields, and :func:`decode` fills the missing ones with ``None`` for
the reader to derive (in one place, :mod:`gradtrace.tracefile.steps`).
"""

from __future__ import annotations

import struct

from typing import Any, NamedTuple

from .checked import row as _row

__all__ = ["SourceRow", "TensorRow", "StepHead", "STEP_DATA_COLUMNS", "OpRow", "BackwardRow",
           "NodeRow", "EventRow", "ScalarRow", "ScalarParamRow", "ACC_CODES", "ADDED_IN",
           "step_columns", "width", "decode"]

class SourceRow(NamedTuple):
    """A row of the ``source`` table: a line of the user's code."""

    sid: int
    file: str       # the path as Python saw it (``co_filename``)
    line: int
    code: str       # the line's text, stripped
    function: str   # the enclosing function's qualified name


class TensorRow(NamedTuple):
    """A tensor object the run touched: a row of the ``tensor`` table (first seen outside a
    recorded step) or of a step's ``tensors`` column (first seen in that step; there a
    ``[tid, name]`` pair names a tensor seen earlier). ``shape`` is JSON text in the table,
    a list in the column."""

    tid: int
    name: str | None     # ``net.0.weight``, ``w``; None: displayed ``t<tid>``
    role: str            # param | input | activation
    shape: Any
    dtype: str           # ``float32``, ``int64`` ...
    requires_grad: int   # 0 or 1


class StepHead(NamedTuple):
    """The counting columns of a ``step`` row (the columns of :data:`STEP_DATA_COLUMNS` follow
    them). The ``n_*`` counts are for summaries that parse no body."""

    idx: int            # the run's step number
    first_seq: int      # the span of seq numbers the step covers
    last_seq: int
    has_backward: int   # 0 for a forward-only last step
    loss: float | str | None  # the backward root's value if a single number; NaN as "nan"
    n_ops: int          # graph-building ops
    n_nodes: int        # grad_fn nodes the backward pass reached
    n_fresh: int        # accumulations into a .grad that was None
    n_added: int        # accumulations into a .grad that was not None
    n_on_top: int       # of those, onto a gradient that was not zeroed
    n_zero: int         # zeroings
    n_update: int       # updates
    n_grad_write: int   # other writes to a .grad (clipping, scaling)
    ops_dropped: int    # ops beyond max_ops_per_step: counted, not recorded


#: The ``step`` columns after :class:`StepHead`'s, by format: JSON ``tensors`` rows, the JSON
#: ``body`` (its lists of rows are below), the value index ``vidx`` (little-endian int64s)
#: and ``vals`` (the bytes of the values kept in full). Format 1 had no tensors or vidx.
STEP_DATA_COLUMNS = {1: ("body", "vals"), 2: ("tensors", "body", "vidx", "vals")}


class OpRow(NamedTuple):
    """A recorded torch call (``body["ops"]``)."""

    idx: int            # run-wide, numbered in topological order
    seq: int
    name: str           # what a lecturer calls it: matmul, add, mse_loss, a Function's class
    target: str         # the callable, for replay: torch.matmul, Tensor.add, autograd.Function:C
    inputs: list        # tids
    outputs: list       # tids
    args: list          # encoded arguments: a tensor is "$t<tid>" (see checked.decode_arg)
    kwargs: dict
    grad_fn: str | None  # the output's grad_fn class (MmBackward0)
    module: str | None  # the nn.Module path it ran in (net.0)
    parent: int | None  # the custom Function op it ran inside
    is_graph: int       # 1: built the autograd graph; 0: a prep op or an inner op
    sid: int | None


class BackwardRow(NamedTuple):
    """The step's backward pass (``body["backward"]``, or null)."""

    seq: int
    api: str            # Tensor.backward | autograd.backward | autograd.grad
    roots: list         # tids
    root_vid: int | None
    inputs: list        # autograd.grad: the tids it differentiated for
    result_vids: list   # autograd.grad: the gradients it returned
    sid: int | None
    left_out: int = 0   # grad_fn nodes not recorded (max_nodes_per_backward): 0 = the whole pass


class NodeRow(NamedTuple):
    """A grad_fn node the backward pass reached (``body["nodes"]``), in topological order
    from the root."""

    nid: int            # its position in the list
    name: str           # the grad_fn class (AccumulateGrad, MmBackward0)
    op: int | None      # the forward op whose grad_fn it is
    variable: int | None  # AccumulateGrad: the leaf's tid
    next: list          # per next_functions entry, the nid the gradient flows on to, or null
    exec_order: int | None  # when autograd ran it; null: it did not
    grad_out_vids: list  # the gradient flowing in (w.r.t. the op's outputs)
    grad_in_vids: list   # what it passes on (w.r.t. the op's inputs)


class EventRow(NamedTuple):
    """Something that happened to a leaf or its ``.grad`` outside the forward ops
    (``body["events"]``)."""

    seq: int
    kind: str           # accumulate | zero | update | grad_write
    tensor: int         # the leaf's tid
    idiom: str          # how the user's code did it: p.grad.zero_(), SGD.step(), fresh ...
    before_vid: int | None  # the value before (null: a .grad that was None)
    after_vid: int | None   # the value after
    incoming_vid: int | None  # accumulate: the gradient that arrived
    fresh: int | None   # accumulate: 1 if .grad was None
    via: str | None     # the torch function the user's line called (Optimizer.zero_grad)
    inferred: int       # 1 if deduced rather than seen (reserved: always 0)
    sid: int | None
    accumulation: str | None = None  # accumulate: fresh | zeros | added (model.ACCUMULATIONS); else null
    through_data: int = 0  # 1: the change went through a .data alias (p.data.sub_(), p.data = …)


#: The loss of a step whose backward pass had no single-number loss (several tensors, or a
#: tensor of several numbers with its incoming gradient): a quiet NaN with its own payload,
#: so that a reader tells it from a loss that was NaN (any other NaN). Its bits, and the float.
NO_LOSS_BITS = 0x7FF8_0000_004E_4F4C  # the payload spells "NOL"
NO_LOSS: float = struct.unpack("<d", struct.pack("<Q", NO_LOSS_BITS))[0]


class ScalarRow(NamedTuple):
    """A row of the ``scalars`` table (format 4): what every step keeps, recorded in full or not.

    ``vals`` is little-endian float64s: the loss (:data:`NO_LOSS` when there was no single
    number to call the loss), then per parameter column (the
    ``scalar_param`` table's order) its gradient norm after the backward pass, its value
    norm at the backward pass and the norm of its change until the next step's backward
    pass (the update); NaN where there is none. A row holds the columns known at its step
    (parameters seen later come after). ``acc`` is one signed byte per column: how the
    backward pass met the ``.grad`` (:data:`ACC_CODES`)."""

    idx: int      # the run's step number
    full: int     # 1: the step is recorded in full (its row is in the ``step`` table)
    vals: bytes
    acc: bytes


class ScalarParamRow(NamedTuple):
    """A column of the scalars: the parameter (a tid of the ``tensor`` table or a step's
    ``tensors``) whose norms it holds."""

    col: int
    tid: int


#: ``ScalarRow.acc`` codes: no gradient arrived; fresh (``.grad`` was None); onto zeros; added
#: onto a gradient that was not zeroed (the forgot-to-zero pattern).
ACC_CODES = {-1: None, 0: "fresh", 1: "zeros", 2: "added"}


def step_columns(version: int) -> tuple[str, ...]:
    """The ``step`` table's columns in files of format ``version`` (1 or later)."""
    return StepHead._fields + STEP_DATA_COLUMNS[max(v for v in STEP_DATA_COLUMNS if v <= version)]


#: Fields added after format 1: (row type, field) -> the format that added it.
ADDED_IN: dict[tuple[type, str], int] = {(EventRow, "accumulation"): 3,
                                         (EventRow, "through_data"): 3,
                                         (BackwardRow, "left_out"): 4}


def width(row_type: type, version: int) -> int:
    """How many fields a ``row_type`` row has in files of format ``version``."""
    fields = row_type._fields  # type: ignore[attr-defined]
    n = len(fields)
    while n and ADDED_IN.get((row_type, fields[n - 1]), 0) > version:
        n -= 1
    return n


def decode(row_type: type, raw: Any, what: str, version: int):
    """A stored JSON array as a ``row_type`` (fields unchecked; those the format lacks are
    None). Raises ``Malformed`` for anything that is not a row of the format's width."""
    r = _row(raw, width(row_type, version), what)
    return row_type(*r, *(None,) * (len(row_type._fields) - len(r)))  # type: ignore[attr-defined]
