"""Names and places: user frames, source lines, the variables that hold leaves, module paths.

Names come from the user's frames, never from ``id()``.
"""

from __future__ import annotations

import linecache
import os
import sys
import types
import weakref
from types import FrameType
from typing import Any

import torch

from ..tracefile.rows import SourceRow
from .state import Run, StepState

__all__ = ["Naming", "OWN_DIR", "TORCH_DIR"]

TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _bound_name(scope: dict, obj) -> str | None:
    """The first public name in ``scope`` bound to ``obj`` itself."""
    for k, v in scope.items():
        if v is obj and not k.startswith("_"):
            return k
    return None


_Module = torch.nn.Module
_NOT_HOLDERS = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                types.MethodType, torch.Tensor)


def _attributes(v):
    """The attributes of object ``v`` as stored (its ``__dict__``; a module's parameters,
    buffers and submodules too), read without running any of its code; None if it holds none."""
    if isinstance(v, _NOT_HOLDERS):
        return None
    try:
        d = object.__getattribute__(v, "__dict__")
    except (AttributeError, TypeError):
        return None
    if not isinstance(d, dict):
        return None
    if isinstance(v, _Module):
        return (d, d.get("_parameters") or {}, d.get("_buffers") or {}, d.get("_modules") or {})
    return (d,)


def _attr_path(scope: dict, obj, depth: int = 3, skip_self: bool = True) -> str | None:
    """``model.net.weight``: the first public variable in ``scope`` that reaches ``obj``
    through public attributes (at most ``depth`` of them)."""
    for k, v in scope.items():
        if k.startswith("_") or (skip_self and k == "self"):
            continue
        path = _reach(v, obj, depth, set())
        if path is not None:
            return f"{k}.{path}"
    return None


def _reach(v, obj, depth: int, seen: set) -> str | None:
    if depth <= 0 or id(v) in seen:
        return None
    seen.add(id(v))
    holders = _attributes(v)
    if holders is None:
        return None
    for d in holders:
        for k, a in d.items():
            if a is obj and isinstance(k, str) and not k.startswith("_"):
                return k
    for d in holders:
        for k, a in d.items():
            if isinstance(k, str) and not k.startswith("_"):
                path = _reach(a, obj, depth - 1, seen)
                if path is not None:
                    return f"{k}.{path}"
    return None


def _resolve(scope: dict, dotted: str):
    """What ``dotted`` (``model.w``) names in ``scope``, read as :func:`_attributes` does."""
    head, *rest = dotted.split(".")
    v = scope.get(head)
    for part in rest:
        holders = _attributes(v)
        if holders is None:
            return None
        for d in holders:
            if part in d:
                v = d[part]
                break
        else:
            return None
    return v


def _compiled_inner(module):
    """The module ``torch.compile`` wrapped, for its wrapper (an OptimizedModule); else None."""
    inner = getattr(module, "_orig_mod", None)
    if inner is not None and type(module).__name__ == "OptimizedModule":
        return inner
    return None


def _is_argument(co, name: str) -> bool:
    """``name`` is an argument of the function of code ``co``: a module's parameter passed to
    it (``LinearFunction.apply(x, self.weight)`` binds ``weight``) is better named by its
    module path (``net.fc1.weight``) than by the argument that receives it."""
    n = co.co_argcount + co.co_kwonlyargcount
    return name in co.co_varnames[:n]


def _is_user_code(co) -> bool:
    fn = co.co_filename
    return not (fn.startswith(TORCH_DIR) or fn.startswith(OWN_DIR) or fn.startswith("<frozen"))


class Naming:
    """Frames, source lines and names, with the caches that keep looking them up cheap."""

    def __init__(self, run: Run, step: StepState):
        self.run = run
        self.step = step
        self.top_frame: FrameType | None = None  # the frame that started the trace
        self.code_user: dict[Any, bool] = {}
        self.name_sites: dict[tuple, tuple] = {}  # (code, lasti, func, argument) -> where named
        self.sids: dict[tuple, int] = {}
        self.site_sid: dict[tuple, int] = {}
        self.module_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.module_classes: dict[str, str] = {}  # module path -> class name
        self.module_stack: list[str] = []  # the paths of the modules running now
        self.module_ids: list[int] = []

    def find_top_frame(self, f: FrameType | None) -> None:
        """Names are looked up in the frames of the run (from ``f``, the `with gradtrace.trace()`
        line, down), not in whatever called it (pytest, Jupyter)."""
        while f is not None and f.f_code.co_filename.startswith(OWN_DIR):
            f = f.f_back
        self.top_frame = f

    @property
    def module(self) -> str | None:
        """The path of the module running now."""
        return self.module_stack[-1] if self.module_stack else None

    def user_frame(self, f):
        """The innermost frame of user code (not torch, not gradtrace), and the qualname of
        the outermost torch function it called (the 'via', e.g. Optimizer.zero_grad)."""
        cu = self.code_user
        via = None
        while f is not None:
            co = f.f_code
            u = cu.get(co)
            if u is None:
                u = cu[co] = _is_user_code(co)
            if u:
                return f, via
            if co.co_filename.startswith(TORCH_DIR):
                q = getattr(co, "co_qualname", co.co_name)
                if "<locals>" not in q and not q.startswith("handle_torch_function"):
                    via = q
            f = f.f_back
        return None, via

    def sid(self, f) -> int | None:
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
            self.run.w.add_source(SourceRow(sid, fn, line, linecache.getline(fn, line).strip(),
                                            getattr(co, "co_qualname", co.co_name)))
        self.site_sid[site] = sid
        return sid

    @staticmethod
    def find_name(f, obj) -> str | None:
        """The variable that holds ``obj`` in frame ``f`` (locals first, then globals)."""
        if f is None:
            return None
        return _bound_name(f.f_locals, obj) or (
            None if f.f_globals is f.f_locals else _bound_name(f.f_globals, obj))

    def leaf_name(self, f, t, site=None) -> str | None:
        """The variable that holds leaf ``t``, looked up once a step. The outermost user frame
        that binds it wins: in ``mse(preds, y)`` the targets are the loop's ``y``, not mse's
        ``t2``. ``site`` (the call and the argument's position) remembers where the name was
        found, so that the next step checks one variable instead of scanning every frame."""
        leaf_names = self.step.leaf_names
        cached = leaf_names.get(t)
        if cached is not None:
            return cached or None
        hint = self.name_sites.get(site) if site is not None else None
        if hint is not None:
            depth, name, uses = hint
            if name is None:
                # An expression, never a variable: trust it, with a full look now and then.
                if uses < 32:
                    self.name_sites[site] = (depth, None, uses + 1)
                    leaf_names.set(t, "")
                    return None
            else:
                g = f
                for _ in range(depth):
                    g = g.f_back if g is not None else None
                # depth -1: the name was one of the innermost frame's globals
                scope = None if g is None else g.f_globals if depth < 0 else g.f_locals
                if scope is not None and (scope.get(name) if "." not in name
                                          else _resolve(scope, name)) is t \
                        and not (depth >= 0 and _is_argument(g.f_code, name)):
                    leaf_names.set(t, name)
                    return name
                # (an argument, as forward's ``x``: the caller may hold the tensor under the
                # script's own name, as the loop's ``xb``, where a first call passed it a
                # temporary, ``X[:2]``: the frames are looked through again)
        name, depth = self._scan_frames(f, t)
        if site is not None:
            self.name_sites[site] = (depth, name, 0)
        leaf_names.set(t, name or "")
        return name

    def _scan_frames(self, f, t) -> tuple[str | None, int]:
        """The outermost user frame's variable bound to ``t`` and that frame's depth above
        ``f`` (-1 when only the innermost frame's globals hold it, or nothing does). Where no
        variable holds it, the outermost attribute path that reaches it (``model.w``; a
        method's ``self.w`` only when no frame outside it reaches it). A module's parameter
        without a variable of its own is named by its module path instead (see enter_module)."""
        frames = self._user_frames(f)
        name, depth = None, -1
        has_path = self.run.param_names.get(t) is not None
        for g, d in frames:
            found = _bound_name(g.f_locals, t)
            if found is not None and not (has_path and _is_argument(g.f_code, found)):
                name, depth = found, d
        if name is None:
            name = _bound_name(f.f_globals, t)
        if name is None and self.run.param_names.get(t) is None:
            name, depth = self._attr_scan(frames, f, t)
        return name, depth

    def _user_frames(self, f) -> list[tuple[FrameType, int]]:
        """The user frames from ``f`` out to the frame that started the run, with their depth."""
        out = []
        cu = self.code_user
        top = self.top_frame
        d = 0
        while f is not None:
            co = f.f_code
            u = cu.get(co)
            if u is None:
                u = cu[co] = _is_user_code(co)
            if u:
                out.append((f, d))
            elif co.co_filename.startswith(OWN_DIR):
                break  # gradtrace's script runner: the user's program starts below it
            if f is top:
                break  # the frame that started the trace: what is above it is not the run
            f = f.f_back
            d += 1
        return out

    @staticmethod
    def _attr_scan(frames, f, obj) -> tuple[str | None, int]:
        """The outermost frame's attribute path to ``obj`` (not through ``self``), then the
        innermost frame's globals, then the innermost ``self`` path; with the frame's depth."""
        for g, d in reversed(frames):
            path = _attr_path(g.f_locals, obj)
            if path is not None:
                return path, d
        if f.f_globals is not f.f_locals:
            path = _attr_path(f.f_globals, obj)
            if path is not None:
                return path, -1
        for g, d in frames:
            path = _attr_path(g.f_locals, obj, skip_self=False)
            if path is not None:
                return path, d
        return None, -1

    # -- modules ------------------------------------------------------------------------------
    def enter_module(self, module) -> None:
        name = self.module_names.get(module)
        if name is None:
            name = self._name_module(module, sys._getframe(1))
        self.module_stack.append(name)
        self.module_ids.append(id(module))

    def leave_module(self, module) -> None:
        if self.module_ids and self.module_ids[-1] == id(module):
            self.module_ids.pop()
            self.module_stack.pop()

    def _name_module(self, module, frame) -> str:
        """Name ``module`` (its variable, else its parent's path and class) and everything in it."""
        run = self.run
        f, _ = self.user_frame(frame)
        inner = _compiled_inner(module)
        if inner is not None:
            # torch.compile(net): the script's `net` names the parameters (net.0.weight),
            # not the wrapper's path to them (cnet._orig_mod.0.weight); without a variable
            # of its own the module takes the wrapper's name
            if inner not in self.module_names:
                self._name_module_as(inner, self.find_name(f, inner) or self.find_name(f, module)
                                     or type(inner).__name__)
            self.module_names[module] = self.module_names[inner]
            return self.module_names[module]
        root = self.find_name(f, module)
        if (root is None or root == "self") and f is not None:
            # Inside a method (`self.net(X)`), the script's own name for the object.
            frames = self._user_frames(f)
            outer = None
            for g, _d in frames:
                found = _bound_name({k: v for k, v in g.f_locals.items() if k != "self"}, module)
                if found is not None:
                    outer = found
            if outer is None:
                outer = self._attr_scan(frames, f, module)[0]
            root = outer or root
        if root is None:
            root = self.module_stack[-1] + "." + type(module).__name__ if self.module_stack \
                else type(module).__name__
        return self._name_module_as(module, root)

    def _name_module_as(self, module, root: str) -> str:
        """Name ``module`` ``root``, its sub-modules, parameters and buffers by their paths."""
        run = self.run
        for sub, m in module.named_modules():
            if m not in self.module_names:
                self.module_names[m] = path = f"{root}.{sub}" if sub else root
                self.module_classes[path] = type(m).__name__
        # Buffers too (BatchNorm's running_mean): leaves of the graph like the parameters;
        # a path inside the module's own code (self.bn1.running_mean) would name the
        # running_mean of every block the same.
        for pname, p in (*module.named_parameters(), *module.named_buffers()):
            full = f"{root}.{pname}"
            run.param_names.set(p, full)
            tid = run.tids.get(p)
            if tid is not None and tid not in run.named:
                run.name(tid, full)
        return self.module_names[module]

    def clear(self) -> None:
        self.top_frame = None
