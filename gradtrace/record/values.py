"""Value capture: snapshots of tensors (bytes, or statistics when large; shape only for zeros)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..tracefile.model import Stats, memory_run
from ..tracefile.store import _NUMPY_DTYPES, tensor_bytes
from .calls import dtype_name_of
from .state import Run, StepState

__all__ = ["Values"]

# Real dtypes numpy holds: their values are copied through a numpy view, no torch op needed.
_PLAIN_DTYPES = _NUMPY_DTYPES - {torch.complex64, torch.complex128}
_STRIDED = torch.strided


class Values:
    """Takes the values the trace keeps, each under a new vid, into the step being written."""

    def __init__(self, run: Run, step: StepState):
        self.run = run
        self.step = step
        self.keep_values = run.config.keep_values
        self.max_numel = run.config.max_value_numel
        #: statistics by memory run while one backward pass is written (see :meth:`shared`)
        self.memo: dict[tuple, Stats] | None = None

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """A block in which no user code runs (a backward pass written out): a value whose
        memory run was summarised already in it reuses those statistics (a transposed
        gradient, a flattened input: 3 of an MLP step's 20 large values)."""
        self.memo = {}
        try:
            yield
        finally:
            self.memo = None

    def snap_now(self, t, tid=None) -> int:
        """Take tensor ``t``'s value now (bytes, or statistics if it is large); its vid."""
        run = self.run
        vid = run.next_vid
        run.next_vid = vid + 1
        dt = t.dtype
        dname = dtype_name_of(dt)
        if t.layout is not _STRIDED:  # a sparse gradient (nn.Embedding(sparse=True))
            if self.keep_values and t.numel() <= self.max_numel:
                t = t.detach().to_dense()  # small: kept as its dense value
            else:
                run.w.add_stats(vid, tid, t.shape, dname, Stats.of(t))
                return vid
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
            run.w.add_bytes(vid, tid, t.shape, dname, payload)
        else:
            memo = self.memo
            key = memory_run(t) if memo is not None else None
            known = memo.get(key) if memo is not None and key is not None else None
            stats = known if known is not None else Stats.of(t)
            if memo is not None and key is not None and known is None:
                memo[key] = stats
            run.w.add_stats(vid, tid, t.shape, dname, stats)
        return vid

    def snap_zeros(self, t) -> int:
        """A value known to be all zeros: only its shape and dtype are stored."""
        run = self.run
        vid = run.next_vid
        run.next_vid += 1
        run.w.add_zeros(vid, t.shape, dtype_name_of(t.dtype))
        return vid

    def want(self, t, tid) -> None:
        """Note tensor ``t``'s value for this step (taken at the end of backward)."""
        step = self.step
        if tid not in step.snapped:
            step.snapped.add(tid)
            step.snaps.append((tid, t, t._version))

    def flush(self) -> None:
        """Take the values noted with :meth:`want` that have not changed since."""
        step = self.step
        for tid, t, version in step.snaps:
            if t._version == version:
                step.fwd_vid[tid] = (self.snap_now(t, tid), version)
        step.snaps = []

    def before(self, t, role) -> int:
        """The value before an in-place call, reusing this step's snapshot when unchanged."""
        kind, tid, _ = role
        if kind == "param":
            known = self.step.fwd_vid.get(tid)
            if known is not None and known[1] == t._version:
                return known[0]
        else:
            seen = self.step.grad_vid.get(tid)
            if seen is not None and seen[1] == id(t) and seen[2] == t._version:
                return seen[0]
        return self.snap_now(t)
