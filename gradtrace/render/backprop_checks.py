"""Failed gradient checks on the back-propagation explainer's frames: the boxes a failed check
concerns (the parameter whose gradient is wrong, the custom Function the check blames) are
marked, and the frames that show them say "check failed: ..." instead of narrating the
backward as if it were right. Pure: no drawing.

The checks come in from the caller (the after-run pipeline computes them once); render
never runs them: any object with ``failed`` (a list of results with ``kind``, ``step``,
``param``, ``tid``, ``max_rel_err``, ``tolerance`` and ``blamed``) will do.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["failed_steps", "mark_failures"]

#: The phases whose frames show a gradient arriving at a box, or the step's end.
_CONCERNED = ("backward", "accumulate", "done")


def _failed(checks: Any) -> list:
    return [c for c in (getattr(checks, "failed", None) or []) if getattr(c, "step", None) is not None]


def failed_steps(checks: Any) -> list[int]:
    """The steps with a failed gradient check, in order."""
    return sorted({c.step for c in _failed(checks)})


def _number(x: float | None) -> str:
    return "?" if x is None else f"{x:.2g}"


def mark_failures(plan, checks: Any) -> int:
    """Mark ``plan``'s frames with the checks that failed at its step; how many failed."""
    failed = [c for c in _failed(checks) if c.step == plan.step]
    if not failed:
        return 0
    scene = plan.scene
    words: dict[int, str] = {}
    for c in failed:
        if c.tid in scene.nodes:
            words[c.tid] = (f"check failed: ∂loss/∂{c.param} is not what the finite differences "
                            f"give ({c.kind} check, max rel err {_number(c.max_rel_err)}, "
                            f"tolerance {_number(c.tolerance)})")
    blamed = {op for c in failed for op in (getattr(c, "blamed", ()) or ())}
    names = ", ".join(dict.fromkeys(str(c.param) for c in failed if c.param))
    for tid, n in scene.nodes.items():
        if n.op is not None and n.op in blamed:
            words[tid] = (f"check failed: the numeric check blames this Function's backward "
                          f"({n.grad_fn or n.title}) for the wrong gradient of {names}")
    summary = (f"check failed at this step: the gradient of {names} is wrong"
               + (" (see gradtrace check)" if names else ""))
    for frame in plan.frames:
        if frame.phase not in _CONCERNED:
            continue
        # a parameter when its gradient arrives; a Function when its own backward runs
        here = {t: w for t, w in words.items()
                if t in (_lit(frame) if scene.nodes[t].op is None else frame.current)}
        if frame.phase == "done":
            here = dict(words)
        if not here:
            continue
        frame.failed = here
        frame.alert = True
        said = next(iter(here.values())) if frame.phase != "done" else summary
        frame.caption = f"{said}. {frame.caption}"
    return len(failed)


def _lit(frame) -> Iterable[int]:
    """The boxes a frame is about: those lit, and both ends of its lit edges."""
    out = set(frame.current)
    for a, b in frame.current_edges:
        out.update((a, b))
    return out
