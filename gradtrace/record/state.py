"""The recorder's shared state: one object for the run (ids, flags, counts), one for the step."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from ..config import Config
from ..tracefile.rows import TensorRow
from ..tracefile.store import TraceWriter
from .calls import IdMap, dtype_name_of, grad_fn_of
from .policy import Policy

__all__ = ["Run", "StepState"]


class Run:
    """What every room of the recorder shares for the whole run: the writer, the sequential
    ids it hands out, where the run is (step number, recording or not) and the totals."""

    def __init__(self, config: Config, writer: TraceWriter):
        self.config = config
        self.w = writer
        self.policy = Policy(config, writer)
        #: Where the recorder's own lines go: sys.stderr as the run started (the script may
        #: replace it, sys.stderr = sys.stdout, or close it).
        self.stderr = sys.stderr
        self.scalars: Any = None  # the ScalarTaker (record/scalars.py), set by the recorder
        # ids: sequential, never id()
        self.tids = IdMap()         # tensor -> tid
        self.named: set[int] = set()  # tids that have a name
        self.param_names = IdMap()  # parameter or buffer -> its module path (net.0.weight)
        self.alias = IdMap()        # alias tensor -> (role, tid, path): role 'param' | 'grad'
        self.next_tid = 0
        self.next_vid = 0
        self.next_op = 0
        self.seq = 0
        # where the run is
        self.step = 0               # the run's current step number
        self.recording = self.policy.decide(0)
        self.after_backward = False  # the next forward op starts a new step
        self.step_begun = True       # False between a light step's backward and the next one
        self.dormant = False         # sampled recording between recorded steps: see nothing
        self.awaiting_forward = False  # a recorded step's first forward op has not come yet
        self.mode_on = False
        self.parents: list[int] = []  # the custom Functions whose forward is running
        self.in_optimizer_step = 0
        self.grad_zeroed: set[int] = set()  # tids whose .grad is known to hold zeros
        self.optimizers: list[dict] = []  # param groups of each optimizer at its first step
        # what the run did
        self.totals = {"steps": 0, "ops": 0, "backward": 0, "accumulate_fresh": 0,
                       "accumulate_added": 0, "accumulate_on_top": 0, "zero": 0, "update": 0,
                       "grad_write": 0}
        self.ops_dropped_total = 0
        # what was not recorded, said in one line each at the end (see notes()), unless quiet
        self.quiet = False
        self.transform_ops = 0      # torch calls inside torch.func transforms
        self.compiled = 0           # torch.compile calls, and calls seen while Dynamo traced
        self.thread_backward = 0    # backward passes in threads other than the recording one
        self.batched_backward = 0   # autograd.grad(is_grads_batched=True): run under vmap
        self.in_backward = False    # a backward call of the recording thread is running
        #: (scaled, loss) of the last GradScaler.scale(loss) (install._patch_grad_scaler)
        self.scaled: tuple[Any, Any] | None = None
        self.thread_ident = threading.get_ident()
        self.truncated_passes = 0   # backward passes with more nodes than max_nodes_per_backward
        self.backend: str | None = None  # torch.distributed's, once the script set up a group
        #: The parameters (by id()) that a DistributedDataParallel forward since the last
        #: backward pass will have all-reduced in the next one (none under ``no_sync()``).
        self.ddp_sync: dict[int, Any] = {}
        self.ddp_world = 1
        #: DDP's bucket layouts from the step each began at (record/ddp.py), for the meta
        self.ddp_layouts: list[dict[str, Any]] = []
        self.errors: list[str] = []
        # signals: one that arrives while gradtrace is writing waits until it is done
        self.busy = 0
        self.pending_signal: Any = None  # an exception class to raise once not busy

    def loss_of(self, root) -> float:
        """The loss of a backward pass from the one-number tensor ``root``: its value, or
        under a GradScaler the value of the loss it scaled."""
        scaled = self.scaled
        if scaled is not None and scaled[0] is root:
            return float(scaled[1].detach().reshape(-1)[0].item())
        return float(root.item())

    def tid_of(self, t) -> int:
        tid = self.tids.get(t)
        if tid is None:
            tid = self.new_tid(t)
        return tid

    def new_tid(self, t, role=None, name=None) -> int:
        tid = self.next_tid
        self.next_tid += 1
        self.tids.set(t, tid)
        if role is None:
            if grad_fn_of(t) is not None:
                role = "activation"
            elif t.requires_grad:
                role = "param"
            else:
                role = "input"
        if name is None and role in ("param", "input"):
            name = self.param_names.get(t)  # a module's parameter or buffer: its path
        if name is not None:
            self.named.add(tid)
        self.w.add_tensor(TensorRow(tid, name, role, tuple(t.shape), dtype_name_of(t.dtype),
                                    int(t.requires_grad)))
        return tid

    def name(self, tid: int, name: str) -> None:
        """A name found for a tensor that had none."""
        self.named.add(tid)
        self.w.name_tensor(tid, name)

    def take_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def take_op(self) -> int:
        idx = self.next_op
        self.next_op += 1
        return idx

    def raise_pending_signal(self):
        exc, self.pending_signal = self.pending_signal, None
        raise exc()

    def internal(self, e: BaseException) -> None:
        """A bug in gradtrace's own hook code: said once, swallowed (the user's run goes on)."""
        msg = f"{type(e).__name__}: {e}"
        if msg not in self.errors:
            self.errors.append(msg)
            self.say(f"gradtrace: internal error while recording ({msg}); the run goes on, "
                     "this part of the trace may be missing")

    def say(self, line: str) -> None:
        """One line of the recorder's on :attr:`stderr`; on file descriptor 2 if the script
        closed it. Writing it never raises."""
        try:
            print(line, file=self.stderr, flush=True)
            return
        except Exception:  # closed (ValueError), a broken pipe
            pass
        with contextlib.suppress(OSError):
            os.write(2, f"{line}\n".encode("utf-8", "backslashreplace"))

    def unrecorded(self) -> dict[str, int]:
        """What ran and was not recorded, for the trace's meta (``unrecorded``): backward
        passes in other threads, ops inside torch.func transforms."""
        return {"thread_backward": self.thread_backward, "transform_ops": self.transform_ops,
                "batched_backward": self.batched_backward}

    def notes(self) -> list[str]:
        """One line for each kind of thing that ran but was not recorded."""
        lines = []
        n = self.transform_ops
        if n:
            lines.append(f"{n} op{'s' if n != 1 else ''} ran inside torch.func transforms and "
                         f"{'were' if n != 1 else 'was'} not recorded (gradtrace records "
                         "autograd, not functorch)")
        if self.compiled:
            lines.append("torch.compile'd code ran: compiled regions are not recorded op by op "
                         "(what runs outside them is, and the backward pass)")
        n = self.batched_backward
        if n:
            lines.append(f"{n} backward pass{'es' if n != 1 else ''} ran batched under vmap "
                         "(torch.autograd.functional's vectorize=True, is_grads_batched) and "
                         f"{'were' if n != 1 else 'was'} not recorded")
        n = self.thread_backward
        if n:
            lines.append(f"{n} backward pass{'es' if n != 1 else ''} ran in other threads and "
                         f"{'were' if n != 1 else 'was'} not recorded (gradtrace records the "
                         "thread that started it)")
        taker = self.scalars
        line = self.policy.note(max(taker.seen_steps if taker is not None else 0, self.totals["steps"]))
        if line:
            lines.append(line)
        n = self.truncated_passes
        if n:
            lines.append(f"{n} backward pass{'es' if n != 1 else ''} reached more grad_fn nodes "
                         f"than the step may hold ({self.config.max_nodes_per_backward}, "
                         "max_nodes_per_backward): the nodes beyond were not recorded")
        return lines

    def clear(self) -> None:
        """Let go of every tensor (the run has ended)."""
        self.tids.clear()
        self.alias.clear()
        self.param_names.clear()


class StepState:
    """What the step being recorded has gathered; :meth:`reset` when the next one begins."""

    def __init__(self, run: Run):
        self.run = run
        self.pending = IdMap()  # output of a recent non-graph op -> its call, for prep ops
        self.reset()

    def reset(self, keep_pending: bool = False) -> None:
        """A new step; ``keep_pending``: the non-graph ops made since the last backward pass
        stay candidates for prep ops (they ran before the step's first graph op, so they
        belong to it)."""
        self.ops = 0
        self.graph_ops = 0
        self.dropped = 0
        self.first_seq = self.run.seq
        self.snaps: list[tuple] = []          # (tid, tensor, version) to snapshot
        self.snapped: set[int] = set()        # tids with a value in this step
        self.node_op: dict[int, int] = {}     # id(grad_fn) -> op index
        self.node_refs: list[Any] = []        # keeps those grad_fn objects (and ids) valid
        self.loss: float | None = None
        self.has_backward = False
        self.committed_early = False  # marked for writing (see Recorder._commit_early)
        self.nodes = 0
        self.counts = {"accumulate_fresh": 0, "accumulate_added": 0, "accumulate_on_top": 0,
                       "zero": 0, "update": 0, "grad_write": 0}
        self.fwd_vid: dict[int, tuple[int, int]] = {}   # tid -> (vid, version) of its forward value
        self.leaf_names = IdMap()    # leaf -> the variable name that holds it ("" for none)
        self.name_tried: set[int] = set()  # tids looked up for a name in this step
        self.grad_vid: dict[int, tuple[int, int, int]] = {}  # tid -> (vid, id(grad), version)
        #: where torch.empty & co. put memory this step that nothing has written yet (its
        #: address; see Events._unwritten)
        self.unwritten: set[int] = set()
        if not keep_pending:
            self.pending.clear()

    def count(self, key: str) -> None:
        self.run.totals[key] += 1
        self.counts[key] += 1

    def is_empty(self) -> bool:
        return self.ops == 0 and not self.has_backward and self.run.seq == self.first_seq

    def clear(self) -> None:
        """Let go of every tensor and grad_fn (the run has ended)."""
        self.pending.clear()
        self.node_refs = []
        self.node_op = {}
        self.snaps = []
