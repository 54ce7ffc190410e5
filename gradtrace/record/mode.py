"""The ``TorchFunctionMode`` that sees every torch call from Python, and its dispatch.

Also putting it on the stack, taking it off, and going idle between sampled steps.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .backward import Backward
from .calls import BACKWARD, GET_DATA, GET_GRAD, OP, PASS, classify, compiling, in_transform
from .events import Events
from .forward import Forward
from .state import Run

__all__ = ["Mode"]


class Mode(TorchFunctionMode):
    """Forwards every torch call to the room that records its kind."""

    def __init__(self, run: Run, forward: Forward, events: Events, backward: Backward):
        super().__init__()
        self.run = run
        self.forward = forward
        self.events = events
        self.backward = backward
        self.kinds: dict[Any, int] = {}
        #: The optimizer whose ``step()`` runs with the mode off the stack (see step_aside).
        self.aside: Any = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        run = self.run
        if run.dormant:
            return func(*args, **(kwargs or {}))
        if compiling():
            # Dynamo traces this function (code torch.compile'd outside the trace): it
            # compiles the call alone. Nothing is read or changed here, which Dynamo would
            # guard on and recompile for.
            return func(*args, **(kwargs or {}))
        kind = self.kinds.get(func)
        if kind is None:
            kind = self.kinds[func] = classify(func)
        if kind == PASS:
            return func(*args, **(kwargs or {}))
        if in_transform():  # torch.func: functorch's wrappers, not autograd's graph
            run.transform_ops += 1
            return func(*args, **(kwargs or {}))
        # A signal that arrives while gradtrace is writing waits until it is done (see
        # session.run_script), so a step is never left half-recorded.
        run.busy += 1
        try:
            if kind == OP:
                return self.forward.on_op(func, args, kwargs or {})
            if kind == BACKWARD:
                return self.backward.on_backward(func, args, kwargs or {})
            if kind == GET_DATA or kind == GET_GRAD:
                return self.events.on_get(kind, func, args, kwargs or {})
            return self.events.on_change(kind, func, args, kwargs or {})
        finally:
            run.busy -= 1
            if run.pending_signal is not None and not run.busy:
                run.raise_pending_signal()

    # -- on and off the stack ---------------------------------------------------------------
    def on_top(self) -> bool:
        n = torch._C._len_torch_function_stack()
        return n > 0 and torch._C._get_function_stack_at(n - 1) is self

    def put_on_stack(self) -> None:
        torch._C._push_on_torch_function_stack(self)
        self.run.mode_on = True
        self.run.dormant = False

    def take_off_stack(self) -> None:
        """Take the mode off the stack, wherever it is (modes pushed above it stay)."""
        n = torch._C._len_torch_function_stack()
        above = []
        while n > 0:
            top = torch._C._get_function_stack_at(n - 1)
            torch._C._pop_torch_function_stack()
            n -= 1
            if top is self:
                break
            above.append(top)
        for m in reversed(above):
            torch._C._push_on_torch_function_stack(m)
        self.run.mode_on = False

    def step_aside(self, owner) -> bool:
        """Off the stack while ``owner`` (a torch optimizer's ``step()``) runs: its calls are
        no graph ops and change nothing the mode records (the update is read by the
        optimizer hooks), and passing each through even a bare mode makes the step 1.4-1.9x
        slower (Adam / AdamW of benchmarks/models.py). False when the mode is not on top
        (another mode above it stays as it is)."""
        if self.aside is not None or not self.on_top():
            return False
        torch._C._pop_torch_function_stack()
        self.run.mode_on = False
        self.aside = owner
        return True

    def step_back(self) -> bool:
        """Back on the stack after :meth:`step_aside`; False if it was not aside. Called by
        the optimizer's post hook, or by the next hook that runs (a module's forward, a
        backward pass) when the step raised and the post hook never came."""
        if self.aside is None:
            return False
        self.aside = None
        self.put_on_stack()
        return True

    def _profile_pop(self, frame, event, arg):
        """Set for a moment to take the mode off as soon as no handler is running."""
        if self.on_top():
            torch._C._pop_torch_function_stack()
            self.run.mode_on = False
            sys.setprofile(None)

    def go_idle(self) -> None:
        """Stop seeing calls until the next recorded step (sampled recording)."""
        self.run.dormant = True
        if sys.getprofile() is None:
            sys.setprofile(self._profile_pop)

    def activate(self) -> None:
        """Start seeing calls again (sampled recording, at a recorded step's start)."""
        if sys.getprofile() == self._profile_pop:
            sys.setprofile(None)
        if not self.run.mode_on:
            self.put_on_stack()
        self.run.dormant = False

    def remove(self) -> None:
        """Off the stack, and the idle profile function gone, whatever state it was in."""
        self.aside = None
        if self.run.mode_on:
            self.take_off_stack()
        if sys.getprofile() == self._profile_pop:
            sys.setprofile(None)
