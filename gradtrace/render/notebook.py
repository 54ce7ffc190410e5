"""What Jupyter shows of a Trace, a Step, a CheckReport and a Finding (``_repr_html_``), and
``trace.explore()``: the explorer inline.

Every picture in this HTML is a PNG in a ``data:`` URL, sized to the cell's width: it shows
in an untrusted notebook and on GitHub, where SVG and scripts do not. The explorer itself runs
in a sandboxed frame (scripts allowed, nothing else), so it needs a trusted notebook; its
plain-text form says so.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from ..formatting import number, shape as fmt_shape

__all__ = ["trace_html", "step_html", "report_html", "finding_html", "Explorer", "explore",
           "fitted_svg", "notebook_png"]

_STYLE = ("font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:13px;"
          "line-height:1.4;max-width:100%")
_TABLE = "border-collapse:collapse;font-size:12px;margin:4px 0"
_CELL = "border:1px solid {rule};padding:2px 6px;text-align:right"


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _palette():
    from . import palette

    return palette


def _cell(tag: str = "td", left: bool = False) -> str:
    p = _palette()
    style = _CELL.format(rule=p.RULE) + (";text-align:left" if left else "")
    return f"<{tag} style=\"{style}\">"


def _box(inner: str, mood: str | None = None) -> str:
    p = _palette()
    border = p.STATUS[mood][0] if mood in p.STATUS else p.RULE
    return (f"<div style=\"{_STYLE};border-left:4px solid {border};padding:4px 10px;color:{p.TEXT}\">"
            + inner + "</div>")


def fitted_svg(svg: str) -> str:
    """An SVG that shrinks to the cell's width and keeps its shape (it has a viewBox)."""
    at = svg.find("<svg")
    if at < 0:
        return svg
    return svg[:at] + '<svg style="max-width:100%;height:auto"' + svg[at + 4:]


#: A notebook's graph PNG: one pixel per point of the layout (a cell shows it at its width
#: anyway), in a palette of this many colours: a step's HTML in tens of KB, not half a MB.
NOTEBOOK_DPI = 72
NOTEBOOK_COLOURS = 64


def notebook_png(picture) -> bytes:
    """``picture`` (a :class:`~gradtrace.render.graph.GraphPicture`) as a small PNG for a
    notebook's HTML: drawn at :data:`NOTEBOOK_DPI`, then reduced to a palette of
    :data:`NOTEBOOK_COLOURS` colours without dithering (flat fills, lines and text; octree
    keeps the few saturated colours of the legend apart)."""
    import io

    from PIL import Image

    from .graph import render_bytes

    png = render_bytes(picture.model, picture.options, "png", picture.engine, dpi=NOTEBOOK_DPI)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    small = img.quantize(colors=NOTEBOOK_COLOURS, method=Image.Quantize.FASTOCTREE,
                         dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return min(buf.getvalue(), png, key=len)


def _png_img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<img alt=\"{_e(alt)}\" style=\"max-width:100%;height:auto\" "
            f"src=\"data:image/png;base64,{data}\">")


def _steps_table(rows: list[dict], limit: int = 6) -> str:
    shown: list[dict | None] = list(rows) if len(rows) <= 2 * limit else [*rows[:limit], None, *rows[-limit:]]
    head = "".join(f"{_cell('th')}{h}</th>" for h in ("step", "loss", "ops", "nodes", "fresh", "added",
                                                      "zero", "upd"))
    out = [f"<table style=\"{_TABLE}\"><tr>{head}</tr>"]
    for r in shown:
        if r is None:
            out.append(f"<tr>{_cell(left=True)}…</td><td colspan='7' style='color:{_palette().MUTED}'>"
                       f"{len(rows) - 2 * limit} more</td></tr>")
            continue
        vals = (r["index"], "" if r["loss"] is None else number(r["loss"]), r["ops"], r["backward_nodes"],
                r["accumulate_fresh"], r["accumulate_added"], r["zeroings"], r["updates"])
        out.append("<tr>" + "".join(f"{_cell()}{_e(v)}</td>" for v in vals) + "</tr>")
    return "".join(out) + "</table>"


def trace_html(trace) -> str:
    """A Trace: what ran, how it ended, its steps at a glance, and what to call next."""
    info = trace.info
    rows = trace.step_rows()
    status = info.status + ("" if info.exit_code is None else f" (exit code {info.exit_code})")
    params = ", ".join(f"{p.label} {fmt_shape(p.shape)}" for p in trace.params[:8])
    return _box(
        f"<b>gradtrace trace</b> of <code>{_e(info.script or 'a Python API run')}</code> · {_e(status)} · "
        f"{len(rows)} steps recorded of {_e(info.steps_seen or len(rows))}<br>"
        f"<span style='color:{_palette().MUTED}'>parameters: {_e(params) or 'none'} · file "
        f"{_e(trace.path)}</span>{_steps_table(rows)}"
        f"<span style='color:{_palette().MUTED}'><code>t.explore()</code> every step in the explorer · "
        "<code>t.check()</code> the gradient checks · <code>t.steps[k].graph()</code> a step's graph</span>")


def _value_text(v) -> str:
    from ..formatting import value

    return "" if v is None else value(v, max_items=6)


def step_html(step, graph: bool = True) -> str:
    """A Step: its ops, backward pass and events in order, and its graph as a PNG."""
    p = _palette()
    rows = []
    for item in step.timeline():
        src = getattr(item, "source", None)
        where = _e(src.short) if src is not None else ""
        if item.kind == "op":
            if item.parent is not None:
                continue
            outs = ", ".join(step.name(t) for t in item.outputs)
            what = (f"<b>{_e(item.name)}</b>({_e(', '.join(step.name(t) for t in item.inputs))}) → "
                    f"{_e(outs)}" + (f" <span style='color:{p.MUTED}'>{_e(item.grad_fn)}</span>" if item.grad_fn else ""))
        elif item.kind == "backward":
            loss = f", loss {number(item.loss)}" if item.loss is not None else ""
            what = f"<b>backward</b> ({len(item.nodes)} grad_fn nodes{loss})"
        else:
            extra = f" ({item.accumulation})" if item.accumulation else ""
            what = f"<b>{_e(item.kind)}</b> {_e(step.name(item.tensor))}{_e(extra)} <span style='color:{p.MUTED}'>{_e(item.idiom)}</span>"
            if item.after is not None:
                what += f" → {_e(_value_text(item.after))}"
        rows.append(f"<tr>{_cell(left=True)}{what}</td>{_cell(left=True)}{where}</td></tr>")
    if len(rows) > 40:
        rows = rows[:20] + [f"<tr><td colspan='2'>… {len(rows) - 40} more</td></tr>"] + rows[-20:]
    picture = ""
    if graph and step.backward is not None:
        try:
            from .graph import graph_of_step

            picture = "<br>" + _png_img(notebook_png(graph_of_step(step, view="both")),
                                        f"graph of step {step.index}")
        except Exception as e:  # noqa: BLE001 - a repr never raises; the reason is shown instead
            picture = f"<p style='color:{p.MUTED}'>(graph not drawn: {_e(e)})</p>"
    loss = f" · loss {number(step.loss)}" if step.loss is not None else ""
    return _box(f"<b>step {step.index}</b>{_e(loss)} · {len(step.ops)} ops · "
                f"{'backward ' + str(len(step.backward.nodes)) + ' nodes' if step.backward else 'no backward'} · "
                f"{len(step.events)} events<table style=\"{_TABLE}\">{''.join(rows)}</table>{picture}")


def finding_html(f) -> str:
    from .explorer_data import FINDING_TITLES

    serious = f.kind in ("forgot_zero_grad", "non_finite", "lr_unstable")
    where = " · ".join(_e(x) for x in (f"step {f.step}" if f.step is not None else None,
                                      f.param, f.op, f.source) if x)
    return _box(f"<b>{_e(FINDING_TITLES.get(f.kind, f.kind))}</b> <code>{_e(f.kind)}</code><br>"
                f"{_e(f.message)}<br><span style='color:{_palette().MUTED}'>{where}</span>",
                "bad" if serious else "warn")


def report_html(report) -> str:
    """A CheckReport: the verdict in plain words, the findings, and the checks by parameter."""
    from .explorer_data import plain_verdict

    v = plain_verdict(report)
    groups: dict[tuple, list] = {}
    for c in report.checks:
        groups.setdefault((c.kind, c.param), []).append(c)
    table = ""
    if groups:
        head = "".join(f"{_cell('th')}{h}</th>" for h in ("check", "param", "passed", "failed", "n/a",
                                                          "worst rel err"))
        body = []
        for (kind, param), cs in groups.items():
            rel = [c.max_rel_err for c in cs if c.max_rel_err is not None]
            n_fail = sum(c.failed for c in cs)
            body.append("<tr>" + "".join(f"{_cell()}{_e(x)}</td>" for x in (
                kind, param, sum(c.passed for c in cs), n_fail, len(cs) - n_fail - sum(c.passed for c in cs),
                number(max(rel), 3) if rel else "")) + "</tr>")
        table = f"<table style=\"{_TABLE}\"><tr>{head}</tr>{''.join(body)}</table>"
    findings = "".join(finding_html(f) for f in report.findings)
    return _box(f"<b>{_e(v['headline'])}</b><br><span style='color:{_palette().MUTED}'>{_e(v['detail'])}</span>"
                f"{table}", v["mood"]) + findings


class Explorer:
    """``trace.explore()``: the explorer page, shown inline in Jupyter (a sandboxed frame that
    fills the cell's width) or written with :meth:`save`."""

    def __init__(self, trace, report=None, *, budget: int | None = None, check: bool = True):
        from .explorer import page_of
        from .explorer_data import DEFAULT_BUDGET

        if report is None and check:
            from ..analysis.check import check_trace

            report = check_trace(trace)
        self.trace = trace
        self.html = page_of(trace, report, budget=DEFAULT_BUDGET if budget is None else budget)

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        return (f"<iframe title=\"gradtrace explorer\" sandbox=\"allow-scripts\" srcdoc=\"{_e(self.html)}\" "
                f"style=\"width:100%;height:min(92vh,1000px);border:1px solid {_palette().RULE}\"></iframe>")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self._repr_html_(), "text/plain": repr(self)}

    def __repr__(self) -> str:
        return (f"<gradtrace explorer of {self.trace.path}: {len(self.html) // 1024} KB; shown inline in a "
                "trusted notebook, or .save('explorer.html') and open it>")


def explore(trace, **options) -> Explorer:
    return Explorer(trace, **options)
