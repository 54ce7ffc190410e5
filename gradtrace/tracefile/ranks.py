"""A run launched by ``torchrun``: one trace per rank, side by side in one run folder.

Each rank of a distributed run records its own trace. The file of rank R is named after
the run's trace path with ``.rank<R>`` before the suffix: ``gradtrace-out/train/trace.gtrace``
-> ``gradtrace-out/train/trace.rank0.gtrace``, ``trace.rank1.gtrace``, ... The after-run
outputs (graph, report, animations) are those of the run's trace path (``graph.svg``,
``report.html``), written by rank 0 alone.

Which rank a process is comes from the environment ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``). A reader finds the ranks of a run from its folder or from
any one rank's file. Names found in a folder are data: they are matched against the rank
pattern and nothing else is done with them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import TraceFileError, UsageError
from .model import Bucket

__all__ = ["RankInfo", "RankedRun", "load", "rank_path", "run_path_of", "rank_files", "rank_finished",
           "RANK_LIMIT", "buckets_at"]

#: The most ranks a run folder may hold (a bound for readers, far above real runs).
RANK_LIMIT = 4096

_RANK_NAME = re.compile(r"(?P<stem>.{1,200})\.rank(?P<rank>0|[1-9][0-9]{0,4})(?P<suffix>\.gtrace)")


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a distributed run, as ``torchrun`` describes it."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RankInfo | None":
        """The rank of this process when ``RANK`` and ``WORLD_SIZE`` are set (torchrun, or a
        launcher that sets the same variables); None otherwise. Values that are not a
        rank and a world size are a usage error naming the variable."""
        env = os.environ if environ is None else environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return None
        rank = _int(env, "RANK")
        world = _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        if world < 1 or world > RANK_LIMIT:
            raise UsageError(f"WORLD_SIZE={world} is not a number of processes (1 to {RANK_LIMIT})")
        if not 0 <= rank < world:
            raise UsageError(f"RANK={rank} is not a rank of WORLD_SIZE={world} (0 to {world - 1})")
        return cls(rank, world, local)

    def as_meta(self, backend: str | None = None) -> dict:
        """What a rank's trace keeps in its meta (``distributed``)."""
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "backend": backend}


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name].strip()
    if not re.fullmatch(r"[0-9]{1,6}", value):
        raise UsageError(f"{name}={env[name][:40]!r} is not a whole number; torchrun sets it, "
                         "or unset it to record a single process")
    return int(value)


def rank_path(run_path: Path, rank: int) -> Path:
    """The trace file of ``rank`` for a run whose trace path is ``run_path``."""
    return run_path.with_name(f"{run_path.stem}.rank{rank}{run_path.suffix or '.gtrace'}")


def run_path_of(path: Path) -> tuple[Path, int] | None:
    """``(run trace path, rank)`` when ``path`` is the file of one rank; None otherwise."""
    m = _RANK_NAME.fullmatch(path.name)
    if m is None:
        return None
    return path.with_name(m["stem"] + m["suffix"]), int(m["rank"])


def rank_files(path: Path) -> tuple[Path, dict[int, Path]] | None:
    """The ranks of the run ``path`` belongs to: ``(run trace path, {rank: file})``.

    ``path`` is a run folder (which holds ``<stem>.rank<R>.gtrace`` files of one run) or
    one rank's file (its siblings of the same run are found next to it). None when
    ``path`` is neither (a plain trace file, a folder without rank files). A folder with
    the rank files of several runs is a usage error that names them."""
    if path.is_dir():
        runs: dict[Path, dict[int, Path]] = {}
        for name in _listing(path):
            found = run_path_of(path / name)
            if found is not None:
                runs.setdefault(found[0], {})[found[1]] = path / name
        if not runs:
            return None
        if len(runs) > 1:
            names = ", ".join(sorted(p.name for p in runs))[:200]
            raise UsageError(f"{path} holds the ranks of several runs ({names}); pass one "
                             "rank's file, e.g. " + str(rank_path(sorted(runs)[0], 0)))
        run, files = next(iter(runs.items()))
        return run, dict(sorted(files.items()))
    found = run_path_of(path)
    if found is None:
        return None
    run = found[0]
    files = {}
    for name in _listing(path.parent):
        other = run_path_of(path.parent / name)
        if other is not None and other[0] == run:
            files[other[1]] = path.parent / name
    files.setdefault(found[1], path)
    return run, dict(sorted(files.items()))


def _listing(folder: Path) -> list[str]:
    """The names in ``folder`` (at most a bounded number are looked at)."""
    names: list[str] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                names.append(entry.name)
                if len(names) > 50 * RANK_LIMIT:
                    raise TraceFileError(folder, "too many files to look for rank traces in")
    except OSError as e:
        raise TraceFileError(folder, f"cannot list it ({e.strerror})") from None
    return sorted(names)


def rank_finished(path: Path, since: float) -> bool:
    """The rank trace at ``path`` was written after ``since`` (a time stamp) and its run
    has ended (its meta says how: completed, raised, ...; "running" while it records, or
    for ever if the rank was killed)."""
    from .store import load  # the reader: only when a run waits for its ranks

    try:
        if path.stat().st_mtime < since:
            return False
        t = load(path)
        try:
            return t.info.status != "running"
        finally:
            t.close()
    except (OSError, TraceFileError):
        return False  # not there yet, or being written


def buckets_at(distributed: Mapping, step: int) -> tuple[Bucket, ...] | None:
    """DDP's buckets in step ``step`` of a rank whose meta ``distributed`` is given; None
    where it does not say them (not a DDP run, a rank killed before its meta was written, a
    step before the first synchronising forward, a layout torch had not told yet).
    ``Step.buckets`` holds this for each step read."""
    layouts = (distributed or {}).get("buckets") or []
    now = None
    for layout in layouts:
        if layout["from_step"] <= step:
            now = layout
    if now is None or (now["params"] is None and now["bytes"] is None):
        return None
    params, sizes = now["params"], now["bytes"]
    n = len(params) if params is not None else len(sizes)
    return tuple(Bucket(i, n, tuple(params[i]) if params is not None else None,
                        sizes[i] if sizes is not None and i < len(sizes) else None, now["rebuilt"])
                 for i in range(n))


class RankedRun:
    """The traces of one distributed run, by rank, read together.

    ``traces`` maps each rank found to its :class:`~gradtrace.tracefile.store.Trace`;
    ``missing`` lists the ranks of ``world_size`` whose file is not there. Anything else is
    read from the lowest rank's trace (rank 0's when it is there): ``run.steps``,
    ``run.info``... are that rank's, so a reader that knows one trace reads a run too.
    """

    def __init__(self, run_path: Path, traces: dict, world_size: int):
        self.run_path = run_path
        self.path = str(run_path.parent)
        self.traces = dict(sorted(traces.items()))
        self.world_size = world_size
        self.missing = tuple(r for r in range(world_size) if r not in self.traces)
        self.first = next(iter(self.traces.values()))
        self._indices: dict | None = None

    @property
    def ranks(self) -> list[int]:
        return list(self.traces)

    def rank(self, r: int):
        """The trace of rank ``r``."""
        try:
            return self.traces[r]
        except KeyError:
            raise UsageError(f"{self.path}: no trace of rank {r} (ranks here: "
                             f"{', '.join(map(str, self.traces))})") from None

    def step_of_ranks(self, index: int) -> dict:
        """Step ``index`` of every rank that recorded it: {rank: Step}."""
        if self._indices is None:
            self._indices = {r: frozenset(t.steps.indices) for r, t in self.traces.items()}
        return {r: t.step(index) for r, t in self.traces.items() if index in self._indices[r]}

    def close(self) -> None:
        for t in self.traces.values():
            t.close()

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("first", "traces"):
            raise AttributeError(name)
        return getattr(self.first, name)

    def __repr__(self) -> str:
        return (f"<gradtrace.RankedRun {self.path} ranks={self.ranks} of {self.world_size}"
                + (f" missing={list(self.missing)}" if self.missing else "") + ">")


def load(path, *, limits=None):
    """Open a trace for reading (see :func:`gradtrace.tracefile.store.load`); a run folder
    of a distributed run, or one rank's file of it, opens every rank as a
    :class:`RankedRun`."""
    from .store import load as load_one

    p = Path(path)
    found = rank_files(p) if (p.is_dir() or run_path_of(p) is not None) else None
    if found is None:
        return load_one(p, limits=limits)
    run, files = found
    if len(files) > RANK_LIMIT:
        raise TraceFileError(p, f"holds {len(files)} rank traces, more than {RANK_LIMIT}")
    traces = {r: load_one(f, limits=limits) for r, f in files.items()}
    worlds = {t.info.distributed.get("world_size", 1) for t in traces.values()}
    world = max([*worlds, max(traces) + 1])
    return RankedRun(run, traces, world)
