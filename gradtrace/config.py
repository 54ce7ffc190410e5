"""The one object that holds every recording option and its default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

__all__ = ["Config", "parse_step_range", "parse_size", "DEFAULT_BUDGET"]

#: The default byte budget of the steps recorded in full (``--budget``): the five seed
#: lessons (up to 3,000 steps of a few parameters, ~15 MB) stay recorded in full under it.
DEFAULT_BUDGET = 32 << 20


@dataclass(frozen=True)
class Config:
    """Every option of a recording; the CLI and the Python API both build one of these.

    - ``output``: the trace file; ``None`` keeps the trace in memory only.
    - ``values``: ``"full"`` keeps full tensor values up to ``max_value_numel`` elements
      (summary statistics always); ``"stats"`` keeps statistics only.
    - ``max_value_numel``: the largest tensor (in elements) whose full value is kept.
      The default keeps every tensor of the seed lessons whole.
    - ``every``: record every N-th step (1 = all). Steps in between run without any
      recording mode installed, so they cost next to nothing.
    - ``step_range``: ``(first, stop)`` step indices to record, ``stop`` exclusive or None.
    - ``max_ops_per_step``: ops beyond this in one step are counted, not recorded, so that
      a forward loop that never calls ``backward()`` cannot grow memory without bound.
    - ``full``: record every step in full, whatever the budget (``--full``).
    - ``budget``: bytes of the trace for the steps recorded in full (``--budget``). Every
      step keeps its scalars (loss, per-parameter norms, how each ``.grad`` was met);
      the recording policy records in full the first steps (half the budget), then steps
      spaced ever wider (a quarter), and the steps after something happens (a non-finite
      value, a loss jump, a new zeroing / accumulation pattern) from there on (the rest).
      See docs/cli.md, "What a run keeps".
    - ``max_nodes_per_backward``: the grad_fn nodes of one backward pass that are recorded;
      the rest run unrecorded and are counted. It bounds how many nodes gradtrace holds
      from Python at once: deleting a chain of tens of thousands of nodes that have
      Python objects recurses in torch's C++ and overflows the stack.
    """

    output: Path | None = None
    values: str = "full"
    max_value_numel: int = 10_000
    every: int = 1
    step_range: tuple[int, int | None] | None = None
    max_ops_per_step: int = 20_000
    max_nodes_per_backward: int = 20_000
    full: bool = False
    budget: int = DEFAULT_BUDGET

    def __post_init__(self):
        if isinstance(self.budget, str):
            object.__setattr__(self, "budget", parse_size(self.budget))
        if type(self.budget) is not int or self.budget < 0:
            raise UsageError(f"budget must be a number of bytes, 0 or more (e.g. 64MB), not "
                             f"{self.budget!r}")
        if self.values not in ("full", "stats"):
            raise UsageError(f"values must be 'full' or 'stats', not {self.values!r}")
        if self.every < 1:
            raise UsageError(f"--every must be 1 or more, not {self.every}")
        if self.max_nodes_per_backward < 1:
            raise UsageError("max_nodes_per_backward must be 1 or more")
        if self.max_value_numel < 0:
            raise UsageError("max_value_numel must be 0 or more")
        if self.output is not None and not isinstance(self.output, Path):
            object.__setattr__(self, "output", Path(self.output))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    @property
    def keep_values(self) -> bool:
        return self.values == "full"

    @property
    def samples(self) -> bool:
        """True when some steps are skipped (every-N or a step range)."""
        return self.every != 1 or self.step_range is not None

    def records(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is recorded."""
        if self.step_range is not None:
            first, stop = self.step_range
            if step < first or (stop is not None and step >= stop):
                return False
            return (step - first) % self.every == 0
        return step % self.every == 0


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """``"64MB"``, ``"1.5G"``, ``"500k"``, ``"1000000"`` -> bytes (units of 1024)."""
    t = str(text).strip().lower().replace(" ", "")
    num = t.rstrip("kmgib")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not value >= 0 or value == float("inf"):
        raise UsageError(f"budget {text!r} is not a size; use e.g. 64MB, 1GB or 500KB")
    return int(value * _UNITS[unit])


def parse_step_range(text: str | None) -> tuple[int, int | None] | None:
    """``"A:B"`` (B exclusive), ``"A:"`` or ``":B"`` -> a step range; ``None`` -> None."""
    if text is None or text == "":
        return None
    first, sep, stop = text.partition(":")
    try:
        if not sep:
            a = int(first)
            return (a, a + 1)
        a = int(first) if first else 0
        b = int(stop) if stop else None
    except ValueError:
        raise UsageError(f"step range {text!r} is not A:B with whole numbers (e.g. 0:10)") from None
    if a < 0 or (b is not None and b <= a):
        raise UsageError(f"step range {text!r} is empty or negative; use A:B with 0 <= A < B")
    return (a, b)
