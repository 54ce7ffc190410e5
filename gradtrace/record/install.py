"""Everything the recorder installs, entered on one ``contextlib.ExitStack``: one close removes it.

That is the global module and optimizer hooks, the patches of ``Function.apply``, of the
DataLoader iterator, of ``torch.autograd.backward/grad`` (sampled recording, and backward
passes in other threads) and of ``torch.compile``, and the mode.

Every hook and patch steps aside while Dynamo traces (``calls.compiling()``) and inside
``torch.func`` transforms (``calls.in_transform()``), as the mode does.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import warnings
import weakref
from typing import Callable

import torch

from .calls import compiling, in_transform
from .ddp import Buckets
from .events import Events
from .forward import Forward
from .mode import Mode
from .naming import Naming
from .state import Run, StepState
from .values import Values

__all__ = ["install"]


def install(run: Run, step: StepState, naming: Naming, values: Values, forward: Forward,
            events: Events, mode: Mode, new_step: Callable[[], None]) -> contextlib.ExitStack:
    """Install every hook, patch and (when step 0 is recorded) the mode; the stack that
    removes them. ``new_step`` starts a recorded step that sampling reached."""
    from torch.nn.modules import module as _module
    from torch.optim import optimizer as _optimizer

    stack = contextlib.ExitStack()
    try:
        hooks = _Hooks(run, step, naming, values, events, mode)
        stack.callback(_module.register_module_forward_pre_hook(hooks.module_pre).remove)
        stack.callback(_module.register_module_forward_hook(hooks.module_post, always_call=True).remove)
        stack.callback(_optimizer.register_optimizer_step_pre_hook(hooks.opt_pre).remove)
        stack.callback(_optimizer.register_optimizer_step_post_hook(hooks.opt_post).remove)
        stack.callback(hooks.opt_before.clear)
        _patch_function_apply(stack, run, mode, forward)
        _patch_dataloader(stack, run, mode)
        _patch_backward(stack, run, mode, new_step)
        _patch_compile(stack, run, mode)
        _patch_distributed(stack, run)
        _patch_grad_scaler(stack, run)
        stack.callback(mode.remove)  # the last in is the first out: the mode comes off first
        if run.recording:
            mode.put_on_stack()
    except BaseException:
        stack.close()
        raise
    return stack


def _records_nothing(optimizer, args, kwargs) -> bool:
    """A ``step()`` in which the mode would record nothing: one of torch's own optimizers,
    with no closure (LBFGS's closure runs a forward and backward pass inside it) and not
    ``differentiable`` (its update is then part of the graph)."""
    cls = type(optimizer)
    if not cls.__module__.startswith("torch.optim.") or _has_closure(args, kwargs):
        return False
    return not any(g.get("differentiable") for g in optimizer.param_groups)


def _has_closure(args, kwargs) -> bool:
    """``optimizer.step(closure)``: the closure's forward pass inside it begins a new step."""
    return (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None


def _after_a_failed_step(run: Run, mode: Mode) -> None:
    """An optimizer's ``step()`` raised (its post hook never ran) and the script went on:
    the mode goes back on the stack and in-place calls count again."""
    if mode.step_back():
        run.in_optimizer_step = 0


def _patch(stack: contextlib.ExitStack, obj, attr, new) -> None:
    stack.callback(setattr, obj, attr, obj.__dict__[attr])
    setattr(obj, attr, new)


def _patch_function_apply(stack, run: Run, mode: Mode, forward: Forward) -> None:
    Function = torch.autograd.Function
    orig_func = Function.__dict__["apply"].__func__

    def apply(cls, *args, **kwargs):
        if not run.mode_on or run.dormant or compiling() or in_transform() or not mode.on_top():
            return orig_func(cls, *args, **kwargs)
        return forward.on_function(orig_func, cls, args, kwargs)

    _patch(stack, Function, "apply", classmethod(apply))


def _patch_dataloader(stack, run: Run, mode: Mode) -> None:
    """Data loading runs with the mode off."""
    from torch.utils.data import dataloader as _dl

    cls = _dl._BaseDataLoaderIter
    orig = cls.__dict__["__next__"]

    def __next__(it):
        if run.mode_on and mode.on_top():
            torch._C._pop_torch_function_stack()
            try:
                return orig(it)
            finally:
                torch._C._push_on_torch_function_stack(mode)
        return orig(it)

    _patch(stack, cls, "__next__", __next__)


def _patch_backward(stack, run: Run, mode: Mode, new_step: Callable[[], None]) -> None:
    """Backward passes in other threads are counted (the mode is the recording thread's
    only); in sampled recording, steps are counted while no mode is installed."""
    import torch.autograd as ag

    samples = run.policy.samples
    for name in ("backward", "grad"):
        orig = ag.__dict__[name]
        api = "autograd.grad" if name == "grad" else "autograd.backward"

        def wrapper(*args, _orig=orig, _api=api, **kwargs):
            if threading.get_ident() != run.thread_ident:
                if not (compiling() or in_transform()):
                    run.thread_backward += 1
                return _orig(*args, **kwargs)
            if compiling() or in_transform():
                return _orig(*args, **kwargs)
            if run.in_backward:
                # A pass run inside another one (a reentrant checkpoint recomputes its block
                # and backpropagates through it in its own backward): part of that pass,
                # not a step of its own
                return _orig(*args, **kwargs)
            if mode.aside is not None:
                _after_a_failed_step(run, mode)
            run.step_begun = True
            taken = _scalars_before(run, args, kwargs, _api)
            run.in_backward = True
            try:
                out = _orig(*args, **kwargs)
            finally:
                run.in_backward = False
            if taken:
                _scalars_after(run, _api)
            if not samples or (run.mode_on and not run.dormant):
                return out  # the mode sees it and records it
            try:
                return out
            finally:
                run.step += 1
                run.step_begun = False  # counted once something of it runs (steps_seen)
                run.after_backward = False
                try:
                    if run.policy.decide(run.step):
                        run.recording = True
                        new_step()
                        # What follows until the first forward op (the update and zeroing
                        # of the unrecorded step before) belongs to that step: not recorded.
                        run.awaiting_forward = True
                        mode.activate()
                except Exception as e:  # gradtrace's bug: the user's backward has run
                    run.internal(e)

        wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
        # calls.classify looks through it to the original
        wrapper.gradtrace_wraps = orig  # type: ignore[attr-defined]
        wrapper.__name__ = orig.__name__
        wrapper.__doc__ = orig.__doc__
        _patch(stack, ag, name, wrapper)
        # Tensor.backward looks torch.autograd.backward up at call time.


def _scalars_before(run: Run, args, kwargs, api: str) -> bool:
    """The step's scalars before its backward call (record/scalars.py); False if it failed."""
    first = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
    roots = list(first) if isinstance(first, (list, tuple)) else [first]
    try:
        with torch._C.DisableTorchFunction(), torch.no_grad():
            run.scalars.before(roots, api)
        return True
    except Exception as e:
        run.internal(e)
        return False


def _scalars_after(run: Run, api: str) -> None:
    try:
        with torch._C.DisableTorchFunction(), torch.no_grad():
            run.scalars.after(api)
    except Exception as e:
        run.internal(e)


# The warning torch gives for every call of a compiled module while global module hooks
# are installed: here the hooks are gradtrace's own, which step aside while Dynamo traces.
_HOOKS_WARNING = r"Using `torch.compile\(module\)` when there are global hooks"


def _patch_compile(stack, run: Run, mode: Mode) -> None:
    """What ``torch.compile`` returns runs with the mode off the stack: Dynamo then compiles
    the user's code alone (not the mode, which it would recompile for every call), and its
    regions are counted, not recorded op by op (the backward pass through them is). The
    modules it returns do not warn about gradtrace's global module hooks (the script's
    output stays its own); a hook the script installed itself still warns, as under python."""
    orig = torch.__dict__["compile"]
    patched: list = []

    def call_compiled(call, *args, **kwargs):
        run.compiled += 1
        on = run.mode_on and mode.on_top()
        if on:
            torch._C._pop_torch_function_stack()
        try:
            if _only_our_hooks():
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=_HOOKS_WARNING)
                    return call(*args, **kwargs)
            return call(*args, **kwargs)
        finally:
            if on:
                torch._C._push_on_torch_function_stack(mode)

    def patch_module_calls(cls) -> None:
        if not patched:
            call = cls.__dict__["__call__"]

            def __call__(self, *a, **kw):
                return call_compiled(call, self, *a, **kw)

            patched.append(cls)
            _patch(stack, cls, "__call__", __call__)

    def compile(*args, **kwargs):
        if (not args or args[0] is None) and "model" not in kwargs:
            # torch.compile(backend=...) as a decorator factory: the decorator compiles here
            return lambda model: compile(model, *args[1:], **kwargs)
        out = orig(*args, **kwargs)
        cls = type(out)
        if isinstance(out, torch.nn.Module) and cls.__name__ == "OptimizedModule":
            patch_module_calls(cls)
            return out
        if callable(out) and not isinstance(out, type):
            compiled = out

            @functools.wraps(compiled)
            def run_compiled(*a, **kw):
                return call_compiled(compiled, *a, **kw)

            return run_compiled
        return out

    compile.__wrapped__ = orig  # type: ignore[attr-defined]
    compile.__doc__ = orig.__doc__
    _patch(stack, torch, "compile", compile)
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is not None:  # modules compiled before the trace began run the same way
        patch_module_calls(eval_frame.OptimizedModule)


def _patch_distributed(stack, run: Run) -> None:
    """The backend of ``torch.distributed.init_process_group`` is noted for the trace's meta
    (the group is usually destroyed before the run ends, and with it what it was)."""
    import torch.distributed as dist

    if not dist.is_available():
        return
    orig = dist.__dict__.get("init_process_group")
    if orig is None:
        return

    @functools.wraps(orig)
    def init_process_group(*args, **kwargs):
        out = orig(*args, **kwargs)
        with contextlib.suppress(Exception):  # only a note: never the script's problem
            run.backend = str(dist.get_backend())
        return out

    _patch(stack, dist, "init_process_group", init_process_group)


def _patch_grad_scaler(stack, run: Run) -> None:
    """``scaler.scale(loss).backward()`` (torch.amp's GradScaler): the loss a step keeps is
    the one the scaler was given, not that times 65,536. The scaled tensor and the loss are
    noted (the last one only) for the backward pass that starts from it."""
    try:
        from torch.amp.grad_scaler import GradScaler
    except ImportError:  # pragma: no cover - an older torch
        return
    orig = GradScaler.__dict__["scale"]

    def scale(self, outputs):
        out = orig(self, outputs)
        if isinstance(outputs, torch.Tensor) and isinstance(out, torch.Tensor) and out is not outputs:
            run.scaled = (out, outputs)
        return out

    _patch(stack, GradScaler, "scale", scale)
    stack.callback(lambda: setattr(run, "scaled", None))


def _only_our_hooks() -> bool:
    """No global module hook but the two gradtrace installs."""
    from torch.nn.modules import module as m

    return (len(m._global_forward_pre_hooks) + len(m._global_forward_hooks)) <= 2 \
        and not m._global_backward_hooks and not m._global_backward_pre_hooks


class _Hooks:
    """The global module hooks (module names) and optimizer hooks (``optimizer.step()``)."""

    def __init__(self, run: Run, step: StepState, naming: Naming, values: Values, events: Events,
                 mode: Mode):
        self.run = run
        self.mode = mode
        self.step = step
        self.naming = naming
        self.values = values
        self.events = events
        self.opt_before: dict[int, tuple] = {}  # id -> (step, [(tid, p, version, vid, copy)])
        self.opt_seen: weakref.WeakSet = weakref.WeakSet()  # optimizers whose groups are noted
        self.buckets = Buckets(run)  # DDP's gradient buckets (record/ddp.py)

    def module_pre(self, module, args):
        if compiling():
            return None  # (first: Dynamo traces this hook, and cannot trace get_ident)
        if threading.get_ident() != self.run.thread_ident:
            return None  # another thread's: gradtrace records the thread that started it
        if self.mode.aside is not None:
            _after_a_failed_step(self.run, self.mode)
        if not self.run.mode_on or compiling() or in_transform():
            return None
        try:
            with torch._C.DisableTorchFunction():
                self.naming.enter_module(module)
                if type(module).__name__ == "DistributedDataParallel":
                    self._ddp_forward(module)
        except Exception as e:
            self.run.internal(e)
        return None

    def _ddp_forward(self, module) -> None:
        """A DistributedDataParallel forward: the parameters its backward will all-reduce
        (none under ``no_sync()`` or without grad)."""
        from torch.nn.parallel import DistributedDataParallel

        if not isinstance(module, DistributedDataParallel):
            return
        if torch.is_grad_enabled() and getattr(module, "require_backward_grad_sync", True):
            self.run.ddp_sync.update((id(p), p) for p in module.parameters() if p.requires_grad)
            group = getattr(module, "process_group", None)
            import torch.distributed as dist

            self.run.ddp_world = dist.get_world_size(group) if group is not None else dist.get_world_size()

    def module_post(self, module, args, output):
        if compiling():
            return None
        if threading.get_ident() != self.run.thread_ident:
            return None  # another thread's: gradtrace records the thread that started it
        self.naming.leave_module(module)
        if type(module).__name__ == "DistributedDataParallel":
            try:
                with torch._C.DisableTorchFunction():
                    self._ddp_after_forward(module)
            except Exception as e:
                self.run.internal(e)
        return None

    def _ddp_after_forward(self, module) -> None:
        """A synchronising DDP forward has set up its buckets: their layout is noted."""
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(module, DistributedDataParallel) and torch.is_grad_enabled() \
                and getattr(module, "require_backward_grad_sync", True):
            self.buckets.after_forward(module)

    def opt_pre(self, optimizer, args, kwargs):
        if compiling():
            return None
        if threading.get_ident() != self.run.thread_ident:
            return None  # another thread's: gradtrace records the thread that started it
        run = self.run
        run.in_optimizer_step += 1
        try:
            run.scalars.watch_optimizer(optimizer)
        except Exception as e:
            run.internal(e)
        if not (run.mode_on and run.recording and not run.dormant) or run.awaiting_forward:
            return None  # (awaiting: the update of the unrecorded step before this one)
        try:
            with torch._C.DisableTorchFunction():
                if optimizer not in self.opt_seen:
                    self.opt_seen.add(optimizer)
                    self.events.optimizer_groups(optimizer, sys._getframe(1))
                before = []
                values = self.values
                # A closure's forward begins a new step inside step(), and a step holds only
                # its own values: a copy of each parameter as it is now, for that step.
                copy = _has_closure(args, kwargs)
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        # (with a closure, a first step() has no gradients yet: they come in it)
                        if p.grad is not None or (copy and p.requires_grad):
                            tid = run.tid_of(p)
                            # the forward's snapshot when p has not changed since (no second copy)
                            before.append((tid, p, p._version, values.before(p, ("param", tid, "")),
                                           p.detach().clone() if copy else None))
                self.opt_before[id(optimizer)] = (run.step, before)
                if _records_nothing(optimizer, args, kwargs):
                    self.mode.step_aside(optimizer)
        except Exception as e:
            run.internal(e)
        return None

    def opt_post(self, optimizer, args, kwargs):
        if compiling():
            return None
        if threading.get_ident() != self.run.thread_ident:
            return None  # another thread's: gradtrace records the thread that started it
        run = self.run
        if self.mode.aside is optimizer:
            self.mode.step_back()
        run.in_optimizer_step = max(0, run.in_optimizer_step - 1)
        step_at, before = self.opt_before.pop(id(optimizer), (None, None))
        if not before:
            return None
        try:
            with torch._C.DisableTorchFunction():
                if step_at != run.step:  # the values taken before belong to an earlier step
                    snap = self.values.snap_now
                    before = [(tid, p, v, None if c is None else snap(c), None)
                              for tid, p, v, _, c in before]
                self.events.optimizer_step(optimizer, before, sys._getframe(1))
        except Exception as e:
            run.internal(e)
        return None
