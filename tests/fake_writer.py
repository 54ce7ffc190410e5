"""A stand-in for the recorder's TraceWriter that keeps what it is given, for the unit tests of
record/state.py, record/values.py and record/scalars.py (no SQLite, nothing encoded)."""

from __future__ import annotations


class FakeWriter:
    """The TraceWriter methods the recorder's rooms call, each call kept in order."""

    def __init__(self, window: float = 0.2):
        self.window = window
        self.step_bytes = 0       # what the policy reads
        self.calls: list[tuple] = []
        self.flushes = 0

    def of(self, name: str) -> list[tuple]:
        """The arguments of every call of ``name``, in order."""
        return [c[1:] for c in self.calls if c[0] == name]

    def add_tensor(self, row):
        self.calls.append(("add_tensor", row))

    def name_tensor(self, tid, name):
        self.calls.append(("name_tensor", tid, name))

    def add_bytes(self, vid, tid, shape, dtype, payload):
        self.calls.append(("add_bytes", vid, tid, tuple(shape), dtype, payload))

    def add_stats(self, vid, tid, shape, dtype, stats):
        self.calls.append(("add_stats", vid, tid, tuple(shape), dtype, stats))

    def add_zeros(self, vid, shape, dtype):
        self.calls.append(("add_zeros", vid, tuple(shape), dtype))

    def add_scalar_param(self, row):
        self.calls.append(("add_scalar_param", row))

    def add_scalars(self, row):
        self.calls.append(("add_scalars", row))

    def flush_scalars(self):
        self.flushes += 1
