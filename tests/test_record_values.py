"""gradtrace/record/values.py: which values are kept as bytes, statistics or zeros, each under a new vid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradtrace
from fake_writer import FakeWriter
from gradtrace.config import Config
from gradtrace.record.state import Run, StepState
from gradtrace.record.values import Values
from gradtrace.tracefile.model import Stats


def _values(**options) -> tuple[Values, FakeWriter]:
    w = FakeWriter()
    run = Run(Config(**options), w)
    return Values(run, StepState(run)), w


# -- through a recording (moved from test_record_recorder.py) ----------------------------------
def _params():
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(4, 3)
    return w, X


def _loop(n, w, X):
    for _ in range(n):
        (X @ w).pow(2).sum().backward()
        with torch.no_grad():
            w -= 0.01 * w.grad
            w.grad.zero_()


def test_stats_only_keeps_statistics():
    w, X = _params()
    with gradtrace.trace(values="stats") as t:
        _loop(2, w, X)
    v = t.steps[0].value(t.steps[0].ops[0].inputs[1])
    assert v.data is None
    assert v.stats.norm == pytest.approx(float(torch.linalg.vector_norm(_params()[0].detach())), rel=1e-6)
    assert v.stats.nonfinite == 0


def test_large_tensors_keep_statistics_only():
    torch.manual_seed(0)
    w = torch.randn(50, 1, requires_grad=True)
    X = torch.randn(400, 50)
    with gradtrace.trace(max_value_numel=1000) as t:
        (X @ w).sum().backward()
    s = t.steps[0]
    Xv = s.value(s.ops[0].inputs[0])
    assert Xv.data is None and Xv.shape == (400, 50)
    assert Xv.stats.mean == pytest.approx(float(X.double().mean()), rel=1e-5)  # float32 sums
    assert s.value(s.ops[0].inputs[1]).data is not None


# -- snap_now ----------------------------------------------------------------------------------
def test_a_small_value_is_kept_as_its_bytes_under_sequential_vids():
    values, w = _values()
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([True, False])
    assert [values.snap_now(a, tid=4), values.snap_now(b)] == [0, 1]
    assert values.run.next_vid == 2
    assert w.of("add_bytes") == [(0, 4, (2, 3), "float32", a.numpy().tobytes()),
                                 (1, None, (2,), "bool", b.numpy().tobytes())]


def test_vids_continue_from_the_runs_counter():
    values, w = _values()
    values.run.next_vid = 41
    assert values.snap_now(torch.zeros(1)) == 41 and values.snap_now(torch.zeros(1)) == 42
    assert [c[0] for c in w.of("add_bytes")] == [41, 42]


def test_a_strided_view_is_kept_in_c_order():
    values, w = _values()
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    view = base.t()[1:, ::2]  # not contiguous
    assert not view.is_contiguous()
    values.snap_now(view)
    (vid, tid, shape, dtype, payload), = w.of("add_bytes")
    assert shape == (3, 2) and dtype == "float64"
    assert payload == view.contiguous().numpy().tobytes()


def test_a_tensor_that_requires_grad_is_kept_without_changing_it():
    values, w = _values()
    p = torch.tensor([1.5, -2.0], requires_grad=True)
    values.snap_now(p)
    assert w.of("add_bytes")[0][4] == p.detach().numpy().tobytes()
    assert p.requires_grad and p.grad is None and p._version == 0


@pytest.mark.parametrize("make", [
    pytest.param(lambda: torch._neg_view(torch.tensor([1.0, -2.0, 3.0])), id="neg-bit view"),
    pytest.param(lambda: torch.tensor([1 + 2j, -3j], dtype=torch.complex64), id="complex"),
    pytest.param(lambda: torch.tensor([0.5, -1.25], dtype=torch.bfloat16), id="bfloat16"),
])
def test_what_numpy_cannot_view_is_kept_through_torch(make):
    values, w = _values()
    t = make()
    values.snap_now(t)
    (_, _, shape, _, payload), = w.of("add_bytes")
    plain = t.resolve_neg().resolve_conj().contiguous()
    expected = (plain.view(torch.uint8) if plain.dtype == torch.bfloat16 else plain).numpy().tobytes()
    assert shape == tuple(t.shape) and payload == expected


def test_an_empty_tensor_is_kept_as_no_bytes_with_its_shape():
    values, w = _values()
    values.snap_now(torch.empty(0, 3))
    assert w.of("add_bytes") == [(0, None, (0, 3), "float32", b"")]


def test_max_value_numel_is_the_largest_value_kept_in_full():
    values, w = _values(max_value_numel=4)
    at, over = torch.arange(4.0), torch.arange(5.0)
    values.snap_now(at, tid=0)
    values.snap_now(over, tid=1)
    assert [c[:4] for c in w.of("add_bytes")] == [(0, 0, (4,), "float32")]
    (vid, tid, shape, dtype, stats), = w.of("add_stats")
    assert (vid, tid, shape, dtype) == (1, 1, (5,), "float32")
    assert stats == Stats.of(over)
    assert stats.numel == 5 and stats.max == 4.0 and stats.min == 0.0 and stats.mean == 2.0


def test_max_value_numel_zero_keeps_only_empty_values_in_full():
    values, w = _values(max_value_numel=0)
    values.snap_now(torch.ones(1))
    values.snap_now(torch.ones(0))
    assert len(w.of("add_stats")) == 1 and [c[2] for c in w.of("add_bytes")] == [(0,)]


def test_stats_mode_keeps_statistics_even_of_one_number():
    values, w = _values(values="stats")
    values.snap_now(torch.tensor([3.0, -4.0]))
    assert w.of("add_bytes") == []
    stats = w.of("add_stats")[0][4]
    assert stats.norm == pytest.approx(5.0) and stats.numel == 2 and stats.nonfinite == 0


# -- snap_zeros --------------------------------------------------------------------------------
def test_in_a_shared_block_one_memory_run_is_summarised_once(monkeypatch):
    v, w = _values(max_value_numel=10)
    calls = []
    of = Stats.of.__func__
    monkeypatch.setattr(Stats, "of", classmethod(lambda cls, t: calls.append(t.shape) or of(cls, t)))
    a = torch.randn(8, 6)
    with v.shared():
        # a transposed view, a reshape, the tensor itself: one run of memory, one summary
        vids = [v.snap_now(x) for x in (a, a.t(), a.reshape(48), a)]
        v.snap_now(a[:, ::2])   # a view with gaps: summarised on its own
        v.snap_now(a[:4])       # another run (the first half)
        v.snap_now(a.view(torch.int32))  # the same bytes read as another dtype
    assert calls == [(8, 6), (8, 3), (4, 6), (8, 6)]
    stats = [c for c in w.calls if c[0] == "add_stats"]
    # each value keeps its own vid and shape; the four of the run share its statistics
    assert [c[1] for c in stats[:4]] == vids == sorted(set(vids))
    assert [c[3] for c in stats[:4]] == [(8, 6), (6, 8), (48,), (8, 6)]
    assert len({id(c[5]) for c in stats[:4]}) == 1 and stats[0][5] == Stats.of(a)
    assert stats[4][5] == Stats.of(a[:, ::2].contiguous()) and stats[5][5] == Stats.of(a[:4])
    # outside the block (where user code may write to the memory between two values) each
    # value is summarised again
    calls.clear()
    v.snap_now(a)
    a.mul_(2)
    v.snap_now(a)
    assert calls == [(8, 6), (8, 6)] and w.calls[-1][5] == Stats.of(a) != w.calls[-2][5]


def test_a_recorded_backward_summarises_a_transposed_value_once(monkeypatch):
    calls = []
    of = Stats.of.__func__
    monkeypatch.setattr(Stats, "of", classmethod(lambda cls, t: calls.append(tuple(t.shape)) or of(cls, t)))
    torch.manual_seed(0)
    w = torch.randn(30, 40, requires_grad=True)
    X = torch.randn(20, 40)
    with gradtrace.trace(max_value_numel=100) as t:
        (X @ w.t()).sum().backward()
    # w.t() in the forward is w's memory, TBackward's gradient MmBackward's: each once; w
    # and its .grad (a contiguous copy, the layout autograd gives a .grad) are two runs
    assert calls.count((40, 30)) == 1 and calls.count((30, 40)) == 2
    s = t.steps[0]
    tv = s.value(s.ops[0].outputs[0])
    assert tv.shape == (40, 30) and tv.stats == s.value(s.ops[0].inputs[0]).stats
    acc = s.accumulations[0]
    assert acc.incoming.shape == acc.after.shape == (30, 40) and acc.incoming.stats == acc.after.stats
    assert acc.after.stats.norm == pytest.approx(float(w.grad.double().norm()), rel=1e-5)


def test_zeros_keep_only_shape_and_dtype_and_take_a_vid():
    values, w = _values()
    z = torch.zeros(2, 5, dtype=torch.float16)
    assert values.snap_zeros(z) == 0 and values.snap_now(torch.ones(1)) == 1
    assert w.of("add_zeros") == [(0, (2, 5), "float16")]


# -- want / flush ------------------------------------------------------------------------------
def test_a_wanted_value_changed_in_place_before_the_flush_is_not_taken():
    values, w = _values()
    t = torch.ones(3)
    values.want(t, 7)
    values.want(t, 7)   # asked twice in the step: one snapshot
    t.mul_(2)           # changed before flush, and asked for again: a new version, still noted once
    values.want(t, 7)
    assert w.calls == []                 # nothing is taken before the flush
    values.flush()
    assert w.of("add_bytes") == []       # the value noted was changed in place since: not taken
    assert values.step.snaps == [] and 7 not in values.step.fwd_vid


def test_flush_takes_the_value_as_it_stands_then():
    values, w = _values()
    x, y = torch.tensor([1.0, 2.0]), torch.tensor([5.0])
    values.want(x, 0)
    values.want(y, 1)
    values.flush()
    assert [(c[0], c[1], c[4]) for c in w.of("add_bytes")] == [
        (0, 0, x.numpy().tobytes()), (1, 1, y.numpy().tobytes())]
    assert values.step.fwd_vid == {0: (0, x._version), 1: (1, y._version)}
    values.flush()                        # nothing noted since
    assert len(w.of("add_bytes")) == 2


def test_a_new_step_wants_the_value_again():
    values, w = _values()
    t = torch.ones(2)
    values.want(t, 3)
    values.flush()
    values.step.reset()
    values.want(t, 3)
    values.flush()
    assert [c[1] for c in w.of("add_bytes")] == [3, 3]


# -- before ------------------------------------------------------------------------------------
def test_before_reuses_the_forward_value_of_an_unchanged_parameter():
    values, w = _values()
    p = torch.ones(2, requires_grad=True)
    values.want(p, 0)
    values.flush()
    assert values.before(p, ("param", 0, "w")) == 0
    assert len(w.of("add_bytes")) == 1   # no second copy
    with torch.no_grad():
        p.add_(1)
    vid = values.before(p, ("param", 0, "w"))
    assert vid == 1 and w.of("add_bytes")[1][4] == torch.full((2,), 2.0).numpy().tobytes()


def test_before_reuses_a_gradients_value_only_for_the_same_tensor_and_version():
    values, w = _values()
    g = torch.ones(2)
    values.step.grad_vid[5] = (9, id(g), g._version)
    assert values.before(g, ("grad", 5, "w.grad")) == 9
    other = torch.ones(2)
    assert values.before(other, ("grad", 5, "w.grad")) == 0   # another tensor: a new value
    g.mul_(3)
    assert values.before(g, ("grad", 5, "w.grad")) == 1       # changed since: a new value
    assert [c[4] for c in w.of("add_bytes")] == [other.numpy().tobytes(), g.numpy().tobytes()]


def test_a_sparse_gradient_is_kept_dense_when_small_and_summarised_unmade_when_large():
    """nn.Embedding(sparse=True)'s gradient is sparse: taking its value raised 'reshape is
    not implemented for sparse tensors', and the step lost its whole backward pass."""
    i = torch.tensor([[0, 2, 2], [1, 0, 0]])
    s = torch.sparse_coo_tensor(i, torch.tensor([3.0, -4.0, 1.0]), (3, 2))  # (2, 0) twice: -3
    values, w = _values(max_value_numel=10)
    values.snap_now(s)
    [(_, _, shape, dtype, payload)] = w.of("add_bytes")
    assert shape == (3, 2) and np.frombuffer(payload, "<f4").tolist() == s.to_dense().reshape(-1).tolist()
    values, w = _values(max_value_numel=4)
    values.snap_now(s)
    [(_, _, shape, _, stats)] = w.of("add_stats")
    dense = Stats.of(s.to_dense())
    assert shape == (3, 2) and stats.numel == 6 and stats.nonfinite == 0
    assert (stats.norm, stats.mean, stats.min, stats.max) == pytest.approx(
        (dense.norm, dense.mean, dense.min, dense.max))


def test_a_sparse_embedding_run_keeps_its_backward_pass(capsys):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = torch.optim.SparseAdam(emb.parameters(), lr=0.1)
    x = torch.tensor([[1, 2], [3, 1]])
    with gradtrace.trace() as t:
        for _ in range(2):
            opt.zero_grad()
            emb(x).pow(2).mean().backward()
            opt.step()
    assert "internal error" not in capsys.readouterr().err
    s = t.steps[0]
    assert s.backward is not None and [e.kind for e in s.events].count("accumulate") == 1
    g = [e for e in s.events if e.kind == "accumulate"][0].after
    assert g.shape == (10, 3) and g.array[[1, 2, 3]].any() and not g.array[0].any()
    # and checked: the replay asks the embedding for a dense gradient (the same values)
    from gradtrace.analysis.check import check_trace

    assert {c.status for c in check_trace(t.result, numeric="all").of("numeric")} == {"pass"}
