"""Forward ops: the calls that build the graph, the prep ops that fed them, custom Functions.

A "prep" op's output fed the graph without being a named tensor (``y.reshape(...)``); a
custom ``autograd.Function`` is one op, with the ops of its forward inside it.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch

from ..tracefile.model import FUNCTION_PREFIX
from ..tracefile.rows import OpRow
from .calls import encode, grad_fn_of, outputs_of, target_of, tensors_in
from .naming import Naming
from .state import Run, StepState
from .values import Values

__all__ = ["Forward"]

_Tensor = torch.Tensor
#: Calls whose output holds whatever its memory held before: no values of its own until
#: something writes them (Events._unwritten).
_UNINITIALISED = frozenset({torch.empty, torch.empty_like, torch.empty_strided, _Tensor.new_empty})
_CURRENT = object()  # "the module running now", for ops recorded as they happen


class Forward:
    """Records forward ops into the step. ``begin_next_step`` is called by the first graph op
    after a backward pass."""

    def __init__(self, run: Run, step: StepState, naming: Naming, values: Values,
                 begin_next_step: Callable[[], None]):
        self.run = run
        self.step = step
        self.naming = naming
        self.values = values
        self.begin_next_step = begin_next_step
        self.targets: dict[Any, tuple[str, str]] = {}
        # grad_fn objects the step holds (see backward.walk): config.max_nodes_per_backward
        self.max_nodes = run.config.max_nodes_per_backward

    def on_op(self, func, args, kwargs, inplace=False):
        """A torch call. ``inplace``: one that changes its first argument (not a leaf's).

        The call runs first; what gradtrace does after it never reaches the user: a bug of
        gradtrace's there leaves the op unrecorded and is said once (``Run.internal``).

        A call that returns its first argument changed (``F.relu(h, inplace=True)``, what
        ``nn.ReLU(inplace=True)`` runs) is in place too: its version counter moved."""
        version = None
        if not inplace and args and isinstance(args[0], _Tensor):
            try:
                version = args[0]._version
            except Exception:  # an inference tensor keeps no version counter
                pass
        out = func(*args, **kwargs)
        try:
            if version is not None and out is args[0] and out._version != version:
                inplace = True
            self._seen(func, args, kwargs, out, inplace, sys._getframe(1))
        except Exception as e:
            self.run.internal(e)
        return out

    def _seen(self, func, args, kwargs, out, inplace, frame) -> None:
        """What ``on_op`` notes of a call that has run; ``frame``: its caller's."""
        run = self.run
        if inplace and out is None and args and isinstance(args[0], _Tensor):
            out = args[0]  # `h[mask] = 0` (Tensor.__setitem__) returns None: its result is h
        if func in _UNINITIALISED and isinstance(out, _Tensor) and out.numel() \
                and len(self.step.unwritten) < 4096:
            self.step.unwritten.add(out.data_ptr())  # nn.Linear's weight, before its init
        if isinstance(out, _Tensor):
            if not inplace and args and out is args[0]:
                # `loss.to("cpu")`, `.contiguous()` of a contiguous tensor: the input itself
                # comes back; nothing was computed, so it is no op of the graph.
                return
            outs = (out,)
            try:  # not out.grad_fn: that would give the node a Python object (see walk)
                graph = out.requires_grad and not out.is_leaf
            except RuntimeError:  # a no-grad view whose base changed in place: not the graph's
                graph = False
        else:
            outs = outputs_of(out)
            graph = False
            for o in outs:
                if o.requires_grad and grad_fn_of(o) is not None:
                    graph = True
                    break
            if graph and not inplace:
                ins = tensors_in(args, kwargs)
                if any(o is i for o in outs for i in ins):
                    return
        if graph and inplace and not torch.is_grad_enabled():
            # `with torch.no_grad(): h.mul_(2)` changes h where autograd does not see it: no
            # graph op, but recorded (a replay then knows h's value is not its ops' alone)
            if run.recording and not run.after_backward:
                self.record(func, args, kwargs, outs, False, frame)
            return
        if not graph:
            pending = self.step.pending
            if run.parents:
                if run.recording:
                    self.record(func, args, kwargs, outs, False, frame)
            elif len(outs) == 1 and run.recording and torch.is_grad_enabled() \
                    and len(pending) < 4096:
                # Kept until the step ends, in case this tensor feeds a graph op unnamed.
                f, _ = self.naming.user_frame(frame)
                pending.set(outs[0], (func, args, kwargs, self.naming.sid(f), self.naming.module))
            return
        if run.after_backward:
            self.begin_next_step()
            if run.dormant:
                return
        if not run.recording:
            return
        run.awaiting_forward = False
        self.record(func, args, kwargs, outs, True, frame)

    def record(self, func, args, kwargs, outs, is_graph, frame, sid=None, name=None,
               target=None, name_frame=None, module=_CURRENT):
        run, step, naming = self.run, self.step, self.naming
        if step.ops >= run.config.max_ops_per_step:
            step.dropped += 1
            run.ops_dropped_total += 1
            return None
        step.ops += 1
        f = name_frame
        if frame is not None:
            f, _ = naming.user_frame(frame)
            sid = naming.sid(f)
        if name is None:
            nt = self.targets.get(func)
            if nt is None:
                nt = self.targets[func] = target_of(func)
            name, target = nt
        tids = run.tids
        inputs = []
        for k, t in enumerate(tensors_in(args, kwargs)):
            tid = tids.get(t)
            if tid is None:
                leaf_name = None
                if f is not None and grad_fn_of(t) is None:
                    leaf_name = naming.leaf_name(f, t, (f.f_code, f.f_lasti, func, k))
                    if leaf_name is None and is_graph and self._is_prep(t):
                        tid = self._pull_prep(t, step.pending.get(t), f)
                if tid is None:
                    tid = run.new_tid(t, name=leaf_name)
            elif tid not in run.named and f is not None and grad_fn_of(t) is None \
                    and tid not in step.name_tried:
                step.name_tried.add(tid)
                leaf_name = naming.leaf_name(f, t, (f.f_code, f.f_lasti, func, k))
                if leaf_name is not None:
                    run.name(tid, leaf_name)
            inputs.append(tid)
            self.values.want(t, tid)
        # Numbered after the prep ops its inputs pulled in: op order stays topological.
        idx = run.take_op()
        seq = run.take_seq()
        outputs, gf_name = self._outputs(outs, idx)
        tid_of = run.tid_of
        enc_args = [encode(a, tid_of) for a in args]
        enc_kwargs = {k: encode(v, tid_of) for k, v in kwargs.items()} if kwargs else {}
        if module is _CURRENT:
            module = naming.module
        parent = run.parents[-1] if run.parents else None
        run.w.add_op(OpRow(idx, seq, name, target, inputs, outputs, enc_args, enc_kwargs, gf_name,
                           module, parent, int(is_graph), sid))
        if is_graph and parent is None:
            run.totals["ops"] += 1
            step.graph_ops += 1
        return idx

    def _outputs(self, outs, idx) -> tuple[list[int], str | None]:
        """The outputs' tids (noting their values) and the grad_fn class of the first with one;
        each new grad_fn is remembered as op ``idx``'s."""
        run, step = self.run, self.step
        outputs = []
        gf_name = None
        # Inside a custom Function's forward nothing new is a parameter: ``weight.t()`` there
        # is a view of one (it requires grad and has no grad_fn), made again every step.
        inner = bool(run.parents)
        for o in outs:
            tid = run.tids.get(o)
            gf = grad_fn_of(o)
            if tid is None:
                tid = run.new_tid(o, role="activation" if gf is not None or not o.requires_grad
                                  or inner else None)
            outputs.append(tid)
            self.values.want(o, tid)
            if gf is not None:
                if gf_name is None:
                    gf_name = type(gf).__name__
                key = id(gf)
                if key not in step.node_op and len(step.node_refs) < self.max_nodes:
                    step.node_op[key] = idx
                    step.node_refs.append(gf)
        return outputs, gf_name

    def _is_prep(self, t) -> bool:
        """Whether unnamed, untracked leaf ``t`` came from a recent non-graph op. A parameter
        is a leaf of the drawing, not a computation: in-place initialisers like
        kaiming_uniform_ are not its history."""
        return not t.requires_grad and self.step.pending.get(t) is not None \
            and self.run.param_names.get(t) is None

    def _pull_prep(self, t, prep, f, depth: int = 0):
        """Record the non-graph op that made unnamed tensor ``t`` (e.g. ``y.reshape(...)``);
        ``depth``: how far down a chain of prep ops (``X.reshape(-1).flip(0).reshape(4, 3)``)."""
        func, args, kwargs, sid, module = prep
        self.step.pending.d.pop(id(t), None)
        outs = (t,)
        # Inputs of the prep op may themselves be unnamed prep outputs: pull those first. The
        # depth is part of the name site: the two reshapes of one chain are two sites.
        for k, a in enumerate(tensors_in(args, kwargs)):
            if self.run.tids.get(a) is None and grad_fn_of(a) is None and self._is_prep(a) \
                    and self.naming.leaf_name(f, a, (f.f_code, f.f_lasti, func, k, depth)) is None:
                self._pull_prep(a, self.step.pending.get(a), f, depth + 1)
        self.record(func, args, kwargs, outs, False, None, sid=sid, name_frame=f, module=module)
        return self.run.tids.get(t)

    # -- custom autograd.Function -------------------------------------------------------------
    def on_function(self, orig_func, cls, args, kwargs):
        """A custom autograd.Function: record it as one op, its forward's calls as inner ops."""
        run = self.run
        if run.after_backward:
            with torch._C.DisableTorchFunction():
                self.begin_next_step()
        if not run.recording or run.dormant:
            return orig_func(cls, *args, **kwargs)
        run.awaiting_forward = False
        frame = sys._getframe(1)
        idx = run.take_op()  # the inner ops come after the Function's own row
        run.parents.append(idx)
        seq = run.take_seq()
        try:
            out = orig_func(cls, *args, **kwargs)
        finally:
            run.parents.pop()
        with torch._C.DisableTorchFunction():
            self._record_function_row(idx, seq, cls, args, kwargs, out, frame)
        return out

    def _record_function_row(self, idx, seq, cls, args, kwargs, out, frame):
        run, step, naming = self.run, self.step, self.naming
        f, _ = naming.user_frame(frame)
        sid = naming.sid(f)
        inputs = []
        for k, t in enumerate(tensors_in(args, kwargs)):
            tid = run.tids.get(t)
            if tid is None:
                name = naming.leaf_name(f, t, (f.f_code, f.f_lasti, cls, k)) \
                    if grad_fn_of(t) is None and f is not None else None
                tid = run.new_tid(t, name=name)
            inputs.append(tid)
            self.values.want(t, tid)
        outputs, gf_name = [], None
        for o in outputs_of(out):
            tid = run.tid_of(o)
            outputs.append(tid)
            self.values.want(o, tid)
            gf = grad_fn_of(o)
            if gf is not None:
                gf_name = gf_name or type(gf).__name__
                if id(gf) not in step.node_op and len(step.node_refs) < self.max_nodes:
                    step.node_op[id(gf)] = idx
                    step.node_refs.append(gf)
        tid_of = run.tid_of
        step.ops += 1
        run.totals["ops"] += 1
        parent = run.parents[-1] if run.parents else None
        if gf_name is not None and parent is None:
            step.graph_ops += 1
        run.w.add_op(OpRow(idx, seq, cls.__name__, f"{FUNCTION_PREFIX}{cls.__qualname__}",
                           inputs, outputs, [encode(a, tid_of) for a in args],
                           {k: encode(v, tid_of) for k, v in kwargs.items()},
                           gf_name, naming.module, parent, int(gf_name is not None), sid))
