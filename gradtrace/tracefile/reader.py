"""``Trace``: a recorded run as the layers above read it, one facade over the reader's rooms.

:mod:`~gradtrace.tracefile.opening` opens the file; :mod:`~gradtrace.tracefile.tables` reads
the run's ``meta``, ``source`` and ``tensor`` tables; :mod:`~gradtrace.tracefile.index`
holds the per-step counts and the cached list of steps; :mod:`~gradtrace.tracefile.steps`
decodes one step. The Trace asks each once and keeps the answer.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Iterator

from ..errors import NotRecordedError, TraceFileError, UsageError
from . import conveniences
from .checked import Limits, Malformed
from .index import STEP_ROWS_SQL, StepList, step_row
from .lock import database_error
from .model import RunInfo, Source, Step, TensorInfo
from .ranks import buckets_at
from .schema import FORMAT_VERSION
from .steps import StepDecoder, step_data_columns
from .tables import read_info, read_sources, read_tensors

__all__ = ["Trace"]


class Trace:
    """A recorded run, read from a trace file (or the in-memory database of a live trace).

    Everything read from the file is checked on the way in (``trace.checked``): a part that
    is not what gradtrace writes raises :class:`TraceFileError` naming the file, the table
    or step, and what is wrong.
    """

    def __init__(self, conn: sqlite3.Connection, path: str, version: int = FORMAT_VERSION, *,
                 limits: Limits | None = None):
        self._conn = conn
        self._closed = False
        self.path = path
        self.limits = limits or Limits()
        self._info: RunInfo | None = None
        self._sources: dict[int, Source] | None = None
        self._tensors: dict[int, TensorInfo] | None = None
        self._steps: StepList | None = None
        self._rows: list[dict[str, Any]] | None = None
        self._scalars: Any = None
        self._version = version
        self._decoder = StepDecoder(path, version, self.limits, lambda: self.sources,
                                    lambda: self.tensors)
        self._decoder.buckets = lambda idx: buckets_at(self.info.distributed, idx)

    # -- queries, with file errors turned into one line -----------------------------------
    def _q(self, sql: str, args: Iterable = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as e:
            self._if_closed()
            raise database_error(self.path, e) from None
        except (MemoryError, OverflowError) as e:
            raise TraceFileError(self.path, f"holds a value too large to read ({type(e).__name__})") from None

    def _chunks(self, sql: str, size: int = 4096) -> Iterator[list[tuple]]:
        """The rows of ``sql`` in lists of at most ``size`` (one cursor, read as it goes: a
        table of any length in bounded memory), with file errors turned into one line."""
        try:
            cur = self._conn.execute(sql)
            while True:
                rows = cur.fetchmany(size)
                if not rows:
                    return
                yield rows
        except sqlite3.DatabaseError as e:
            self._if_closed()
            raise database_error(self.path, e) from None
        except (MemoryError, OverflowError) as e:
            raise TraceFileError(self.path, f"holds a value too large to read ({type(e).__name__})") from None

    def _if_closed(self) -> None:
        """A query on a closed trace is the caller's mistake, not a damaged file."""
        if self._closed:
            raise UsageError(f"{self.path}: this Trace was closed; gradtrace.load() it again "
                             "to read it")

    def _bad(self, e: Malformed) -> TraceFileError:
        return TraceFileError(self.path, f"{e}; the file is damaged or was not written by "
                                         "gradtrace: record the run again")

    # -- the run's tables -------------------------------------------------------------------
    @property
    def info(self) -> RunInfo:
        if self._info is None:
            try:
                self._info = read_info(self._q)
            except Malformed as e:
                raise self._bad(e) from None
        return self._info

    @property
    def sources(self) -> dict[int, Source]:
        if self._sources is None:
            try:
                self._sources = read_sources(self._q)
            except Malformed as e:
                raise self._bad(e) from None
        return self._sources

    @property
    def tensors(self) -> dict[int, TensorInfo]:
        """Every tensor object the run touched, by tid."""
        if self._tensors is None:
            try:
                self._tensors = read_tensors(self._q, self._version, self.limits)
            except Malformed as e:
                raise self._bad(e) from None
        return self._tensors

    def name(self, tid: int) -> str:
        info = self.tensors.get(tid)
        return info.label if info else f"t{tid}"

    def find(self, name: str) -> TensorInfo | None:
        """The tensor named ``name`` (``w``, ``net.0.weight``); the first one seen."""
        for info in self.tensors.values():
            if info.name == name:
                return info
        return None

    @property
    def params(self) -> list[TensorInfo]:
        return [t for t in self.tensors.values() if t.role == "param"]

    # -- the steps --------------------------------------------------------------------------
    @property
    def steps(self) -> StepList:
        if self._steps is None:
            self._steps = StepList(lambda idx: self._read_step(idx), [r["index"] for r in self.step_rows()])
        return self._steps

    def step(self, index: int) -> Step:
        """The step with run step number ``index`` (equal to ``steps[index]`` when every step
        was recorded)."""
        pos = self.steps.position(index)
        if pos is None:
            raise NotRecordedError(f"step {index} was not recorded; {self._recorded_steps()}")
        return self.steps[pos]

    def _recorded_steps(self) -> str:
        """What :meth:`step` can give, for its error: ``recorded steps are 0..9``."""
        idx = self.steps.indices
        if not idx:
            return f"{self.path} has no recorded steps"
        gaps = f" ({len(idx)} of them)" if len(idx) != idx[-1] - idx[0] + 1 else ""
        return f"recorded steps are {idx[0]}..{idx[-1]}{gaps}"

    def select(self, spec: str | int | None = "first") -> Step:
        """A step by run step number, ``"first"`` or ``"last"`` (the last with a backward
        pass). Raises :class:`UsageError` with one line saying what was recorded."""
        steps = self.steps
        if len(steps) == 0:
            raise UsageError(f"{self.path} has no recorded steps (did the script call backward()?)")
        if spec is None or spec == "first":
            return steps[0]
        if spec == "last":
            for row in reversed(self.step_rows()):
                if row["has_backward"]:
                    return self.step(row["index"])
            raise UsageError(f"{self.path} has no step with a backward pass")
        try:
            n = int(spec)
        except (TypeError, ValueError):
            raise UsageError(f"--step takes a step number, 'first' or 'last', not {spec!r}") from None
        try:
            return self.step(n)
        except KeyError:
            raise UsageError(f"step {n} was not recorded; {self._recorded_steps()}") from None

    @property
    def events(self) -> list:
        """Every op, backward pass and event of the run, in order."""
        out: list = []
        for s in self.steps:
            out.extend(s.timeline())
        return out

    def step_rows(self) -> list[dict[str, Any]]:
        """Per-step counts straight from the step table (cheap: no bodies are parsed)."""
        if self._rows is None:
            try:
                self._rows = [step_row(r) for r in self._q(STEP_ROWS_SQL)]
            except Malformed as e:
                raise self._bad(e) from None
        return list(self._rows)

    def _read_step(self, idx: int) -> tuple[Step, int]:
        """The step, checked, and the bytes of tensor data it holds."""
        rows = self._q(f"SELECT {step_data_columns(self._version)} FROM step WHERE idx=?", (idx,))
        if not rows:
            raise NotRecordedError(f"step {idx} was not recorded; {self._recorded_steps()}")
        return self._decoder.decode(idx, rows[0])

    # -- conveniences that live in upper layers (dispatched through the facade) -------------
    def scalar_steps(self) -> int:
        """How many steps have scalars (every step the run took, in format 4; the recorded
        steps in older files): a count, cheap, without numpy."""
        if self._version < 4:
            return len(self.step_rows())
        n = self._q("SELECT count(*) FROM scalars")[0][0]
        return n if type(n) is int else 0

    def scalars(self):
        """Every step's loss and per-parameter norms, recorded in full or not, as numpy
        columns (:class:`gradtrace.tracefile.scalars.Scalars`)."""
        if self._scalars is None:
            from .scalars import read_scalars

            self._scalars = read_scalars(self)
        return self._scalars

    def check(self, **options):
        """Gradient checks and training diagnostics (see ``gradtrace.analysis.check``)."""
        return conveniences.call("check", self, **options)

    def animate(self, kind: str = "training", **options):
        """An animation of this trace that saves to gif/mp4/html and shows in Jupyter."""
        return conveniences.call("animate", self, kind=kind, **options)

    def explore(self, **options):
        """The explorer of this trace: shown inline in Jupyter, or ``.save("explorer.html")``
        (options: ``budget`` in bytes of per-step data, ``check=False`` to skip the checks)."""
        return conveniences.call("explore", self, **options)

    def _repr_html_(self) -> str | None:
        """Jupyter: what ran, how it ended, and its steps at a glance."""
        return conveniences.html(self)

    def close(self) -> None:
        self._closed = True
        self._conn.close()

    def __repr__(self) -> str:
        return f"<gradtrace.Trace {_shown(self.path)} steps={len(self.steps)}>"


def _shown(path: str) -> str:
    """A file's path as the user would type it here: relative to the working directory
    when it is inside it (a run reads its trace back by its absolute path)."""
    import os

    if path.startswith("<") or not os.path.isabs(path):
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel
