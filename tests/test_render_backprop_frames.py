"""render/backprop_frames.py: what a frame holds, and the frames of updates, zeroings, .grad
writes, a step that does not clear .grad and the end of a step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.formatting import slide_number as fmt_num
from gradtrace.formatting import value as fmt_value
from gradtrace.render.backprop import backprop_plan
from gradtrace.render.backprop_frames import (Frame, ParamCell, _acc_note, _code, _done_frame,
                                              _next_loss, _paren)
from gradtrace.tracefile.model import Source, Value

from test_render_animate import _train, never_zeroing, zeroing  # noqa: F401 (fixtures)


def test_backprop_update_shows_before_and_after(zeroing):
    step = zeroing.steps[1]
    plan = backprop_plan(zeroing, step)
    upd = next(f for f in plan.frames if f.phase == "update")
    w = zeroing.find("w").tid
    e = next(e for e in step.updates if e.tensor == w)
    cell = upd.cells[w]
    assert cell.mark == "update"
    assert cell.before is e.before and cell.value is e.after
    assert "a change of −0.1 × .grad" in upd.caption


def test_an_initialisation_has_no_value_before_and_says_new():
    torch.manual_seed(0)
    with gradtrace.trace() as t:
        net = torch.nn.Linear(2, 1)  # kaiming_uniform_ and uniform_ on torch.empty memory
        net(torch.ones(3, 2)).sum().backward()
    run = t.result
    init = next(f for f in backprop_plan(run, run.steps[0]).frames if f.phase == "update")
    w = run.find("net.weight").tid
    assert init.cells[w].before is None
    assert f"net.weight new → {fmt_value(run.steps[0].updates[0].after)}" in init.caption
    # an initialisation, not a step against a gradient (there is none yet)
    assert init.caption.startswith("Before any gradient, the script sets the parameters' values")
    assert "downhill" not in init.caption and not init.alert


def test_an_update_that_sends_the_loss_up_is_not_called_downhill(zeroing):
    """exploding_lr's lesson: an update against the gradient can still overshoot."""
    step = zeroing.steps[1]
    good = next(f for f in backprop_plan(zeroing, step).frames if f.phase == "update")
    assert "downhill on the loss" in good.caption and not good.alert
    with gradtrace.trace() as t:
        _train(4, zero=True, lr=50.0)
    run = t.result
    losses = [r["loss"] for r in run.step_rows()]
    assert losses[2] > losses[1]
    bad = next(f for f in backprop_plan(run, run.steps[1]).frames if f.phase == "update")
    assert bad.alert and "downhill" not in bad.caption
    assert f"the loss goes UP, from {fmt_num(losses[1])} to {fmt_num(losses[2])}" in bad.caption


def test_no_zero_frame_says_what_happens(zeroing, never_zeroing):
    never = backprop_plan(never_zeroing, never_zeroing.steps[1])
    assert never.frames[-2].phase == "no_zero" and never.frames[-2].alert
    assert "never zeroes .grad" in never.frames[-2].caption
    # step 0 of the zeroing script clears .grad only at the start of step 1
    first = backprop_plan(zeroing, zeroing.steps[0])
    nz = next(f for f in first.frames if f.phase == "no_zero")
    assert "in step 1" in nz.caption and not nz.alert
    acc = next(f for f in first.frames if f.phase == "accumulate")
    assert {c.mark for c in acc.cells.values()} == {"fresh"} and ".grad was None" in acc.caption


# -- a script that does a bit of everything to .grad -------------------------------------------------
@pytest.fixture(scope="module")
def varied():
    """Four steps of ``loss = ((x * w - y) ** 2).mean()`` and an update: step 0 sets .grad to
    None, step 1 zeroes it, step 2 clips it and clears nothing, step 3 clears nothing either."""
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    x = torch.tensor([1.0, 2.0])
    y = torch.tensor([1.0, 0.0])
    with gradtrace.trace() as t:
        for i in range(4):
            loss = ((x * w - y) ** 2).mean()
            loss.backward()
            if i == 2:
                torch.nn.utils.clip_grad_norm_([w], 0.1)
            with torch.no_grad():
                w -= 0.1 * w.grad
            if i == 0:
                w.grad = None
            elif i == 1:
                w.grad.zero_()
    trace = t.result
    return trace, {s.index: backprop_plan(trace, s) for s in trace.steps}


def _phase(plan, phase: str):
    return next(f for f in plan.frames if f.phase == phase)


def test_clearing_grad_to_none_says_so(varied):
    trace, plans = varied
    w = trace.find("w").tid
    z = trace.step(0).zeroings[0]
    f = _phase(plans[0], "zero")
    assert f.caption.startswith("The script clears .grad (sets it to None) using p.grad = None: ")
    assert f"w.grad {fmt_value(z.before)} → None." in f.caption
    assert f.cells[w].mark == "zero" and f.cells[w].grad is None and f.current == {w}
    assert not f.alert


def test_zeroing_grad_in_place_says_to_zeros(varied):
    trace, plans = varied
    w = trace.find("w").tid
    z = trace.step(1).zeroings[0]
    f = _phase(plans[1], "zero")
    assert f.caption.startswith("The script clears .grad to zeros using p.grad.zero_(): ")
    assert f"w.grad {fmt_value(z.before)} → {fmt_value(z.after)}" in f.caption
    assert f.cells[w].grad is z.after and np.array_equal(z.after.array, np.zeros(2))


def test_a_grad_write_is_not_called_a_clearing(varied):
    """clip_grad_norm_ scales .grad: a write, marked as one, the card showing the new .grad."""
    trace, plans = varied
    w = trace.find("w").tid
    e = next(e for e in trace.step(2).events if e.kind == "grad_write")
    f = _phase(plans[2], "grad_write")
    assert f.caption.startswith(f"The script changes .grad without clearing it ({e.idiom}): ")
    assert "clears" not in f.caption
    assert f.cells[w].mark == "write" and f.cells[w].grad is e.after
    np.testing.assert_allclose(np.linalg.norm(e.after.array), 0.1, rtol=1e-5)   # clipped to 0.1


def test_an_update_with_an_old_gradient_in_grad_is_an_alert(varied):
    trace, plans = varied
    step = trace.step(3)
    assert [a.accumulation for a in step.accumulations] == ["added"]
    f = _phase(plans[3], "update")
    assert f.alert and "still holds the old gradients too" in f.caption
    assert "downhill" not in f.caption


def test_a_step_after_a_zeroing_that_clears_nothing_warns(varied):
    """The last zeroing was earlier and none follows: the next backward() adds."""
    _, plans = varied
    for k in (2, 3):
        f = _phase(plans[k], "no_zero")
        assert f.alert
        assert f.caption.startswith("This step does not clear .grad (the last zeroing was in step 1)")
        assert {(c.mark, c.note) for c in f.cells.values()} == {("none", "not cleared")}
    assert not any(f.phase == "no_zero" for k in (0, 1) for f in plans[k].frames)


def test_the_done_frame_tells_each_parameters_move_and_the_loss(varied):
    trace, plans = varied
    for k, plan in plans.items():
        step = trace.step(k)
        done = plan.frames[-1]
        (u,) = step.updates
        assert done.phase == "done" and not done.alert
        assert done.caption == (f"Step {k} done. Loss {fmt_num(step.loss)}; w {fmt_value(u.before)} → "
                                f"{fmt_value(u.after)}. The next step runs the same graph again with "
                                "the new values.")
        assert done.cells[u.tensor].value is u.after


def test_the_done_frame_of_a_step_that_changed_nothing():
    st = Frame("intro", "")
    v = Value(0, (1,), "float32", array=np.array([2.0], dtype=np.float32))
    st.cells[1] = ParamCell(value=v)
    step = SimpleNamespace(index=7, loss=None, value=lambda tid: v, name=lambda tid: "w")
    done = _done_frame(st, step)
    assert done.caption == ("Step 7 done. Loss ?; no parameter changed in this step. The next step "
                            "runs the same graph again with the new values.")


def test_the_next_loss_is_the_recorded_loss_of_the_following_step(varied):
    trace, _ = varied
    rows = trace.step_rows()
    assert [_next_loss(trace, trace.step(k)) for k in range(4)] == \
        [pytest.approx(rows[k + 1]["loss"]) for k in range(3)] + [None]


def test_the_next_loss_of_a_step_the_table_does_not_hold_is_none(varied):
    trace, _ = varied
    assert _next_loss(trace, SimpleNamespace(index=99, loss=1.0)) is None


# -- Frame and ParamCell -------------------------------------------------------------------------------
def _v(*xs: float) -> Value:
    return Value(-1, (len(xs),), "float32", array=np.array(xs, dtype=np.float32))


def test_a_cards_copy_keeps_its_value_and_grad_and_drops_what_the_frame_said():
    a, g, b = _v(1.0), _v(2.0), _v(0.5)
    cell = ParamCell(value=a, grad=g, mark="update", note="moved", before=b)
    c = cell.copy()
    assert c is not cell and (c.value, c.grad) == (a, g)
    assert (c.mark, c.note, c.before) == ("", "", None)


def test_a_snapshot_is_a_new_frame_with_the_state_and_nothing_lit():
    st = Frame("backward", "old", "a.py:1", computed={1, 2}, current={2}, grad_edges={(1, 2): _v(3.0)},
               current_edges={(1, 2)}, grads={2: _v(1.0)}, cells={1: ParamCell(_v(4.0), None, "fresh", "n")},
               alert=True, failed={1: "wrong"})
    f = st.snapshot("update", "new caption", "b.py:2", alert=False)
    assert (f.phase, f.caption, f.code, f.alert) == ("update", "new caption", "b.py:2", False)
    assert f.computed == {1, 2} and f.grad_edges == st.grad_edges and f.grads == st.grads
    assert f.current == set() and f.current_edges == set() and f.failed == {}
    assert f.cells[1].value is st.cells[1].value and f.cells[1].mark == ""
    # the snapshot's state is its own: changing it leaves the running state alone
    f.computed.add(9)
    f.grads[9] = _v(0.0)
    f.grad_edges[(9, 9)] = _v(0.0)
    f.cells[1].grad = _v(7.0)
    assert 9 not in st.computed and 9 not in st.grads and (9, 9) not in st.grad_edges
    assert st.cells[1].grad is None


def test_a_new_frame_holds_nothing():
    f = Frame("intro", "hello")
    assert (f.code, f.alert) == ("", False)
    assert f.computed == f.current == f.current_edges == set()
    assert f.grad_edges == f.grads == f.cells == f.failed == {}
    assert Frame("intro", "").computed is not f.computed       # no shared default


# -- the small helpers -----------------------------------------------------------------------------------
def test_code_names_the_file_and_line_and_the_code():
    src = Source("/home/me/project/fit.py", 12, "    loss = f(x)   ", "main")
    assert _code(src) == "fit.py:12   loss = f(x)"
    assert _code(Source("C:\\work\\fit.py", 3, "")) == "fit.py:3"      # no code: the place alone


def test_code_shows_two_distinct_lines_at_most():
    a, b, c = (Source("fit.py", n, f"line{n}()") for n in (1, 2, 3))
    assert _code(a, a, None) == "fit.py:1   line1()"
    assert _code(a, b) == "fit.py:1   line1()    ·    fit.py:2   line2()"
    assert _code(a, b, c) == _code(a, b)
    assert _code() == "" and _code(None) == ""


def test_an_accumulations_note_says_how_grad_was_filled():
    old = _v(0.25, -1.0)
    assert _acc_note(SimpleNamespace(accumulation="fresh", before=None)) == "fresh: .grad was None"
    assert _acc_note(SimpleNamespace(accumulation="zeros", before=_v(0.0))) == "added onto zeros"
    assert _acc_note(SimpleNamespace(accumulation="added", before=old)) == f"ADDED to old {fmt_value(old)}!"


def test_a_negative_or_summarised_value_is_put_in_parentheses():
    neg, pos = _v(-2.0), _v(3.0)
    assert fmt_value(neg).startswith("−") and _paren(neg) == f"({fmt_value(neg)})"
    assert _paren(pos) == fmt_value(pos)
    big = Value(-1, (50,), "float32", array=np.linspace(-1, 2, 50, dtype=np.float32))
    assert fmt_value(big).startswith("mean") and _paren(big) == f"({fmt_value(big)})"
