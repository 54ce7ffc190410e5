"""Checks that understand data parallelism: a DistributedDataParallel run, all ranks at once.

Under DDP each rank computes the gradient of its own batch (the *local* gradient: where
autograd's accumulation into ``.grad`` ends); DDP's reducer then replaces ``.grad`` by the
mean over the ranks (the ``allreduce`` event of the trace). So:

- each rank's own gradient checks (analytic, numeric) compare autograd with the rank's own
  batch, as in a single process;
- the ``allreduce`` check compares every rank's synchronised ``.grad`` with the mean of the
  ranks' local gradients. With a mean-reduced loss and equal batches that mean *is* the
  gradient of the union of the ranks' batches, so together the two say that the
  synchronised ``.grad`` is the gradient of the global batch. The tolerance is the rounding
  of a sum of ``world_size`` terms, ``gamma_W * sum_r |g_r| / W`` (docs/gradients.md), and
  every rank must hold the same bits;
- findings for the bugs of data-parallel training: parameters that differ across ranks
  after a step (bit for bit), a parameter that got no gradient on some rank (the
  unused-parameter hang of DDP without ``find_unused_parameters=True``), ranks that ran a
  different number of steps, ranks whose trace is missing or unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..tracefile.ranks import RankedRun
from .check import CheckReport, CheckResult, check_trace
from .diagnostics import Finding
from .errmodel import gamma, unit_roundoff

__all__ = ["check_ranks", "allreduce_checks", "rank_findings", "RankGradient", "rank_gradients"]



def check_ranks(run: RankedRun, **options: Any) -> CheckReport:
    """Every rank's own checks (each result and finding says its rank), the all-reduce
    check of each synchronised gradient, and the findings across ranks."""
    checks: list[CheckResult] = []
    findings: list[Finding] = []
    optimum = None
    steps_checked = 0
    for r, trace in run.traces.items():
        rep = check_trace(trace, **options)
        checks.extend(replace(c, rank=r) for c in rep.checks)
        findings.extend(replace(f, rank=r) for f in rep.findings)
        steps_checked = max(steps_checked, rep.steps_checked)
        if optimum is None:
            optimum = rep.optimum
    checks.extend(allreduce_checks(run))
    findings.extend(rank_findings(run))
    return CheckReport(checks, findings, optimum=optimum, steps_checked=steps_checked)


def _array(value) -> np.ndarray | None:
    """A recorded value as a float64 array (None when only statistics were kept)."""
    arr = None if value is None else value.array
    return None if arr is None else np.asarray(arr, dtype=np.float64)


def _raw(value) -> np.ndarray | None:
    """The recorded value's bytes, for bit-for-bit comparisons (None if not kept).
    ``Value.array`` widens bfloat16/float8 exactly, so equal bytes mean equal values."""
    arr = None if value is None else value.array
    return None if arr is None else np.ascontiguousarray(arr).view(np.uint8).reshape(-1)


def _local(event) -> np.ndarray | None:
    """What an allreduce event's rank sent: its local gradient, or zeros for a parameter that
    took no part in its backward (recorded with no local value; DDP sends zeros for it under
    ``find_unused_parameters=True``). None when only statistics were kept."""
    if event.before is None:
        synced = _array(event.after)
        return None if synced is None else np.zeros_like(synced)
    return _array(event.before)


def _by_name(trace, step, kind: str) -> dict[str, Any]:
    """The events of ``kind`` in ``step``, by the name of their tensor (the last one wins)."""
    return {trace.name(e.tensor): e for e in step.events if e.kind == kind}


@dataclass(frozen=True)
class RankGradient:
    """One parameter in one step of a DDP run, across the ranks: each rank's local gradient
    (where its accumulation ended; ``Value``), each rank's synchronised ``.grad`` (the
    all-reduce's result), their mean of the local gradients (float64, None when a rank kept
    statistics only), whether the synchronised gradients hold the same bits on every rank,
    and the bucket that all-reduced it (per rank: a ``Bucket`` or None)."""

    name: str
    local: dict[int, Any]
    synced: dict[int, Any]
    mean: np.ndarray | None
    same_bits: bool | None
    bucket: dict[int, Any]


def rank_gradients(run: RankedRun, index: int) -> list[RankGradient]:
    """Every parameter that some rank all-reduced (or accumulated) in step ``index``."""
    steps = run.step_of_ranks(index)
    per: dict[str, dict[str, dict[int, Any]]] = {}
    sent: dict[str, dict[int, np.ndarray | None]] = {}
    for r, s in steps.items():
        trace = run.traces[r]
        for kind in ("accumulate", "allreduce"):
            for name, e in _by_name(trace, s, kind).items():
                d = per.setdefault(name, {"local": {}, "synced": {}, "bucket": {}})
                if kind == "accumulate":
                    d["local"].setdefault(r, e.after)
                else:
                    d["local"][r] = e.before
                    d["synced"][r] = e.after
                    d["bucket"][r] = s.bucket_of(e.tensor)
                    sent.setdefault(name, {})[r] = _local(e)
    out = []
    for name in sorted(per):
        d = per[name]
        got = [sent[name][r] if r in sent.get(name, {}) else _array(v) for r, v in d["local"].items()]
        arrays = [a for a in got if a is not None]
        mean = None
        if arrays and len(arrays) == len(got) == run.world_size and len({a.shape for a in arrays}) == 1:
            mean = np.sum(np.stack(arrays), axis=0) / len(arrays)
        got_raws = [_raw(v) for v in d["synced"].values()]
        raws = [x for x in got_raws if x is not None]
        same = None
        if len(raws) >= 2 and len(raws) == len(got_raws):
            same = all(np.array_equal(raws[0], x) for x in raws[1:])
        out.append(RankGradient(name, d["local"], d["synced"], mean, same, d["bucket"]))
    return out


def allreduce_checks(run: RankedRun) -> list[CheckResult]:
    """For each step and synchronised parameter: every rank holds the same ``.grad``, and it
    is the mean of the ranks' local gradients to the rounding of that mean."""
    results: list[CheckResult] = []
    first = run.first
    for index in first.steps.indices:
        steps = run.step_of_ranks(index)
        events = {r: _by_name(run.traces[r], s, "allreduce") for r, s in steps.items()}
        names = sorted({n for evs in events.values() for n in evs})
        for name in names:
            results.append(_allreduce_check(index, name, events, run.world_size))
    return results


def _allreduce_check(index: int, name: str, events: dict, world: int) -> CheckResult:
    have = {r: evs[name] for r, evs in events.items() if name in evs}

    def result(status: str, detail: str, max_abs_err: float | None = None,
               max_rel_err: float | None = None, tolerance: float | None = None,
               bound: float | None = None) -> CheckResult:
        return CheckResult(kind="allreduce", step=index, param=name, status=status, detail=detail,
                           max_abs_err=max_abs_err, max_rel_err=max_rel_err, tolerance=tolerance,
                           bound=bound)

    if len(have) < world:
        lacking = ", ".join(str(r) for r in range(world) if r not in have)
        return result("not_applicable", f"rank {lacking} recorded no all-reduce of it in this "
                      "step (see the findings)")
    local_or_none = [_local(e) for e in have.values()]
    synced_or_none = [_array(e.after) for e in have.values()]
    local = [v for v in local_or_none if v is not None]
    synced = [v for v in synced_or_none if v is not None]
    if len(local) < len(have) or len(synced) < len(have):
        return result("not_applicable", "a gradient was kept as statistics only; --max-numel N "
                      "keeps it in full")
    inf = float("inf")
    if any(v.shape != local[0].shape for v in local + synced):
        return result("fail", "the ranks' gradients have different shapes", inf, inf, 0.0)
    raws = [x for x in (_raw(e.after) for e in have.values()) if x is not None]
    if any(not np.array_equal(raws[0], x) for x in raws[1:]):
        differ = [r for r, x in zip(have, raws) if not np.array_equal(raws[0], x)]
        return result("fail", f"ranks hold different synchronised gradients (rank {differ[0]} "
                      f"differs from rank {next(iter(have))})", inf, inf, 0.0)
    dtype = str(getattr(next(iter(have.values())).after, "dtype", "float32"))
    u = unit_roundoff(dtype)
    mean = np.sum(local, axis=0) / world
    magnitude = np.sum(np.abs(local), axis=0) / world
    k = world + 1  # world_size - 1 additions, a division, the rounding of the result
    bound = gamma(k, u) * magnitude + u * np.abs(mean)
    err = np.abs(synced[0] - mean)
    tol = 2.0 * bound + np.finfo(np.float64).tiny
    scale = np.maximum(np.abs(mean), np.finfo(np.float64).tiny)
    worst = int(np.argmax(err / tol)) if err.size else 0
    max_rel = float(np.max(err / scale)) if err.size else 0.0
    ok = bool(np.all(err <= tol))
    detail = (f"the synchronised .grad is the mean of the {world} ranks' local gradients"
              if ok else f"the synchronised .grad is not the mean of the {world} ranks' local "
              "gradients (a gradient changed between backward and the all-reduce, or a "
              "communication hook that does not average)")
    if not err.size:
        return result("pass" if ok else "fail", detail, max_abs_err=0.0, max_rel_err=0.0,
                      tolerance=0.0, bound=0.0)
    return result("pass" if ok else "fail", detail, max_abs_err=float(err.flat[worst]),
                  max_rel_err=max_rel, tolerance=float(tol.flat[worst] / scale.flat[worst]),
                  bound=float(bound.flat[worst]))


def rank_findings(run: RankedRun) -> list[Finding]:
    """What is wrong across ranks: missing or unfinished ranks, different step counts,
    parameters that diverged, parameters without a gradient on some rank."""
    out: list[Finding] = []
    for r in run.missing:
        out.append(Finding("rank_missing", None, None, None, None,
                           f"rank {r} of {run.world_size} has no trace in {run.path} (it did not "
                           "start, or wrote elsewhere)", rank=r))
    for r, t in run.traces.items():
        if t.info.status == "running":
            out.append(Finding("rank_missing", None, None, None, None,
                               f"rank {r}'s trace never finished (the process was killed); its "
                               "finished steps are read", rank=r))
    counts = {r: t.info.steps_seen for r, t in run.traces.items()}
    if len(set(counts.values())) > 1:
        said = ", ".join(f"rank {r}: {n}" for r, n in counts.items())
        out.append(Finding("ranks_step_count", None, None, None, None,
                           f"the ranks ran different numbers of steps ({said}); under DDP every "
                           "rank must run the same steps, or the collective calls hang", rank=None))
    out.extend(_diverged(run))
    out.extend(_no_grad_on_rank(run))
    return out


def _diverged(run: RankedRun) -> list[Finding]:
    """The first step after which a parameter's value differs across ranks (bit for bit)."""
    first = run.first
    for index in first.steps.indices:
        steps = run.step_of_ranks(index)
        if len(steps) < 2:
            continue
        updates = {r: _by_name(run.traces[r], s, "update") for r, s in steps.items()}
        for name in sorted({n for u in updates.values() for n in u}):
            have = {r: u[name] for r, u in updates.items() if name in u}
            raws = {r: x for r, x in ((r, _raw(e.after)) for r, e in have.items()) if x is not None}
            if len(raws) < 2 or len(raws) < len(have):
                continue
            ref_rank, ref = next(iter(raws.items()))
            differ = [r for r, v in raws.items() if not np.array_equal(ref, v)]
            if differ:
                e = have[differ[0]]
                src = f"{e.source.file.rsplit('/', 1)[-1]}:{e.source.line}" if e.source else None
                return [Finding("ranks_diverged", index, name, None, src,
                                f"{name} differs across ranks after step {index} (rank "
                                f"{differ[0]} vs rank {ref_rank}); DDP keeps replicas equal only "
                                "if every rank applies the same update to the same gradient",
                                rank=differ[0])]
    return []


def _no_grad_on_rank(run: RankedRun) -> list[Finding]:
    """A parameter that got a gradient on some ranks but not on others, first step only."""
    out: list[Finding] = []
    said: set[str] = set()
    first = run.first
    for index in first.steps.indices:
        steps = run.step_of_ranks(index)
        if len(steps) < 2 or any(s.backward is None for s in steps.values()):
            continue
        got = {r: set(_by_name(run.traces[r], s, "accumulate")) for r, s in steps.items()}
        every = set().union(*got.values())
        for name in sorted(every - said):
            lacking = [r for r, names in got.items() if name not in names]
            if lacking:
                said.add(name)
                out.append(Finding("no_grad_on_rank", index, name, None, None,
                                   f"{name} got no gradient on rank {', '.join(map(str, lacking))} "
                                   f"at step {index}: it took no part in that rank's forward, so "
                                   "its .grad there is only what the other ranks sent. Without "
                                   "find_unused_parameters=True DDP waits for it for ever",
                                   rank=lacking[0]))
    return out
