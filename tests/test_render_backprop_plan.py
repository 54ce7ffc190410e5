"""render/backprop_plan.py: the step explained (pick_step) and the walk through it (backprop_plan)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import gradtrace
from gradtrace.errors import NothingToDrawError, RenderError, UsageError
from gradtrace.formatting import value as fmt_value
from gradtrace.render.animate import animation_of_trace
from gradtrace.render.backprop_plan import Plan, _script_name, backprop_plan, pick_step

from test_render_animate import zeroing  # noqa: F401 (a fixture: 12 steps that zero .grad)
from test_render_backprop_frames import varied  # noqa: F401 (a fixture: 4 steps, every .grad event)


def test_backprop_frames_follow_the_step(zeroing):
    step = zeroing.steps[1]
    plan = backprop_plan(zeroing, step)
    ops = [o for o in step.ops if o.is_graph]
    nodes = step.backward.execution_order
    # intro + forward ops + one zeroing frame + backward start + one per node run
    # + the accumulation summary + one update frame + done
    assert len(plan.frames) == 1 + len(ops) + 1 + 1 + len(nodes) + 1 + 1 + 1
    assert plan.phases == ["forward", "zero", "backward", "accumulate", "update"]
    assert plan.frames[1].caption.startswith("Forward 1 of 5: mul")
    # forward values appear in order; the loss box is lit on the last forward frame
    assert plan.frames[-1].computed >= {o.outputs[0] for o in ops}
    loss_frame = next(f for f in plan.frames if "starts at the loss" in f.caption)
    assert plan.scene.loss in loss_frame.current
    assert float(loss_frame.grads[plan.scene.loss].item()) == 1.0
    # backward frames light the grad_fn nodes in autograd's execution order
    bw = [f for f in plan.frames if f.phase == "backward"][1:]
    names = [f.caption.split(": ", 1)[1].split(" ")[0].rstrip(",") for f in bw]
    assert names == [n.name for n in nodes]
    # every gradient edge of the graph carries its gradient after the backward pass
    acc = next(f for f in plan.frames if f.phase == "accumulate")
    grad_edges = [e for e in plan.scene.edges if not plan.scene.nodes[e[0]].role == "input"]
    assert set(grad_edges) <= set(acc.grad_edges)


def test_backprop_frame_budget_groups_ops(zeroing):
    anim = animation_of_trace(zeroing, kind="backprop", frames=10)
    assert len(anim) <= 10
    assert "per frame" in anim.note


def test_pick_step(zeroing):
    assert pick_step(zeroing, None).index == 1
    assert pick_step(zeroing, "last").index == 11
    assert pick_step(zeroing, "3").index == 3
    with pytest.raises(UsageError, match="not recorded"):
        pick_step(zeroing, 99)
    with pytest.raises(UsageError, match="step number"):
        pick_step(zeroing, "middle")


def test_a_step_without_backward_is_refused():
    with gradtrace.trace() as t:
        w = torch.ones(2, requires_grad=True)
        (w * 2).sum()
    with pytest.raises(RenderError, match="no backward pass"):
        animation_of_trace(t.result, kind="backprop", step=0)


# -- pick_step, on a stand-in trace (its own logic, not the reader's) --------------------------------
class _Trace:
    """What pick_step reads: ``steps``, ``select`` and ``path``; step k has a backward pass
    when k is in ``with_backward``."""

    path = "stand-in.gtrace"

    def __init__(self, n: int, with_backward=()):
        self.steps = [SimpleNamespace(index=k, backward=object() if k in with_backward else None)
                      for k in range(n)]

    def step_rows(self):
        return [{"index": s.index, "has_backward": int(s.backward is not None)} for s in self.steps]

    def select(self, spec):
        k = int(spec)
        if not 0 <= k < len(self.steps):
            raise UsageError(f"step {k} was not recorded")
        return self.steps[k]


def test_pick_step_refuses_a_trace_without_steps():
    with pytest.raises(UsageError, match=r"^stand-in.gtrace has no recorded steps \(did the script "
                                         r"call backward\(\)\?\)$"):
        pick_step(_Trace(0), None)


def test_pick_step_takes_the_second_step_with_a_backward_pass():
    assert pick_step(_Trace(6, with_backward={0, 2, 3}), None).index == 2
    assert pick_step(_Trace(6, with_backward={1, 3}), None).index == 3


def test_pick_step_takes_the_only_step_with_a_backward_pass():
    assert pick_step(_Trace(1, with_backward={0}), None).index == 0
    assert pick_step(_Trace(5, with_backward={2}), None).index == 2


def test_pick_step_looks_at_the_first_four_steps_only():
    """A step with backward() after four without is not taken: the user is told which is."""
    with pytest.raises(UsageError, match=r"its first steps have no backward pass; step 4 is the "
                                         r"first that has one \(--step 4\)$"):
        pick_step(_Trace(8, with_backward={4, 5}), None)


def test_pick_step_of_a_run_without_any_backward_pass_says_there_is_none():
    """It said 'pick one with --step N', and there was no such N."""
    from gradtrace.errors import NothingToDrawError

    with pytest.raises(NothingToDrawError, match=r"no recorded step has a backward pass, so there "
                                                 r"is no back-propagation to animate$"):
        pick_step(_Trace(3), None)


def test_pick_step_prefers_the_first_failed_step_with_a_backward_pass():
    t = _Trace(8, with_backward={0, 1, 5, 6})
    assert pick_step(t, None, failed=[6, 5]).index == 6
    assert pick_step(t, None, failed=[3, 5]).index == 5      # 3 has no backward pass
    assert pick_step(t, None, failed=[42, 6]).index == 6     # 42 is not in the file
    assert pick_step(t, None, failed=[42, 3]).index == 1     # none usable: the usual pick


def test_a_step_asked_for_wins_over_the_failed_ones():
    t = _Trace(8, with_backward={0, 1, 5, 6})
    assert pick_step(t, 0, failed=[5]).index == 0
    assert pick_step(t, "3", failed=[5]).index == 3          # even one without backward


def test_pick_step_of_a_recorded_run_with_one_step():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradtrace.trace() as t:
        (w * w).sum().backward()
    assert len(t.result.steps) == 1 and pick_step(t.result, None).index == 0


# -- the plan ------------------------------------------------------------------------------------------
def test_a_step_without_backward_raises_nothing_to_draw():
    with gradtrace.trace() as t:
        w = torch.ones(2, requires_grad=True)
        (w * 2).sum()
    step = t.result.steps[0]
    with pytest.raises(NothingToDrawError) as e:
        backprop_plan(t.result, step)
    assert str(e.value) == ("step 0 has no backward pass to explain; pick a step that called "
                            "backward() (--step N)")
    assert isinstance(e.value, UsageError) and isinstance(e.value, RenderError)


def test_a_plan_is_the_steps_scene_frames_and_phases(varied):
    trace, plans = varied
    for k, plan in plans.items():
        assert isinstance(plan, Plan) and plan.step == k and plan.note is None
        assert plan.frames[0].phase == "intro" and plan.frames[-1].phase == "done"
        assert plan.title == f"trace · step {k}: back-propagation, one step"


def test_the_phases_are_the_frames_phases_in_order(varied):
    """``phases``: each phase the frames go through, once per stretch of frames in it."""
    _, plans = varied
    for plan in plans.values():
        seen: list[str] = []
        for f in plan.frames[1:-1]:
            if not seen or seen[-1] != f.phase:
                seen.append(f.phase)
        assert plan.phases == seen
    assert plans[0].phases == ["forward", "backward", "accumulate", "update", "zero"]
    assert plans[2].phases == ["forward", "backward", "accumulate", "grad_write", "update", "no_zero"]


def test_the_intro_names_the_leaves_the_loss_and_the_steps_recorded(varied):
    trace, plans = varied
    intro = plans[1].frames[0]
    assert intro.caption.startswith("Step 1 (of steps 0–3). The forward pass will build this graph "
                                    "from the leaves — data x, y and parameters w, which require "
                                    "grad — to the loss ")
    # before the forward pass only the leaves are known, and nothing is lit
    scene = plans[1].scene
    assert intro.computed == {t for t, n in scene.nodes.items() if n.op is None}
    assert intro.current == set() and intro.grads == {} and not intro.alert


def test_the_intro_cards_hold_what_grad_held_when_the_step_began(varied):
    trace, plans = varied
    w = trace.find("w").tid
    for k, plan in plans.items():
        step = trace.step(k)
        cell = plan.frames[0].cells[w]
        assert cell.value is step.value(w)
        (acc,) = step.accumulations
        assert cell.grad is acc.before              # None in steps 0 and 1 (.grad was None)
    assert plans[0].frames[0].cells[w].grad is None and plans[3].frames[0].cells[w].grad is not None


def test_forward_captions_say_what_each_op_computed(varied):
    trace, plans = varied
    step = trace.step(0)
    forward = [f for f in plans[0].frames if f.phase == "forward"]
    ops = [o for o in step.ops if o.is_graph]
    assert len(forward) == len(ops) == 4
    mul = ops[0]
    out = mul.outputs[0]
    assert forward[0].caption == (f"Forward 1 of 4: mul multiplies: {step.name(out)} = x × w = "
                                  f"{fmt_value(step.value(out))}. PyTorch remembers how: "
                                  f"{step.name(out)}.grad_fn is MulBackward0.")
    assert forward[-1].caption.endswith(". This is the loss.")
    for f, o in zip(forward, ops):
        assert f.current == {o.outputs[0]} and o.outputs[0] in f.computed
        assert f.code.startswith("test_render_backprop_frames.py:")


def test_a_forward_op_no_gradient_flows_through_says_so():
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    w = torch.tensor([0.5, 0.5, 0.5, 0.5], requires_grad=True)
    with gradtrace.trace() as t:
        (x.reshape(4) * w).sum().backward()
    step = t.result.steps[0]
    plan = backprop_plan(t.result, step)
    first = next(f for f in plan.frames if f.phase == "forward")
    reshape = next(o for o in step.ops if o.name == "reshape")
    v = step.value(reshape.outputs[0])
    assert first.caption.startswith("Forward 1 of 3: reshape reshapes: ")
    # four values: their count and summary rather than the numbers themselves
    assert f", 4 values with {fmt_value(v)}" in first.caption
    assert first.caption.endswith(". No gradient will flow through it: its input does not require grad.")


def test_within_the_budget_every_op_and_node_has_its_own_frame(varied):
    trace, plans = varied
    step = trace.step(1)
    plan = backprop_plan(trace, step, budget=80)
    assert plan.note is None
    assert len([f for f in plan.frames if f.phase == "forward"]) == len([o for o in step.ops if o.is_graph])
    assert len([f for f in plan.frames if f.phase == "backward"]) == 1 + len(step.backward.execution_order)


def _frames_at(plan_at_one, per: int) -> int:
    """The frames a plan makes with ``per`` ops or nodes to a frame, from its plan with one
    to a frame: the frames of no op and no node, and the runs of forward ops and the
    backward nodes cut into pieces of ``per``."""
    frames = plan_at_one.frames
    runs, k = [], 0
    while k < len(frames):
        j = k
        while j < len(frames) and frames[j].phase == "forward":
            j += 1
        if j > k:
            runs.append(j - k)
        k = j + 1
    nodes = len([f for f in frames if f.phase == "backward"]) - 1      # less backward()'s start
    fixed = len(frames) - sum(runs) - nodes
    return fixed + sum(-(-r // per) for r in runs) + -(-nodes // per)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("budget", [9, 10, 11, 12, 13, 14])
def test_over_the_budget_ops_and_nodes_share_frames(varied, k, budget):
    """At most ``budget`` frames, with as few ops or nodes to a frame as that allows."""
    trace, plans = varied
    step = trace.step(k)
    one = plans[k]
    assert one.note is None and len(one.frames) > budget
    plan = backprop_plan(trace, step, budget=budget)
    per = next(p for p in range(1, 10) if _frames_at(one, p) <= budget)
    assert per > 1
    n_fwd = len([o for o in step.ops if o.is_graph])
    n_bw = len(step.backward.execution_order)
    assert plan.note == (f"{n_fwd} forward ops and {n_bw} backward nodes are shown up to {per} per "
                         f"frame to keep within the {budget}-frame budget")
    assert len(plan.frames) == _frames_at(one, per) <= budget
    forward = [f for f in plan.frames if f.phase == "forward"]
    assert forward[0].caption.startswith(f"Forward 1–{min(per, n_fwd)} of {n_fwd}: ")
    # the same frames otherwise: the grouping changes how many, not what is said
    assert plan.phases == one.phases and plan.frames[-1].caption == one.frames[-1].caption


def test_a_budget_below_the_frames_that_never_share_puts_each_run_in_one_frame(varied):
    """The intro, backward()'s start, the summary, the events and the end always have their
    own frames: below that, every run of ops and the whole backward pass get one frame each."""
    trace, plans = varied
    step = trace.step(1)
    plan = backprop_plan(trace, step, budget=2)
    n_fwd = len([o for o in step.ops if o.is_graph])
    n_bw = len(step.backward.execution_order)
    assert len([f for f in plan.frames if f.phase == "forward"]) == 1
    assert len([f for f in plan.frames if f.phase == "backward"]) == 2      # start, every node
    assert len(plan.frames) == _frames_at(plans[1], max(n_fwd, n_bw))
    assert f"up to {max(n_fwd, n_bw)} per frame to keep within the 2-frame budget" in plan.note


def test_the_script_name_is_the_files_base_name():
    def trace(script):
        return SimpleNamespace(info=SimpleNamespace(script=script))

    assert _script_name(trace("/home/me/demos/linreg.py")) == "linreg.py"
    assert _script_name(trace("C:\\Users\\me\\fit.py")) == "fit.py"
    assert _script_name(trace(None)) == "trace" and _script_name(trace("")) == "trace"


def test_a_trace_without_run_info_is_named_trace():
    class NoInfo:
        @property
        def info(self):
            raise KeyError("info")

    assert _script_name(NoInfo()) == "trace"

