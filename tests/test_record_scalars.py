"""gradtrace/record/scalars.py: every step's loss, gradient, value and update norms, how each .grad was met, and the events it signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fake_writer import FakeWriter
from gradtrace.config import Config
from gradtrace.record.scalars import ScalarTaker
from gradtrace.record.state import Run
from gradtrace.tracefile.rows import NO_LOSS_BITS, ScalarParamRow

FRESH, ZEROS, ADDED, NONE = 0, 1, 2, -1   # ACC_CODES of tracefile/rows.py


def _taker(window: float = 60.0, **options):
    w = FakeWriter(window=window)
    run = Run(Config(**options), w)
    run.scalars = taker = ScalarTaker(run, run.policy)
    return taker, run, w


def _backward(taker, run, step, loss, api="Tensor.backward", inputs=None):
    """What the patched torch.autograd.backward does around one call of step ``step``."""
    run.step = step
    with torch.no_grad():
        taker.before([loss], api)
    if api == "autograd.grad":
        torch.autograd.grad(loss, inputs)
    else:
        loss.backward()
    with torch.no_grad():
        taker.after(api)


def _rows(w):
    """The scalar rows written: (step, full, loss, [(grad, value, update) per column], acc)."""
    out = []
    for (row,) in w.of("add_scalars"):
        v = np.frombuffer(row.vals, "<f8")
        out.append((row.idx, row.full, v[0], v[1:].reshape(-1, 3).tolist(),
                    np.frombuffer(row.acc, np.int8).tolist()))
    return out


def _norm(t) -> float:
    return float(torch.linalg.vector_norm(t.detach().double()))


# -- columns -----------------------------------------------------------------------------------
def test_each_parameter_is_one_column_in_the_order_first_seen():
    taker, run, w = _taker()
    a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    taker.watch(b, 7)
    taker.watch(a, 3)
    taker.watch(b, 7)
    assert [r for (r,) in w.of("add_scalar_param")] == [ScalarParamRow(0, 7), ScalarParamRow(1, 3)]
    assert taker.params == [b, a]


class _Optimizer:
    """What watch_optimizer reads of a torch optimizer: its param_groups (a real one costs
    ~2 s to make first in a process: torch imports its compile machinery)."""

    def __init__(self, params):
        self.param_groups = [{"params": list(params), "lr": 0.1}]

    def add_param_group(self, group):
        self.param_groups.append(group)


def test_an_optimizers_parameters_are_watched_once_and_again_when_groups_grow():
    taker, run, w = _taker()
    p, q = torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)
    frozen = torch.ones(1)
    opt = _Optimizer([p, frozen])
    taker.watch_optimizer(opt)
    taker.watch_optimizer(opt)
    assert taker.params == [p]          # what needs no grad gets no column
    opt.add_param_group({"params": [q]})
    taker.watch_optimizer(opt)
    assert taker.params == [p, q]
    assert [r.col for (r,) in w.of("add_scalar_param")] == [0, 1]


# -- the row of a step -------------------------------------------------------------------------
@pytest.mark.parametrize("numel, dtype", [(3, torch.float32), (100, torch.float32), (5, torch.float64)])
def test_a_steps_row_holds_its_loss_and_norms_and_the_update_after_it(numel, dtype):
    """Small parameters go through Python lists, larger ones through numpy: the same numbers."""
    torch.manual_seed(0)
    taker, run, w = _taker()
    p = torch.randn(numel, dtype=dtype, requires_grad=True)
    x = torch.randn(numel, dtype=dtype)
    taker.watch(p, 0)
    values, grads, losses = [], [], []
    for step in range(3):
        values.append(p.detach().clone())
        loss = (p * x).pow(2).sum()
        losses.append(float(loss.detach()))
        _backward(taker, run, step, loss)
        grads.append(p.grad.clone())
        with torch.no_grad():
            p -= 0.1 * p.grad
            p.grad.zero_()
    rows = _rows(w)
    assert [r[0] for r in rows] == [0, 1]   # a step's row waits for its update
    taker.finish()
    rows = _rows(w)
    assert [(r[0], r[1]) for r in rows] == [(0, 1), (1, 1), (2, 1)]
    ends = values[1:] + [p.detach()]
    for (step, _, loss, cols, _), v, g, end, want_loss in zip(rows, values, grads, ends, losses):
        (gn, vn, un), = cols
        assert loss == want_loss
        assert gn == pytest.approx(_norm(g), rel=1e-6)
        assert vn == pytest.approx(_norm(v), rel=1e-6)
        assert un == pytest.approx(_norm(end - v), rel=1e-5)
    assert w.flushes >= 1 and taker.pending is None and taker.params == []


def test_how_each_grad_was_met_fresh_zeros_added_or_no_gradient():
    taker, run, w = _taker()
    p, unused = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    taker.watch(p, 0)
    taker.watch(unused, 1)
    _backward(taker, run, 0, (3 * p).sum())    # .grad was None: fresh
    p.grad.zero_()
    _backward(taker, run, 1, (3 * p).sum())    # onto zeros
    _backward(taker, run, 2, (3 * p).sum())    # not zeroed: added
    p.grad = None
    _backward(taker, run, 3, (3 * p).sum())    # fresh again
    taker.finish()
    assert [r[4] for r in _rows(w)] == [[FRESH, NONE], [ZEROS, NONE], [ADDED, NONE], [FRESH, NONE]]
    # the parameter no gradient reached has NaN for its gradient norm, its value norm still
    for r in _rows(w):
        assert math.isnan(r[3][1][0]) and r[3][1][1] == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("numel", [4, 200])
def test_grad_data_zero_is_seen_as_zeros_though_the_version_stays(numel):
    """``p.grad.data.zero_()`` leaves ``p.grad``'s version as it was: the values are read again."""
    taker, run, w = _taker()
    p = torch.ones(numel, requires_grad=True)
    taker.watch(p, 0)
    _backward(taker, run, 0, (2 * p).sum())
    version = p.grad._version
    p.grad.data.zero_()
    assert p.grad._version == version
    _backward(taker, run, 1, (2 * p).sum())
    _backward(taker, run, 2, (2 * p).sum())
    taker.finish()
    assert [r[4] for r in _rows(w)] == [[FRESH], [ZEROS], [ADDED]]


def test_autograd_grad_meets_no_grad_and_has_no_gradient_norms():
    taker, run, w = _taker()
    p = torch.ones(2, requires_grad=True)
    taker.watch(p, 0)
    _backward(taker, run, 0, (p * p).sum(), api="autograd.grad", inputs=p)
    taker.finish()
    (step, _, loss, [(gn, vn, un)], acc), = _rows(w)
    assert loss == 2.0 and acc == [NONE] and math.isnan(gn) and vn == pytest.approx(math.sqrt(2))
    assert p.grad is None


def test_the_loss_is_nan_unless_the_one_root_holds_one_number():
    taker, run, w = _taker()
    p = torch.ones(3, requires_grad=True)
    taker.watch(p, 0)
    run.step = 0
    with torch.no_grad():
        taker.before([(p * 2)], "Tensor.backward")            # three numbers
    (p * 2).backward(torch.ones(3))
    with torch.no_grad():
        taker.after("Tensor.backward")
    _backward(taker, run, 1, (p * 2).sum().reshape(1, 1))     # one number, any shape
    run.step = 2
    with torch.no_grad():
        taker.before([p.sum(), p.mean()], "autograd.backward")  # two roots
        taker.after("autograd.backward")
    taker.finish()
    losses = [r[2] for r in _rows(w)]
    assert math.isnan(losses[0]) and losses[1] == 6.0 and math.isnan(losses[2])
    # marked as "no single-number loss" (NO_LOSS), not as a loss that was NaN: no event
    bits = np.array(losses, "<f8").view(np.uint64).tolist()
    assert bits[0] == bits[2] == NO_LOSS_BITS
    assert not [why for _, why in run.policy.events if "loss" in why]


def test_a_loss_that_is_nan_is_not_marked_as_no_loss():
    taker, run, w = _taker()
    p = torch.ones(2, requires_grad=True)
    taker.watch(p, 0)
    _backward(taker, run, 0, (p * float("nan")).sum())
    taker.finish()
    (loss,) = [r[2] for r in _rows(w)]
    assert math.isnan(loss) and np.array([loss], "<f8").view(np.uint64)[0] != NO_LOSS_BITS
    assert [why for _, why in run.policy.events][0] == "a non-finite loss"


def test_a_parameter_seen_later_gets_its_column_from_then_on():
    taker, run, w = _taker()
    a, b = torch.ones(1, requires_grad=True), torch.full((2,), 2.0, requires_grad=True)
    taker.watch(a, 0)
    _backward(taker, run, 0, a.sum())
    taker.watch(b, 1)
    _backward(taker, run, 1, (a + b).sum())
    taker.finish()
    rows = _rows(w)
    assert [len(r[3]) for r in rows] == [1, 2] and [len(r[4]) for r in rows] == [1, 2]
    assert rows[1][3][1][1] == pytest.approx(math.sqrt(8))
    assert rows[1][3][1][2] == 0.0  # its update (none) to the end is measured, not NaN


def test_a_value_numpy_cannot_view_is_measured_by_torch():
    """bfloat16 has no numpy view: the norms come from torch's foreach calls instead."""
    taker, run, w = _taker()
    p = torch.tensor([3.0, 4.0], dtype=torch.bfloat16, requires_grad=True)
    taker.watch(p, 0)
    _backward(taker, run, 0, (p * 2).sum())
    with torch.no_grad():
        p -= torch.tensor([3.0, 0.0], dtype=torch.bfloat16)
    p.grad = None
    _backward(taker, run, 1, (p * 2).sum())
    taker.finish()
    rows = _rows(w)
    assert [r[4] for r in rows] == [[FRESH], [FRESH]]
    (gn, vn, un), = rows[0][3]
    assert gn == pytest.approx(math.sqrt(8), rel=1e-2) and vn == pytest.approx(5.0, rel=1e-2)
    assert un == pytest.approx(3.0, rel=1e-2)
    assert rows[1][3][0][1] == pytest.approx(4.0, rel=1e-2)


def test_taking_scalars_changes_no_value_gradient_or_version():
    """Read-only on the user's tensors: a traced run must stay bit-identical."""
    torch.manual_seed(0)
    taker, run, w = _taker()
    ps = [torch.randn(3, requires_grad=True), torch.randn(100, requires_grad=True)]
    for i, p in enumerate(ps):
        taker.watch(p, i)
    x = torch.randn(100)
    loss = (ps[0].sum() * ps[1] * x).sum()
    before = [(p.detach().clone(), p._version) for p in ps]
    run.step = 0
    with torch.no_grad():
        taker.before([loss], "Tensor.backward")
    loss.backward()
    grads = [(p.grad.clone(), p.grad._version) for p in ps]
    with torch.no_grad():
        taker.after("Tensor.backward")
        taker.before([(ps[0] * 1).sum()], "Tensor.backward")
    taker.finish()
    for p, (v, ver), (g, gver) in zip(ps, before, grads):
        assert torch.equal(p.detach(), v) and p._version == ver
        assert torch.equal(p.grad, g) and p.grad._version == gver


# -- what it signals to the policy -------------------------------------------------------------
def test_a_non_finite_loss_and_gradient_are_events_of_their_step():
    taker, run, w = _taker()
    p = torch.ones(2, requires_grad=True)
    taker.watch(p, 0)
    _backward(taker, run, 0, (p * 2).sum())
    _backward(taker, run, 1, (p * float("inf")).sum())
    assert [e for e in run.policy.events] == [[1, "a non-finite loss"], [1, "a non-finite gradient"]]


def test_a_new_accumulation_pattern_is_an_event_after_the_first_two_steps():
    taker, run, w = _taker()
    p = torch.ones(2, requires_grad=True)
    taker.watch(p, 0)
    for step in range(4):     # fresh, zeros, zeros, zeros: nothing new after step 1
        _backward(taker, run, step, p.sum())
        p.grad.zero_()
    assert not [why for _, why in run.policy.events if "loss" in why]
    _backward(taker, run, 4, p.sum())
    _backward(taker, run, 5, p.sum())  # the zero_grad() forgotten: added
    assert run.policy.events == [[5, "a new zeroing / accumulation pattern"]]
    p.grad.zero_()
    _backward(taker, run, 6, p.sum())   # back to a pattern seen before: no event
    p.grad = None
    _backward(taker, run, 7, p.sum())   # fresh was seen at step 0: no event
    assert len(run.policy.events) == 1


def test_a_loss_that_jumps_is_an_event_a_steady_one_is_not():
    taker, run, w = _taker()
    p = torch.ones(1, requires_grad=True)
    taker.watch(p, 0)
    for step, scale in enumerate([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45]):
        _backward(taker, run, step, (p * scale).sum())
        p.grad = None
    assert not [why for _, why in run.policy.events if "loss" in why]
    _backward(taker, run, 7, (p * 4.0).sum())
    assert run.policy.events == [[7, "the loss jumped from 0.45 to 4"]]


def test_rows_are_flushed_once_the_writers_window_has_half_passed():
    taker, run, w = _taker(window=0.0)
    p = torch.ones(1, requires_grad=True)
    taker.watch(p, 0)
    for step in range(3):
        _backward(taker, run, step, p.sum())
    assert len(w.of("add_scalars")) == 2 and w.flushes == 2
    slow, run2, w2 = _taker(window=3600.0)
    slow.watch(p, 0)
    for step in range(3):
        _backward(slow, run2, step, p.sum())
    assert len(w2.of("add_scalars")) == 2 and w2.flushes == 0


def test_finish_with_no_step_writes_no_row_and_still_flushes():
    taker, run, w = _taker()
    taker.watch(torch.ones(1, requires_grad=True), 0)
    taker.finish()
    assert w.of("add_scalars") == [] and w.flushes == 1 and taker.params == []


def test_the_first_step_has_its_parameters_when_it_is_not_recorded_in_full():
    """--steps 10:13: step 0 ran with the mode off, so no recorded backward pass had named
    its parameters yet; its scalars had no gradient norm and 'no gradient' (summary: 49
    fresh accumulations of 50)."""
    import gradtrace

    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1e-3)
    x = torch.tensor([1.0, -2.0])
    with gradtrace.trace(step_range=(10, 13)) as t:
        for _ in range(12):
            opt.zero_grad()
            (((w * x).sum() - 1.0) ** 2).backward()
            opt.step()
    sc = t.result.scalars()
    assert sc.accumulation[:, 0].tolist() == [FRESH] * 12
    assert sc.grad_norm[0, 0] == pytest.approx(math.sqrt(20.0))


def test_under_a_grad_scaler_the_loss_is_the_one_it_scaled():
    """scaler.scale(loss).backward(): the loss column showed the loss times the scale (50.15
    for 0.196), in the summary, the curves and the policy's loss-jump watch."""
    import gradtrace

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    x, y = torch.randn(6, 3), torch.randn(6, 1)
    losses = []
    with gradtrace.trace() as t:
        for _ in range(3):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            losses.append(loss.item())
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert t.result.scalars().loss.tolist() == losses
    # the steps' rows too (summary's column); the backward root stays the scaled tensor
    assert [r["loss"] for r in t.result.step_rows()] == pytest.approx(losses)
    assert t.steps[0].loss == pytest.approx(losses[0] * 2.0 ** 8)
    assert t._recorder.run.scaled is None  # let go of at the end
