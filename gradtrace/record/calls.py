"""What a torch call is: its kind, its replayable name, its arguments as the file writes them.

Also :class:`IdMap`, the map keyed by tensor identity that every room uses.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from ..tracefile.store import dtype_name

__all__ = ["OP", "GET_DATA", "GET_GRAD", "SET_DATA", "SET_GRAD", "BACKWARD", "INPLACE", "PASS",
           "INPLACE_SYMBOLS", "classify", "target_of", "encode", "tensors_in", "outputs_of",
           "IdMap", "dtype_name_of", "grad_fn_of", "is_lazy", "base_of", "view_root", "compiling", "in_transform"]

_Tensor = torch.Tensor
_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name_of(dt) -> str:
    """``float32`` for torch.float32 (cached: it is asked for every value)."""
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = _DTYPE_NAMES[dt] = dtype_name(dt)
    return name

# -- safe attributes ----------------------------------------------------------------------------
# Some tensor attributes raise instead of answering: ``.shape`` (and ``.data``) of a lazy
# module's parameter before its first batch, ``.grad_fn`` of a view made under no_grad whose
# base was changed in place since. The recorder reads them only through these.
_is_lazy = torch.nn.parameter.is_lazy


def is_lazy(t) -> bool:
    """An uninitialised parameter or buffer (``nn.Lazy*``): no shape yet. The same object is
    materialised in place later; it is registered only then."""
    return _is_lazy(t)


def grad_fn_of(t):
    """``t.grad_fn``, or None where reading it raises (a no-grad view whose base changed)."""
    try:
        return t.grad_fn
    except RuntimeError:
        return None


def base_of(t):
    """The tensor ``t`` is a view of (``t._base``, always the root), or None."""
    try:
        return t._base
    except RuntimeError:
        return None


def view_root(t):
    """``t`` itself, or the tensor it is a view of."""
    b = base_of(t)
    return t if b is None else b


# -- territory the recorder does not record ------------------------------------------------------
_is_compiling = torch.compiler.is_compiling

_functorch_level = torch._C._functorch.maybe_current_level


def compiling() -> bool:
    """Dynamo is tracing (``torch.compile``): every hook and the mode step aside, so that
    what is compiled is the user's code alone. torch.compiler.is_compiling() itself, which
    Dynamo reads as True without a guard (a read of the flag behind it would be guarded on,
    and recompiled for at every call)."""
    return _is_compiling()


def in_transform() -> bool:
    """A ``torch.func`` transform (vmap, grad, jacrev...) is running: its tensors are
    functorch wrappers, and what happens to them is functorch's, not autograd's."""
    return _functorch_level() is not None


OP, GET_DATA, GET_GRAD, SET_DATA, SET_GRAD, BACKWARD, INPLACE, PASS = range(8)

_SPECIAL = {
    _Tensor.data.__get__: GET_DATA,  # type: ignore[attr-defined]
    _Tensor.grad.__get__: GET_GRAD,  # type: ignore[union-attr]
    _Tensor.data.__set__: SET_DATA,  # type: ignore[attr-defined]
    _Tensor.grad.__set__: SET_GRAD,  # type: ignore[union-attr]
    _Tensor.backward: BACKWARD,
    # Properties that build the graph (w.T in `X @ w.T + b`) are ops like any other.
    _Tensor.T.__get__: OP,  # type: ignore[attr-defined]
    _Tensor.mT.__get__: OP,  # type: ignore[attr-defined]
    _Tensor.H.__get__: OP,  # type: ignore[attr-defined]
    _Tensor.mH.__get__: OP,  # type: ignore[attr-defined]
    torch.autograd.backward: BACKWARD,
    torch.autograd.grad: BACKWARD,
}

# Calls that never matter to the recording: grad mode switches, profiler markers, metadata.
_PASS_NAMES = {
    "_set_grad_enabled", "is_grad_enabled", "_record_function_enter_new", "_RecordFunction",
    "requires_grad_", "retain_grad", "register_hook", "__get__", "__set__", "dim", "size",
    "numel", "is_floating_point", "is_complex", "__len__", "__format__", "__repr__",
    "__bool__", "item", "tolist", "numpy", "__index__", "__int__", "__float__", "__hash__",
    "data_ptr", "storage", "untyped_storage", "stride", "is_contiguous", "element_size",
    "_is_view", "is_leaf", "grad_fn", "requires_grad", "shape", "dtype", "device",
}

# Friendly names for Python operators.
_OP_NAMES = {
    "__add__": "add", "__radd__": "add", "__sub__": "sub", "__rsub__": "rsub",
    "__mul__": "mul", "__rmul__": "mul", "__truediv__": "div", "__rtruediv__": "rdiv",
    "__matmul__": "matmul", "__rmatmul__": "matmul", "__pow__": "pow", "__rpow__": "rpow",
    "__neg__": "neg", "__getitem__": "getitem", "__floordiv__": "floordiv", "__abs__": "abs",
    "__mod__": "remainder", "_VariableFunctionsClass.": "",
}
INPLACE_SYMBOLS = {
    "__iadd__": "+=", "__isub__": "-=", "__imul__": "*=", "__itruediv__": "/=",
    "__setitem__": "[...] =",
}


def classify(func) -> int:
    # torch.autograd.backward/grad dispatch themselves by their module's name, which is
    # gradtrace's patch of them while recording (install._patch_backward): its original.
    kind = _SPECIAL.get(getattr(func, "gradtrace_wraps", func))
    if kind is not None:
        return kind
    name = getattr(func, "__name__", "")
    if name in _PASS_NAMES:
        return PASS
    if name in INPLACE_SYMBOLS or (name.endswith("_") and not name.endswith("__")):
        return INPLACE
    return OP


_PROPERTY_OPS = {_Tensor.T.__get__: ("T", "Tensor.T.__get__"),  # type: ignore[attr-defined]
                 _Tensor.mT.__get__: ("mT", "Tensor.mT.__get__"),  # type: ignore[attr-defined]
                 _Tensor.H.__get__: ("H", "Tensor.H.__get__"),  # type: ignore[attr-defined]
                 _Tensor.mH.__get__: ("mH", "Tensor.mH.__get__")}  # type: ignore[attr-defined]


def target_of(func) -> tuple[str, str]:
    """(friendly op name, a dotted name that resolves the callable from torch)."""
    prop = _PROPERTY_OPS.get(func)
    if prop is not None:
        return prop
    name = getattr(func, "__name__", None) or repr(func)
    mod = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", name)
    if qual.startswith(("TensorBase.", "Tensor.")) or mod in ("torch._tensor",) and "." in qual:
        target = "Tensor." + name
    elif qual.startswith("_VariableFunctionsClass."):
        target = "torch." + name
    elif mod == "torch._C._nn":
        target = "torch._C._nn." + name
    elif mod == "torch._C._linalg":
        target = "torch.linalg." + name.removeprefix("linalg_")
    elif mod == "torch._C._special":
        target = "torch.special." + name.removeprefix("special_")
    elif mod == "torch._C._fft":
        target = "torch.fft." + name.removeprefix("fft_")
    elif mod.startswith("torch"):
        target = f"{mod}.{qual}"
    else:
        target = f"{mod}.{qual}" if mod else qual
    friendly = _OP_NAMES.get(name, name.strip("_") if name.startswith("__") else name)
    return friendly, target


class IdMap:
    """tensor -> value, keyed by identity, holding the tensor weakly (never stored on it).

    An entry whose tensor died is never returned (its weak reference no longer points at
    the asker, even when a new tensor reuses the id); dead entries are swept whenever the
    map doubles, so memory stays bounded without a callback per tensor."""

    __slots__ = ("d", "limit")

    def __init__(self):
        self.d: dict[int, tuple[weakref.ref, Any]] = {}
        self.limit = 1024

    def get(self, t):
        e = self.d.get(id(t))
        if e is not None and e[0]() is t:
            return e[1]
        return None

    def set(self, t, value):
        d = self.d
        d[id(t)] = (weakref.ref(t), value)
        if len(d) > self.limit:
            self.sweep()

    def sweep(self):
        d = self.d
        for key in [k for k, e in d.items() if e[0]() is None]:
            del d[key]
        self.limit = max(1024, 2 * len(d))

    def clear(self):
        self.d.clear()

    def __len__(self):
        return len(self.d)


def encode(x, tid_of):
    """JSON-able description of an argument in the file's compact form: a tensor is the
    string ``$t<tid>``, a string that starts with ``$`` gets one more (see tracefile.store)."""
    if isinstance(x, _Tensor):
        return f"$t{tid_of(x)}"
    if isinstance(x, str):
        return "$" + x if x.startswith("$") else x
    if x is None or isinstance(x, (bool, int, float)):
        return x
    if isinstance(x, list):
        return [encode(v, tid_of) for v in x]
    if isinstance(x, tuple):  # torch.Size too: x[a, b] indexes with a tuple, not a list
        return {"tuple": [encode(v, tid_of) for v in x]}
    if isinstance(x, torch.dtype):
        return {"dtype": dtype_name(x)}
    if isinstance(x, torch.device):
        return {"device": str(x)}
    if isinstance(x, slice):
        return {"slice": [encode(x.start, tid_of), encode(x.stop, tid_of), encode(x.step, tid_of)]}
    if x is Ellipsis:
        return {"ellipsis": True}
    if isinstance(x, torch.memory_format):
        return {"repr": str(x)}
    if isinstance(x, dict):
        return {"dict": {str(k): encode(v, tid_of) for k, v in x.items()}}
    return {"repr": repr(x)[:120]}


def tensors_in(args, kwargs):
    out = []
    for a in args:
        if isinstance(a, _Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(v for v in a if isinstance(v, _Tensor))
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, _Tensor):
                out.append(a)
            elif isinstance(a, (list, tuple)):
                out.extend(v for v in a if isinstance(v, _Tensor))
    return out


def outputs_of(out):
    if isinstance(out, _Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(v for v in out if isinstance(v, _Tensor))
    return ()
