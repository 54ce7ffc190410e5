"""The recorder: the only code that touches autograd (a function mode, node hooks, patches).

How it sees things (torch 2.x):

- a ``TorchFunctionMode`` sees every torch call from Python, including ``.data`` and
  ``.grad`` reads and writes; calls whose output has a ``grad_fn`` are the forward ops;
- ``backward()`` / ``torch.autograd.backward`` / ``torch.autograd.grad`` are seen there too:
  the grad_fn graph is walked from the root and a hook is put on each node for the duration
  of that one call (the closure holds the node's number, never the node);
- in-place calls on a parameter (or on an alias from ``.data``) are updates; on a ``.grad``
  (or its alias) they are zeroings when they leave zeros, grad writes otherwise;
- ``optimizer.step()`` is seen through torch's global optimizer hooks, module names through
  the global module forward hooks, custom ``autograd.Function``s through a patch of
  ``Function.apply``; data loading runs with the mode off.

Everything installed is removed in ``stop()``, which the callers run in a ``finally``.
Hooks never return a value, so gradients are never changed; a bug in gradtrace's own hook
code is reported once and swallowed rather than breaking the user's run.
"""

from __future__ import annotations

import linecache
import os
import sys
import weakref
from types import FrameType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..config import Config
from ..tracefile.model import Stats
from ..tracefile.rows import BackwardRow, EventRow, NodeRow, OpRow, SourceRow, StepHead, TensorRow
from ..tracefile.store import _NUMPY_DTYPES, TraceWriter, dtype_name, tensor_bytes

__all__ = ["Recorder"]

_Tensor = torch.Tensor
_DTYPE_NAMES: dict[Any, str] = {}
# Real dtypes numpy holds: their values are copied through a numpy view, no torch op needed.
_PLAIN_DTYPES = _NUMPY_DTYPES - {torch.complex64, torch.complex128}

_CURRENT = object()  # "the module running now", for ops recorded as they happen
# How an accumulation reads in the trace, by its kind (model.ACCUMULATIONS).
_ACC_IDIOMS = {"fresh": "fresh", "zeros": "added onto zeros", "added": "added"}


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _bound_name(scope: dict, obj) -> str | None:
    """The first public name in ``scope`` bound to ``obj`` itself."""
    for k, v in scope.items():
        if v is obj and not k.startswith("_"):
            return k
    return None


def _is_user_code(co) -> bool:
    fn = co.co_filename
    return not (fn.startswith(_TORCH_DIR) or fn.startswith(_OWN_DIR) or fn.startswith("<frozen"))

# Kinds of torch calls, cached per callable.
_OP, _GET_DATA, _GET_GRAD, _SET_DATA, _SET_GRAD, _BACKWARD, _INPLACE, _PASS = range(8)

_SPECIAL = {
    _Tensor.data.__get__: _GET_DATA,  # type: ignore[attr-defined]
    _Tensor.grad.__get__: _GET_GRAD,  # type: ignore[union-attr]
    _Tensor.data.__set__: _SET_DATA,  # type: ignore[attr-defined]
    _Tensor.grad.__set__: _SET_GRAD,  # type: ignore[union-attr]
    _Tensor.backward: _BACKWARD,
    # Properties that build the graph (w.T in `X @ w.T + b`) are ops like any other.
    _Tensor.T.__get__: _OP,  # type: ignore[attr-defined]
    _Tensor.mT.__get__: _OP,  # type: ignore[attr-defined]
    _Tensor.H.__get__: _OP,  # type: ignore[attr-defined]
    _Tensor.mH.__get__: _OP,  # type: ignore[attr-defined]
    torch.autograd.backward: _BACKWARD,
    torch.autograd.grad: _BACKWARD,
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
_INPLACE_SYMBOLS = {
    "__iadd__": "+=", "__isub__": "-=", "__imul__": "*=", "__itruediv__": "/=",
    "__setitem__": "[...] =",
}


def _classify(func) -> int:
    kind = _SPECIAL.get(func)
    if kind is not None:
        return kind
    name = getattr(func, "__name__", "")
    if name in _PASS_NAMES:
        return _PASS
    if name in _INPLACE_SYMBOLS or (name.endswith("_") and not name.endswith("__")):
        return _INPLACE
    return _OP


_PROPERTY_OPS = {_Tensor.T.__get__: ("T", "Tensor.T.__get__"),  # type: ignore[attr-defined]
                 _Tensor.mT.__get__: ("mT", "Tensor.mT.__get__"),  # type: ignore[attr-defined]
                 _Tensor.H.__get__: ("H", "Tensor.H.__get__"),  # type: ignore[attr-defined]
                 _Tensor.mH.__get__: ("mH", "Tensor.mH.__get__")}  # type: ignore[attr-defined]


def _target_of(func) -> tuple[str, str]:
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


class _IdMap:
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


def _encode(x, tid_of):
    """JSON-able description of an argument in the file's compact form: a tensor is the
    string ``$t<tid>``, a string that starts with ``$`` gets one more (see tracefile.store)."""
    if isinstance(x, _Tensor):
        return f"$t{tid_of(x)}"
    if isinstance(x, str):
        return "$" + x if x.startswith("$") else x
    if x is None or isinstance(x, (bool, int, float)):
        return x
    if isinstance(x, list):
        return [_encode(v, tid_of) for v in x]
    if isinstance(x, tuple):  # torch.Size too: x[a, b] indexes with a tuple, not a list
        return {"tuple": [_encode(v, tid_of) for v in x]}
    if isinstance(x, torch.dtype):
        return {"dtype": dtype_name(x)}
    if isinstance(x, torch.device):
        return {"device": str(x)}
    if isinstance(x, slice):
        return {"slice": [_encode(x.start, tid_of), _encode(x.stop, tid_of), _encode(x.step, tid_of)]}
    if x is Ellipsis:
        return {"ellipsis": True}
    if isinstance(x, torch.memory_format):
        return {"repr": str(x)}
    if isinstance(x, dict):
        return {"dict": {str(k): _encode(v, tid_of) for k, v in x.items()}}
    return {"repr": repr(x)[:120]}


def _tensors_in(args, kwargs):
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


def _outputs_of(out):
    if isinstance(out, _Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(v for v in out if isinstance(v, _Tensor))
    return ()


class _Mode(TorchFunctionMode):
    """Forwards every torch call to the recorder."""

    def __init__(self, rec: "Recorder"):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        rec = self.rec
        if rec.dormant:
            return func(*args, **(kwargs or {}))
        kind = rec.kinds.get(func)
        if kind is None:
            kind = rec.kinds[func] = _classify(func)
        if kind == _PASS:
            return func(*args, **(kwargs or {}))
        # A signal that arrives while gradtrace is writing waits until it is done (see
        # session.run_script), so a step is never left half-recorded.
        rec.busy += 1
        try:
            if kind == _OP:
                return rec.on_op(func, args, kwargs or {})
            return rec.on_special(kind, func, args, kwargs or {})
        finally:
            rec.busy -= 1
            if rec.pending_signal is not None and not rec.busy:
                rec.raise_pending_signal()


class Recorder:
    """Records one run into a :class:`TraceWriter`. Use :meth:`start` / :meth:`stop`."""

    def __init__(self, config: Config, writer: TraceWriter):
        self.config = config
        self.w = writer
        self.kinds: dict[Any, int] = {}
        self.targets: dict[Any, tuple[str, str]] = {}
        self.tids = _IdMap()        # tensor -> tid
        self.alias = _IdMap()       # alias tensor -> (role, tid, path): role 'param' | 'grad'
        self.pending = _IdMap()     # output of a recent non-graph op -> its call, for prep ops
        self.module_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.param_names = _IdMap()
        self.module_stack: list[str] = []
        self.top_frame: FrameType | None = None
        self.module_ids: list[int] = []
        self.module_classes: dict[str, str] = {}  # module path -> class name
        self.code_user: dict[Any, bool] = {}
        self.name_sites: dict[tuple, tuple] = {}  # (code, lasti, func, argument) -> where named
        self.idioms: dict[tuple, str] = {}
        self.sids: dict[tuple, int] = {}
        self.site_sid: dict[tuple, int] = {}
        self.named: set[int] = set()
        self.next_tid = 0
        self.next_vid = 0
        self.next_op = 0
        self.seq = 0
        self.step = 0               # the run's current step number
        self.recording = config.records(0)
        self.after_backward = False
        self.dormant = False
        self.awaiting_forward = False
        self.parents: list[int] = []
        self.in_optimizer_step = 0
        self.grad_zeroed: set[int] = set()  # tids whose .grad is known to hold zeros
        self.opt_before: dict[int, list] = {}
        self.keep_values = config.keep_values
        self.max_numel = config.max_value_numel
        self.errors: list[str] = []
        self.busy = 0
        self.pending_signal = None  # an exception class to raise once not busy
        self.mode = _Mode(self)
        self.mode_on = False
        self.handles: list[Any] = []
        self.patches: list[tuple[Any, str, Any]] = []
        self._prof = self._profile_pop
        self.totals = {"steps": 0, "ops": 0, "backward": 0, "accumulate_fresh": 0,
                       "accumulate_added": 0, "accumulate_on_top": 0, "zero": 0, "update": 0,
                       "grad_write": 0}
        self.ops_dropped_total = 0
        self._new_step_state()

    # -- lifecycle -----------------------------------------------------------------------
    def _new_step_state(self):
        self.step_ops = 0
        self.step_graph_ops = 0
        self.step_dropped = 0
        self.step_first_seq = self.seq
        self.snaps: list[tuple] = []          # (vid, tid, tensor, version) to snapshot
        self.snapped: set[int] = set()        # tids with a value in this step
        self.node_op: dict[int, int] = {}     # id(grad_fn) -> op index
        self.node_refs: list[Any] = []        # keeps those grad_fn objects (and ids) valid
        self.step_loss = None
        self.step_has_backward = False
        self.step_nodes = 0
        self.counts = {"accumulate_fresh": 0, "accumulate_added": 0, "accumulate_on_top": 0,
                       "zero": 0, "update": 0,
                       "grad_write": 0}
        self.fwd_vid: dict[int, tuple[int, int]] = {}   # tid -> (vid, version) of its forward value
        self.leaf_names = _IdMap()    # leaf -> the variable name that holds it ("" for none)
        self.name_tried: set[int] = set()  # tids looked up for a name in this step
        self.grad_vid: dict[int, tuple[int, int, int]] = {}  # tid -> (vid, id(grad), version)
        self.pending.clear()

    def start(self) -> "Recorder":
        from torch.nn.modules import module as _module
        from torch.optim import optimizer as _optimizer

        # The frame that started the trace (the `with gradtrace.trace()` line): names are
        # looked up in the frames of the run, not in whatever called it (pytest, Jupyter).
        f: FrameType | None = sys._getframe(1)
        while f is not None and f.f_code.co_filename.startswith(_OWN_DIR):
            f = f.f_back
        self.top_frame = f

        try:
            self.handles.append(_module.register_module_forward_pre_hook(self._module_pre))
            self.handles.append(_module.register_module_forward_hook(self._module_post, always_call=True))
            self.handles.append(_optimizer.register_optimizer_step_pre_hook(self._opt_pre))
            self.handles.append(_optimizer.register_optimizer_step_post_hook(self._opt_post))
            self._patch_function_apply()
            self._patch_dataloader()
            if self.config.samples:
                self._patch_backward()
            if self.recording:
                self._push_mode()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, keep_current_step: bool = True) -> None:
        """Remove every mode, hook and patch; write the step in progress unless told not to
        (an interrupt may have arrived in the middle of recording it)."""
        self.busy += 1
        try:
            if self.mode_on:
                self._pop_mode()
            if sys.getprofile() == self._prof:
                sys.setprofile(None)
        finally:
            for h in self.handles:
                h.remove()
            self.handles.clear()
            for obj, attr, orig in reversed(self.patches):
                setattr(obj, attr, orig)
            self.patches.clear()
            try:
                if keep_current_step:
                    with torch._C.DisableTorchFunction():
                        self._close_step()
            finally:
                self.tids.clear()
                self.alias.clear()
                self.pending.clear()
                self.param_names.clear()
                self.node_refs = []
                self.node_op = {}
                self.top_frame = None
                self.snaps = []
                self.opt_before.clear()

    def _push_mode(self):
        torch._C._push_on_torch_function_stack(self.mode)
        self.mode_on = True
        self.dormant = False

    def _pop_mode(self):
        n = torch._C._len_torch_function_stack()
        above = []
        while n > 0:
            top = torch._C._get_function_stack_at(n - 1)
            torch._C._pop_torch_function_stack()
            n -= 1
            if top is self.mode:
                break
            above.append(top)
        for m in reversed(above):
            torch._C._push_on_torch_function_stack(m)
        self.mode_on = False

    def _profile_pop(self, frame, event, arg):
        """Set for a moment to take the mode off as soon as no handler is running."""
        n = torch._C._len_torch_function_stack()
        if n and torch._C._get_function_stack_at(n - 1) is self.mode:
            torch._C._pop_torch_function_stack()
            self.mode_on = False
            sys.setprofile(None)

    def _go_idle(self):
        """Stop seeing calls until the next recorded step (sampled recording)."""
        self.dormant = True
        if sys.getprofile() is None:
            sys.setprofile(self._prof)

    def _activate(self):
        """Start seeing calls again (sampled recording, at a recorded step's start)."""
        if sys.getprofile() == self._prof:
            sys.setprofile(None)
        if not self.mode_on:
            self._push_mode()
        self.dormant = False

    # -- patches ----------------------------------------------------------------------------
    def _patch(self, obj, attr, new):
        self.patches.append((obj, attr, obj.__dict__[attr]))
        setattr(obj, attr, new)

    def _patch_function_apply(self):
        Function = torch.autograd.Function
        orig = Function.__dict__["apply"]
        orig_func = orig.__func__
        rec = self

        def apply(cls, *args, **kwargs):
            if not rec.mode_on or rec.dormant or not rec._top_is_mode():
                return orig_func(cls, *args, **kwargs)
            return rec.on_function(orig_func, cls, args, kwargs)

        self._patch(Function, "apply", classmethod(apply))

    def _top_is_mode(self):
        n = torch._C._len_torch_function_stack()
        return n > 0 and torch._C._get_function_stack_at(n - 1) is self.mode

    def _patch_dataloader(self):
        from torch.utils.data import dataloader as _dl

        cls = _dl._BaseDataLoaderIter
        orig = cls.__dict__["__next__"]
        rec = self

        def __next__(it):
            if rec.mode_on and rec._top_is_mode():
                torch._C._pop_torch_function_stack()
                try:
                    return orig(it)
                finally:
                    torch._C._push_on_torch_function_stack(rec.mode)
            return orig(it)

        self._patch(cls, "__next__", __next__)

    def _patch_backward(self):
        """For sampled recording: count steps while no mode is installed."""
        import torch.autograd as ag

        rec = self
        for name in ("backward", "grad"):
            orig = ag.__dict__[name]

            def wrapper(*args, _orig=orig, **kwargs):
                if rec.mode_on and not rec.dormant:
                    return _orig(*args, **kwargs)  # the mode sees it and records it
                try:
                    return _orig(*args, **kwargs)
                finally:
                    rec.step += 1
                    rec.after_backward = False
                    if rec.config.records(rec.step):
                        rec.recording = True
                        rec._new_step_state()
                        # What follows until the first forward op (the update and zeroing
                        # of the unrecorded step before) belongs to that step: not recorded.
                        rec.awaiting_forward = True
                        rec._activate()

            wrapper.__wrapped__ = orig
            wrapper.__name__ = orig.__name__
            wrapper.__doc__ = orig.__doc__
            self._patch(ag, name, wrapper)
            # Tensor.backward looks torch.autograd.backward up at call time.

    # -- ids, names, sources ----------------------------------------------------------------
    def tid_of(self, t) -> int:
        tid = self.tids.get(t)
        if tid is None:
            tid = self._new_tid(t)
        return tid

    def _new_tid(self, t, role=None, name=None) -> int:
        tid = self.next_tid
        self.next_tid += 1
        self.tids.set(t, tid)
        if role is None:
            if t.grad_fn is not None:
                role = "activation"
            elif t.requires_grad:
                role = "param"
            else:
                role = "input"
        if name is None and role == "param":
            name = self.param_names.get(t)
        if name is not None:
            self.named.add(tid)
        dt = t.dtype
        dname = _DTYPE_NAMES.get(dt)
        if dname is None:
            dname = _DTYPE_NAMES[dt] = dtype_name(dt)
        self.w.add_tensor(TensorRow(tid, name, role, tuple(t.shape), dname, int(t.requires_grad)))
        return tid

    def _user_frame(self, f):
        """The innermost frame of user code (not torch, not gradtrace), and the qualname of
        the outermost torch function it called (the 'via', e.g. Optimizer.zero_grad)."""
        cu = self.code_user
        via = None
        while f is not None:
            co = f.f_code
            u = cu.get(co)
            if u is None:
                fn = co.co_filename
                u = cu[co] = _is_user_code(co)
            if u:
                return f, via
            if co.co_filename.startswith(_TORCH_DIR):
                q = getattr(co, "co_qualname", co.co_name)
                if "<locals>" not in q and not q.startswith("handle_torch_function"):
                    via = q
            f = f.f_back
        return None, via

    def _sid(self, f) -> int | None:
        if f is None:
            return None
        co = f.f_code
        site = (co, f.f_lasti)  # cheaper than f_lineno, which decodes the line table
        sid = self.site_sid.get(site)
        if sid is not None:
            return sid
        line = f.f_lineno
        key = (co, line)
        sid = self.sids.get(key)
        if sid is None:
            sid = self.sids[key] = len(self.sids)
            fn = co.co_filename
            self.w.add_source(SourceRow(sid, fn, line, linecache.getline(fn, line).strip(),
                                        getattr(co, "co_qualname", co.co_name)))
        self.site_sid[site] = sid
        return sid

    @staticmethod
    def _find_name(f, obj) -> str | None:
        """The variable that holds ``obj`` in frame ``f`` (locals first, then globals)."""
        if f is None:
            return None
        return _bound_name(f.f_locals, obj) or (
            None if f.f_globals is f.f_locals else _bound_name(f.f_globals, obj))

    def _leaf_name(self, f, t, site=None) -> str | None:
        """The variable that holds leaf ``t``, looked up once a step. The outermost user frame
        that binds it wins: in ``mse(preds, y)`` the targets are the loop's ``y``, not mse's
        ``t2``. ``site`` (the call and the argument's position) remembers where the name was
        found, so that the next step checks one variable instead of scanning every frame."""
        cached = self.leaf_names.get(t)
        if cached is not None:
            return cached or None
        hint = self.name_sites.get(site) if site is not None else None
        if hint is not None:
            depth, name, uses = hint
            if name is None:
                # An expression, never a variable: trust it, with a full look now and then.
                if uses < 32:
                    self.name_sites[site] = (depth, None, uses + 1)
                    self.leaf_names.set(t, "")
                    return None
            else:
                g = f
                for _ in range(depth):
                    g = g.f_back if g is not None else None
                # depth -1: the name was one of the innermost frame's globals
                scope = None if g is None else g.f_globals if depth < 0 else g.f_locals
                if scope is not None and scope.get(name) is t:
                    self.leaf_names.set(t, name)
                    return name
        name, depth = self._scan_frames(f, t)
        if site is not None:
            self.name_sites[site] = (depth, name, 0)
        self.leaf_names.set(t, name or "")
        return name

    def _scan_frames(self, f, t) -> tuple[str | None, int]:
        """The outermost user frame's variable bound to ``t`` and that frame's depth above
        ``f`` (-1 when only the innermost frame's globals hold it, or nothing does)."""
        name, depth = None, -1
        inner_globals = f.f_globals
        cu = self.code_user
        top = self.top_frame
        d = 0
        while f is not None:
            co = f.f_code
            u = cu.get(co)
            if u is None:
                u = cu[co] = _is_user_code(co)
            if u:
                found = _bound_name(f.f_locals, t)
                if found is not None:
                    name, depth = found, d
            elif co.co_filename.startswith(_OWN_DIR):
                break  # gradtrace's script runner: the user's program starts below it
            if f is top:
                break  # the frame that started the trace: what is above it is not the run
            f = f.f_back
            d += 1
        if name is None:
            name = _bound_name(inner_globals, t)
        return name, depth

    # -- snapshots ----------------------------------------------------------------------------
    def _snap_now(self, t, tid=None) -> int:
        """Take tensor ``t``'s value now (bytes, or statistics if it is large); its vid."""
        vid = self.next_vid
        self.next_vid = vid + 1
        dt = t.dtype
        dname = _DTYPE_NAMES.get(dt)
        if dname is None:
            dname = _DTYPE_NAMES[dt] = dtype_name(dt)
        if self.keep_values and t.numel() <= self.max_numel:
            payload = None
            if dt in _PLAIN_DTYPES and t.is_cpu:
                # numpy's view of the storage (strided views too): tobytes() is the C-order copy.
                try:
                    payload = (t.detach() if t.requires_grad else t).numpy().tobytes()
                except (RuntimeError, TypeError):  # a neg-bit view, a tensor subclass...
                    pass
            if payload is None:
                payload = tensor_bytes(t.detach().cpu())
            self.w.add_bytes(vid, tid, t.shape, dname, payload)
        else:
            self.w.add_stats(vid, tid, t.shape, dname, Stats.of(t))
        return vid

    def _snap_zeros(self, t) -> int:
        """A value known to be all zeros: only its shape and dtype are stored."""
        vid = self.next_vid
        self.next_vid += 1
        self.w.add_zeros(vid, t.shape, dtype_name(t.dtype))
        return vid

    def _want_value(self, t, tid):
        """Note tensor ``t``'s value for this step (taken at the end of backward)."""
        if tid not in self.snapped:
            self.snapped.add(tid)
            self.snaps.append((tid, t, t._version))

    def _flush_snaps(self):
        for tid, t, version in self.snaps:
            if t._version == version:
                self.fwd_vid[tid] = (self._snap_now(t, tid), version)
        self.snaps = []

    # -- steps ---------------------------------------------------------------------------------
    def _close_step(self):
        """End the current step: write its row and commit (the step is then durable)."""
        if not self.recording:
            return
        if self.step_ops == 0 and not self.step_has_backward and self.seq == self.step_first_seq:
            return
        self._flush_snaps()
        c = self.counts
        graph_ops = self.step_graph_ops
        self.w.commit_step(StepHead(
            self.step, self.step_first_seq, self.seq - 1, int(self.step_has_backward),
            self.step_loss, graph_ops, self.step_nodes, c["accumulate_fresh"],
            c["accumulate_added"], c["accumulate_on_top"], c["zero"], c["update"],
            c["grad_write"], self.step_dropped))
        self.totals["steps"] += 1

    def _begin_next_step(self):
        """The first forward op after a backward pass starts the next step."""
        self._close_step()
        self.step += 1
        self.after_backward = False
        self.recording = self.config.records(self.step)
        self._new_step_state()
        if not self.recording and self.config.samples:
            self._go_idle()

    # -- forward ops ---------------------------------------------------------------------------
    def on_op(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if isinstance(out, _Tensor):
            outs = (out,)
            graph = out.grad_fn is not None
        else:
            outs = _outputs_of(out)
            graph = False
            for o in outs:
                if o.grad_fn is not None:
                    graph = True
                    break
        if not graph:
            if self.parents:
                if self.recording:
                    self._record_op(func, args, kwargs, outs, False, sys._getframe(1))
            elif len(outs) == 1 and self.recording and torch.is_grad_enabled() \
                    and len(self.pending) < 4096:
                # Kept until the step ends, in case this tensor feeds a graph op unnamed.
                f, _ = self._user_frame(sys._getframe(1))
                module = self.module_stack[-1] if self.module_stack else None
                self.pending.set(outs[0], (func, args, kwargs, self._sid(f), module))
            return out
        if self.after_backward:
            self._begin_next_step()
            if self.dormant:
                return out
        if not self.recording:
            return out
        self.awaiting_forward = False
        self._record_op(func, args, kwargs, outs, True, sys._getframe(1))
        return out

    def _record_op(self, func, args, kwargs, outs, is_graph, frame, sid=None, name=None,
                   target=None, name_frame=None, module=_CURRENT):
        if self.step_ops >= self.config.max_ops_per_step:
            self.step_dropped += 1
            self.ops_dropped_total += 1
            return None
        self.step_ops += 1
        f = name_frame
        if frame is not None:
            f, _ = self._user_frame(frame)
            sid = self._sid(f)
        if name is None:
            nt = self.targets.get(func)
            if nt is None:
                nt = self.targets[func] = _target_of(func)
            name, target = nt
        tids = self.tids
        inputs = []
        for k, t in enumerate(_tensors_in(args, kwargs)):
            tid = tids.get(t)
            if tid is None:
                leaf_name = None
                if f is not None and t.grad_fn is None:
                    leaf_name = self._leaf_name(f, t, (f.f_code, f.f_lasti, func, k))
                    if leaf_name is None and is_graph and self._is_prep(t):
                        tid = self._pull_prep(t, self.pending.get(t), f)
                if tid is None:
                    tid = self._new_tid(t, name=leaf_name)
            elif tid not in self.named and f is not None and t.grad_fn is None \
                    and tid not in self.name_tried:
                self.name_tried.add(tid)
                leaf_name = self._leaf_name(f, t, (f.f_code, f.f_lasti, func, k))
                if leaf_name is not None:
                    self.named.add(tid)
                    self.w.name_tensor(tid, leaf_name)
            inputs.append(tid)
            self._want_value(t, tid)
        # Numbered after the prep ops its inputs pulled in: op order stays topological.
        idx = self.next_op
        self.next_op += 1
        seq = self.seq
        self.seq += 1
        outputs = []
        gf_name = None
        for o in outs:
            tid = tids.get(o)
            if tid is None:
                tid = self._new_tid(o, role="activation" if o.grad_fn is not None or not o.requires_grad
                                    else None)
            outputs.append(tid)
            self._want_value(o, tid)
            gf = o.grad_fn
            if gf is not None:
                if gf_name is None:
                    gf_name = type(gf).__name__
                key = id(gf)
                if key not in self.node_op:
                    self.node_op[key] = idx
                    self.node_refs.append(gf)
        tid_of = self.tid_of
        enc_args = [_encode(a, tid_of) for a in args]
        enc_kwargs = {k: _encode(v, tid_of) for k, v in kwargs.items()} if kwargs else {}
        if module is _CURRENT:
            module = self.module_stack[-1] if self.module_stack else None
        parent = self.parents[-1] if self.parents else None
        self.w.add_op(OpRow(idx, seq, name, target, inputs, outputs, enc_args, enc_kwargs, gf_name,
                            module, parent, int(is_graph), sid))
        if is_graph and parent is None:
            self.totals["ops"] += 1
            self.step_graph_ops += 1
        return idx

    def _is_prep(self, t) -> bool:
        """Whether unnamed, untracked leaf ``t`` came from a recent non-graph op. A parameter
        is a leaf of the drawing, not a computation: in-place initialisers like
        kaiming_uniform_ are not its history."""
        return not t.requires_grad and self.pending.get(t) is not None \
            and self.param_names.get(t) is None

    def _pull_prep(self, t, prep, f):
        """Record the non-graph op that made unnamed tensor ``t`` (e.g. ``y.reshape(...)``)."""
        func, args, kwargs, sid, module = prep
        self.pending.d.pop(id(t), None)
        outs = (t,)
        # Inputs of the prep op may themselves be unnamed prep outputs: pull those first.
        for k, a in enumerate(_tensors_in(args, kwargs)):
            if self.tids.get(a) is None and a.grad_fn is None and self._is_prep(a) \
                    and self._leaf_name(f, a, (f.f_code, f.f_lasti, func, k)) is None:
                self._pull_prep(a, self.pending.get(a), f)
        self._record_op(func, args, kwargs, outs, False, None, sid=sid, name_frame=f, module=module)
        return self.tids.get(t)

    def on_function(self, orig_func, cls, args, kwargs):
        """A custom autograd.Function: record it as one op, its forward's calls as inner ops."""
        if self.after_backward:
            with torch._C.DisableTorchFunction():
                self._begin_next_step()
        if not self.recording or self.dormant:
            return orig_func(cls, *args, **kwargs)
        self.awaiting_forward = False
        frame = sys._getframe(1)
        idx = self.next_op  # the inner ops come after the Function's own row
        self.parents.append(idx)
        self.next_op += 1
        seq = self.seq
        self.seq += 1
        try:
            out = orig_func(cls, *args, **kwargs)
        finally:
            self.parents.pop()
        with torch._C.DisableTorchFunction():
            self._record_function_row(idx, seq, cls, args, kwargs, out, frame)
        return out

    def _record_function_row(self, idx, seq, cls, args, kwargs, out, frame):
        f, _ = self._user_frame(frame)
        sid = self._sid(f)
        inputs = []
        for k, t in enumerate(_tensors_in(args, kwargs)):
            tid = self.tids.get(t)
            if tid is None:
                name = self._leaf_name(f, t, (f.f_code, f.f_lasti, cls, k)) \
                    if t.grad_fn is None and f is not None else None
                tid = self._new_tid(t, name=name)
            inputs.append(tid)
            self._want_value(t, tid)
        outputs, gf_name = [], None
        for o in _outputs_of(out):
            tid = self.tid_of(o)
            outputs.append(tid)
            self._want_value(o, tid)
            if o.grad_fn is not None:
                gf_name = gf_name or type(o.grad_fn).__name__
                if id(o.grad_fn) not in self.node_op:
                    self.node_op[id(o.grad_fn)] = idx
                    self.node_refs.append(o.grad_fn)
        tid_of = self.tid_of
        self.step_ops += 1
        self.totals["ops"] += 1
        module = self.module_stack[-1] if self.module_stack else None
        parent = self.parents[-1] if self.parents else None
        if gf_name is not None and parent is None:
            self.step_graph_ops += 1
        self.w.add_op(OpRow(idx, seq, cls.__name__, f"autograd.Function:{cls.__qualname__}",
                            inputs, outputs, [_encode(a, tid_of) for a in args],
                            {k: _encode(v, tid_of) for k, v in kwargs.items()},
                            gf_name, module, parent, int(gf_name is not None), sid))

    # -- .data/.grad, in-place calls, backward -----------------------------------------------
    def on_special(self, kind, func, args, kwargs):
        if kind == _BACKWARD:
            return self.on_backward(func, args, kwargs)
        if kind == _GET_DATA or kind == _GET_GRAD:
            out = func(*args, **kwargs)
            if out is not None:
                src = args[0]
                role = self.alias.get(src)
                if kind == _GET_GRAD:
                    # p.grad is the same tensor on every read: note it once.
                    if role is None and src.requires_grad and src.grad_fn is None \
                            and self.alias.get(out) is None:
                        self.alias.set(out, ("grad", self.tid_of(src), "grad"))
                elif role is not None:
                    self.alias.set(out, (role[0], role[1], role[2] + ".data"))
                elif src.requires_grad and src.grad_fn is None:
                    self.alias.set(out, ("param", self.tid_of(src), "data"))
            return out
        if not self.recording or self.in_optimizer_step or self.awaiting_forward:
            return func(*args, **kwargs)
        if kind == _INPLACE:
            return self.on_inplace(func, args, kwargs)
        if kind == _SET_GRAD:
            return self.on_set_grad(func, args, kwargs)
        if kind == _SET_DATA:
            return self.on_set_data(func, args, kwargs)
        return func(*args, **kwargs)

    def _role(self, t):
        if not isinstance(t, _Tensor):
            return None
        r = self.alias.get(t)
        if r is not None:
            return r
        if t.requires_grad and t.grad_fn is None:
            return ("param", self.tid_of(t), "")
        return None

    def _event(self, kind, tid, idiom, before, after, f, via, fresh=None, incoming=None,
               accumulation=None, through_data=False):
        seq = self.seq
        self.seq += 1
        self.w.add_event(EventRow(seq, kind, tid, idiom, before, after, incoming,
                                  None if fresh is None else int(fresh), via, 0, self._sid(f),
                                  accumulation, int(through_data)))
        key = kind if kind != "accumulate" else ("accumulate_fresh" if fresh else "accumulate_added")
        self.totals[key] += 1
        self.counts[key] += 1
        if accumulation == "added":
            self.totals["accumulate_on_top"] += 1
            self.counts["accumulate_on_top"] += 1
        if kind == "zero":
            self.grad_zeroed.add(tid)
        else:
            self.grad_zeroed.discard(tid)

    def _idiom(self, via, default):
        if via:
            if via.endswith("zero_grad"):
                owner = "optimizer" if "Optimizer" in via or "optim" in via else "module"
                return f"{owner}.zero_grad()"
        return default

    def on_inplace(self, func, args, kwargs):
        if args:
            target = args[0]
        else:  # Python-level initialisers (nn.init.*_) pass the tensor by keyword
            target = next((v for v in kwargs.values() if isinstance(v, _Tensor)), None)
        if isinstance(target, _Tensor):
            role = self._role(target)
            if role is None:
                return self.on_op(func, args, kwargs)
            roles = ((target, role),)
        else:  # torch._foreach_*_ take lists of tensors
            targets = target if isinstance(target, (list, tuple)) else ()
            roles = [(t, r) for t in targets for r in (self._role(t),) if r is not None]
            if not roles:
                return self.on_op(func, args, kwargs)
        f, via = self._user_frame(sys._getframe(1))
        no_grad = not torch.is_grad_enabled()
        before = [self._before(t, r) for t, r in roles]
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        for (t, (role, tid, path)), b in zip(roles, before):
            key = (name, role, path, no_grad, via)
            idiom = self.idioms.get(key)
            if idiom is None:
                idiom = self.idioms[key] = self._inplace_idiom(*key)
            through_data = "data" in path.split(".")
            if role == "param":
                self._event("update", tid, idiom, b, self._snap_now(t), f, via,
                            through_data=through_data)
            else:
                zero = name == "zero_" or not (bool(torch.any(t)) if t.numel() else False)
                after = self._snap_zeros(t) if zero else self._snap_now(t)
                self._event("zero" if zero else "grad_write", tid, idiom, b, after, f, via,
                            through_data=through_data)
        return out

    def _inplace_idiom(self, name, role, path, no_grad, via) -> str:
        """How an in-place call reads in the trace: ``p.grad.zero_()``, ``p -= …`` ..."""
        sym = _INPLACE_SYMBOLS.get(name)
        lhs = f"p.{path}" if path else "p"
        op = (f"{lhs}[...] = …" if name == "__setitem__" else f"{lhs} {sym} …") if sym \
            else f"{lhs}.{name}()"
        if role == "param" and not path and no_grad:
            op += " (no_grad)"
        return self._idiom(via, op)

    def _before(self, t, role):
        """The value before an in-place call, reusing this step's snapshot when unchanged."""
        kind, tid, _ = role
        if kind == "param":
            known = self.fwd_vid.get(tid)
            if known is not None and known[1] == t._version:
                return known[0]
        else:
            known = self.grad_vid.get(tid)
            if known is not None and known[1] == id(t) and known[2] == t._version:
                return known[0]
        return self._snap_now(t)

    def on_set_grad(self, func, args, kwargs):
        t, new = args[0], args[1]
        old = t.grad
        if old is None and new is None:
            return func(*args, **kwargs)
        f, via = self._user_frame(sys._getframe(1))
        tid = self.tid_of(t)
        # Usually the gradient the last backward left, already copied then.
        before = self._before(old, ("grad", tid, "grad")) if old is not None else None
        out = func(*args, **kwargs)
        if new is None:
            idiom = "p.grad = None"
            if via and via.endswith("zero_grad"):
                idiom = self._idiom(via, idiom).replace("()", "(set_to_none=True)")
            self._event("zero", tid, idiom, before, None, f, via)
        else:
            self._event("grad_write", tid, "p.grad = …", before, self._snap_now(new), f, via)
        return out

    def on_set_data(self, func, args, kwargs):
        t, new = args[0], args[1]
        role = self._role(t)
        if role is None or role[0] != "param":
            return func(*args, **kwargs)
        same = self.alias.get(new) if isinstance(new, _Tensor) else None
        if same is not None and same[0] == "param" and same[1] == role[1]:
            # `p.data -= x` is an in-place call on the alias (recorded) then `p.data = alias`.
            return func(*args, **kwargs)
        f, via = self._user_frame(sys._getframe(1))
        before = self._snap_now(t)
        out = func(*args, **kwargs)
        self._event("update", role[1], "p.data = …", before, self._snap_now(t), f, via,
                    through_data=True)
        return out

    def on_backward(self, func, args, kwargs):
        if self.after_backward:
            # Two backward passes in a row (gradient accumulation, or autograd.grad): each is a step.
            self._begin_next_step()
            if self.dormant:
                return self._run_unrecorded_backward(func, args, kwargs)
        if not self.recording:
            return self._run_unrecorded_backward(func, args, kwargs)
        name = getattr(func, "__name__", "backward")
        if func is _Tensor.backward:
            api, roots = "Tensor.backward", [args[0]]
        else:
            first = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
            roots = list(first) if isinstance(first, (list, tuple)) else [first]
            api = "autograd.grad" if name == "grad" else "autograd.backward"
        grad_inputs = []
        if api == "autograd.grad":
            inp = args[1] if len(args) > 1 else kwargs.get("inputs")
            grad_inputs = list(inp) if isinstance(inp, (list, tuple)) else [inp]
        f, _ = self._user_frame(sys._getframe(1))
        sid = self._sid(f)
        root_tids = [self.tid_of(r) for r in roots if isinstance(r, _Tensor)]
        for r, tid in zip(roots, root_tids):
            self._want_value(r, tid)
        nodes, names, nexts = self._walk([r.grad_fn for r in roots if isinstance(r, _Tensor)])
        self.bw_nodes = nodes
        self.bw_ran: dict[int, tuple] = {}
        self.bw_order = 0
        handles = []
        try:
            for nid, node in enumerate(nodes):
                # One hook per node. AccumulateGrad: before it runs (was .grad None?).
                if names[nid] == "AccumulateGrad":
                    handles.append(node.register_prehook(self._acc_pre_hook(nid)))
                else:
                    handles.append(node.register_hook(self._post_hook(nid)))
            bseq = self.seq
            self.seq += 1
            out = func(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        try:
            with torch._C.DisableTorchFunction():
                self._write_backward(api, bseq, roots, root_tids, nodes, names, nexts, grad_inputs,
                                     out, sid, f)
        finally:
            self.bw_nodes = None
            self.bw_ran = {}
        self.after_backward = True
        self.step_has_backward = True
        self.totals["backward"] += 1
        return out

    def _run_unrecorded_backward(self, func, args, kwargs):
        # Only in sampled recording: the patched torch.autograd entry points count the step.
        return func(*args, **kwargs)

    @staticmethod
    def _walk(roots):
        """grad_fn nodes reachable from the roots, in a stable topological order; their class
        names; and per node, per input of its forward op, the nid the gradient flows on to."""
        post: list[Any] = []
        children: dict[int, list] = {}
        seen: set[int] = set()
        for root in roots:
            if root is None or id(root) in seen:
                continue
            seen.add(id(root))
            kids = children[id(root)] = [n for n, _ in root.next_functions]
            stack = [(root, iter(kids))]
            while stack:
                node, it = stack[-1]
                for nxt in it:
                    if nxt is not None and id(nxt) not in seen:
                        seen.add(id(nxt))
                        kids = children[id(nxt)] = [n for n, _ in nxt.next_functions]
                        stack.append((nxt, iter(kids)))
                        break
                else:
                    stack.pop()
                    post.append(node)
        nodes = post[::-1]
        index = {id(n): i for i, n in enumerate(nodes)}
        nexts = [[None if c is None else index[id(c)] for c in children[id(n)]] for n in nodes]
        return nodes, [type(n).__name__ for n in nodes], nexts

    def _post_hook(self, nid):
        rec = self

        def hook(grad_inputs, grad_outputs):
            rec.bw_ran[nid] = (rec.bw_order, grad_inputs, grad_outputs, None)
            rec.bw_order += 1

        return hook

    def _acc_pre_hook(self, nid):
        rec = self

        def hook(grad_outputs):
            try:
                var = rec.bw_nodes[nid].variable
                g = var.grad
                if g is None:
                    acc = (True, None, False)
                else:
                    tid = rec.tid_of(var)
                    if tid in rec.grad_zeroed:
                        zeros = True
                    else:
                        zeros = not bool(torch.any(g)) if g.numel() else True
                    acc = (False, rec._before(g, ("grad", tid, "grad")), zeros)
                rec.bw_ran[nid] = (rec.bw_order, (), grad_outputs, acc)
                rec.bw_order += 1
            except Exception as e:  # never break the user's backward
                rec._internal(e)

        return hook

    def _write_backward(self, api, bseq, roots, root_tids, nodes, names, nexts, grad_inputs, out,
                        sid, f):
        w = self.w
        # Forward values first (before an update changes the leaves), then the gradients.
        self._flush_snaps()
        root_vid = None
        if len(roots) == 1 and isinstance(roots[0], _Tensor) and roots[0].numel() == 1:
            known = self.fwd_vid.get(root_tids[0])
            root_vid = known[0] if known is not None else self._snap_now(roots[0])
            self.step_loss = float(roots[0].detach().reshape(()).item())
        snapped: dict[int, int] = {}  # a node's input gradient is the next one's output gradient

        def snap(g):
            if g is None:
                return None
            v = snapped.get(id(g))
            if v is None:
                v = snapped[id(g)] = self._snap_now(g)
            return v

        acc_events = []
        ran = self.bw_ran
        node_op = self.node_op
        not_run = (None, (), (), None)
        for nid, node in enumerate(nodes):
            order, g_in, g_out, acc = ran.get(nid, not_run)
            variable = None
            if names[nid] == "AccumulateGrad":
                variable = self.tid_of(node.variable)
            w.add_node(NodeRow(nid, names[nid], node_op.get(id(node)), variable, nexts[nid], order,
                               [snap(g) for g in g_out], [snap(g) for g in g_in]))
            if acc is not None and variable is not None:
                fresh, before, zeros = acc
                g = node.variable.grad
                after = snap(g) if g is not None else None
                if after is not None:
                    self.grad_vid[variable] = (after, id(g), g._version)
                incoming = snap(g_out[0]) if g_out else None
                # Onto a zeroed .grad (grad.zero_() style) is not the forgot-to-zero case.
                kind = "fresh" if fresh else ("zeros" if zeros else "added")
                acc_events.append((order, variable, fresh, before, after, incoming, kind))
        self.step_nodes += len(nodes)
        results = []
        if api == "autograd.grad" and isinstance(out, tuple):
            results = [snap(g) if isinstance(g, _Tensor) else None for g in out]
        w.set_backward(BackwardRow(bseq, api, root_tids, root_vid,
                                   [self.tid_of(t) for t in grad_inputs if isinstance(t, _Tensor)],
                                   results, sid))
        for _, variable, fresh, before, after, incoming, kind in sorted(acc_events):
            self._event("accumulate", variable, _ACC_IDIOMS[kind], before, after, f, None,
                        fresh=fresh, incoming=incoming, accumulation=kind)

    # -- module names and optimizer steps (global hooks) ------------------------------------------
    def _module_pre(self, module, args):
        if not self.mode_on:
            return None
        try:
            with torch._C.DisableTorchFunction():
                name = self.module_names.get(module)
                if name is None:
                    name = self._name_module(module)
                self.module_stack.append(name)
                self.module_ids.append(id(module))
        except Exception as e:
            self._internal(e)
        return None

    def _module_post(self, module, args, output):
        if self.module_ids and self.module_ids[-1] == id(module):
            self.module_ids.pop()
            self.module_stack.pop()
        return None

    def _name_module(self, module) -> str:
        f, _ = self._user_frame(sys._getframe(1))
        root = self._find_name(f, module)
        if root is None:
            root = self.module_stack[-1] + "." + type(module).__name__ if self.module_stack \
                else type(module).__name__
        for sub, m in module.named_modules():
            if m not in self.module_names:
                self.module_names[m] = path = f"{root}.{sub}" if sub else root
                self.module_classes[path] = type(m).__name__
        for pname, p in module.named_parameters():
            full = f"{root}.{pname}"
            self.param_names.set(p, full)
            tid = self.tids.get(p)
            if tid is not None and tid not in self.named:
                self.named.add(tid)
                self.w.name_tensor(tid, full)
        return self.module_names[module]

    def _opt_pre(self, optimizer, args, kwargs):
        self.in_optimizer_step += 1
        if not (self.mode_on and self.recording and not self.dormant):
            return None
        try:
            with torch._C.DisableTorchFunction():
                before = []
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            before.append((self.tid_of(p), p, p._version, self._snap_now(p)))
                self.opt_before[id(optimizer)] = before
        except Exception as e:
            self._internal(e)
        return None

    def _opt_post(self, optimizer, args, kwargs):
        self.in_optimizer_step = max(0, self.in_optimizer_step - 1)
        before = self.opt_before.pop(id(optimizer), None)
        if not before:
            return None
        try:
            with torch._C.DisableTorchFunction():
                f, via = self._user_frame(sys._getframe(1))
                idiom = f"{type(optimizer).__name__}.step()"
                for tid, p, version, b in before:
                    if p._version != version:
                        self._event("update", tid, idiom, b, self._snap_now(p), f, via or idiom)
        except Exception as e:
            self._internal(e)
        return None

    def raise_pending_signal(self):
        exc, self.pending_signal = self.pending_signal, None
        raise exc()

    def _internal(self, e: BaseException):
        msg = f"{type(e).__name__}: {e}"
        if msg not in self.errors:
            self.errors.append(msg)
            print(f"gradtrace: internal error while recording ({msg}); the run goes on, "
                  "this part of the trace may be missing", file=sys.stderr)
