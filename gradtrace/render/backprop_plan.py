"""The back-propagation explainer's plan: :func:`backprop_plan` walks one recorded step (forward
ops, the backward pass in autograd's execution order, ``.grad`` accumulation, updates,
zeroings, in the order the script did them) and returns a :class:`Plan`: a fixed
:class:`~gradtrace.render.backprop_scene.Scene` and one
:class:`~gradtrace.render.backprop_frames.Frame` per moment, each a complete description of
what is lit, which values and gradients are shown, and a caption in plain words. Pure: no
drawing, so the walk is tested without matplotlib."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import NothingToDrawError, UsageError
from ..formatting import value as fmt_value
from .backprop_backward import _accumulate_summary, _backward_frames
from .backprop_frames import (Frame, ParamCell, _code, _done_frame, _event_frame, _next_loss,
                              _no_zero_frame)
from .backprop_scene import Scene, _expr, _scene

__all__ = ["Plan", "backprop_plan", "pick_step"]


@dataclass
class Plan:
    scene: Scene
    frames: list[Frame]
    step: int
    phases: list[str]        # the phases in the order this step went through them
    title: str
    note: str | None = None


_FWD_WORDS = {
    "add": "adds", "sub": "subtracts", "mul": "multiplies", "div": "divides",
    "pow": "raises to a power", "matmul": "matrix-multiplies", "mm": "matrix-multiplies",
    "mean": "averages", "sum": "sums", "linear": "applies the linear layer",
    "mse_loss": "computes the mean squared error", "t": "transposes", "T": "transposes",
    "mT": "transposes", "transpose": "transposes", "reshape": "reshapes",
    "view": "reshapes", "rsub": "subtracts from a number",
}


def pick_step(trace, spec, failed: list[int] | tuple[int, ...] = ()):
    """The step to explain: a run step number, ``"first"``, ``"last"`` (the last with a
    backward pass), or ``None``: the first of the steps ``failed`` (where a gradient check
    failed) that has a backward pass; else the second step with a backward pass, the first
    in which ``.grad`` may already hold something, so that the accumulation frame shows
    whether the script clears it (the first step when there is only one)."""
    steps = trace.steps
    if len(steps) == 0:
        raise UsageError(f"{trace.path} has no recorded steps (did the script call backward()?)")
    if spec is None and failed:
        for k in failed:
            try:
                chosen = trace.select(k)
            except UsageError:  # a step the file does not hold: the usual pick
                continue
            if chosen.backward is not None:
                return chosen
    if spec is None:
        with_bw = [i for i in range(min(len(steps), 4)) if steps[i].backward is not None]
        if not with_bw:
            rows = [r for r in trace.step_rows() if r["has_backward"]]
            if not rows:
                raise NothingToDrawError(f"{trace.path}: no recorded step has a backward pass, so "
                                         "there is no back-propagation to animate")
            raise UsageError(f"{trace.path}: its first steps have no backward pass; step "
                             f"{rows[0]['index']} is the first that has one (--step "
                             f"{rows[0]['index']})")
        return steps[with_bw[1] if len(with_bw) > 1 else with_bw[0]]
    return trace.select(spec)


def backprop_plan(trace, step, budget: int = 80) -> Plan:
    """The frames that explain ``step`` of ``trace``, at most ``budget`` of them (forward ops
    and backward nodes share frames when there would be more)."""
    if step.backward is None:
        raise NothingToDrawError(f"step {step.index} has no backward pass to explain; pick a "
                                 "step that called backward() (--step N)")
    scene = _scene(step)
    bw = step.backward
    fwd_ops = [o for o in step.ops if o.parent is None and o.outputs
               and o.outputs[0] in scene.nodes and scene.nodes[o.outputs[0]].op == o.index]
    run_nodes = bw.execution_order
    fwd_set = {o.index for o in fwd_ops}
    timeline = [x for x in step.timeline()
                if x.kind not in ("accumulate", "op") or (x.kind == "op" and x.index in fwd_set)]
    per = _per_frame(timeline, len(run_nodes), not step.zeroings, budget)
    note = None
    if per > 1:
        note = (f"{len(fwd_ops)} forward ops and {len(run_nodes)} backward nodes are shown up to "
                f"{per} per frame to keep within the {budget}-frame budget")

    st = Frame("intro", "")
    st.computed.update(t for t, n in scene.nodes.items() if n.op is None)
    first_grad = _grad_before(step)
    for tid in scene.params:
        st.cells[tid] = ParamCell(value=step.value(tid) or _first_value(step, tid),
                                  grad=first_grad.get(tid))
    frames: list[Frame] = []
    phases: list[str] = []

    def phase(p: str):
        if not phases or phases[-1] != p:
            phases.append(p)

    idx = trace.steps.indices
    params = [scene.nodes[t].label for t in scene.params if t in scene.nodes]
    data = [n.label for n in scene.nodes.values() if n.role == "input"]
    intro = (f"Step {step.index} (of steps {idx[0]}–{idx[-1]}). The forward pass will build this "
             f"graph from the leaves — " + (f"data {', '.join(data)} and " if data else "")
             + f"parameters {', '.join(params) or '(none)'}, which require grad — to the loss "
             f"{step.name(scene.loss)}. Each box is a tensor; its grad_fn is the node backward() "
             "will run for it.")
    frames.append(st.snapshot("intro", intro))

    acc_by_tid = {e.tensor: e for e in step.accumulations}
    done_fwd = 0
    i = 0
    while i < len(timeline):
        item = timeline[i]
        if item.kind == "op":
            chunk = [item]
            i += 1
            while len(chunk) < per and i < len(timeline) and timeline[i].kind == "op":
                chunk.append(timeline[i])
                i += 1
            phase("forward")
            outs = [o.outputs[0] for o in chunk]
            st.computed.update(outs)
            done_fwd += len(chunk)
            f = st.snapshot("forward", _forward_caption(chunk, step, done_fwd, len(fwd_ops), scene),
                            _code(*(o.source for o in chunk)))
            f.current.update(outs)
            f.current_edges.update(e for t in outs for e in scene.edges_into(t))
            frames.append(f)
            continue
        if item.kind == "backward":
            phase("backward")
            frames.extend(_backward_frames(st, step, scene, acc_by_tid, per))
            phase("accumulate")
            frames.append(_accumulate_summary(st, step, scene, acc_by_tid))
            i += 1
            continue
        group = [item]
        i += 1
        while i < len(timeline) and timeline[i].kind == item.kind:
            group.append(timeline[i])
            i += 1
        phase(item.kind)
        frames.append(_event_frame(st, step, group, _next_loss(trace, step)))
    if not step.zeroings:
        phase("no_zero")
        frames.append(_no_zero_frame(st, trace, step))
    frames.append(_done_frame(st, step))
    title = f"{_script_name(trace)} · step {step.index}: back-propagation, one step"
    return Plan(scene, frames, step.index, phases, title, note)


def _per_frame(timeline, nodes: int, no_zero: bool, budget: int) -> int:
    """The fewest forward ops (of a run of them) or backward nodes to a frame that keep the
    walk of ``timeline`` within ``budget`` frames; the most there is to share a frame when
    no number does. Counted as the walk makes frames: the intro, a frame per ``per`` ops of
    each run of them, backward()'s start, a frame per ``per`` nodes and the accumulation
    summary, a frame per run of events of one kind, the no-zero frame and the end."""
    runs: list[int] = []
    fixed = 2 + (1 if no_zero else 0)
    passes = 0
    i = 0
    while i < len(timeline):
        j = i + 1
        while j < len(timeline) and timeline[j].kind == timeline[i].kind != "backward":
            j += 1
        kind = timeline[i].kind
        if kind == "op":
            runs.append(j - i)
        elif kind == "backward":
            passes += 1
            fixed += 2
        else:
            fixed += 1
        i = j
    most = max([nodes, *runs, 1])
    for per in range(1, most + 1):
        if fixed + sum(-(-r // per) for r in runs) + passes * -(-nodes // per) <= budget:
            return per
    return most


def _script_name(trace) -> str:
    try:
        script = trace.info.script
    except Exception:  # noqa: BLE001 - a trace without run info still animates
        script = None
    if not script:
        return "trace"
    return str(script).replace("\\", "/").rsplit("/", 1)[-1]


def _first_value(step, tid):
    for e in step.events:
        if e.tensor == tid and e.kind == "update" and e.before is not None:
            return e.before
    return None


def _grad_before(step) -> dict[int, Any]:
    """What each leaf's .grad held when the step began, from the first event that touched it."""
    out: dict[int, Any] = {}
    for e in step.events:
        if e.kind != "update" and e.tensor not in out:
            out[e.tensor] = e.before   # None: .grad was None
    return out


def _forward_caption(chunk, step, upto, total, scene) -> str:
    if len(chunk) > 1:
        lo = upto - len(chunk) + 1
        return (f"Forward {lo}–{upto} of {total}: "
                + "; ".join(f"{step.name(o.outputs[0])} = {_expr(o, step)}" for o in chunk) + ".")
    o = chunk[0]
    out = o.outputs[0]
    v = step.value(out)
    custom = o.is_function
    what = ("a custom autograd.Function, runs its forward()" if custom
            else _FWD_WORDS.get(o.name, f"runs {o.name}"))
    text = f"Forward {upto} of {total}: {o.name} {what}: {step.name(out)} = {_expr(o, step)}"
    if v is not None:
        text += (f" = {fmt_value(v)}" if v.numel <= 3
                 else f", {v.numel} values with {fmt_value(v)}")
    if not o.is_graph:
        text += ". No gradient will flow through it: its input does not require grad"
    elif out == scene.loss:
        text += ". This is the loss"
    else:
        gf = scene.nodes[out].grad_fn
        if gf:
            text += f". PyTorch remembers how: {step.name(out)}.grad_fn is {gf}"
    return text + "."
