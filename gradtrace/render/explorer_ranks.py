"""The explorer's ranks panel: a distributed run's ranks side by side, step by step.

For each step the page holds, per rank: its local batch (the inputs its forward saw), its
local gradient of each parameter (where autograd's accumulation ended), the synchronised
``.grad`` DDP's all-reduce left (the same bits on every rank, and the mean of the local
gradients), the bucket that carried it, the step's all-reduce check, and the findings about
ranks, each linked to its step, parameter and rank. ``explorer_ranks.js`` draws it; a page
of one process has none of it.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from ..formatting import number as fmt_number
from ..formatting import shape_times as fmt_shape
from ..tracefile.ranks import RankedRun
from .explorer_data import DEFAULT_BUDGET, FINDING_TITLES, _pick

__all__ = ["ranks_data", "ranks_html", "ranks_js", "RANKS_CSS", "RANK_VALUES", "RANK_FINDINGS", "RANKS_BUDGET"]

#: A tensor is shown element by element in the ranks panel up to this many elements.
RANK_VALUES = 64
#: At most this many of a step's inputs are shown as a rank's local batch.
BATCH_INPUTS = 4
#: Bytes of the panel's per-step data a page holds (beyond it, an even sample of the steps).
RANKS_BUDGET = DEFAULT_BUDGET // 2
#: The findings about the ranks of a run (analysis/distributed.py).
RANK_FINDINGS = ("ranks_diverged", "no_grad_on_rank", "ranks_step_count", "rank_missing")


def _value(v) -> dict[str, Any] | None:
    """A recorded value for the panel: shape, dtype, and its elements (numbers and their
    text) when it is small and was kept, else its statistics as text."""
    if v is None:
        return None
    out: dict[str, Any] = {"shape": fmt_shape(v.shape), "dtype": v.dtype}
    data = v.array
    if data is not None and v.numel <= RANK_VALUES and data.dtype.kind != "c":
        flat = [float(x) for x in data.reshape(-1).tolist()]
        out["values"] = [x if x == x and abs(x) != float("inf") else str(x) for x in flat]
        out["text"] = [fmt_number(x) for x in flat]
    else:
        st = v.stats
        out["stats"] = (f"norm {fmt_number(st.norm)}, mean {fmt_number(st.mean)}, "
                        f"min {fmt_number(st.min)}, max {fmt_number(st.max)}")
    return out


def _array_value(a) -> dict[str, Any] | None:
    """The mean of the local gradients (float64 numpy), as :func:`_value` shows a value."""
    if a is None:
        return None
    flat = [float(x) for x in a.reshape(-1).tolist()]
    out: dict[str, Any] = {"shape": fmt_shape(a.shape), "dtype": "float64"}
    if len(flat) <= RANK_VALUES:
        out["values"] = [x if x == x and abs(x) != float("inf") else str(x) for x in flat]
        out["text"] = [fmt_number(x) for x in flat]
    else:
        out["stats"] = f"norm {fmt_number(float((a * a).sum()) ** 0.5)}"
    return out


def _batch(trace, step) -> list[dict[str, Any]]:
    """The inputs (role ``input``) the step's ops read, first use first."""
    seen: list[int] = []
    for op in step.ops:
        for tid in op.inputs:
            info = step.tensors.get(tid)
            if info is not None and info.role == "input" and tid not in seen:
                seen.append(tid)
    out = []
    for tid in seen[:BATCH_INPUTS]:
        out.append({"name": step.name(tid), "value": _value(step.value(tid))})
    return out


def _step_ranks(run: RankedRun, index: int, checks: dict) -> dict[str, Any]:
    from ..analysis.distributed import rank_gradients  # (numpy and the checks: only for a run of ranks)

    steps = run.step_of_ranks(index)
    grads = rank_gradients(run, index)
    params = []
    for g in grads:
        buckets = {str(r): b.label for r, b in g.bucket.items() if b is not None}
        params.append({
            "name": g.name,
            "local": {str(r): _value(v) for r, v in g.local.items()},
            "synced": {str(r): _value(v) for r, v in g.synced.items()},
            "mean": _array_value(g.mean), "same_bits": g.same_bits, "bucket": buckets,
            "check": checks.get((index, g.name)),
        })
    return {"ranks": [r for r in run.ranks if r in steps],
            "batch": {str(r): _batch(run.traces[r], s) for r, s in steps.items()},
            "loss": {str(r): (None if s.loss is None else fmt_number(s.loss)) for r, s in steps.items()},
            "params": params}


def ranks_data(run: RankedRun, report, held: list[int], budget: int = RANKS_BUDGET) -> dict[str, Any]:
    """The panel's data for the steps the page holds (``held``): all of them when they fit
    in ``budget`` bytes, else the steps the findings point at and an even sample."""
    checks: dict[tuple, dict] = {}
    findings: list[dict[str, Any]] = []
    if report is not None:
        for c in report.checks:
            if c.kind == "allreduce":
                checks[(c.step, c.param)] = {
                    "status": c.status, "detail": c.detail,
                    "rel": None if c.max_rel_err is None else fmt_number(c.max_rel_err)}
        for f in report.findings:
            if f.kind in RANK_FINDINGS:
                findings.append({"kind": f.kind, "title": FINDING_TITLES.get(f.kind, f.kind),
                                 "step": f.step, "param": f.param, "rank": f.rank,
                                 "message": f.message})
    cache: dict[int, tuple[dict, int]] = {}

    def build(i: int) -> tuple[dict, int]:
        if i not in cache:
            d = _step_ranks(run, i, checks)
            cache[i] = (d, len(json.dumps(d, separators=(",", ":"), allow_nan=False)))
        return cache[i]

    must = [f["step"] for f in findings if f["step"] is not None]
    chosen = _pick(list(held), must, lambda i: build(i)[1], budget)
    return {"world_size": run.world_size, "ranks": run.ranks, "missing": list(run.missing),
            "backend": run.first.info.distributed.get("backend"),
            "steps": {str(i): build(i)[0] for i in chosen}, "findings": findings}


def ranks_html(data: dict) -> str:
    """The panel's frame (``explorer_ranks.js`` fills it); "" for a page of one process."""
    ranks = data.get("ranks")
    if not ranks:
        return ""
    e = html.escape
    missing = (f" · <span class='fail'>missing: rank {e(', '.join(map(str, ranks['missing'])))}</span>"
               if ranks["missing"] else "")
    backend = f" · {e(str(ranks['backend']))}" if ranks["backend"] else ""
    return (f"<section class='panel ranks' id='ranks-panel' aria-label='ranks'>"
            f"<h2>The ranks in step <span id='ranks-step'></span> "
            f"<span class='muted'>— {len(ranks['ranks'])} of {ranks['world_size']} ranks{backend}"
            f"{missing}: each rank's batch and local gradient, and the .grad DDP's all-reduce "
            f"left</span></h2><div id='ranks-body'></div>"
            f"<div id='ranks-findings'></div></section>")


def ranks_js() -> str:
    return resources.files(__package__).joinpath("explorer_ranks.js").read_text(encoding="utf-8")


RANKS_CSS = """
.ranks{margin:0 18px 10px}
#ranks-body table{border-collapse:collapse;font-size:12px;margin:4px 0 10px}
#ranks-body th,#ranks-body td{border:1px solid var(--gt-rule);padding:2px 6px;text-align:left;vertical-align:top}
#ranks-body th{background:var(--gt-panel);font-weight:600}
#ranks-body td.v{font-family:var(--gt-mono);white-space:nowrap}
#ranks-body td.v.grad{color:var(--gt-grad)}
#ranks-body tr.hl td,#ranks-body th.hl,#ranks-body td.hl{background:var(--gt-warn-fill)}
#ranks-body .sub{color:var(--gt-muted);font-weight:400;font-size:11px}
#ranks-findings ul{margin:4px 0;padding-left:18px;font-size:13px}
"""

