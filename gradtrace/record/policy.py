"""The recording policy: which steps are recorded in full, within a byte budget.

Every step keeps its scalars (``record/scalars.py``). In full, by default:

- the first steps, while they fit in half the budget (a lesson's whole run, usually), or
  in a sixteenth of it once the model has a parameter too large for its values to be kept
  (over ``max_numel`` elements): such a model's steps hold mostly statistics, each costs
  about as much again as the step itself, and a few in a row show what many would;
- then steps spaced ever wider, in levels: each level keeps a sixteenth as many steps as
  the first ones, twice as far apart as the level before (16, 32, 64 ... steps), within a
  quarter of the budget, so any length of run gets spaced views of it and the file stays
  bounded;
- from a step where something happens (a non-finite loss or gradient, a loss jump, a
  zeroing or accumulation pattern not seen before) on, every step, within the rest. The
  step where it happened is known from its scalars; it and the one before are in full only
  when they were chosen already (whether a step is recorded in full is decided before it
  runs, and recording every step in full to keep the one before costs the full price).

``full=True`` records every step (of ``every`` / ``step_range``) in full.
"""

from __future__ import annotations

from typing import Any

from ..config import Config

__all__ = ["Policy"]


class Policy:
    """Decides, as each step begins, whether it is recorded in full; counts what it kept."""

    FIRST, SPACED, EVENTS = 0.5, 0.25, 0.15  # shares of the budget (the rest: scalars, slack)
    FIRST_LARGE = 1 / 16  # the first steps' share once a parameter is over max_numel
    SPACING = 16   # the first level's spacing, in steps
    LEVEL = 16     # a level keeps (first steps) / LEVEL steps
    MAX_LISTED = 100  # events listed in the trace's meta

    def __init__(self, config: Config, writer: Any):
        self.config = config
        self.w = writer
        self.everything = config.full
        b = config.budget
        self.share = {"first": b * self.FIRST, "spaced": b * self.SPACED, "events": b * self.EVENTS}
        self.spent = {"first": 0, "spaced": 0, "events": 0}
        self.kept = {"first": 0, "spaced": 0, "events": 0, "all": 0}
        self.last_first: int | None = None
        self.kind: str | None = None  # the category of the step being recorded in full
        self.mark = 0                 # the writer's step bytes when it began
        self.first_open = True
        self.spacing = self.SPACING
        self.level_left = 0
        self.next_spaced: int | None = None
        self.event_from: int | None = None
        self.events: list[list] = []
        self.n_events = 0
        self.decided = -1
        self.refused = 0  # steps sampling allowed that the budget did not take

    def parameter(self, numel: int) -> None:
        """A parameter of ``numel`` elements joined the run (record/scalars.py watches it)."""
        if numel > self.config.max_value_numel:
            large = self.config.budget * self.FIRST_LARGE
            self.share["first"] = min(self.share["first"], large)

    @property
    def samples(self) -> bool:
        """True when some steps may run without the mode (light steps, or sampling)."""
        return not self.everything or self.config.samples

    def _settle(self) -> None:
        if self.kind is not None:
            self.spent[self.kind] += self.w.step_bytes - self.mark
            self.kind = None

    def _per_step(self) -> float:
        n = self.kept["first"] + self.kept["spaced"] + self.kept["events"]
        return sum(self.spent.values()) / n if n else 0.0

    def decide(self, step: int) -> bool:
        """Whether ``step`` is recorded in full; called once as it begins."""
        self._settle()
        self.decided = step
        if not self.config.records(step):
            return False
        if self.everything:
            self.kept["all"] += 1
            return True
        kind = self._choose(step)
        if kind is None:
            self.refused += 1
            return False
        self.kind, self.mark = kind, self.w.step_bytes
        self.kept[kind] += 1
        self.kept["all"] += 1
        if kind == "first":
            self.last_first = step
        return True

    def _fits(self, kind: str) -> bool:
        share = self.share[kind]
        return share > 0 and self.spent[kind] + self._per_step() <= share

    def _choose(self, step: int) -> str | None:
        if self.first_open:
            if self._fits("first"):
                return "first"
            self.first_open = False
            self.level_left = max(1, self.kept["first"] // self.LEVEL)
            self.next_spaced = step + self.spacing - 1
        if self.event_from is not None and step >= self.event_from and self._fits("events"):
            return "events"
        if self.next_spaced is not None and step >= self.next_spaced:
            if not self._fits("spaced"):
                self.next_spaced = None
                return None
            self.level_left -= 1
            if self.level_left <= 0:
                self.spacing *= 2
                self.level_left = max(1, self.kept["first"] // self.LEVEL)
            self.next_spaced = step + self.spacing
            return "spaced"
        return None

    def event(self, step: int, why: str) -> None:
        """Something happened at ``step``: the steps after it are recorded in full."""
        self.n_events += 1
        if len(self.events) < self.MAX_LISTED:
            self.events.append([step, why])
        if self.event_from is None and not self.everything:
            self.event_from = step + 1

    def summary(self) -> dict[str, Any]:
        """What was kept in full, for the trace's meta ``kept``."""
        self._settle()
        return {"full": self.kept["all"], "first": self.kept["first"],
                "last_first": self.last_first, "spaced": self.kept["spaced"],
                "after_events": self.kept["events"], "events": self.events,
                "n_events": self.n_events, "bytes": dict(self.spent)}

    def note(self, steps: int) -> str | None:
        """The line said at the end when some steps were not recorded in full."""
        n = self.kept["all"]
        if n >= steps or steps == 0 or not self.refused:
            return None  # everything asked for (all steps, or those --every / --steps name)
        parts = []
        if self.kept["first"]:
            parts.append(f"the first {self.kept['first']:,}")
        if self.kept["spaced"]:
            parts.append(f"{self.kept['spaced']:,} spaced")
        if self.kept["events"]:
            parts.append(f"{self.kept['events']:,} after something happened at step "
                         f"{self.events[0][0]} ({self.events[0][1]})")
        elif self.events:
            parts.append(f"none after step {self.events[0][0]} ({self.events[0][1]}): over budget")
        what = f" ({', '.join(parts)})" if parts else ""
        limit = "" if self.everything else f" within the {_size(self.config.budget)} budget"
        return (f"kept {n:,} of {steps:,} steps in full{what}{limit}; every step has its loss "
                "and norms; --budget SIZE (budget= in gradtrace.trace) keeps more, --full all")


def _size(n: int) -> str:
    for unit, k in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= k:
            v = n / k
            return f"{v:.0f} {unit}" if v == int(v) or v >= 10 else f"{v:.1f} {unit}"
    return f"{n} bytes"
