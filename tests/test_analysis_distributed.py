"""analysis.distributed: the all-reduce check, each parameter across the ranks, and the findings across ranks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gradtrace.analysis.distributed import allreduce_checks, rank_findings, rank_gradients
from gradtrace.analysis.errmodel import UNIT_ROUNDOFF, gamma
from gradtrace.tracefile.model import (Backward, Bucket, Event, Source, Stats, Step, TensorInfo,
                                       Value)
from gradtrace.tracefile.ranks import RankedRun

W, B = 1, 2  # the tids of the two parameters
TENSORS = {W: TensorInfo(W, "w", "param", (3,), "float32", True),
           B: TensorInfo(B, "b", "param", (1,), "float32", True)}


def _v(values, dtype=np.float32) -> Value:
    a = np.asarray(values, dtype=dtype)
    return Value(0, a.shape, str(a.dtype), array=a)


def _stats_only(values) -> Value:
    a = np.asarray(values, dtype=np.float32)
    return Value(0, a.shape, "float32", stored_stats=Stats.of_array(a))


def _event(kind: str, tid: int, before=None, after=None, source=None) -> Event:
    return Event(seq=0, step=0, kind=kind, tensor=tid, idiom=kind, before=before, after=after,
                 source=source)


def _step(index: int, *events: Event, backward: bool = True, buckets=None) -> Step:
    bw = Backward(seq=0, step=index, api="backward", roots=(), nodes=(), source=None) if backward else None
    return Step(index=index, ops=(), backward=bw, events=tuple(events), values={}, tensors=TENSORS,
                buckets=buckets)


class _Trace:
    """What the cross-rank checks read of one rank's trace: its steps, names and run info."""

    def __init__(self, *steps: Step, status: str = "completed", steps_seen: int | None = None):
        self._steps = {s.index: s for s in steps}
        self.steps = SimpleNamespace(indices=sorted(self._steps))
        self.info = SimpleNamespace(status=status, distributed={},
                                    steps_seen=len(steps) if steps_seen is None else steps_seen)

    def step(self, index: int) -> Step:
        return self._steps[index]

    def name(self, tid: int) -> str:
        return TENSORS[tid].label


def _run(*traces: _Trace, world: int | None = None) -> RankedRun:
    return RankedRun(Path("/runs/train/trace.gtrace"), dict(enumerate(traces)),
                     len(traces) if world is None else world)


def _allreduced(locals_, synced, tid=W) -> RankedRun:
    """One step on each rank: rank r's local gradient ``locals_[r]`` all-reduced to ``synced[r]``."""
    return _run(*(_Trace(_step(0, _event("allreduce", tid, before, after)))
                  for before, after in zip(locals_, synced)))


G0 = np.array([0.1, -2.5, 3.0], dtype=np.float32)
G1 = np.array([0.3, 1.5, -3.0], dtype=np.float32)
MEAN32 = ((G0 + G1) / np.float32(2)).astype(np.float32)   # what DDP's mean in float32 gives


# -- the all-reduce check --------------------------------------------------------------------------

def test_a_synchronised_grad_that_is_the_mean_passes_within_the_rounding_of_a_mean():
    [c] = allreduce_checks(_allreduced([_v(G0), _v(G1)], [_v(MEAN32), _v(MEAN32)]))
    assert (c.kind, c.step, c.param, c.status) == ("allreduce", 0, "w", "pass")
    assert c.detail == "the synchronised .grad is the mean of the 2 ranks' local gradients"
    # the bound by hand: gamma_{W+1} * sum_r |g_r| / W + u |mean|, the check doubles it
    g = np.stack([G0, G1]).astype(np.float64)
    mean = g.sum(0) / 2
    u = UNIT_ROUNDOFF["float32"]
    bound = gamma(3, u) * np.abs(g).sum(0) / 2 + u * np.abs(mean)
    err = np.abs(MEAN32.astype(np.float64) - mean)
    tol = 2 * bound + np.finfo(np.float64).tiny
    worst = int(np.argmax(err / tol))
    assert mean[2] == 0.0 and err[2] == 0.0  # 3 and -3: a mean of zero is no division by zero
    scale = np.maximum(np.abs(mean), np.finfo(np.float64).tiny)
    assert c.bound == pytest.approx(bound[worst], rel=1e-12)
    assert c.max_abs_err == pytest.approx(err[worst], rel=1e-12, abs=0) and c.max_abs_err > 0
    assert c.tolerance == pytest.approx(tol[worst] / scale[worst], rel=1e-12)
    assert c.max_rel_err == pytest.approx(float(np.max(err / scale)), rel=1e-12, abs=0)


def test_a_synchronised_grad_that_is_not_the_mean_fails_and_says_what_may_have_caused_it():
    [c] = allreduce_checks(_allreduced([_v(G0), _v(G1)], [_v(G0), _v(G0)]))  # no averaging
    assert c.status == "fail" and c.max_abs_err > 2 * c.bound
    assert "is not the mean of the 2 ranks' local gradients" in c.detail
    assert "communication hook that does not average" in c.detail


def test_ranks_that_hold_different_bits_fail_naming_the_rank():
    other = MEAN32.copy()
    other[1] = np.nextafter(other[1], np.float32(0))  # one ulp off, well within the bound
    [c] = allreduce_checks(_allreduced([_v(G0), _v(G1)], [_v(MEAN32), _v(other)]))
    assert c.status == "fail"
    assert c.detail == "ranks hold different synchronised gradients (rank 1 differs from rank 0)"
    assert (c.max_abs_err, c.max_rel_err, c.tolerance) == (float("inf"), float("inf"), 0.0)


def test_gradients_of_different_shapes_fail():
    [c] = allreduce_checks(_allreduced([_v(G0), _v(G1[:2])], [_v(MEAN32), _v(MEAN32)]))
    assert c.status == "fail" and c.detail == "the ranks' gradients have different shapes"


def test_a_rank_without_the_all_reduce_is_not_applicable_and_says_which():
    run = _run(_Trace(_step(0, _event("allreduce", W, _v(G0), _v(MEAN32)))), _Trace(_step(0)))
    [c] = allreduce_checks(run)
    assert c.status == "not_applicable"
    assert c.detail == "rank 1 recorded no all-reduce of it in this step (see the findings)"


def test_a_gradient_kept_as_statistics_only_is_not_applicable_and_names_the_option():
    [c] = allreduce_checks(_allreduced([_v(G0), _stats_only(G1)], [_v(MEAN32), _v(MEAN32)]))
    assert c.status == "not_applicable" and "--max-numel N keeps it in full" in c.detail


def test_a_parameter_a_rank_did_not_use_counts_as_zeros_in_the_mean():
    """find_unused_parameters=True: the rank sends zeros, recorded as no local value."""
    half = (G0 / np.float32(2)).astype(np.float32)
    run = _allreduced([_v(G0), None], [_v(half), _v(half)])
    [c] = allreduce_checks(run)
    assert c.status == "pass" and c.max_abs_err == 0.0
    [g] = rank_gradients(run, 0)
    assert g.local[1] is None
    np.testing.assert_array_equal(g.mean, G0.astype(np.float64) / 2)


def test_an_empty_gradient_passes_with_nothing_to_compare():
    empty = np.zeros(0, dtype=np.float32)
    [c] = allreduce_checks(_allreduced([_v(empty), _v(empty)], [_v(empty), _v(empty)]))
    assert (c.status, c.max_abs_err, c.max_rel_err, c.tolerance, c.bound) == ("pass", 0.0, 0.0, 0.0, 0.0)


def test_every_step_and_parameter_is_checked_in_order():
    def rank(g):
        return _Trace(*(_step(i, _event("allreduce", B, _v([1.0]), _v([1.0])),
                              _event("allreduce", W, _v(g), _v(MEAN32))) for i in (0, 1)))
    checks = allreduce_checks(_run(rank(G0), rank(G1)))
    assert [(c.step, c.param, c.status) for c in checks] == [
        (0, "b", "pass"), (0, "w", "pass"), (1, "b", "pass"), (1, "w", "pass")]


# -- one parameter across the ranks ----------------------------------------------------------------

def test_rank_gradients_hold_each_ranks_local_and_synchronised_value_and_its_bucket():
    buckets = (Bucket(0, 2, (B,), 4, True), Bucket(1, 2, (W,), 12, True))
    run = _run(*(_Trace(_step(0, _event("accumulate", W, None, _v(g)),
                              _event("allreduce", W, _v(g), _v(MEAN32)),
                              _event("accumulate", B, None, _v([2.0])), buckets=buckets))
                 for g in (G0, G1)))
    b, w = rank_gradients(run, 0)
    assert (b.name, w.name) == ("b", "w")          # by name
    np.testing.assert_array_equal(w.local[0].array, G0)
    np.testing.assert_array_equal(w.synced[1].array, MEAN32)
    np.testing.assert_array_equal(w.mean, (G0.astype(np.float64) + G1.astype(np.float64)) / 2)
    assert w.same_bits is True and {r: k.label for r, k in w.bucket.items()} == {0: "bucket 1 of 2",
                                                                                 1: "bucket 1 of 2"}
    # b was accumulated, never all-reduced: its local gradients, their mean, nothing synchronised
    assert b.synced == {} and b.bucket == {} and b.same_bits is None
    np.testing.assert_array_equal(b.mean, [2.0])


def test_the_mean_needs_every_rank_and_same_bits_needs_two():
    run = _run(_Trace(_step(0, _event("accumulate", W, None, _v(G0)))), _Trace(_step(0)))
    [w] = rank_gradients(run, 0)
    assert w.mean is None and w.same_bits is None and set(w.local) == {0}
    differ = _allreduced([_v(G0), _v(G1)], [_v(G0), _v(G1)])
    assert rank_gradients(differ, 0)[0].same_bits is False


# -- findings across ranks -------------------------------------------------------------------------

def test_ranks_that_agree_have_nothing_to_say():
    def rank():
        return _Trace(_step(0, _event("accumulate", W, None, _v(G0)), _event("update", W, _v(G0), _v(G1))))
    assert rank_findings(_run(rank(), rank())) == []


def test_a_missing_rank_and_a_killed_rank_are_named():
    run = _run(_Trace(_step(0)), _Trace(_step(0), status="running"), world=3)
    found = rank_findings(run)
    assert [(f.kind, f.rank, f.step, f.param) for f in found] == [
        ("rank_missing", 2, None, None), ("rank_missing", 1, None, None)]
    assert found[0].message == ("rank 2 of 3 has no trace in /runs/train (it did not start, or "
                                "wrote elsewhere)")
    assert found[1].message == ("rank 1's trace never finished (the process was killed); its "
                                "finished steps are read")


def test_ranks_that_ran_different_numbers_of_steps_are_one_finding_for_the_run():
    run = _run(_Trace(_step(0), steps_seen=3), _Trace(_step(0), steps_seen=4))
    [f] = rank_findings(run)
    assert (f.kind, f.rank, f.step) == ("ranks_step_count", None, None)
    assert f.message.startswith("the ranks ran different numbers of steps (rank 0: 3, rank 1: 4)")


def test_replicas_that_drift_apart_are_found_at_the_first_step_with_the_update_line():
    src = Source("/home/me/train.py", 12, "opt.step()")

    def rank(second):
        return _Trace(_step(0, _event("update", W, None, _v(G0))),
                      _step(1, _event("update", W, None, _v(second), source=src)),
                      _step(2, _event("update", W, None, _v(G1 + 1))))
    [f] = rank_findings(_run(rank(G1), rank(G1 * 2)))
    assert (f.kind, f.step, f.param, f.rank, f.source) == ("ranks_diverged", 1, "w", 1, "train.py:12")
    assert f.message.startswith("w differs across ranks after step 1 (rank 1 vs rank 0)")


def test_a_parameter_without_a_gradient_on_a_rank_is_said_once_at_its_first_step():
    def rank(*tids):
        return _Trace(*(_step(i, *(_event("accumulate", t, None, _v([1.0])) for t in tids))
                        for i in (0, 1)))
    [f] = rank_findings(_run(rank(W, B), rank(W)))
    assert (f.kind, f.step, f.param, f.rank) == ("no_grad_on_rank", 0, "b", 1)
    assert f.message.startswith("b got no gradient on rank 1 at step 0: it took no part")
    assert "find_unused_parameters=True" in f.message


def test_a_step_without_backward_on_some_rank_is_not_read_for_missing_gradients():
    run = _run(_Trace(_step(0, _event("accumulate", W, None, _v([1.0])))),
               _Trace(_step(0, backward=False)))
    assert rank_findings(run) == []
