"""The trace data model: plain, typed objects that every layer above `record` reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterator, cast

from ..errors import NotRecordedError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .arrays import Payload

from . import conveniences

__all__ = [
    "Source", "Stats", "Value", "TensorInfo", "Op", "GradNode", "Backward", "Event",
    "Step", "Bucket", "RunInfo", "EVENT_KINDS", "ACCUMULATIONS", "FUNCTION_PREFIX", "memory_run",
]

#: The kinds of :class:`Event` (besides ops and backward passes, which have their own types).
EVENT_KINDS = ("accumulate", "zero", "update", "grad_write", "allreduce")
#: How a ``.grad`` accumulation landed (:attr:`Event.accumulation`): on a ``.grad`` that was
#: None, onto one that held only zeros (the ``grad.zero_()`` style), or added on top of a
#: gradient that was never cleared (the forgot-to-zero case).
ACCUMULATIONS = ("fresh", "zeros", "added")
#: How an op's ``target`` names a custom ``autograd.Function``: this, then the class name.
FUNCTION_PREFIX = "autograd.Function:"


@dataclass(frozen=True)
class Source:
    """Where in the user's code something happened."""

    file: str
    line: int
    code: str = ""
    function: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def short(self) -> str:
        """``name.py:12`` (the file's base name)."""
        return f"{self.file.replace(chr(92), '/').rsplit('/', 1)[-1]}:{self.line}"


def _in_memory_order(t: "torch.Tensor") -> "torch.Tensor":
    """A strided view (a transposed weight, a permuted activation) as the flat run of memory
    it covers, when it covers one without gaps: reductions over it are then as fast as over a
    contiguous tensor (torch's aminmax is ~7x slower on a transposed matrix). The statistics
    do not depend on the order of the elements. Anything else is returned as it is."""
    if t.is_contiguous() or t.dim() < 2:
        return t
    order = sorted(range(t.dim()), key=lambda d: t.stride(d), reverse=True)
    p = t.permute(order)
    return p.view(-1) if p.is_contiguous() else t


def memory_run(t: "torch.Tensor") -> tuple | None:
    """The run of memory a tensor's values fill without gaps, in whatever order (a
    contiguous tensor, a transposed or permuted view of one): its start, element count,
    dtype, device and lazy sign / conjugate bits; None for a view with gaps. Two tensors
    with the same run, looked at while nothing writes to it, hold the same values in some
    order: :meth:`Stats.of` gives both the same statistics."""
    if not (t.is_contiguous() or (t.dim() >= 2 and _in_memory_order(t).dim() == 1)):
        return None
    return (t.data_ptr(), t.numel(), t.dtype, t.device, t.is_neg(), t.is_conj())


#: sqrt of the largest float32 / float64 (by item size): squares of smaller numbers are finite.
_NO_OVERFLOW = {4: math.sqrt(3.4028234663852886e38), 8: math.sqrt(1.7976931348623157e308)}


@dataclass(frozen=True)
class Stats:
    """Summary statistics of a tensor value. Float fields are NaN for empty tensors."""

    numel: int
    norm: float
    mean: float
    min: float
    max: float
    nonfinite: int

    @classmethod
    def of(cls, t: torch.Tensor) -> "Stats":
        """Summary statistics, in three passes over the data when all values are finite."""
        if t.is_sparse or t.is_sparse_csr:
            return cls._of_sparse(t)
        n = t.numel()
        if n > 0 and t.is_cpu and not t.is_complex():
            try:
                a = (t.detach() if t.requires_grad else t).numpy()
            except (RuntimeError, TypeError):  # bfloat16, a neg-bit view, a subclass...
                a = None
            if a is not None:
                if n <= 64:
                    # A few numbers: through numpy's view into plain Python, no torch op at
                    # all (as cheap as copying them; torch reductions cost ten times more).
                    return cls._of_list(a.ravel().tolist())
                if a.dtype.kind == "f" and a.dtype.itemsize >= 4:
                    out = cls._of_floats(t, a, n)
                    if out is not None:
                        return out
        import torch

        with torch.no_grad():
            t = t.detach()
            n = t.numel()
            if n == 0:
                nan = float("nan")
                return cls(0, nan, nan, nan, nan, 0)
            if t.is_complex():
                t = t.abs()
            elif t.dtype == torch.bool:
                t = t.to(torch.uint8)
            if n <= 64 and t.device.type == "cpu":
                return cls._of_list(t.reshape(-1).tolist())
            t = _in_memory_order(t)
            lo, hi = torch.aminmax(t)
            mn, mx = float(lo), float(hi)
            if math.isfinite(mn) and math.isfinite(mx):  # NaN or inf would show here
                # Native-dtype reductions (pairwise sums): a float64 copy costs 5x more.
                f = t if t.is_floating_point() else t.double()
                norm = float(torch.linalg.vector_norm(f))
                mean = float(f.sum()) / n
                return cls(n, norm, mean, mn, mx, 0)
            finite = torch.isfinite(t)
            nonfinite = n - int(finite.sum())
            f = t[finite].double()
            if f.numel() == 0:
                nan = float("nan")
                return cls(n, nan, nan, nan, nan, nonfinite)
            return cls(n, float(torch.linalg.vector_norm(f)), float(f.mean()), float(f.min()),
                       float(f.max()), nonfinite)

    @classmethod
    def _of_floats(cls, t: torch.Tensor, a: np.ndarray, n: int) -> "Stats | None":
        """A float32 / float64 CPU tensor of all finite values: min and max by numpy (its
        SIMD reductions take half the time of torch's aminmax on one thread), the norm as
        BLAS's dot product of numpy's view (2.5x faster than torch's vector_norm here, and as
        accurate: both accumulate in the tensor's dtype), the sum in torch (5x faster than
        numpy's pairwise sum). None when a value is not finite: the general path then counts
        them."""
        import numpy as np

        flat = _in_memory_order(t.detach())
        v = flat.numpy() if flat.dim() == 1 else a.reshape(-1)  # (a copy only for a view with gaps)
        mn, mx = float(v.min()), float(v.max())  # NaN shows in both
        big = max(-mn, mx)
        if not big < math.inf:  # NaN or an infinity
            return None
        if big >= _NO_OVERFLOW[a.dtype.itemsize] / math.sqrt(n):
            v = v.astype(np.float64)  # the sum of squares could overflow the dtype: in float64
        out = object.__new__(cls)  # the fields set directly, as in _of_list
        out.__dict__.update(numel=n, norm=math.sqrt(float(np.dot(v, v))),
                            mean=flat.sum().item() / n, min=mn, max=mx, nonfinite=0)
        return out

    @classmethod
    def _of_sparse(cls, t: torch.Tensor) -> "Stats":
        """A sparse tensor (``nn.Embedding(sparse=True)``'s gradient): the statistics of its
        stored values and of the zeros it does not store, without making it dense."""
        t = t.detach()
        if t.is_sparse:
            t = t.coalesce()  # duplicate indices summed, as the dense tensor holds them
        stored = t.values()
        s = cls.of(stored)
        n, k = t.numel(), stored.numel()
        zeros = n - k
        if zeros <= 0:
            return cls(n, s.norm, s.mean, s.min, s.max, s.nonfinite)
        finite = k - s.nonfinite
        if finite == 0:  # nothing stored, or nothing finite: the zeros alone
            return cls(n, 0.0, 0.0, 0.0, 0.0, s.nonfinite)
        return cls(n, s.norm, s.mean * finite / (finite + zeros), min(s.min, 0.0), max(s.max, 0.0),
                   s.nonfinite)

    @classmethod
    def _of_list(cls, xs: list) -> "Stats":
        """Small tensors: plain Python is faster than a handful of torch reductions."""
        s = sum(xs)
        if math.isfinite(s):  # all finite (NaN and infinities would show in the sum)
            # hypot: one C call, exact to an ulp, no overflow; the fields set directly, as
            # the frozen dataclass's __init__ would (it costs more than the arithmetic here)
            out = object.__new__(cls)
            out.__dict__.update(numel=len(xs), norm=math.hypot(*xs), mean=s / len(xs),
                                min=float(min(xs)), max=float(max(xs)), nonfinite=0)
            return out
        fin = [float(x) for x in xs if math.isfinite(x)]
        if not fin:
            nan = float("nan")
            return cls(len(xs), nan, nan, nan, nan, len(xs))
        return cls(len(xs), math.sqrt(math.fsum(x * x for x in fin)), math.fsum(fin) / len(fin),
                   min(fin), max(fin), len(xs) - len(fin))

    @classmethod
    def of_array(cls, a: np.ndarray) -> "Stats":
        """The same statistics of a numpy array (a value read from a trace), in float64."""
        import numpy as np

        n = int(a.size)
        if n == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, 0)
        if a.dtype.kind == "c":
            a = np.abs(a)
        elif a.dtype.kind == "b":
            a = a.astype(np.uint8)
        if n <= 64:
            return cls._of_list(a.reshape(-1).tolist())
        f = a.reshape(-1).astype(np.float64)
        mn, mx = float(f.min()), float(f.max())
        if math.isfinite(mn) and math.isfinite(mx):
            return cls(n, float(np.sqrt(np.dot(f, f))), float(f.sum()) / n, mn, mx, 0)
        fin = f[np.isfinite(f)]
        nonfinite = n - int(fin.size)
        if fin.size == 0:
            nan = float("nan")
            return cls(n, nan, nan, nan, nan, nonfinite)
        return cls(n, float(np.sqrt(np.dot(fin, fin))), float(fin.mean()), float(fin.min()),
                   float(fin.max()), nonfinite)

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0


class Value:
    """A snapshot of one tensor's value at one moment of the run.

    The full value is there (:attr:`kept`) when the tensor was small enough and full values
    were kept; :attr:`stats` is always available. Read it as numpy with :attr:`array` (what
    pictures, summaries and checks of finiteness use: no torch needed) or as a torch tensor
    with :attr:`data` (what the float64 replay of the check needs; imports torch). A value
    read from a file is decoded only when one of them is first asked for.

    ``array`` is read-only and holds ``bfloat16``/``float8`` values as float32 and
    ``complex32`` as complex64 (exactly); ``data`` has the recorded dtype. A Value is made
    from a tensor (``Value(vid, shape, dtype, tensor)``), an array (``array=``), or by the
    reader from stored bytes (``payload=``, see :mod:`gradtrace.tracefile.arrays`).
    """

    __slots__ = ("vid", "shape", "dtype", "stored_stats", "_data", "_array", "_payload",
                 "_stats", "_from_tensor")

    def __init__(self, vid: int, shape: tuple[int, ...], dtype: str,
                 data: torch.Tensor | None = None, stored_stats: Stats | None = None, *,
                 array: np.ndarray | None = None, payload: Payload | None = None):
        self.vid = vid
        self.shape = shape
        self.dtype = dtype
        self.stored_stats = stored_stats
        self._data = data
        self._array = array
        self._payload = payload
        self._stats: Stats | None = stored_stats
        # Statistics of a tensor are torch's (as the recorder computes them); of anything
        # else numpy's, whichever accessor was used first: the same numbers every time.
        self._from_tensor = data is not None

    @property
    def kept(self) -> bool:
        """Whether the full value is in the trace (else only :attr:`stats`)."""
        return self._data is not None or self._array is not None or self._payload is not None

    @property
    def array(self) -> np.ndarray | None:
        """The full value as a read-only numpy array, or None when only statistics were kept."""
        if self._array is None:
            if self._payload is not None:
                self._array = self._payload.array()
            elif self._data is not None:
                from .arrays import tensor_array

                self._array = tensor_array(self._data)
        return self._array

    @property
    def data(self) -> torch.Tensor | None:
        """The full value as a CPU tensor without grad (imports torch), or None."""
        if self._data is None:
            if self._payload is not None:
                self._data = self._payload.tensor()
            elif self._array is not None:
                import torch

                self._data = torch.from_numpy(self._array.copy())
        return self._data

    @property
    def stats(self) -> Stats:
        if self._stats is None:
            if self._from_tensor:
                assert self._data is not None
                self._stats = Stats.of(self._data)
            else:
                a = self.array
                assert a is not None, "a Value has data or stats"
                self._stats = Stats.of_array(a)
        return self._stats

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_scalar(self) -> bool:
        return self.numel == 1

    def item(self) -> float | None:
        """The value as a Python float when it has one element and was kept."""
        if self.kept and self.numel == 1:
            a = self.array
            if a is not None:
                return float(a.reshape(-1)[0])
        return None

    def __repr__(self) -> str:
        what = "kept" if self.kept else "stats"
        return f"Value(vid={self.vid}, shape={self.shape}, dtype={self.dtype!r}, {what})"


@dataclass(frozen=True)
class TensorInfo:
    """A tensor object seen during the run, with the sequential id gradtrace gave it.

    ``role`` is ``"param"`` (a leaf that requires grad), ``"input"`` (a leaf that does not:
    data, targets, constants) or ``"activation"`` (the output of a recorded op).
    """

    tid: int
    name: str | None
    role: str
    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool

    @property
    def label(self) -> str:
        return self.name if self.name else f"t{self.tid}"


@dataclass(frozen=True)
class Op:
    """One recorded torch call.

    ``is_graph`` ops built the autograd graph (their output has a ``grad_fn``). Other ops
    are recorded when their output feeds a graph op without being a named tensor
    (``y.reshape(...)``: "prep" ops), or when they run inside a custom
    ``autograd.Function`` (``parent`` is then that Function's op index).

    ``target`` names the callable so it can be replayed: ``torch.matmul``,
    ``Tensor.add``, ``torch.nn.functional.mse_loss``; custom Functions are
    ``autograd.Function:<ClassName>``; properties that build the graph are recorded as
    ``T``/``mT``/``H``/``mH`` ops (target ``Tensor.T.__get__``). ``args``/``kwargs`` are
    JSON-like (tuples stay tuples), with every tensor replaced by ``{"tensor": tid}``.
    """

    index: int
    seq: int
    step: int
    name: str
    target: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    grad_fn: str | None
    module: str | None
    parent: int | None
    is_graph: bool
    source: Source | None

    kind = "op"

    @property
    def is_function(self) -> bool:
        """A custom ``autograd.Function`` (checked as a string: a file may hold anything)."""
        return isinstance(self.target, str) and self.target.startswith(FUNCTION_PREFIX)


@dataclass(frozen=True)
class GradNode:
    """One node of the grad_fn graph that a backward pass reached.

    ``nid`` is sequential within the backward pass, in topological order from the root
    (0). ``next`` holds, in the order of the grad_fn's ``next_functions`` (which is not
    always the forward op's input order: ``linear`` gives bias, input, weight), the nid that
    gradient flows on to (None where no gradient flows); ``grad_inputs`` is in the same order. ``order`` is the position at which autograd ran the node
    (None if it did not run). ``grad_outputs`` is the gradient flowing *into* the node
    (w.r.t. the forward op's outputs); ``grad_inputs`` what it passes on (w.r.t. the op's
    inputs). AccumulateGrad nodes carry the leaf's tid in ``variable``.
    """

    nid: int
    name: str
    op: int | None
    variable: int | None
    next: tuple[int | None, ...]
    order: int | None
    grad_outputs: tuple[Value | None, ...]
    grad_inputs: tuple[Value | None, ...]


@dataclass(frozen=True)
class Backward:
    """A ``backward()`` / ``torch.autograd.backward`` / ``torch.autograd.grad`` call."""

    seq: int
    step: int
    api: str
    roots: tuple[int, ...]
    nodes: tuple[GradNode, ...]
    source: Source | None
    root_value: Value | None = None
    inputs: tuple[int, ...] = ()            # autograd.grad: the tids it differentiated for
    results: tuple[Value | None, ...] = ()  # autograd.grad: the gradients it returned
    #: grad_fn nodes the pass reached beyond ``max_nodes_per_backward``, not recorded (0:
    #: ``nodes`` is the whole pass). Files before format 4 did not say: 0 there.
    left_out: int = 0

    kind = "backward"

    @property
    def truncated(self) -> bool:
        """True when the pass was cut short: ``nodes`` is not all of it."""
        return self.left_out > 0

    @property
    def loss(self) -> float | None:
        """The root's value when it was a single number."""
        return self.root_value.item() if self.root_value is not None else None

    def node(self, nid: int) -> GradNode:
        return self.nodes[nid]

    @property
    def execution_order(self) -> list[GradNode]:
        return sorted((n for n in self.nodes if n.order is not None), key=lambda n: cast(int, n.order))


@dataclass(frozen=True)
class Event:
    """Something that happened to a leaf or its ``.grad`` outside the forward ops.

    ``kind`` is one of :data:`EVENT_KINDS`:

    - ``accumulate``: backward wrote into ``tensor.grad``; ``accumulation`` says how, one
      of :data:`ACCUMULATIONS` (``fresh``: ``.grad`` was None; ``zeros``: it held only
      zeros; ``added``: on top of a gradient that was not cleared), as the recorder saw it;
      ``fresh`` is True for ``fresh``. ``incoming`` is the gradient that arrived.
    - ``zero``: ``.grad`` was cleared; ``idiom`` says how (``grad.zero_()``,
      ``grad = None``, ``optimizer.zero_grad()``...).
    - ``update``: the leaf's value changed (``p -= lr * g`` under no_grad, ``p.data -= ...``,
      ``optimizer.step()``...).
    - ``grad_write``: ``.grad`` was changed without clearing it (clipping, scaling).
    - ``allreduce``: under DistributedDataParallel, ``.grad`` went from this rank's own
      gradient (``before``, where the accumulation ended) to the mean over the ranks
      (``after``); ``via`` is ``DistributedDataParallel``.

    ``through_data`` marks a change made through a ``.data`` alias (``p.data -= …``,
    ``p.data = …``, ``p.grad.data.zero_()``): invisible to autograd. ``inferred`` marks
    events gradtrace deduced by comparing values (in sampled recording) rather than seeing
    the call that caused them.
    """

    seq: int
    step: int
    kind: str
    tensor: int
    idiom: str
    before: Value | None
    after: Value | None
    source: Source | None
    via: str | None = None
    fresh: bool | None = None
    incoming: Value | None = None
    inferred: bool = False
    accumulation: str | None = None
    through_data: bool = False


@dataclass(frozen=True)
class ParamGroup:
    """One param group of an optimizer as its first ``step()`` saw it: the tensors (tids),
    which of them did not require grad, and the hyper-parameters that are plain numbers (``lr``, ``momentum``, ``betas`` ...)."""

    params: tuple[int, ...]
    hyper: dict[str, float | bool | tuple[float, ...] | None]
    #: those of ``params`` that did not require grad then
    frozen: tuple[int, ...] = ()


@dataclass(frozen=True)
class OptimizerInfo:
    """An optimizer of the run, recorded once, at its first ``step()`` in a recorded step."""

    kind: str                     # its class name: "SGD", "Adam"
    step: int                     # the run step of that first step()
    source: int | None            # the sid of the step() line
    groups: tuple[ParamGroup, ...]

    @property
    def params(self) -> tuple[int, ...]:
        return tuple(t for g in self.groups for t in g.params)


@dataclass(frozen=True)
class RunInfo:
    """What ran and how it ended: status is running, completed, raised, exited or interrupted."""

    format_version: int
    gradtrace_version: str
    torch_version: str
    created: str
    script: str | None
    argv: tuple[str, ...]
    status: str
    exit_code: int | None
    error: str | None
    config: dict[str, Any]
    steps_seen: int
    ops_dropped: int = 0
    modules: dict[str, str] = field(default_factory=dict)  # module path -> class ("net.0": "Linear")
    #: Under torchrun: {"rank", "world_size", "local_rank", "backend"}; empty for one process.
    distributed: dict[str, Any] = field(default_factory=dict)
    optimizers: tuple[OptimizerInfo, ...] = ()
    #: Format 4: what the recording policy was asked (``full``, ``budget``) and what it kept
    #: in full (``first``, ``spaced``, ``events``; see docs/trace-format.md). Empty before.
    policy: dict[str, Any] = field(default_factory=dict)
    kept: dict[str, Any] = field(default_factory=dict)
    #: What ran and was not recorded: ``thread_backward`` (backward passes in threads other
    #: than the one that started the trace), ``transform_ops`` (ops inside torch.func
    #: transforms). Empty in traces written before it was kept.
    unrecorded: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Bucket:
    """One of DistributedDataParallel's gradient buckets in a step (from the trace's meta
    ``distributed.buckets``, see docs/distributed.md): its place in the reducer's order, how
    many buckets there were, its parameters' tids (None: torch did not expose them), its
    size in bytes, and whether it is of the layout DDP rebuilt after the first step."""

    index: int
    count: int
    params: tuple[int, ...] | None
    nbytes: int | None
    rebuilt: bool

    @property
    def label(self) -> str:
        return f"bucket {self.index} of {self.count}"


@dataclass(frozen=True, eq=False)
class Step:
    """One training step: the forward ops that fed a backward pass, the pass itself, and
    the accumulations, updates and zeroings up to the next step's first forward op.

    A run that ends with forward ops but no backward has a last step with
    ``backward=None``.
    """

    index: int
    ops: tuple[Op, ...]
    backward: Backward | None
    events: tuple[Event, ...]
    values: dict[int, Value]
    tensors: dict[int, TensorInfo] = field(repr=False)
    ops_dropped: int = 0
    #: DistributedDataParallel's gradient buckets in this step, where the trace says them
    buckets: tuple[Bucket, ...] | None = field(default=None, repr=False)

    def bucket_of(self, tid: int) -> Bucket | None:
        """The DDP bucket that all-reduced parameter ``tid``'s gradient in this step (None:
        not known). A single bucket holds every parameter."""
        if not self.buckets:
            return None
        if len(self.buckets) == 1:
            return self.buckets[0]
        return next((b for b in self.buckets if b.params is not None and tid in b.params), None)

    @property
    def graph_ops(self) -> tuple[Op, ...]:
        """The ops that built the autograd graph (no prep or inner ops)."""
        return tuple(o for o in self.ops if o.is_graph and o.parent is None)

    @property
    def accumulations(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind == "accumulate")

    @property
    def zeroings(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind == "zero")

    @property
    def updates(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind == "update")

    @property
    def loss(self) -> float | None:
        return self.backward.loss if self.backward is not None else None

    @cached_property
    def _op_at(self) -> dict[int, Op]:
        """Run-wide op index -> op (the first of a repeated index, as a scan would find)."""
        at: dict[int, Op] = {}
        for o in self.ops:
            at.setdefault(o.index, o)
        return at

    def op(self, index: int) -> Op:
        """The op with run-wide index ``index`` (what ``GradNode.op`` and ``Op.parent`` hold)."""
        o = self._op_at.get(index)
        if o is not None:
            return o
        have = f"its ops are {self.ops[0].index}..{self.ops[-1].index}" if self.ops else "it has no ops"
        raise NotRecordedError(f"op {index} is not in step {self.index}; {have}")

    def value(self, tid: int) -> Value | None:
        """The value tensor ``tid`` had in this step (leaves: at first use; op outputs:
        when computed)."""
        return self.values.get(tid)

    def name(self, tid: int) -> str:
        info = self.tensors.get(tid)
        return info.label if info is not None else f"t{tid}"

    def timeline(self) -> list[Op | Backward | Event]:
        """Ops, the backward pass and events of this step, in the order they happened."""
        items: list[Any] = list(self.ops) + list(self.events)
        if self.backward is not None:
            items.append(self.backward)
        return sorted(items, key=lambda x: x.seq)

    def __iter__(self) -> Iterator[Op | Backward | Event]:
        return iter(self.timeline())

    def graph(self, view: str = "both", **options):
        """The computation graph of this step, ready to render or show in Jupyter."""
        return conveniences.call("graph", self, view=view, **options)

    def __repr__(self) -> str:
        bw = f"backward {len(self.backward.nodes)} nodes" if self.backward is not None else "no backward"
        loss = f", loss {self.loss:.6g}" if self.loss is not None else ""
        return f"<gradtrace.Step {self.index}: {len(self.ops)} ops, {bw}, {len(self.events)} events{loss}>"

    def _repr_html_(self) -> str | None:
        """Jupyter: the step's ops, backward pass and events in order, and its graph (a PNG)."""
        return conveniences.html(self)
