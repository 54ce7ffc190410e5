"""The explorer: one self-contained HTML page (inline CSS, JS and data; no network request)
that walks through every recorded step of a run.

The data comes from :mod:`gradtrace.render.explorer_data`, the graph geometry from
:mod:`gradtrace.render.explorer_graph`, the colours from :mod:`gradtrace.render.palette`
and the behaviour from ``explorer.js`` beside this module, inlined as it is (hand-written,
no build step). `gradtrace report` writes this page; `gradtrace serve` serves it with steps
fetched on demand.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any, Mapping

from . import palette
from .explorer_data import DEFAULT_BUDGET, page_data
from .explorer_ranks import RANKS_CSS, ranks_data, ranks_html, ranks_js

__all__ = ["explorer_html", "page_of", "CSS"]


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _kind_css() -> str:
    rules = []
    for kind in palette.KIND_LINE:
        k = kind.replace("_", "-")
        rules.append(f".node.kind-{kind} rect{{fill:var(--gt-kind-{k}-fill);stroke:var(--gt-kind-{k}-line)}}")
        rules.append(f".legend .kind-{kind}{{background:var(--gt-kind-{k}-fill);border-color:var(--gt-kind-{k}-line)}}")
    return "\n".join(rules)


CSS = """
:root{--gt-font:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;--gt-mono:Menlo,Consolas,"DejaVu Sans Mono",monospace}
*{box-sizing:border-box}
body{font-family:var(--gt-font);margin:0;color:var(--gt-text);background:var(--gt-panel);font-size:14px;line-height:1.35}
header{background:var(--gt-ink);color:var(--gt-background);padding:10px 18px 12px}
header .run{margin:0;font-size:13px;color:var(--gt-dim)} header .run b{color:var(--gt-background);font-size:15px}
.verdict{margin:6px 0 0;font-size:17px;font-weight:600;padding:6px 10px;border-radius:5px;display:inline-block;max-width:100%}
.mood-ok{background:var(--gt-ok-fill);color:var(--gt-ok)}.mood-bad{background:var(--gt-bad-fill);color:var(--gt-bad)}
.mood-warn{background:var(--gt-warn-fill);color:var(--gt-warn)}.mood-na{background:var(--gt-na-fill);color:var(--gt-na)}
.verdict .sym{margin-right:6px}
nav#scrubber{display:flex;flex-wrap:wrap;gap:6px;align-items:center;padding:8px 18px 2px;background:var(--gt-background);border-bottom:1px solid var(--gt-rule)}
nav#scrubber input[type=range]{flex:1 1 240px;min-width:160px}
#step-label{font-variant-numeric:tabular-nums;min-width:15em;font-weight:600}
button,select{font:inherit;font-size:13px;padding:3px 8px;border:1px solid var(--gt-dim);border-radius:4px;background:var(--gt-background);color:var(--gt-text);cursor:pointer}
button:hover{border-color:var(--gt-subtle)}
:focus-visible{outline:3px solid var(--gt-series-0);outline-offset:1px}
#curves{background:var(--gt-background);padding:2px 18px 6px;border-bottom:1px solid var(--gt-rule)}
#curves canvas{display:block;width:100%;cursor:pointer}
#loss-canvas{height:64px}#timeline-canvas{height:66px}
.keyline{font-size:12px;color:var(--gt-muted);margin:2px 0 0}
main{display:grid;grid-template-columns:minmax(0,2fr) minmax(300px,1fr);gap:12px;padding:10px 18px}
.lower{display:grid;grid-template-columns:minmax(0,2fr) minmax(300px,1fr);gap:12px;padding:0 18px 10px}
section.panel{background:var(--gt-background);border:1px solid var(--gt-rule);border-radius:6px;padding:8px 12px;min-width:0}
h2{font-size:15px;margin:2px 0 6px}h3{font-size:13px;margin:8px 0 4px}
.muted{color:var(--gt-muted)}
#graph{width:100%;height:max(320px,calc(100vh - 370px));position:relative}
#graph.stale svg{opacity:.35}
#graph-svg{width:100%;height:100%;display:block}
#graph-note{margin:0 0 4px;font-size:12px;color:var(--gt-subtle)}#graph-note:empty{display:none}
#graph-note.stale{background:var(--gt-warn-fill);color:var(--gt-warn);padding:3px 8px;border-radius:4px;font-size:13px}
#graph-note button{margin-left:6px}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:12px;color:var(--gt-subtle);margin:0 0 4px}
.legend span.box{display:inline-block;width:18px;height:11px;border:2px solid;vertical-align:-1px;margin-right:4px;border-radius:2px}
.legend .g{color:var(--gt-grad);font-weight:700}.legend .ge{color:var(--gt-grad-edge);font-weight:700}
.node{cursor:pointer}.node rect{stroke-width:1.2}
.node.kind-loss rect{stroke-width:3}
.node text{font-size:13px;fill:var(--gt-text);font-family:var(--gt-font)}
.node text.small,.node tspan.small{font-size:10px}.node .muted{fill:var(--gt-muted)}
.node text.mono{font-family:var(--gt-mono)}.node text.grad{fill:var(--gt-grad)}.node text.none{fill:var(--gt-muted)}
.node text.alert{fill:var(--gt-bad);font-weight:700}.node text.caption{font-style:italic}
.node .rule{stroke:var(--gt-dim);stroke-width:1}.node.kind-prep text{fill:var(--gt-muted)}
.node:focus{outline:none}.node:focus-visible rect,.node.selected rect{stroke:var(--gt-ink);stroke-width:3.5}
.node.bw-current rect{stroke:var(--gt-grad);stroke-width:4;stroke-dasharray:7 3}
.node.bw-done rect{stroke:var(--gt-grad);stroke-width:2.2}
.node.from-line rect{stroke:var(--gt-series-0);stroke-width:3.5}
.edge path{fill:none;stroke:var(--gt-subtle);stroke-width:1.2}.edge polygon{fill:var(--gt-subtle)}
.edge.grad path{stroke:var(--gt-grad-edge);stroke-dasharray:5 3}.edge.grad polygon{fill:var(--gt-grad-edge)}
.edge-label{font-size:10px;fill:var(--gt-muted);font-family:var(--gt-font)}
.cluster{fill:var(--gt-panel);stroke:var(--gt-kind-module-line);stroke-dasharray:4 3}
.cluster-label{font-size:10px;fill:var(--gt-muted);font-weight:700}
#inspector-body dl{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin:4px 0;font-size:13px}
#inspector-body dt{color:var(--gt-muted)}#inspector-body dd{margin:0;overflow-wrap:anywhere}
.values .scroll{overflow:auto;max-height:40vh}
.value p{margin:2px 0 4px;font-size:12px}.value h3{margin:8px 0 2px}
.inspected{margin:0 0 4px}
table.numbers{border-collapse:collapse;font-family:var(--gt-mono);font-size:12px}
table.numbers td{padding:1px 6px;text-align:right;border-bottom:1px solid var(--gt-rule)}
.value.grad table.numbers td{color:var(--gt-grad)}
table.stats th{text-align:left;color:var(--gt-muted);font-weight:400;padding-right:10px}
#bw-list{margin:4px 0;padding-left:22px;font-size:13px;max-height:calc(100vh - 560px);min-height:90px;overflow:auto}
#bw-list li.current{font-weight:700;color:var(--gt-grad)}#bw-list li.done{color:var(--gt-subtle)}
.linkish{vertical-align:top;border:none;background:none;padding:1px 0;text-align:left;color:inherit;font-size:13px;cursor:pointer}
.linkish:hover{text-decoration:underline}
.controls{display:flex;gap:6px;align-items:center;flex-wrap:wrap}
table.code{border-collapse:collapse;width:100%;font-family:var(--gt-mono);font-size:12px}
table.code td{padding:1px 6px;vertical-align:top;white-space:pre-wrap;overflow-wrap:anywhere}
table.code td.ln{color:var(--gt-muted);text-align:right;width:3.5em;user-select:none}
table.code td.did{font-family:var(--gt-font);color:var(--gt-subtle);width:38%}
table.code tr{cursor:pointer}
table.code tr.seen td.ln{box-shadow:inset 3px 0 var(--gt-dim)}
table.code tr.hit{background:var(--gt-ok-fill)}table.code tr.hit td.ln{box-shadow:inset 4px 0 var(--gt-ok);color:var(--gt-ok)}
table.code tr.selected-line{outline:2px solid var(--gt-ink)}
table.code tr.gap td{color:var(--gt-muted);font-style:italic;cursor:default}
#source{overflow:auto;max-height:80vh}
ul.items{list-style:none;margin:0;padding:0}
ul.items li{border-left:4px solid var(--gt-warn);background:var(--gt-warn-fill);padding:6px 8px;margin:0 0 8px;border-radius:0 4px 4px 0}
ul.items li.bad{border-left-color:var(--gt-bad);background:var(--gt-bad-fill)}
ul.items li p{margin:2px 0;font-size:13px}
ul.items button{margin-top:2px}
table.checks{border-collapse:collapse;font-size:12px;margin:6px 0;width:100%}
table.checks th,table.checks td{border:1px solid var(--gt-rule);padding:2px 5px;text-align:right}
table.checks .l{text-align:left}
.fail{color:var(--gt-bad);font-weight:600}.pass{color:var(--gt-ok)}
.extras{padding:0 18px 10px}
.extras img{max-width:100%;height:auto;border:1px solid var(--gt-rule);background:var(--gt-background)}
.row{display:flex;gap:16px;flex-wrap:wrap}.row>div{flex:1 1 420px;min-width:0}
footer{padding:4px 18px 16px;font-size:12px;color:var(--gt-muted)}
code{font-family:var(--gt-mono);font-size:12px;background:var(--gt-panel);padding:0 3px}
@media (max-width:900px){main,.lower{grid-template-columns:minmax(0,1fr)}#graph{height:70vh}}
@media print{nav#scrubber,#bw-controls,button.open{display:none}
 body{background:#fff}main,.lower{display:block}section.panel{break-inside:avoid;border:none}
 #graph{height:auto;aspect-ratio:16/9}#bw-list,#source{max-height:none;overflow:visible}
 header{background:none;color:var(--gt-text)}header .run b{color:var(--gt-text)}}
"""


def _columns(rows: list[dict]) -> dict[str, list]:
    """Every step's scalars as one list per field: a 30,000-step run's scalars in a third of
    the bytes of one object per step (the page turns them back into rows)."""
    keys = list(rows[0]) if rows else []
    return {k: [r[k] for r in rows] for k in keys}


def _json_script(doc: Any) -> str:
    doc = dict(doc, scalars=_columns(doc["scalars"]))
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    # nothing in the data can end the script element or start markup
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="gt-data">{text}</script>'


def _js() -> str:
    return resources.files(__package__).joinpath("explorer.js").read_text(encoding="utf-8")


def _items_html(verdict: dict) -> str:
    if not verdict["items"]:
        return "<p class='muted'>No findings: nothing in this run looked wrong.</p>"
    out = ["<ul class='items' id='findings'>"]
    for i, item in enumerate(verdict["items"]):
        where = " · ".join(_e(x) for x in (
            f"step {item['step']}" if item["step"] is not None else None,
            item["param"], item["op"], item["source"]) if x)
        ref = {k: item[k] for k in ("step", "param", "op", "source")}
        out.append(f"<li class='{_e(item['mood'])}' id='item-{i}'><b>{_e(item['title'])}</b>"
                   f"<p>{_e(item['message'])}</p><p class='muted'>{where}</p>"
                   f"<button type='button' class='open' data-item='{_e(json.dumps(ref))}'>"
                   f"show {('step ' + str(item['step'])) if item['step'] is not None else 'it'}"
                   "</button></li>")
    out.append("</ul>")
    return "".join(out)


def _checks_html(report) -> str:
    if report is None or not report.checks:
        return ""
    from ..formatting import table_number

    groups: dict[tuple, list] = {}
    for c in report.checks:
        groups.setdefault((c.kind, c.param), []).append(c)
    rows = ["<details id='all-checks'><summary>Every gradient check, by parameter</summary>"
            "<table class='checks'><tr><th class='l'>check</th><th class='l'>param</th><th>steps</th>"
            "<th>passed</th><th>failed</th><th>n/a</th><th>worst rel err</th><th class='l'>worst step</th></tr>"]
    for (kind, param), cs in groups.items():
        n = {s: sum(1 for c in cs if c.status == s) for s in ("pass", "fail", "not_applicable")}
        errs = [c for c in cs if c.max_rel_err is not None]
        worst = max(errs, key=lambda c: c.max_rel_err) if errs else cs[0]
        if n["fail"]:
            worst = next(c for c in cs if c.status == "fail")
        ref = _e(json.dumps({"step": worst.step, "param": param, "op": None, "source": None}))
        rows.append(f"<tr><td class='l'>{_e(kind)}</td><td class='l'>{_e(param)}</td><td>{len(cs)}</td>"
                    f"<td class='pass'>{n['pass']}</td><td class='{'fail' if n['fail'] else ''}'>{n['fail']}</td>"
                    f"<td>{n['not_applicable']}</td><td>{table_number(worst.max_rel_err, 3)}</td>"
                    f"<td class='l'><button type='button' class='linkish' data-item='{ref}'>step {_e(worst.step)}</button>: "
                    f"{_e(worst.detail)}</td></tr>")
    rows.append("</table><p class='muted'>Step by step: <code>gradtrace check TRACE --json</code>.</p></details>")
    return "".join(rows)


def _legend_html(data: dict) -> str:
    kinds: set[str] = set()
    for geo in data["shapes"].values():
        kinds.update(n["kind"] for n in geo["nodes"].values())
    order = [k for k in palette.KIND_LINE if k in kinds]
    parts = [f"<span><span class='box kind-{k}'></span>{_e(data['legend'].get(k, k))}</span>" for k in order]
    parts.append("<span><span class='g'>0.5</span> gradient of the loss</span>")
    parts.append("<span><span class='ge'>- - &gt;</span> gradient into .grad</span>")
    return "<div class='legend' aria-label='legend'>" + "".join(parts) + "</div>"


def _extras_html(animations: Mapping[str, str] | None, missing: Mapping[str, str] | None,
                 figures: list[str] | None) -> str:
    out = []
    if animations or missing:
        out.append("<section class='extras' id='animations'><h2>Animations</h2><div class='row'>")
        for name, src in (animations or {}).items():
            out.append(f"<div><h3>{_e(name)}</h3><img alt=\"{_e(name)}\" src=\"{_e(src)}\"></div>")
        out.append("</div>")
        for name, why in (missing or {}).items():
            out.append(f"<p class='muted missing-animation'><b>{_e(name)}</b>: not made — {_e(why)}</p>")
        out.append("</section>")
    if figures:
        out.append("<section class='extras' id='figures'><h2>The script's figures</h2><div class='row'>")
        for i, src in enumerate(figures):
            out.append(f"<div><img alt='figure {i + 1}' src=\"{_e(src)}\"></div>")
        out.append("</div></section>")
    return "".join(out)


def explorer_html(data: dict, report=None, *, animations: Mapping[str, str] | None = None,
                  missing_animations: Mapping[str, str] | None = None,
                  figures: list[str] | None = None) -> str:
    """The page for ``data`` (:func:`gradtrace.render.explorer_data.page_data`).
    ``animations``: title -> image URL (a ``data:`` URL in a self-contained page);
    ``missing_animations``: title -> why it is not there; ``figures``: image URLs."""
    run, verdict = data["run"], data["verdict"]
    title = f"gradtrace explorer — {run['script'] or 'Python API run'}"
    n = len(data["scalars"])
    status = run["status"] + ("" if run["exit_code"] is None else f" (exit code {run['exit_code']})")
    sym = {"ok": "✓", "bad": "✗", "warn": "!", "na": "·"}[verdict["mood"]]
    jump = ["<option value=''>jump to a finding…</option>"]
    for item in verdict["items"]:
        if item["step"] is not None:
            ref = {k: item[k] for k in ("step", "param", "op", "source")}
            jump.append(f"<option value='{_e(json.dumps(ref))}'>step {item['step']}: {_e(item['title'])}</option>")
    error = f"<p class='run'>The script raised: <code>{_e(run['error'])}</code></p>" if run["error"] else ""
    body = f"""
<header id="top"><p class="run"><b>{_e(run['script'] or 'Python API run')}</b> · {_e(status)} · {n} steps ·
torch {_e(run['torch'])} · recorded {_e(run['created'])}</p>{error}
<p class="verdict mood-{_e(verdict['mood'])}" id="verdict"><span class="sym" aria-hidden="true">{sym}</span>{_e(verdict['headline'])}</p></header>
<nav id="scrubber" aria-label="Steps">
<button type="button" id="first" title="first step (Home)">« first</button>
<button type="button" id="prev" title="previous step (←)" aria-label="previous step">◀</button>
<button type="button" id="play" aria-pressed="false" title="play / pause (space)">▶ play</button>
<button type="button" id="next" title="next step (→)" aria-label="next step">▶</button>
<button type="button" id="last" title="last step (End)">last »</button>
<input type="range" id="slider" min="0" max="{max(0, n - 1)}" value="0" step="1" aria-label="step">
<output id="step-label" for="slider" aria-live="polite"></output>
<select id="jump" aria-label="jump to a finding">{''.join(jump)}</select>
</nav>
<section id="curves" aria-label="Loss and the zero / accumulate / update timeline; click to jump to a step">
<canvas id="loss-canvas" role="img" aria-label="loss per step"></canvas>
<canvas id="timeline-canvas" role="img" aria-label="zeroings, accumulations and updates per step"></canvas>
<p class="keyline">{_e(data['held_note'])} Keys: ← → step, Home / End, space play / pause.</p>
</section>
<main>
<section class="panel" id="graph-panel" aria-label="graph"><h2>Graph of step <span id="graph-step"></span>
<span class="muted">— forward values | gradients (click a node)</span></h2>{_legend_html(data)}
<p id="graph-note" aria-live="polite"></p>
<div id="graph"><svg id="graph-svg" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMin meet" role="group" aria-label="computation graph"></svg></div></section>
<div id="side">
<section class="panel" id="inspector" aria-label="inspector"><h2>Inspector</h2><div id="inspector-body"></div></section>
<section class="panel" id="backward" aria-label="backward pass"><h2>Backward, in autograd's order</h2>
<div class="controls" id="bw-controls"><button type="button" id="bw-prev" aria-label="previous backward node">◀</button>
<button type="button" id="bw-play" aria-pressed="false">▶ play</button>
<button type="button" id="bw-next" aria-label="next backward node">▶</button><span id="bw-pos" class="muted"></span></div>
<p id="bw-empty" class="muted">No backward pass in this step.</p><ol id="bw-list"></ol></section>
</div>
</main>
{ranks_html(data)}<div class="lower">
<section class="panel" id="source-panel" aria-label="source"><h2>The script, line by line: what each did in step <span id="source-step"></span></h2>
<div id="source"></div></section>
<section class="panel" id="findings-panel" aria-label="findings"><h2>Findings and checks</h2>
<p class="muted">{_e(verdict['detail'])}</p>{_items_html(verdict)}{_checks_html(report)}</section>
</div>
{_extras_html(animations, missing_animations, figures)}
<footer>Made by gradtrace {_e(data['version'])} from {_e(run['trace'])}. Regenerate with
<code>gradtrace report TRACE</code>; every step of a long run: <code>gradtrace serve TRACE</code>.</footer>
"""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            # nothing may be fetched from anywhere: the page is self-contained (serve: same origin)
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
            + ("connect-src 'self'" if data["mode"] == "serve" else "connect-src 'none'") + "\">"
            f"<title>{_e(title)}</title><style>{palette.css_variables()}"
            f":root{{--gt-grad-edge:{palette.GRAD_EDGE}}}{CSS}{_kind_css()}"
            + (RANKS_CSS if data.get("ranks") else "") + "</style></head><body>"
            + body + _json_script(data) + f"<script>{_js()}</script>"
            + (f"<script>{ranks_js()}</script>" if data.get("ranks") else "") + "</body></html>\n")


def page_of(trace, report=None, *, budget: int = DEFAULT_BUDGET, mode: str = "file",
            warn=None, shapes=None, **extras) -> str:
    """The explorer page of ``trace`` (``report``: its check report, or None). ``shapes``: the
    :class:`~gradtrace.render.explorer_data.Shapes` to lay graphs out in (a server keeps one
    for the steps it sends later)."""
    data = page_data(trace, report, budget=budget, mode=mode, warn=warn, shapes=shapes)
    from ..tracefile.ranks import RankedRun

    if isinstance(trace, RankedRun):  # a distributed run: its ranks side by side
        data["ranks"] = ranks_data(trace, report, data["held"])
    start = None
    for item in data["verdict"]["items"]:
        if item["mood"] == "bad" and item["step"] is not None and str(item["step"]) in data["steps"]:
            start = item["step"]
            break
    if start is None:
        start = next((r["index"] for r in data["scalars"] if r["backward"] and str(r["index"]) in data["steps"]),
                     data["held"][0] if data["held"] else None)
    data["start"] = start
    return explorer_html(data, report, **extras)
