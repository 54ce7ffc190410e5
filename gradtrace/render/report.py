"""The HTML report: one self-contained page (no network) with everything gradtrace knows of a run."""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import GradtraceError, RenderError, TraceFileError
from ..formatting import table_number
from ..version import __version__
from ..tracefile.outputs import Outputs, outputs_of
from . import palette
from .palette import css_variables

__all__ = ["build_report", "write_report", "report_html"]

# Every colour is one of the palette's CSS variables (render/palette.py, css_variables()).
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:var(--gt-ink);background:var(--gt-panel)}
header{background:var(--gt-ink);color:var(--gt-background);padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:var(--gt-dim)}
main{max-width:1180px;margin:0 auto;padding:8px 28px 40px}
h2{margin-top:34px;border-bottom:2px solid var(--gt-rule);padding-bottom:6px;font-size:19px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid var(--gt-rule);padding:4px 8px;text-align:right}
th{background:var(--gt-panel)} td.l,th.l{text-align:left} td.l{max-width:560px}
.pass{color:var(--gt-ok);font-weight:600}.fail{color:var(--gt-bad);font-weight:600}.na{color:var(--gt-na)}
.verdict{font-size:17px;padding:10px 14px;border-radius:6px;display:inline-block;margin:6px 0}
.ok{background:var(--gt-ok-fill)}.bad{background:var(--gt-bad-fill)}
.finding{background:var(--gt-background);border-left:4px solid var(--gt-bad);padding:8px 12px;margin:8px 0}
.finding.note{border-left-color:var(--gt-warn)}.warn{background:var(--gt-warn-fill)}
.finding code,td code{font-size:12px;background:var(--gt-na-fill);padding:1px 4px}
.muted{color:var(--gt-muted);font-size:13px}
iframe.graph{width:100%;height:480px;border:1px solid var(--gt-rule);background:var(--gt-background)}
img.anim{max-width:100%;border:1px solid var(--gt-rule);background:var(--gt-background)}
.row{display:flex;gap:18px;flex-wrap:wrap}.row>div{flex:1 1 520px}
"""


#: Findings that mean the run went wrong (the rest are notes worth a look).
_SERIOUS = {"forgot_zero_grad", "non_finite", "lr_unstable"}


def _page_for_svg(svg: str) -> str:
    """A tiny HTML page around an SVG, for a sandboxed frame (no XML prolog in HTML)."""
    start = svg.find("<svg")
    body = svg[start:] if start >= 0 else svg
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{margin:0}"
            "svg{max-width:100%;height:auto}</style></head><body>" + body + "</body></html>")


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _svg_of(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()


def _img_data(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _check_doc(check_result) -> dict | None:
    if check_result is None:
        return None
    for attr in ("to_dict", "as_dict", "to_json"):
        fn = getattr(check_result, attr, None)
        if fn is not None:
            doc = fn()
            return json.loads(doc) if isinstance(doc, str) else doc
    if isinstance(check_result, dict):
        return check_result
    return None


def _loss_and_timeline(trace) -> tuple[str | None, str | None]:
    """Inline SVG of the loss curve and of the accumulate/update/zero timeline."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = trace.step_rows()
    steps = [r["index"] for r in rows if r["loss"] is not None]
    losses = [r["loss"] for r in rows if r["loss"] is not None]
    loss_svg = None
    if losses:
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        ax.plot(steps, losses, color=palette.SERIES[0], lw=1.4)
        positive = all(v > 0 for v in losses if math.isfinite(v))
        if positive and max(losses) / max(min(losses), 1e-300) > 100:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (backward root)")
        ax.grid(alpha=0.3)
        loss_svg = _svg_of(fig)
        plt.close(fig)
    timeline_svg = None
    if rows:
        fig, ax = plt.subplots(figsize=(9.6, 2.3))
        series = [("zeroings", "zero", palette.EVENT["zero"][0]),
                  ("updates", "update", palette.EVENT["update"][0]),
                  ("onto_zeros", "accumulate (onto zeros)", palette.EVENT["zeros"][0]),
                  ("accumulate_on_top", "accumulate (on top!)", palette.EVENT["added"][0]),
                  ("accumulate_fresh", "accumulate (fresh)", palette.OKABE_ITO["sky"])]
        for r in rows:
            r["onto_zeros"] = r["accumulate_added"] - r["accumulate_on_top"]
        for y, (key, label, color) in enumerate(series):
            xs = [r["index"] for r in rows if r[key]]
            ax.scatter(xs, [y] * len(xs), s=10 if len(rows) < 400 else 3, color=color, marker="|" if len(rows) > 60 else "o")
        ax.set_yticks(range(len(series)), [s[1] for s in series])
        ax.set_xlabel("step")
        ax.set_ylim(-0.6, len(series) - 0.4)
        ax.grid(axis="x", alpha=0.3)
        timeline_svg = _svg_of(fig)
        plt.close(fig)
    return loss_svg, timeline_svg


def report_html(trace, *, check_result=None, graphs: dict[str, str] | None = None,
                animations: dict[str, Path] | None = None, figures: list[Path] | None = None,
                missing_animations: Mapping[str, str] | None = None) -> str:
    """The report page. ``graphs``: title -> SVG text; ``animations``: title -> GIF path;
    ``missing_animations``: title -> why that animation is not there."""
    info = trace.info
    rows = trace.step_rows()
    parts: list[str] = []
    title = f"gradtrace report — {info.script or 'Python API run'}"
    created = info.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts.append(f"<header><h1>{_e(title)}</h1><p>{_e(info.status)}"
                 f"{'' if info.exit_code is None else f' (exit code {_e(info.exit_code)})'} · "
                 f"{len(rows)} steps recorded of {_e(info.steps_seen or len(rows))} · torch {_e(info.torch_version)}"
                 f" · recorded {_e(created)}</p></header><main>")
    if info.error:
        parts.append(f"<p class='fail'>The script raised: <code>{_e(info.error)}</code></p>")

    # -- verdict ------------------------------------------------------------------------------
    doc = _check_doc(check_result)
    parts.append("<h2>Gradient checks and findings</h2>")
    if doc is None:
        parts.append("<p class='muted'>Checks were not run for this report.</p>")
    else:
        checks = doc.get("checks", [])
        findings = doc.get("findings", [])
        counts = {s: sum(1 for c in checks if c.get("status") == s) for s in ("pass", "fail", "not_applicable")}
        serious = [f for f in findings if f.get("kind") in _SERIOUS]
        mood = "bad" if counts["fail"] or serious else ("warn" if findings else "ok")
        parts.append(f"<div class='verdict {mood}'>{counts['pass']} checks passed, "
                     f"{counts['fail']} failed, {counts['not_applicable']} not applicable · "
                     f"{len(findings)} finding{'s' if len(findings) != 1 else ''}</div>")
        for f in findings:
            where = " · ".join(_e(x) for x in (
                f"step {f.get('step')}" if f.get("step") is not None else None,
                f.get("param"), f.get("op"), f.get("source")) if x)
            cls = "finding" if f.get("kind") in _SERIOUS else "finding note"
            parts.append(f"<div class='{cls}'><b>{_e(f.get('kind'))}</b> — {_e(f.get('message'))}"
                         f"<br><span class='muted'>{where}</span></div>")
        groups: dict[tuple, list] = {}
        for c in checks:
            groups.setdefault((c.get("kind"), c.get("param")), []).append(c)
        if groups:
            parts.append("<table><tr><th class='l'>check</th><th class='l'>param</th><th>steps</th>"
                         "<th>passed</th><th>failed</th><th>n/a</th><th>worst abs err</th>"
                         "<th>worst rel err</th><th>tolerance (bound)</th><th class='l'>detail (worst step)</th></tr>")
            for (kind, param), cs in groups.items():
                n = {s: sum(1 for c in cs if c.get("status") == s) for s in ("pass", "fail", "not_applicable")}
                errs = [c for c in cs if c.get("max_rel_err") is not None]
                worst = max(errs, key=lambda c: c["max_rel_err"]) if errs else cs[0]
                if n["fail"]:
                    worst = next(c for c in cs if c.get("status") == "fail")
                parts.append(
                    f"<tr><td class='l'>{_e(kind)}</td><td class='l'>{_e(param)}</td><td>{len(cs)}</td>"
                    f"<td class='pass'>{n['pass']}</td><td class='{'fail' if n['fail'] else ''}'>{n['fail']}</td>"
                    f"<td>{n['not_applicable']}</td><td>{table_number(worst.get('max_abs_err'), 3)}</td>"
                    f"<td>{table_number(worst.get('max_rel_err'), 3)}</td><td>{table_number(worst.get('tolerance'), 3)} ({table_number(worst.get('bound'), 3)})</td>"
                    f"<td class='l'>step {_e(worst.get('step'))}: {_e(worst.get('detail'))}</td></tr>")
            parts.append("</table><p class='muted'>Every check, step by step: "
                         "<code>gradtrace check TRACE --json</code>.</p>")

    # -- summary --------------------------------------------------------------------------------
    parts.append("<h2>What autograd did</h2>")
    keys = ("ops", "backward_nodes", "accumulate_fresh", "accumulate_added", "zeroings", "updates")
    totals = {k: sum(r[k] for r in rows) for k in keys}
    parts.append("<table><tr>" + "".join(f"<th>{_e(k.replace('_', ' '))}</th>" for k in keys)
                 + "</tr><tr>" + "".join(f"<td>{totals[k]}</td>" for k in keys) + "</tr></table>")
    loss_svg, timeline_svg = _loss_and_timeline(trace)
    if loss_svg or timeline_svg:
        parts.append("<div class='row'>")
        if loss_svg:
            parts.append(f"<div><h3>Loss</h3>{loss_svg}</div>")
        if timeline_svg:
            parts.append("<div><h3>Zero / accumulate / update, per step</h3>"
                         "<p class='muted'>Red marks: a gradient added on top of one that was "
                         "not zeroed — the forgot-to-zero pattern (unless you accumulate on purpose).</p>"
                         f"{timeline_svg}</div>")
        parts.append("</div>")

    # -- graphs ------------------------------------------------------------------------------------
    if graphs:
        parts.append("<h2>Computation graphs</h2><div>")
        for name, svg in graphs.items():
            # A sandboxed frame: tooltips work, nothing in the SVG can run.
            parts.append(f"<div><h3>{_e(name)}</h3><iframe class='graph' sandbox "
                         f"srcdoc=\"{_e(_page_for_svg(svg))}\" title=\"{_e(name)}\"></iframe></div>")
        parts.append("</div>")

    # -- animations and figures ---------------------------------------------------------------------
    if animations or missing_animations:
        parts.append("<h2>Animations</h2><div class='row'>")
        for name, path in (animations or {}).items():
            parts.append(f"<div><h3>{_e(name)}</h3><img class='anim' alt=\"{_e(name)}\" "
                         f"src=\"{_img_data(Path(path), 'image/gif')}\"></div>")
        parts.append("</div>")
        for name, why in (missing_animations or {}).items():
            parts.append(f"<p class='muted missing-animation'><b>{_e(name)}</b>: not made — "
                         f"{_e(why)}</p>")
    if figures:
        parts.append("<h2>The script's figures</h2><div class='row'>")
        for path in figures:
            parts.append(f"<div><img class='anim' alt=\"{_e(Path(path).name)}\" "
                         f"src=\"{_img_data(Path(path), 'image/png')}\"></div>")
        parts.append("</div>")

    # -- per-step table ------------------------------------------------------------------------------
    parts.append("<h2>Steps</h2>")
    shown = rows if len(rows) <= 40 else rows[:20] + [None] + rows[-20:]
    parts.append("<table><tr><th>step</th><th>ops</th><th>nodes</th><th>fresh</th><th>added</th>"
                 "<th>zeroings</th><th>updates</th><th>loss</th></tr>")
    for r in shown:
        if r is None:
            parts.append("<tr><td>…</td><td colspan='7' class='l muted'>"
                         f"{len(rows) - 40} more steps: <code>gradtrace summary TRACE</code></td></tr>")
            continue
        parts.append(f"<tr><td>{r['index']}</td><td>{r['ops']}</td><td>{r['backward_nodes']}</td>"
                     f"<td>{r['accumulate_fresh']}</td><td>{r['accumulate_added']}</td>"
                     f"<td>{r['zeroings']}</td><td>{r['updates']}</td><td>{table_number(r['loss'])}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p class='muted'>Made by gradtrace {_e(__version__)} from {_e(trace.path)}. "
                 "Regenerate with <code>gradtrace report TRACE</code>.</p></main>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{css_variables()}{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_report(trace, path, **sections) -> Path:
    """Write the report page to ``path``; see :func:`report_html` for the sections."""
    path = Path(path)
    try:
        text = report_html(trace, **sections)
    except GradtraceError:
        raise
    except (OSError, ValueError) as e:
        raise RenderError(f"cannot build the report ({e})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        with contextlib.suppress(OSError):  # no half-written page (a full disk)
            if path.is_file():
                path.unlink()
        raise RenderError(f"cannot write {path} ({e.strerror}); choose another path with -o") from None
    return path


def build_report(trace, out, *, outputs: Outputs | None = None, animations: bool = True,
                 render_missing: bool = True, progress: Callable[[int, int], None] | bool | None = None,
                 warn: Callable[[str], None] | None = None, check_result: Any = None,
                 step_graphs: Mapping[int, Any] | None = None,
                 missing_animations: Mapping[str, str] | None = None) -> Path:
    """Gather the sections (checks, graphs of the first and last step, both animations, the
    script's figures) and write the page. What the caller has made already is used instead
    of being made again: ``check_result``, the :class:`~gradtrace.analysis.check.CheckReport`
    of ``check_trace(trace)`` with its default options; ``step_graphs``, step number ->
    :class:`~gradtrace.render.graph.GraphPicture` of ``graph_of_step(step, view="both")``.
    Only this trace's files are embedded (``outputs``, by default those named after
    ``trace.path``): an animation next to it is reused if it is not older than the trace
    file, a figure if it was written during or after the run;
    missing animations are rendered only if ``render_missing`` (``progress`` as in
    :class:`~gradtrace.render.animate.AnimateOptions`). A section that cannot be made is left
    out, with a line to ``warn`` (the CLI prints it on stderr); an animation left out says
    why on the page: the reason in ``missing_animations`` (kind -> reason, from the caller
    that tried to make it) or the error that stopped its rendering here."""
    from ..analysis.check import check_trace
    from .animate import animation_of_trace

    warn = warn or (lambda message: None)
    out = Path(out)
    outputs = outputs or outputs_of(trace.path)
    sections: dict = {}
    try:
        sections["check_result"] = check_result if check_result is not None else check_trace(trace)
    except TraceFileError:
        raise  # the file itself is bad: one line for the whole report, not one per section
    except GradtraceError as e:
        warn(f"report: checks left out ({e})")
    graphs = {}
    steps = trace.steps
    if len(steps):
        from .graph import graph_of_step

        picks = [("first", steps[0])]
        # the last step with a backward pass, looked for from the end (not every step read)
        last_bw = next((i for i in reversed(range(len(steps))) if steps[i].backward is not None), None)
        if last_bw is not None and last_bw != 0:
            picks.append(("last", steps[last_bw]))
        drawn = step_graphs or {}
        for label, step in picks:
            try:
                picture = drawn.get(step.index) or graph_of_step(step, view="both")
                graphs[f"Step {step.index} ({label}), forward values and gradients"] = picture.svg()
            except TraceFileError:
                raise
            except GradtraceError as e:
                warn(f"report: graph of step {step.index} left out ({e})")
    sections["graphs"] = graphs
    if animations and len(steps):
        anims = {}
        missing = {}
        told = missing_animations or {}
        for kind, title in (("backprop", "Back-propagation, one step"), ("training", "Training over time")):
            path = outputs.current_animation(kind)
            if path is None:
                if not render_missing:
                    if kind in told:
                        missing[title] = told[kind]
                    continue
                path = outputs.animation(kind)
                try:
                    animation_of_trace(trace, kind=kind).save(path, progress=progress or False)
                except TraceFileError:
                    raise
                except GradtraceError as e:
                    warn(f"report: {kind} animation left out ({e})")
                    missing[title] = f"skipped: {e}"
                    continue
                except Exception as e:  # a bug of ours: the rest of the report still comes
                    why = f"failed (a gradtrace bug, please report it): {type(e).__name__}: {e}"
                    warn(f"report: {kind} animation {why}")
                    missing[title] = why
                    continue
            anims[title] = path
        sections["animations"] = anims
        sections["missing_animations"] = missing
    sections["figures"] = outputs.figures(since=_started(trace))
    return write_report(trace, out, **sections)


def _started(trace) -> float | None:
    """When the run began (its trace's ``created``, to the second), as a time stamp."""
    try:
        return _dt.datetime.fromisoformat(trace.info.created).timestamp()
    except (GradtraceError, ValueError, TypeError):
        return None

