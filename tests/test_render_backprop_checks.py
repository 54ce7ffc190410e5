"""A failed gradient check on the backprop animation's frames (render/backprop_checks.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gradtrace.analysis.check import check_trace
from gradtrace.render.animate import animation_of_trace
from gradtrace.render.backprop import backprop_plan, pick_step
from gradtrace.render.backprop_checks import failed_steps, mark_failures


@dataclass
class _Check:
    kind: str
    step: int
    param: str
    tid: int
    max_rel_err: float = 0.5
    tolerance: float = 1e-5
    blamed: tuple = ()


@dataclass
class _Report:
    failed: list


@pytest.fixture(scope="module")
def wrong(demo_trace):
    """demos/custom_function.py: a Square Function whose backward forgets the 2."""
    trace = demo_trace("custom_function")
    return trace, check_trace(trace)


def test_the_check_blames_the_function(wrong):
    trace, report = wrong
    assert report.failed
    square = [o.index for s in trace.steps[:1] for o in s.ops if o.is_function]
    assert all(c.blamed for c in report.failed)
    assert report.failed[0].blamed == tuple(square)


def test_failed_frames_say_so_and_mark_the_boxes(wrong):
    trace, report = wrong
    step = pick_step(trace, None, failed=failed_steps(report))
    assert step.index == report.failed[0].step           # the failed step is the one shown
    plan = backprop_plan(trace, step, budget=80)
    assert mark_failures(plan, report) == len([c for c in report.failed if c.step == step.index])
    scene = plan.scene
    square = next(t for t, n in scene.nodes.items() if n.title == "Square")
    w = next(t for t, n in scene.nodes.items() if n.label == "w")
    marked = [f for f in plan.frames if f.failed]
    assert marked and all(f.alert and f.caption.startswith("check failed") for f in marked)
    # the Function is marked in the frame of its own backward, the parameter when its gradient arrives
    own = [f for f in plan.frames if f.phase == "backward" and square in f.current]
    assert own and all(square in f.failed for f in own)
    assert "SquareBackward" in own[0].caption and "blames this Function" in own[0].caption
    assert any(w in f.failed and "∂loss/∂w" in f.failed[w] for f in plan.frames if f.phase != "done")
    # frames before the backward pass narrate as usual
    assert not any(f.failed for f in plan.frames if f.phase in ("intro", "forward"))
    assert plan.frames[-1].failed and "check failed at this step" in plan.frames[-1].caption


def test_no_failed_check_changes_nothing(demo_trace):
    trace = demo_trace("linreg")
    step = pick_step(trace, None)
    plan = backprop_plan(trace, step, budget=80)
    captions = [f.caption for f in plan.frames]
    assert mark_failures(plan, check_trace(trace)) == 0
    assert mark_failures(plan, None) == 0
    assert [f.caption for f in plan.frames] == captions and not any(f.failed for f in plan.frames)


def test_a_check_of_another_step_marks_nothing_here(demo_trace):
    trace = demo_trace("linreg")
    step = pick_step(trace, None)
    plan = backprop_plan(trace, step, budget=80)
    w = next(t for t, n in plan.scene.nodes.items() if n.label == "w")
    assert mark_failures(plan, _Report([_Check("numeric", step.index + 5, "w", w)])) == 0
    assert mark_failures(plan, _Report([_Check("numeric", step.index, "w", w)])) == 1
    assert any(w in f.failed for f in plan.frames)


def test_the_animation_draws_the_mark(wrong):
    trace, report = wrong
    anim = animation_of_trace(trace, kind="backprop", checks=report)
    assert anim.renderer.checks_failed > 0
    marked = [i for i, f in enumerate(anim.renderer.plan.frames) if f.failed]
    assert any(c.startswith("check failed") for c in anim.captions)
    img = anim.frame(marked[0], dpi=20)
    plain = animation_of_trace(trace, kind="backprop", step=anim.renderer.plan.step).frame(marked[0], dpi=20)
    assert img.tobytes() != plain.tobytes()
    # the mark is drawn in the box graph.svg's layout gives the tensor whose check failed
    r = anim.renderer
    boxes = [r.plan.scene.picture.nodes[r.plan.scene.box_of[t]] for t in r.plan.frames[marked[0]].failed]
    marks = [t.get_position() for _, t in r.fitted if t.get_text() == "✗ check failed"]
    assert marks and all(any(b["x"] <= x <= b["x"] + b["w"] and b["y"] <= y <= b["y"] + b["h"]
                             for b in boxes) for x, y in marks)
