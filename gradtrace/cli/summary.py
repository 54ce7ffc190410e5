"""`gradtrace summary TRACE`: a per-step table of what autograd did."""

from __future__ import annotations

import json

import click

from .common import load_trace, trace_argument

COLUMNS = ("index", "ops", "backward_nodes", "accumulate_fresh", "accumulate_added", "zeroings",
           "updates", "loss")
TOTALS = ("ops", "backward_nodes", "accumulate_fresh", "accumulate_added", "zeroings", "updates")


def summarize(trace) -> dict:
    """The summary document: {"steps": [...], "totals": {...}, "run": {...}}."""
    steps = [{k: row[k] for k in COLUMNS} for row in trace.step_rows()]
    totals = {k: sum(s[k] for s in steps) for k in TOTALS}
    totals["steps"] = len(steps)
    totals["backward_passes"] = sum(1 for r in trace.step_rows() if r["has_backward"])
    info = trace.info
    run = {"script": info.script, "status": info.status, "exit_code": info.exit_code,
           "torch_version": info.torch_version, "format_version": info.format_version}
    doc = {"steps": steps, "totals": totals, "run": run}
    if trace.scalar_steps() > len(steps):
        import numpy as np  # only for a run with steps not recorded in full

        sc = trace.scalars()
        # Steps not recorded in full: what every step kept (the table above has the full ones)
        counts = sc.counts()
        finite = sc.loss[~np.isnan(sc.loss)]
        doc["scalars"] = {"steps": len(sc), "full": int(sc.full.sum()),
                          "loss_first": float(finite[0]) if len(finite) else None,
                          "loss_last": float(finite[-1]) if len(finite) else None,
                          "accumulate_fresh": int(counts["fresh"].sum()),
                          "accumulate_added": int(counts["added"].sum()),
                          "accumulate_on_zeros": int(counts["zeros"].sum())}
    return doc


@click.command()
@trace_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option("--limit", type=int, default=50, show_default=True,
              help="Table rows to show (first and last steps); 0 shows all. Not for --json.")
def summary(trace_path, as_json, limit):
    """Per-step table: ops, backward nodes, accumulations (fresh/added), zeroings, updates, loss.

    TRACE may be a distributed run's folder (or one rank's file): a table per rank."""
    from ..tracefile.ranks import RankedRun

    trace = load_trace(trace_path)
    if isinstance(trace, RankedRun):
        docs = {r: summarize(t) for r, t in trace.traces.items()}
        if as_json:
            click.echo(json.dumps({"world_size": trace.world_size, "missing": list(trace.missing),
                                   "ranks": {str(r): d for r, d in docs.items()}}, indent=2))
            return
        missing = f"; no trace of rank {', '.join(map(str, trace.missing))}" if trace.missing else ""
        click.echo(f"{trace.path}: a run of {trace.world_size} ranks{missing}")
        for r, t in trace.traces.items():
            click.echo("")
            _table(f"rank {r}: {t.path}", docs[r], limit)
        return
    doc = summarize(trace)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    _table(trace.path, doc, limit)


def _table(title: str, doc: dict, limit: int) -> None:
    run = doc["run"]
    whole = doc.get("scalars")
    recorded = (f"{whole['steps']} steps, {whole['full']} of them recorded in full (below)"
                if whole else f"{doc['totals']['steps']} steps recorded")
    click.echo(f"{title}: {run['script'] or 'python API'} ({run['status']}), {recorded}")
    if whole and whole["loss_first"] is not None:
        click.echo(f"every step: loss {whole['loss_first']:.6g} -> {whole['loss_last']:.6g}; "
                   f"accumulations {whole['accumulate_fresh']} fresh, {whole['accumulate_on_zeros']} "
                   f"onto zeros, {whole['accumulate_added']} added onto an old gradient")
    head = f"{'step':>6} {'ops':>5} {'nodes':>5} {'fresh':>5} {'added':>5} {'zero':>5} {'upd':>5}  loss"
    click.echo(head)
    rows = doc["steps"]
    shown = rows if not limit or len(rows) <= limit else rows[: limit // 2] + [None] + rows[-(limit // 2):]
    for r in shown:
        if r is None:
            click.echo(f"{'...':>6}")
            continue
        loss = "" if r["loss"] is None else f"{r['loss']:.6g}"
        click.echo(f"{r['index']:>6} {r['ops']:>5} {r['backward_nodes']:>5} {r['accumulate_fresh']:>5} "
                   f"{r['accumulate_added']:>5} {r['zeroings']:>5} {r['updates']:>5}  {loss}")
    t = doc["totals"]
    click.echo(f"{'total':>6} {t['ops']:>5} {t['backward_nodes']:>5} {t['accumulate_fresh']:>5} "
               f"{t['accumulate_added']:>5} {t['zeroings']:>5} {t['updates']:>5}")
