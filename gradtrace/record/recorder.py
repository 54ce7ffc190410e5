"""The recorder: the only code that touches autograd (a function mode, node hooks, patches).

How it sees things (torch 2.x), room by room:

- ``mode.py``: a ``TorchFunctionMode`` sees every torch call from Python, including
  ``.data`` and ``.grad`` reads and writes, and hands it to the room for its kind
  (``calls.py`` tells the kinds apart and names the callables);
- ``forward.py``: calls whose output has a ``grad_fn`` are the forward ops (with the
  "prep" ops that fed them and custom ``autograd.Function``s, seen through a patch of
  ``Function.apply``);
- ``backward.py``: ``backward()`` / ``torch.autograd.backward`` / ``torch.autograd.grad``:
  the grad_fn graph is walked from the root and a hook is put on each node for the
  duration of that one call (the closure holds the node's number, never the node);
- ``events.py``: in-place calls on a parameter (or on an alias from ``.data``) are
  updates; on a ``.grad`` (or its alias) they are zeroings when they leave zeros, grad
  writes otherwise; ``optimizer.step()`` is seen through torch's global optimizer hooks;
- ``naming.py``: source lines, the variables that hold leaves, module paths (through the
  global module forward hooks); ``values.py``: the snapshots of values;
- ``state.py``: what they share: the run's ids and flags (:class:`Run`) and the step being
  recorded (:class:`StepState`);
- ``install.py``: every hook, patch and the mode, entered on one ``ExitStack`` that
  :meth:`Recorder.stop` closes (the callers run it in a ``finally``). Data loading runs
  with the mode off.

Hooks never return a value, so gradients are never changed; a bug in gradtrace's own hook
code is reported once and swallowed rather than breaking the user's run.
"""

from __future__ import annotations

import contextlib
import gc
import sys

import torch

from ..config import Config
from ..tracefile.rows import StepHead
from ..tracefile.store import TraceWriter
from .backward import Backward
from . import calls
from .events import Events
from .forward import Forward
from .install import install
from .mode import Mode
from .naming import Naming
from .scalars import ScalarTaker
from .state import Run, StepState
from .values import Values

__all__ = ["Recorder"]

_target_of = calls.target_of  # the name tests and older callers import from here


class Recorder:
    """Records one run into a :class:`TraceWriter`. Use :meth:`start` / :meth:`stop`."""

    def __init__(self, config: Config, writer: TraceWriter):
        self.config = config
        self.run = run = Run(config, writer)
        self.step_state = step = StepState(run)
        self.naming = naming = Naming(run, step)
        self.values = values = Values(run, step)
        self.forward = forward = Forward(run, step, naming, values, self._begin_next_step)
        self.events = events = Events(run, step, naming, values, forward)
        self.backward = backward = Backward(run, step, naming, values, events, self._begin_next_step)
        events.updates_done = self._commit_early
        self.mode = Mode(run, forward, events, backward)
        run.scalars = self.scalars = ScalarTaker(run, run.policy)
        self._installed: contextlib.ExitStack | None = None
        self._froze = False

    # -- what the session reads ----------------------------------------------------------------
    @property
    def step(self) -> int:
        """The run's current step number."""
        return self.run.step

    @property
    def steps_seen(self) -> int:
        """How many steps the run began (recorded in full or not)."""
        return self.run.step + int(self.run.step_begun)

    @property
    def totals(self) -> dict[str, int]:
        return self.run.totals

    @property
    def ops_dropped_total(self) -> int:
        return self.run.ops_dropped_total

    @property
    def module_classes(self) -> dict[str, str]:
        return self.naming.module_classes

    @property
    def optimizers(self) -> list[dict]:
        """Each optimizer's param groups at its first step (meta ``optimizers``)."""
        return self.run.optimizers

    @property
    def errors(self) -> list[str]:
        return self.run.errors

    @property
    def busy(self) -> int:
        """Nonzero while gradtrace is recording a call: a signal then waits (see session)."""
        return self.run.busy

    @property
    def pending_signal(self):
        return self.run.pending_signal

    @pending_signal.setter
    def pending_signal(self, exc_type) -> None:
        self.run.pending_signal = exc_type

    def raise_pending_signal(self) -> None:
        self.run.raise_pending_signal()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Recorder":
        # The frame that started the trace (the `with gradtrace.trace()` line).
        self.naming.find_top_frame(sys._getframe(1))
        # Objects alive before the run (torch, the user's modules and data) are left out of
        # the collector's passes while recording: a long run makes many small objects, and
        # each full collection would walk everything again. Undone at stop; a script that
        # froze objects itself is left to manage its own.
        if gc.get_freeze_count() == 0:
            gc.freeze()
            self._froze = True
        try:
            self._installed = install(self.run, self.step_state, self.naming, self.values,
                                      self.forward, self.events, self.mode, self._sampled_step)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, keep_current_step: bool = True) -> None:
        """Remove every mode, hook and patch; write the step in progress unless told not to
        (an interrupt may have arrived in the middle of recording it)."""
        self.run.busy += 1
        try:
            installed, self._installed = self._installed, None
            if installed is not None:
                installed.close()
        finally:
            try:
                if keep_current_step:
                    with torch._C.DisableTorchFunction():
                        self._close_step()
            finally:
                with contextlib.suppress(Exception), torch._C.DisableTorchFunction(), torch.no_grad():
                    self.scalars.finish()
                self.scalars.clear()
                if self._froze:
                    gc.unfreeze()
                    self._froze = False
                self.run.clear()
                self.step_state.clear()
                self.naming.clear()
                for line in [] if self.run.quiet else self.run.notes():
                    self.run.say(f"gradtrace: {line}")

    # -- steps -----------------------------------------------------------------------------------
    def _head(self) -> StepHead:
        run, step = self.run, self.step_state
        c = step.counts
        return StepHead(
            run.step, step.first_seq, run.seq - 1, int(step.has_backward), step.loss,
            step.graph_ops, step.nodes, c["accumulate_fresh"], c["accumulate_added"],
            c["accumulate_on_top"], c["zero"], c["update"], c["grad_write"], step.dropped)

    def _close_step(self) -> None:
        """End the current step: write its row and commit (the step is then durable)."""
        run, step = self.run, self.step_state
        if not run.recording or step.is_empty():
            return
        self.values.flush()
        run.w.commit_step(self._head())
        run.totals["steps"] += 1

    def _commit_early(self) -> None:
        """The step's backward pass and updates are done (``optimizer.step()`` returned, or a
        ``.grad`` is zeroed after updates): marked, so that a commit coming before it ends
        writes it as it stands (a kill -9 keeps it); what comes later until the next step
        begins still belongs to it (see :meth:`TraceWriter.mark_step`). Once per step."""
        run, step = self.run, self.step_state
        if not run.recording or step.committed_early or step.is_empty() or not step.has_backward:
            return
        step.committed_early = True
        run.busy += 1
        try:
            self.values.flush()
            run.w.mark_step(self._head())
        finally:
            run.busy -= 1

    def _begin_next_step(self) -> None:
        """The first forward op (or backward pass) after a backward pass starts the next step."""
        run = self.run
        self._close_step()
        run.step += 1
        run.after_backward = False
        run.recording = run.policy.decide(run.step)
        self.step_state.reset(keep_pending=run.recording)
        if not run.recording and run.policy.samples:
            self.mode.go_idle()

    def _sampled_step(self) -> None:
        """Sampled recording reached a step to record (counted while no mode was installed)."""
        self.step_state.reset()
        # what was known of the gradients is stale: the steps in between were not watched
        self.run.grad_zeroed.clear()
