"""Float64 replay of a recorded step's forward computation, and central finite differences.

A recorded step holds every op that built the graph, with its callable's dotted name, its
arguments (tensors by tid) and the values it saw. :class:`Replay` re-runs those ops in
float64 as a function of the leaf parameters (custom ``autograd.Function``s through the
ops recorded inside their forward, so the user's code is never needed), and
:func:`finite_differences` differentiates it numerically. :func:`blame_functions` then
checks each custom Function's recorded backward against its own replayed forward, so a
failing step names the Function that is wrong.

A trace may come from anyone: its names only pick functions from gradtrace's own table
(:mod:`.replayable`), and every argument is checked before the call. An op outside the
table, or an argument its function does not take, makes the step not replayable (a
:class:`ReplayError`, which the check reports as "not applicable").
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable

import torch
import torch.nn.functional as F

from ..tracefile.dtypes import dtype_from_name
from ..tracefile.model import FUNCTION_PREFIX, Op, Step
from .linear import NotApplicable, unrecorded_view
from .replayable import REPLAYABLE, accepts, replayable, string_kind

__all__ = ["Replay", "ReplayError", "finite_differences", "blame_functions", "Blame",
           "autograd_gradients", "FD_EPS"]

#: h = FD_EPS * max(1, |theta_i|): the step that balances truncation and rounding in float64.
FD_EPS = 6e-6
#: Ops with a kink (relu's at 0, a max's at a tie): a difference whose steps reach across one
#: measures neither side's derivative (with h = 6e-6, one in a few hundred elements of a
#: ReLU CNN's weight did, and the check said WRONG on correct code). Where the step has one,
#: h is KINK_SHRINK times smaller, and a kink that much less likely to lie within it. The
#: price: the float64 loss's rounding, divided by h, is 100 times larger (at h = 6e-8 about
#: 2e-9 of the loss, still ~30 times below float32's rounding of a gradient that size); the
#: finite-difference error of the bound counts it.
KINKS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "clamp",
    "clamp_", "clip", "clamp_min", "clamp_max", "threshold", "threshold_", "abs", "abs_",
    "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "max", "min", "amax", "amin", "maximum", "minimum", "fmax", "fmin", "hardswish",
    "hardsigmoid", "hardshrink", "softshrink", "prelu", "rrelu", "celu", "elu", "selu",
    "floor", "ceil", "round", "trunc", "sign", "sgn", "where", "masked_fill", "sort",
    "topk", "cummax", "cummin", "median", "kthvalue",
})
KINK_SHRINK = 100
#: ReLUs replayed on the branch the run took: the recorded input's sign, not the replay's own.
#: Where the run rounded the input (bfloat16 autocast: ~2e-3 of each term) an element near 0
#: can fall on the other side in float64, and its gradient with it; autograd's gradient is
#: the derivative on the run's branch, so the replay keeps to it.
_RELUS = frozenset({torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu})

# Ops whose result depends on a random draw: a replay would draw differently.
_RANDOM = {"dropout", "dropout1d", "dropout2d", "dropout3d", "feature_dropout", "alpha_dropout",
           "feature_alpha_dropout", "rand", "randn", "randint", "rand_like", "randn_like",
           "randint_like", "bernoulli", "multinomial", "normal", "randperm", "rrelu",
           "uniform_", "normal_", "bernoulli_", "random_", "exponential_", "gumbel_softmax"}
_FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}
_MEMORY_FORMATS = {str(f): f for f in (torch.contiguous_format, torch.preserve_format,
                                       torch.channels_last, torch.channels_last_3d)}
_RANGE = re.compile(r"^range\((-?\d+)(?:, (-?\d+))?(?:, (-?\d+))?\)$")


class ReplayError(Exception):
    """Internal: the step cannot be replayed; the message says why."""


def _resolve(o: Op) -> Callable:
    """The function to call for a recorded op: from gradtrace's own table, never from
    the file's string (a trace may come from anyone; see analysis.replayable)."""
    fn = replayable(o.target, o.name)
    if fn is None and isinstance(o.target, str) and o.target.startswith("torch.") \
            and o.target.endswith("_") and not o.target.endswith("__"):
        # torch.relu_(h) is h.relu_(); without that method, the out-of-place torch.relu
        # (the replay runs an op in place on a copy where it must: see Replay.call)
        name = o.target.removeprefix("torch.")
        fn = REPLAYABLE.get(f"Tensor.{name}") or REPLAYABLE.get(f"torch.{name[:-1]}")
    if fn is None:
        what = o.target if isinstance(o.target, str) else f"{o.target!r} (not a name)"
        raise ReplayError(f"{what} is not an op gradtrace replays")
    return fn


def _on_meta(x):
    """The same arguments with every tensor replaced by a meta tensor of its shape and dtype."""
    if isinstance(x, torch.Tensor):
        return torch.empty_like(x, device="meta")
    if isinstance(x, list):
        return [_on_meta(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_on_meta(v) for v in x)
    if isinstance(x, dict):
        return {k: _on_meta(v) for k, v in x.items()}
    return x


#: Ops whose output is never larger than the broadcast of their tensor arguments' shapes
#: (elementwise arithmetic, matrix products, reductions, reshapes), by the name of the torch
#: function that runs. Their outputs are sized after they run, from that bound; others on
#: the meta device first (whose first use imports much of torch: over a second).
_BROADCAST_BOUNDED = frozenset({
    "add", "sub", "mul", "div", "true_divide", "pow", "neg", "rsub", "exp", "log", "sqrt",
    "rsqrt", "abs", "square", "sigmoid", "tanh", "relu", "sin", "cos", "maximum", "minimum",
    "clamp", "matmul", "mm", "bmm", "mv", "dot", "sum", "mean", "reshape", "view", "flatten",
    "squeeze", "unsqueeze", "t", "transpose", "permute", "__add__", "__sub__", "__mul__",
    "__truediv__", "__pow__", "__radd__", "__rsub__", "__rmul__", "__rtruediv__", "__rpow__",
    "__neg__", "__matmul__", "__rmatmul__",
    # elementwise choices and comparisons (``torch.where(c)`` alone: index tensors, each of
    # at most the condition's elements)
    "where", "gt", "lt", "ge", "le", "eq", "ne", "__gt__", "__lt__", "__ge__", "__le__",
    "__eq__", "__ne__",
})


def _numel_bound(name: str, args, kwargs) -> int | None:
    """An upper bound on the elements op ``name`` makes from ``args`` and ``kwargs`` (the
    elements of the right-aligned largest size of each dimension over the tensor arguments),
    or ``None`` when it has none: another op, or an argument that is not a tensor, a number
    or a list of numbers (a size)."""
    if name not in _BROADCAST_BOUNDED:
        return None
    dims: list[int] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            shape = list(a.shape)
            if len(shape) > len(dims):
                dims = [1] * (len(shape) - len(dims)) + dims
            for i, n in enumerate(shape, len(dims) - len(shape)):
                dims[i] = max(dims[i], n)
        elif isinstance(a, (list, tuple)):
            if not all(isinstance(v, int) for v in a):
                return None
        elif a is not None and not isinstance(a, (bool, int, float, torch.dtype)):
            return None
    bound = 1
    for n in dims:
        bound *= n
    return bound


#: The operators that change their first argument in place.
_INPLACE_OPERATORS = frozenset({
    "__iadd__", "__isub__", "__imul__", "__itruediv__", "__idiv__", "__ifloordiv__",
    "__imod__", "__ipow__", "__imatmul__", "__iand__", "__ior__", "__ixor__", "__ilshift__",
    "__irshift__", "__setitem__"})
_INPLACE_SLOT: dict[Callable, int | None] = {}


def _inplace_slot(fn: Callable) -> int | None:
    """The position of ``fn``'s ``inplace`` parameter (F.relu's 1), or None."""
    if fn not in _INPLACE_SLOT:
        slot = None
        try:
            names = list(inspect.signature(fn).parameters)
            slot = names.index("inplace") if "inplace" in names else None
        except (TypeError, ValueError):  # a builtin without a signature: keywords only
            pass
        _INPLACE_SLOT[fn] = slot
    return _INPLACE_SLOT[fn]


def changes_first(fn: Callable, args: list, kwargs: dict) -> bool:
    """Whether calling ``fn`` on these arguments changes its first one in place: a method
    ending in ``_`` (``relu_``), an in-place operator (``+=``, ``h[mask] = 0``), a call
    with ``inplace=True`` (as a keyword or by position)."""
    if not args or not isinstance(args[0], torch.Tensor):
        return False
    name = getattr(fn, "__name__", "")
    if name in _INPLACE_OPERATORS or (name.endswith("_") and not name.endswith("__")):
        return True
    if kwargs.get("inplace") is True:
        return True
    slot = _inplace_slot(fn) if len(args) > 1 else None
    return slot is not None and slot < len(args) and args[slot] is True


def _versions(ops: list[Op], inner: dict[int, list[Op]]) -> tuple[dict[int, Op], dict[int, int],
                                                                 dict[int, int]]:
    """An op in place gives its output its input's tid (``h.relu_()``: h in, h out), so one
    tid names two values. The replay names each value apart: an op's output that is one of
    its inputs gets a new tid (negative: none of the file's), which the ops after it read.
    Returns the renamed ops by index, new tid -> the file's tid, and the file's tid -> the
    tid of its last value."""
    renamed: dict[int, Op] = {}
    origin: dict[int, int] = {}
    latest: dict[int, int] = {}
    # below every tid of the file, negative ones of a crafted file too
    below = min([0] + [t for o in ops for t in (*o.inputs, *o.outputs) if isinstance(t, int)])

    def remap(a):
        if isinstance(a, dict):
            if len(a) == 1 and "tensor" in a and isinstance(a["tensor"], int) \
                    and not isinstance(a["tensor"], bool):
                return {"tensor": latest.get(a["tensor"], a["tensor"])}
            return {k: remap(v) for k, v in a.items()}
        if isinstance(a, list):
            return [remap(v) for v in a]
        if isinstance(a, tuple):
            return tuple(remap(v) for v in a)
        return a

    def visit(o: Op) -> None:
        inputs = o.inputs
        new = dict(inputs=tuple(latest.get(i, i) for i in inputs), args=remap(o.args),
                   kwargs=remap(o.kwargs))
        outputs = []
        if not o.is_graph and o.parent is None:  # not replayed: its output is a constant
            for t in o.outputs:
                latest.pop(t, None)
            outputs = list(o.outputs)
        elif o.is_function:  # its outputs are what its inner ops made, as they named them
            for io in inner.get(o.index, []):
                visit(io)
            outputs = [latest.get(t, t) for t in o.outputs]
        else:
            for t in o.outputs:
                if t in inputs or t in latest:
                    fresh = below - 1 - len(origin)
                    origin[fresh] = t
                    latest[t] = fresh
                    t = fresh
                outputs.append(t)
        renamed[o.index] = replace(o, outputs=tuple(outputs), **new)

    for o in ops:
        if o.parent is None:
            visit(o)
    return renamed, origin, latest


def _outputs(out) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(v for v in out if isinstance(v, torch.Tensor))
    return ()


@dataclass
class Replay:
    """The forward of one recorded step as a function of its leaf parameters (float64).

    ``replay(values)`` returns the scalar the backward pass started from (or, for a
    backward from a non-scalar tensor, its dot product with the recorded incoming
    gradient). ``values`` maps parameter tids to float64 tensors.
    """

    step: Step
    leaves: tuple[int, ...]

    def __post_init__(self):
        step = self.step
        bw = step.backward
        if bw is None:
            raise ReplayError("the step has no backward pass")
        if step.ops_dropped:
            raise ReplayError(f"{step.ops_dropped} ops of this step were not recorded (max_ops_per_step); "
                              f"record with gradtrace.trace(max_ops_per_step="
                              f"{len(step.ops) + step.ops_dropped}) to check it")
        inner: dict[int, list[Op]] = {}
        for o in step.ops:
            if o.parent is not None:
                inner.setdefault(o.parent, []).append(o)
        #: the ops with each value named apart (see _versions): new tid -> the file's tid
        self.origin: dict[int, int] = {}
        ops = step.ops
        latest: dict[int, int] = {}
        if any(t in o.inputs for o in ops for t in o.outputs):
            renamed, self.origin, latest = _versions(ops, inner)
            ops = [renamed.get(o.index, o) for o in ops]
        self.top = [o for o in ops if o.parent is None]
        self.inner = {}
        for o in ops:
            if o.parent is not None:
                self.inner.setdefault(o.parent, []).append(o)
        # What a replay runs: the graph ops and the ops inside custom Functions. Other ops
        # (data preparation, in-place initialisation) keep their recorded outputs.
        self.runs = [o for o in ops if o.is_graph or o.parent is not None]
        #: the finite differences' relative step (see KINKS)
        self.fd_eps = FD_EPS / KINK_SHRINK if any(
            (o.name if isinstance(o.name, str) else "") in KINKS for o in self.runs) else FD_EPS
        self.made: set[int] = set()
        self.given: frozenset[int] = frozenset(self.leaves)
        self.dependent: set[int] = set(self.leaves)
        for o in self.runs:
            self.made.update(o.outputs)
            self.dependent.update(o.outputs)
        for o in self.top:
            if not o.is_graph and any(t in o.inputs and t in self.dependent for t in o.outputs):
                where = f" at {o.source.short}" if o.source else ""
                raise ReplayError(f"{self.name(o.outputs[0])} was changed in place where autograd does "
                                  f"not see it ({o.name}{where}, under torch.no_grad()): its gradients "
                                  "are not the derivative of what the step computed")
        for o in self.runs:
            self._refuse_random(o, o.name if isinstance(o.name, str) else "")
        self.funcs: dict[int, Callable] = {}
        for o in self.runs:
            if o.is_function:
                continue
            fn = self.funcs[o.index] = _resolve(o)
            # The name is the file's; the function's own name is what will run.
            self._refuse_random(o, getattr(fn, "__name__", ""))
        self.root_grads = self._root_grads()
        self.roots = tuple(latest.get(r, r) for r in bw.roots)  # the loss as backward saw it
        self.views: dict[int, tuple[int, tuple[int, ...]]] = {}
        self.constants: dict[int, torch.Tensor] = {}
        self.sized: set[int] = set()  # ops whose output shapes were checked

    def _refuse_random(self, o: Op, name: str) -> None:
        base = name.rstrip("_") if name.endswith("_") and not name.endswith("__") else name
        if (name in _RANDOM or base in _RANDOM) and not self._harmless_random(o, name):
            raise ReplayError(f"the step draws random numbers ({name}"
                              f"{' at ' + o.source.short if o.source else ''}); "
                              "a replay would draw different ones; to check it, record a run "
                              "that draws none (model.eval(), dropout p=0)")

    @staticmethod
    def _harmless_random(o: Op, name: str) -> bool:
        if name.startswith(("dropout", "feature_dropout", "alpha_dropout", "feature_alpha")):
            training = o.kwargs.get("training", o.args[2] if len(o.args) > 2 else True)
            p = o.kwargs.get("p", o.args[1] if len(o.args) > 1 else 0.5)
            return training is False or p == 0
        return False

    def _root_grads(self) -> list[torch.Tensor | None]:
        """The gradient each root was seeded with (1 for a scalar loss)."""
        bw = self.step.backward
        assert bw is not None  # __post_init__ refused a step without one
        out: list[torch.Tensor | None] = []
        for r in bw.roots:
            v = self.step.value(r)
            if v is not None and v.numel == 1:
                out.append(None)
                continue
            node = next((n for n in bw.nodes if n.op is not None and r in self._op(n.op).outputs), None)
            g = node.grad_outputs[0] if node is not None and node.grad_outputs else None
            if g is None or g.data is None:
                raise ReplayError("backward from a tensor whose incoming gradient was not kept; "
                                  "record with --values full and a --max-numel as large as it")
            out.append(g.data.double())
        return out

    def name(self, tid: int) -> str:
        """The tensor's name in the step (a value an op in place made: its tensor's)."""
        return self.step.name(self.origin.get(tid, tid))

    def _op(self, index: int) -> Op:
        for o in self.step.ops:
            if o.index == index:
                return o
        raise ReplayError(f"op {index} is not in the step")

    # -- values -----------------------------------------------------------------------------
    def constant(self, tid: int, consumer: Op) -> torch.Tensor:
        c = self.constants.get(tid)
        if c is not None:
            return c
        v = self.step.value(tid)
        if v is None or v.data is None:
            what = ("was not recorded" if v is None else f"was kept as statistics only ({v.numel} "
                    f"elements); record with `gradtrace run --max-numel {v.numel}` to check it")
            raise ReplayError(f"the value of {self.name(tid)} (used by {consumer.name}) {what}")
        t = v.data
        if t.is_floating_point():
            t = t.double()
        self.constants[tid] = t
        return t

    def _arg(self, a, env: dict[int, torch.Tensor], op: Op, slot: int | str | None = None):
        """An argument as the replay passes it, checked first: tensors of the step, numbers,
        None, lists and tuples of those, slices, Ellipsis, allow-listed dtypes and memory
        formats, a device (the replay's CPU), and a string only where ``op``'s function takes
        one of a few (``slot``: the positional index or keyword; see analysis.replayable)."""
        if a is None or isinstance(a, (bool, int, float)):
            return a
        if isinstance(a, str):
            kind = string_kind(op.target, slot) if slot is not None else None
            if kind is None or not accepts(kind, a):
                where = f"{slot}=" if isinstance(slot, str) else ("" if slot is None else f"argument {slot} ")
                raise ReplayError(f"{op.target} was given {where}{a[:60]!r}, a string gradtrace "
                                  "does not pass on")
            return torch.device("cpu") if kind == "device" else a
        if isinstance(a, list):
            return [self._arg(x, env, op) for x in a]
        if isinstance(a, tuple):
            return tuple(self._arg(x, env, op) for x in a)
        if isinstance(a, dict) and len(a) == 1:
            (key, v), = a.items()
            if key == "tensor" and isinstance(v, int) and not isinstance(v, bool):
                if v in env:
                    return env[v]
                if v in self.dependent and v not in self.made:
                    raise ReplayError(f"{self.name(v)} (an input of {op.name}) was made by a call "
                                      "gradtrace did not record")
                return self.constant(v, op)
            if key == "slice" and isinstance(v, list) and len(v) == 3:
                return slice(*(self._arg(x, env, op) for x in v))
            if key == "ellipsis":
                return Ellipsis
            if key == "dtype":
                try:
                    dt = dtype_from_name(v)
                except ValueError:
                    raise ReplayError(f"{op.target} was given dtype {str(v)[:60]!r}, which is not a "
                                      "dtype gradtrace knows") from None
                return torch.float64 if dt.is_floating_point else dt
            if key == "device":
                return torch.device("cpu")
            if key == "repr" and isinstance(v, str):
                m = _RANGE.match(v)
                if m:
                    return range(*(int(x) for x in m.groups() if x is not None))
                if v in _MEMORY_FORMATS:
                    return _MEMORY_FORMATS[v]
                raise ReplayError(f"{op.name} has an argument gradtrace kept only as text: {v[:60]}")
        raise ReplayError(f"{op.target} has an argument gradtrace does not replay: {str(a)[:60]}")

    # -- running ------------------------------------------------------------------------------
    def forward(self, values: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Every tensor of the step, recomputed from ``values`` (tid -> float64 tensor)."""
        env: dict[int, torch.Tensor] = {t: v.clone() for t, v in values.items()}
        for tid, (src, dims) in self.views.items():
            env[tid] = env[src].permute(*dims)
        with torch.no_grad():
            for o in self.top:
                self._run(o, env, in_place=True)
        return env

    def _run(self, o: Op, env: dict[int, torch.Tensor], in_place: bool = False) -> None:
        """Op ``o`` run on ``env``, its outputs put there. ``in_place``: an op in place may
        change a tensor the replay made in ``env`` (the forward's own: ``h.narrow(...)
        .mul_(2)`` then writes ``h`` too, as it did in the run); otherwise it changes a copy."""
        if not o.is_graph and o.parent is None:
            return  # data preparation or initialisation: its recorded output is a constant
        if o.is_function:
            inner = self.inner.get(o.index, [])
            for i in o.inputs:
                if i not in env:
                    env[i] = self._arg({"tensor": i}, env, o)
            for io in inner:
                self._run(io, env, in_place)
            missing = [t for t in o.outputs if t not in env]
            if missing:
                raise ReplayError(f"{o.name}'s forward returned a tensor that none of its recorded ops "
                                  "made; it cannot be replayed")
            return
        if o.outputs and all(t in self.given for t in o.outputs):
            # the op made a tensor the gradient is taken with respect to (an input of
            # torch.autograd.grad, h = emb(tok)): its value is what the replay varies, not
            # what the op would make again from its own inputs
            return
        for i in o.inputs:
            if i not in env and i in self.dependent and i not in self.made:
                raise ReplayError(f"{self.name(i)} (an input of {o.name}"
                                  f"{' at ' + o.source.short if o.source else ''}) was made by a "
                                  "call gradtrace did not record")
        outs = _outputs(self.call(o, env, in_place))
        if len(outs) < len(o.outputs):
            raise ReplayError(f"{o.target} gave {len(outs)} tensors on replay, {len(o.outputs)} recorded")
        for tid, t in zip(o.outputs, outs):
            if tid in self.given:
                continue  # (one output of several: as above)
            if t.is_floating_point() and t.dtype != torch.float64:
                t = t.double()
            env[tid] = t

    def call(self, o: Op, env: dict[int, torch.Tensor], in_place: bool = False):
        """Op ``o`` (not a custom Function) called on its arguments, tensors taken from
        ``env`` (float64); what its function returned. The error model
        (:mod:`.errmodel`) calls it with other tensors in ``env`` (magnitudes, expanded
        copies) to get the op's local derivatives.

        An op in place (``h.relu_()``, ``h[mask] = 0``, ``F.relu(h, inplace=True)``) runs
        on a copy of the tensor it changes, and returns that copy: neither a value of the
        file, a leaf the error model differentiates nor its other tensors are changed, and
        autograd sees an op on a tensor of its own. Only with ``in_place`` (the replay's
        forward) does it change a tensor the replay made itself, as the run did."""
        args = [self._arg(a, env, o, i) for i, a in enumerate(o.args)]
        if o.name == "getitem" and len(args) == 2 and isinstance(args[1], list):
            args[1] = tuple(args[1])  # the recorder keeps tuples as lists; x[a, b] is a tuple
        kwargs = {k: self._arg(v, env, o, k) for k, v in o.kwargs.items()}
        if "dtype" in kwargs and isinstance(kwargs["dtype"], torch.dtype) and kwargs["dtype"].is_floating_point:
            kwargs["dtype"] = torch.float64
        fn = self.funcs[o.index]
        if fn is F.embedding:
            # nn.Embedding(sparse=True): the same values, a dense gradient (the error model
            # reshapes gradients, which a sparse one cannot do)
            if len(args) > 6:
                args[6] = False
            kwargs.pop("sparse", None)
        after = False  # sized after it runs: its output is known to be small
        if o.index not in self.sized:
            bound = _numel_bound(getattr(fn, "__name__", ""), args, kwargs)
            if bound is not None and bound <= self.max_numel:
                after = True
            else:
                self._size_first(o, args, kwargs)
        mask = self._branch(o, args) if fn in _RELUS else None
        if mask is not None:
            x = args[0]
            target = o.args[0].get("tensor") if isinstance(o.args[0], dict) else None
            if in_place and changes_first(fn, args, kwargs) and not x.requires_grad \
                    and target in self.made:
                return x.mul_(mask)  # the replay's forward, on its own tensor: as the run did
            return x * mask
        changed = None
        if changes_first(fn, args, kwargs):
            target = o.args[0].get("tensor") if isinstance(o.args[0], dict) else None
            if not in_place or args[0].requires_grad or target not in self.made:
                args[0] = args[0].clone()
            changed = args[0]
        try:
            out = fn(*args, **kwargs)
            if changed is not None and out is None:
                out = changed  # Tensor.__setitem__ returns None: its result is what it assigned into
        except Exception as e:  # a recorded call that does not run again: say which
            raise ReplayError(f"replaying {o.target} failed ({type(e).__name__}: {e})") from None
        if after:
            self._check_sizes(o, out)
        return out

    def _branch(self, o: Op, args: list) -> torch.Tensor | None:
        """Where a ReLU's recorded input was positive (float64 0 / 1), when its value was kept
        whole and has the shape the replay gives it; else None (the ReLU runs as it is)."""
        if not o.inputs or not args or not isinstance(args[0], torch.Tensor):
            return None
        v = self.step.value(o.inputs[0])
        data = v.data if v is not None else None
        if data is None or tuple(data.shape) != tuple(args[0].shape) or not data.is_floating_point():
            return None
        return (data > 0).to(args[0].dtype)

    def _size_first(self, o: Op, args: list, kwargs: dict) -> None:
        """Before an op first runs, run it on the meta device (shapes, no data): its outputs
        must have the shapes the trace recorded, so sizes in a crafted file cannot make the
        replay allocate more than the run did."""
        try:
            out = self.funcs[o.index](*_on_meta(args), **_on_meta(kwargs))
        except Exception as e:
            raise ReplayError(f"{o.target} cannot be sized before it runs ({type(e).__name__}); "
                              "gradtrace does not replay it") from None
        self._check_sizes(o, out)

    def _check_sizes(self, o: Op, out) -> None:
        """``out`` (on the meta device, or small) has the shapes the trace recorded."""
        for tid, t in zip(o.outputs, _outputs(out)):
            # a value an op in place made has no shape of its own in the file (t.unsqueeze_())
            known = None if tid in self.origin else self.step.value(tid) or self.step.tensors.get(tid)
            if known is not None and tuple(t.shape) != tuple(known.shape):
                raise ReplayError(f"{o.target} would make a {list(t.shape)} tensor where the trace "
                                  f"recorded {list(known.shape)}")
            if known is None and t.numel() > self.max_numel:
                raise ReplayError(f"{o.target} would make a tensor of {t.numel()} elements, more "
                                  "than any the step recorded")
        self.sized.add(o.index)

    @cached_property
    def max_numel(self) -> int:
        """The most elements an op of the replay may make when the trace has no shape for it."""
        return max([1 << 20] + [4 * v.numel for v in self.step.values.values()])

    def losses(self, values: dict[int, torch.Tensor], tid: int, points: torch.Tensor) -> torch.Tensor:
        """The loss (as :meth:`__call__` sums it) at each of ``points`` (a batch of values of
        leaf ``tid``, first dimension the batch), in one replay vectorised by ``torch.func.vmap``.
        Raises whatever an op that vmap cannot batch raises; callers fall back to one replay a
        point."""
        from torch.func import vmap

        def one(p: torch.Tensor) -> torch.Tensor:
            vals = dict(values)
            vals[tid] = p
            env = self.forward(vals)
            total = torch.zeros((), dtype=torch.float64)
            for r, g in zip(self.roots, self.root_grads):
                if r not in env:
                    raise ReplayError(f"the loss ({self.name(r)}) was not recomputed")
                v = env[r]
                total = total + (v.sum() if g is None else (v * g.reshape(v.shape)).sum())
            return total

        # vmap runs an op it has no batching rule for (clamp_) one point at a time, and warns
        # so: a note to torch's developers, not the user's (a warning turned into an error
        # falls back to one replay a point, as any other failure here does)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="There is a performance drop")
            return vmap(one)(points)

    def __call__(self, values: dict[int, torch.Tensor]) -> float:
        env = self.forward(values)
        total = 0.0
        for r, g in zip(self.roots, self.root_grads):
            if r not in env:
                raise ReplayError(f"the loss ({self.name(r)}) was not recomputed")
            v = env[r]
            total += float(v.sum()) if g is None else float((v * g.reshape(v.shape)).sum())
        return total


def leaf_values(step: Step, leaves: tuple[int, ...], replay: Replay | None = None) -> dict[int, torch.Tensor]:
    """The leaves' values as the step's forward saw them, float64. A leaf the recorder
    only saw through ``w.T`` is read back from the transposed tensor (``replay.views``)."""
    out = {}
    for tid in leaves:
        v = step.value(tid)
        if v is not None and v.data is not None:
            out[tid] = v.data.double()
            continue
        if v is not None:
            raise ReplayError(f"only statistics of {step.name(tid)} were kept ({v.numel} elements), "
                              "so the replay has no value to start from; record with "
                              f"`gradtrace run --max-numel {v.numel}` to check it")
        found = _find_view_of(step, tid)
        if found is None:
            raise ReplayError(f"the value of {step.name(tid)} was not recorded")
        view_tid, dims = found
        vv = step.value(view_tid)
        if vv is None or vv.data is None:
            raise ReplayError(f"the value of {step.name(tid)} was not recorded")
        inv = [0] * len(dims)
        for i, d in enumerate(dims):
            inv[d] = i
        out[tid] = vv.data.double().permute(*inv).contiguous()
        if replay is not None:
            replay.views[view_tid] = (tid, tuple(dims))
    return out


def _find_view_of(step: Step, param: int) -> tuple[int, tuple[int, ...]] | None:
    for o in step.ops:
        for t in o.inputs:
            if step.value(t) is None or any(t in p.outputs for p in step.ops):
                continue
            info = step.tensors.get(t)
            if info is None or info.role != "activation":
                continue
            found = unrecorded_view(step, t, o)
            if found is not None and found[0] == param:
                return t, found[1]
    return None


def autograd_gradients(step: Step) -> dict[int, torch.Tensor]:
    """What autograd computed in this step for each leaf: the gradient that arrived at
    its ``.grad`` (``Event.incoming``), or what ``autograd.grad`` returned."""
    bw = step.backward
    out: dict[int, torch.Tensor] = {}
    if bw is None:
        return out
    if bw.api == "autograd.grad":
        for tid, v in zip(bw.inputs, bw.results):
            if v is not None and v.data is not None:
                out[tid] = v.data.double()
        return out
    for e in step.accumulations:
        if e.incoming is None or e.incoming.data is None:
            continue
        g = e.incoming.data.double()
        out[e.tensor] = out[e.tensor] + g if e.tensor in out else g
    return out


def sample_indices(numel: int, limit: int, seed: int) -> list[int]:
    """Which elements of a parameter to differentiate: all, or ``limit`` of them chosen
    by a generator seeded with the step (the same ones on every run)."""
    if numel <= limit:
        return list(range(numel))
    g = torch.Generator().manual_seed(1_000_003 * seed + numel)
    return sorted(torch.randperm(numel, generator=g)[:limit].tolist())


@dataclass
class FDResult:
    """Central differences of one parameter at the sampled elements (flat indices).

    ``D(h) = (L(x + h) - L(x - h)) / 2h = f' + a h^2 + b h^4 + ...``, taken with steps h, 2h
    and 4h. ``fd`` is Richardson's extrapolation ``R(h) = (4 D(h) - D(2h)) / 3 = f' - 4 b h^4``;
    with ``R(2h) = f' - 64 b h^4``, ``|R(h) - R(2h)| / 15`` estimates its truncation error."""

    tid: int
    indices: list[int]
    fd: torch.Tensor        # dL/dtheta_i, R(h), float64
    d_h: torch.Tensor       # the plain central differences D(h), D(2h), D(4h)
    d_2h: torch.Tensor
    d_4h: torch.Tensor
    h: torch.Tensor         # the step used at each element

    @property
    def truncation(self) -> torch.Tensor:
        """The estimated truncation error of ``fd`` at each element."""
        r2 = (4 * self.d_2h - self.d_4h) / 3
        return (self.fd - r2).abs() / 15

    #: how much of the loss's own rounding error, divided by h, reaches ``fd``
    CANCELLATION = (4 * 1 + 1 / 2) / 3


def finite_differences(replay: Replay, values: dict[int, torch.Tensor], tid: int,
                       indices: list[int], loss_error: float = 0.0,
                       target: torch.Tensor | None = None) -> FDResult:
    """dL/dtheta_i for the given flat indices of parameter ``tid`` by central differences
    with steps h, 2h and 4h (h = replay.fd_eps * max(1, |theta_i|): FD_EPS, or a hundredth of
    it where the step has a kink), extrapolated (see FDResult).

    With a ``target`` (per element: the error that would not matter), a step whose
    estimated error (truncation + ``1.5 * loss_error / h``) is above it is retried with
    h / 16, twice at most, and the estimate that is smallest is kept: a parameter of
    1e-5 multiplying features of 1e4 needs a smaller step than max(1, |theta|) gives."""
    base = values[tid].reshape(-1)
    n = len(indices)
    ds = torch.empty(3, n, dtype=torch.float64)
    trial = torch.tensor([replay.fd_eps * max(1.0, abs(float(base[i]))) for i in indices],
                         dtype=torch.float64)
    hs = trial.clone()                  # the step of the estimate kept
    best = [math.inf] * n
    todo = list(range(n))
    for attempt in range(3 if target is not None else 1):
        if not todo:
            break
        h = trial[todo]
        d = _central_differences(replay, values, tid, [indices[j] for j in todo], h)
        r1, r2 = (4 * d[0] - d[1]) / 3, (4 * d[1] - d[2]) / 3
        err = ((r1 - r2).abs() / 15 + FDResult.CANCELLATION * loss_error / h).tolist()
        again = []
        for k, j in enumerate(todo):
            if attempt == 0 or err[k] < best[j]:   # the estimate that is smallest is kept
                best[j] = err[k]
                ds[:, j] = d[:, k]
                hs[j] = h[k]
            if target is not None and not err[k] <= float(target[j]):
                again.append(j)
        todo = again
        trial[todo] = trial[todo] / 16
    fd = (4 * ds[0] - ds[1]) / 3
    return FDResult(tid, indices, fd, ds[0], ds[1], ds[2], hs)


#: at most this many bytes of the step's values held for the points of one batched replay
_FD_BATCH_BYTES = 64 << 20


def _central_differences(replay: Replay, values: dict[int, torch.Tensor], tid: int,
                         flat: list[int], h: torch.Tensor) -> torch.Tensor:
    """``D(s h)`` for s = 1, 2, 4 at each flat index of leaf ``tid`` (rows s, columns the
    indices): ``(L(x + s h e_i) - L(x - s h e_i)) / 2 s h``, the 6 losses of every index
    replayed together through :meth:`Replay.losses` (in chunks that bound the memory), or
    one replay a point where vmap cannot batch an op of the step."""
    x = values[tid]
    k = len(flat)
    scale = torch.tensor([1.0, -1.0, 2.0, -2.0, 4.0, -4.0], dtype=torch.float64)
    deltas = (scale[:, None] * h[None, :]).reshape(-1)             # point p = 6 s-rows x k
    where = torch.tensor(flat * 6, dtype=torch.long)
    per_point = 8 * max(1, sum(v.numel() for v in values.values()))
    chunk = max(1, _FD_BATCH_BYTES // per_point)
    L = torch.empty(6 * k, dtype=torch.float64)
    batched = True
    for lo in range(0, 6 * k, chunk):
        hi = min(6 * k, lo + chunk)
        pts = x.reshape(1, -1).repeat(hi - lo, 1)
        rows = torch.arange(hi - lo)
        pts[rows, where[lo:hi]] += deltas[lo:hi]
        pts = pts.reshape(hi - lo, *x.shape)
        if batched:
            try:
                L[lo:hi] = replay.losses(values, tid, pts)
                continue
            except Exception:  # an op vmap cannot batch (in place on an unbatched tensor...)
                batched = False
        for p in range(hi - lo):
            vals = dict(values)
            vals[tid] = pts[p]
            L[lo + p] = replay(vals)
    L = L.reshape(6, k)
    s = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)[:, None]
    return (L[0::2] - L[1::2]) / (2 * s * h[None, :])


@dataclass(frozen=True)
class Blame:
    """A custom Function whose recorded backward disagrees with its replayed forward."""

    op: Op
    ratio: float | None   # autograd / finite differences, along a random direction
    rel_err: float

    @property
    def name(self) -> str:
        return self.op.target.removeprefix(FUNCTION_PREFIX)


def blame_functions(replay: Replay, values: dict[int, torch.Tensor], rtol: float) -> list[Blame]:
    """Check each custom ``autograd.Function`` of the step on its own: along a random
    direction v of its inputs, its recorded backward gives <grad_inputs, v>; its replayed
    forward gives d/dt <grad_outputs, f(x + t v)> by central differences."""
    step = replay.step
    bw = step.backward
    assert bw is not None  # a Replay is only made of a step with a backward pass
    env = replay.forward(values)
    out: list[Blame] = []
    for o in replay.top:
        if not o.is_function:
            continue
        node = next((n for n in bw.nodes if n.op == o.index), None)
        if node is None or node.order is None:
            continue
        g_out = [v.data.double() if v is not None and v.data is not None else None
                 for v in node.grad_outputs]
        g_in = [v.data.double() if v is not None and v.data is not None else None
                for v in node.grad_inputs]
        got = [env.get(t) for t in o.inputs]
        xs = [x for x in got if x is not None]
        if len(xs) != len(got) or len(g_in) != len(xs):
            continue
        gen = torch.Generator().manual_seed(step.index * 7919 + o.index)
        dirs = [torch.randn(x.shape, generator=gen, dtype=torch.float64) if
                (x.is_floating_point() and g is not None) else None for x, g in zip(xs, g_in)]
        if all(d is None for d in dirs):
            continue
        lhs = sum(float((g.reshape(d.shape) * d).sum()) for g, d in zip(g_in, dirs)
                  if g is not None and d is not None)

        def phi(t: float) -> float:
            local = {i: (x + t * d if d is not None else x) for i, x, d in zip(o.inputs, xs, dirs)}
            sub = dict(env)
            sub.update(local)
            for t_out in o.outputs:
                sub.pop(t_out, None)
            with torch.no_grad():
                replay._run(o, sub)
            total = 0.0
            for t_out, g in zip(o.outputs, g_out):
                if g is not None:
                    total += float((sub[t_out] * g.reshape(sub[t_out].shape)).sum())
            return total

        scale = max(max(float(x.abs().max()) if x.numel() else 0.0 for x in xs), 1.0)
        h = FD_EPS * scale
        rhs = (phi(h) - phi(-h)) / (2 * h)
        err = abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)
        if err > rtol:
            out.append(Blame(o, lhs / rhs if rhs != 0 else None, err))
    return out


def replay_of(step: Step) -> tuple[Replay, dict[int, torch.Tensor]] | NotApplicable:
    """A :class:`Replay` of the step over the leaves autograd gave gradients to, with their
    values; or why the step cannot be replayed."""
    try:
        leaves = tuple(sorted(autograd_gradients(step)))
        if not leaves:
            if any(e.incoming is not None for e in step.accumulations):
                n = max(e.incoming.numel for e in step.accumulations if e.incoming is not None)
                return NotApplicable("autograd's gradients were kept as statistics only, so there is "
                                     "nothing to compare; record with `gradtrace run --values full "
                                     f"--max-numel {n}` to check them")
            return NotApplicable("no parameter received a gradient in this step")
        rp = Replay(step, leaves)
        values = leaf_values(step, leaves, rp)
        rp(values)  # fails early, with the reason, if the step does not replay
        return rp, values
    except ReplayError as e:
        return NotApplicable(str(e))


def finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all()) if t.numel() else True
