"""Reading one step's ops as an expression graph, for the matchers of the model and the loss.

:class:`_Reader` knows which op made each tensor, which tensors are parameters or depend on
them, and reads recorded values, constants and numbers. :class:`_NA` is how every matcher
stops: the reason (and the loss family, once known) becomes a ``NotApplicable``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ...tracefile.model import Op, Step

# Ops that keep every element (and its row-major order): pass-through for shapes.
_RESHAPES = {"reshape", "view", "squeeze", "unsqueeze", "flatten", "view_as", "reshape_as",
             "contiguous", "clone", "ravel"}
_TRANSPOSES = {"t", "T", "mT", "transpose", "permute", "swapaxes", "swapdims", "adjoint"}


class _NA(Exception):
    """Internal: recognition stopped, with the reason (becomes a NotApplicable)."""

    def __init__(self, reason: str, family: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.family = family



def _num(x: object) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    return None


def _broadcast(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy broadcasting of shapes (torch.broadcast_shapes imports sympy: slow)."""
    nd = max(len(s) for s in shapes)
    out: list[int] = []
    for i in range(nd):
        dims = {s[len(s) - nd + i] for s in shapes if len(s) - nd + i >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _at(op: Op | None) -> str:
    """`` at demo.py:12 (`y = b * c * x`)``: where an op is in the script, when known."""
    if op is None or op.source is None:
        return ""
    code = (op.source.code or "").strip()
    return f" at {op.source.short}" + (f" (`{code}`)" if code else "")


class _Reader:
    """Read one step's ops as an expression graph: producers, constants, parameters."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.ops = [o for o in step.ops if o.parent is None]
        self.producer: dict[int, Op] = {}
        for o in self.ops:
            for t in o.outputs:
                self.producer.setdefault(t, o)
        # Only this step's tensors: step.tensors is the whole run's table.
        seen: set[int] = set()
        for o in self.ops:
            seen.update(o.inputs)
            seen.update(o.outputs)
        if step.backward is not None:
            seen.update(n.variable for n in step.backward.nodes if n.variable is not None)
        tensors = step.tensors
        self.params = {t for t in seen if t in tensors and tensors[t].role == "param"}
        self.dependent: set[int] = set(self.params)
        for t in seen:
            info = tensors.get(t)
            if info is not None and info.role == "activation" and t not in self.producer:
                self.dependent.add(t)  # made by a call gradtrace did not see (w.T)
        for o in self.ops:
            if o.is_graph or any(i in self.dependent for i in o.inputs):
                self.dependent.update(o.outputs)
        self.dtype = "float32"

    # values
    def shape(self, tid: int) -> tuple[int, ...]:
        v = self.step.value(tid)
        if v is not None:
            return tuple(v.shape)
        info = self.step.tensors.get(tid)
        return tuple(info.shape) if info is not None else ()

    def numel(self, tid: int) -> int:
        return math.prod(self.shape(tid))

    def data(self, tid: int, what: str) -> torch.Tensor:
        v = self.step.value(tid)
        if v is None:
            raise _NA(f"the value of {what} ({self.step.name(tid)}) was not recorded")
        if v.data is None:
            raise _NA(f"only statistics of {what} ({self.step.name(tid)}, {v.numel} elements) were "
                      "kept; record with a larger --max-numel to check it")
        return v.data

    def const(self, tid: int, what: str) -> torch.Tensor:
        if tid in self.dependent:
            raise _NA(f"{what} ({self.step.name(tid)}) depends on the parameters")
        return self.data(tid, what)

    def scalar(self, arg: Any) -> float | None:
        """A number, or a one-element constant tensor, as a float."""
        n = _num(arg)
        if n is not None:
            return n
        if isinstance(arg, dict) and "tensor" in arg:
            t = arg["tensor"]
            if t not in self.dependent:
                v = self.step.value(t)
                if v is not None and v.data is not None and v.data.numel() == 1:
                    return float(v.data.double().reshape(()).item())
        return None

    def op(self, tid: int | None) -> Op | None:
        """The recorded op that made ``tid`` (None for leaves, unseen calls and non-tensors)."""
        return self.producer.get(tid) if tid is not None else None

    def source(self, op: Op, i: int = 0, family: str | None = None) -> int:
        """The tensor ``op`` takes as positional argument ``i`` (_NA when it is not a tensor)."""
        t = self.tensor_args(op)[i]
        if t is None:
            raise _NA(f"argument {i} of {op.name} is not a tensor", family)
        return t

    def rescaling(self, tid: int, op: Op) -> tuple[int, float, float] | None:
        """(source tid, num, den) when ``op`` (which made ``tid``) only rescales the total of
        its input by num / den: a reshape or a sum (1 / 1), a mean (numel(tid) /
        numel(source)), a division by a non-zero number (1 / s); None for any other op. Both
        loss matchers walk these (scale * num / den, in that order, as they always did)."""
        name, targs = op.name, self.tensor_args(op)
        if name in _RESHAPES or name in ("sum", "nansum"):
            return self.source(op), 1.0, 1.0
        if name == "mean":
            src = self.source(op)
            return src, float(self.numel(tid)), float(max(1, self.numel(src)))
        if name in ("div", "true_divide") and len(op.args) >= 2 and targs[0] is not None:
            s = self.scalar(op.args[1])
            if s is not None and s != 0 and op.kwargs.get("rounding_mode") is None:
                return targs[0], 1.0, s
        return None

    @staticmethod
    def tensor_args(op: Op) -> list[int | None]:
        return [a["tensor"] if isinstance(a, dict) and "tensor" in a else None for a in op.args]

    @staticmethod
    def kw(op: Op, name: str, pos: int | None = None, default: Any = None) -> Any:
        if name in op.kwargs:
            return op.kwargs[name]
        if pos is not None and len(op.args) > pos:
            return op.args[pos]
        return default


def _dims(op: Op) -> Any:
    d = _Reader.kw(op, "dim", 1)
    if d is None:
        d = _Reader.kw(op, "axis")
    return d
