"""render/notebook.py, what Jupyter shows: readable HTML and short plain reprs for Trace, Step, CheckReport and
Finding; graphs as an SVG that fits the cell plus a PNG; t.explore() inline. The last test
executes a real notebook with nbclient and an IPython kernel and reads its MIME bundles."""

from __future__ import annotations

import base64
import os

import pytest

from conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def test_plain_reprs_are_one_short_line(demo_trace):
    t = demo_trace("exploding_lr")
    report = t.check()
    step = t.steps[3]
    assert repr(step) == f"<gradtrace.Step 3: 2 ops, backward 5 nodes, 6 events, loss {step.loss:.6g}>"
    assert repr(report).startswith("<gradtrace.CheckReport: gradients ok") and "\n" not in repr(report)
    for f in report.findings:
        assert repr(f).startswith(f"<gradtrace.Finding {f.kind} (step {f.step}") and len(repr(f)) < 200


def test_html_reprs_say_what_happened_without_scripts(demo_trace):
    t = demo_trace("exploding_lr")
    report = t.check()
    page = t._repr_html_()
    assert f"{len(t.steps)} steps recorded" in page and "t.explore()" in page
    step = t.steps[14]._repr_html_()
    assert "<b>step 14</b>" in step and "<b>mse_loss</b>" in step and "data:image/png;base64," in step
    assert "Value(vid" not in step
    verdict = report._repr_html_()
    assert "The gradients are right" in verdict and "lr_unstable" in verdict
    assert report.findings[0]._repr_html_() in verdict
    for html in (page, step, verdict):
        assert "<script" not in html and "<svg" not in html  # shown in untrusted notebooks too


def test_html_reprs_stay_small_and_the_graph_png_stays_readable(demo_trace):
    import io
    import re

    from PIL import Image

    t = demo_trace("linreg")
    html = t.steps[7]._repr_html_()
    assert len(html) < 100_000  # it was ~570 KB with the 144-dpi PNG
    [b64] = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    # one pixel per point of the layout: as wide as the graph's layout, a palette of colours
    layout = Image.open(io.BytesIO(t.steps[7].graph().render("png")))
    assert abs(img.width - layout.width / 2) <= 1 and img.width >= 1000
    assert img.mode == "P" and len(img.getcolors()) <= 64
    # the saturated colours of the drawing survive the palette: the gradient orange of the
    # dashed edges and the numbers (palette.GRAD_EDGE and palette.GRAD, nearly exactly)
    from gradtrace.render import palette

    colours = [c for _, c in img.convert("RGB").getcolors()]
    for want in (palette.GRAD_EDGE, palette.GRAD):
        rgb = tuple(int(want[i:i + 2], 16) for i in (1, 3, 5))
        assert min(sum(abs(a - b) for a, b in zip(c, rgb)) for c in colours) <= 24, want
    report = t.check()
    assert len(t._repr_html_()) < 20_000 and len(report._repr_html_()) < 20_000
    assert all(len(f._repr_html_()) < 2_000 for f in demo_trace("exploding_lr").check().findings)


def test_a_graph_bundle_has_a_fitted_svg_and_a_png(demo_trace):
    bundle = demo_trace("linreg").steps[0].graph()._repr_mimebundle_()
    assert bundle["image/png"].startswith(PNG)
    assert '<svg style="max-width:100%;height:auto"' in bundle["image/svg+xml"]
    assert "viewBox" in bundle["image/svg+xml"]
    assert bundle["text/plain"].startswith("<gradtrace graph: step 0")


def test_explore_is_the_explorer_in_a_sandboxed_frame(demo_trace):
    e = demo_trace("linreg").explore(check=False)
    html = e._repr_html_()
    assert html.startswith('<iframe title="gradtrace explorer" sandbox="allow-scripts" srcdoc="')
    assert "&lt;script type=&quot;application/json&quot; id=&quot;gt-data&quot;&gt;" in html
    assert "width:100%" in html and "trusted notebook" in repr(e)


@pytest.mark.slow
def test_a_notebook_shows_readable_html_and_pngs(recorded_demos, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = recorded_demos.path("exploding_lr")
    cells = [f"import gradtrace\nt = gradtrace.load({str(path)!r})\nt", "t.steps[14]",
             "r = t.check()\nr", "r.findings[-1]", "t.steps[3].graph()", "t.explore(check=False)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    data = [c.outputs[-1]["data"] for c in nb.cells]
    trace, step, report, finding, graph, explorer = data
    assert "35 steps recorded of 35" in trace["text/html"] and trace["text/plain"].startswith("<gradtrace.Trace")
    assert "<b>step 14</b>" in step["text/html"] and "data:image/png;base64," in step["text/html"]
    assert step["text/plain"].startswith("<gradtrace.Step 14: 2 ops") and len(step["text/plain"]) < 120
    assert "The gradients are right" in report["text/html"]
    assert "The numbers overflowed" in finding["text/html"] and "non_finite" in finding["text/plain"]
    assert base64.b64decode(graph["image/png"]).startswith(PNG)
    assert "max-width:100%" in graph["image/svg+xml"]
    assert explorer["text/html"].startswith("<iframe") and "srcdoc=" in explorer["text/html"]
