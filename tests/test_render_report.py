"""The HTML report: self-contained, escaped, and with the sections a lecturer opens it for."""

from __future__ import annotations

import re
import textwrap

import pytest
import torch
from torch import nn

import gradtrace
from conftest import gradtrace_cmd
from gradtrace.render.report import report_html


def _no_network(page: str):
    # Namespace URIs inside inline SVG are names, not loads; nothing may be fetched.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and not re.search(r"<script[^>]*\bsrc", page, re.I)
    assert "connect-src 'none'" in page  # the page's own policy forbids any fetch


def _data(page: str) -> dict:
    import json

    m = re.search(r'<script type="application/json" id="gt-data">(.*?)</script>', page, re.S)
    assert m, "the page carries its data"
    return json.loads(m.group(1))


def test_report_is_the_explorer_and_self_contained(demo_trace):
    t = demo_trace("linreg")
    page = report_html(t)
    _no_network(page)
    assert 'id="graph-svg"' in page and 'id="slider"' in page and 'id="source"' in page
    data = _data(page)
    assert data["scalars"]["index"] == t.steps.indices  # every step's scalars, one list per field
    assert data["scalars"]["loss"] == [s.loss for s in t.steps]
    assert data["held"] == t.steps.indices                           # and, in budget, every step
    assert data["verdict"]["headline"] == "Checks were not run for this page."


def test_user_text_is_escaped():
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    net.register_parameter("<script>alert(1)</script>", nn.Parameter(torch.ones(1)))
    with gradtrace.trace() as t:
        (net(torch.randn(3, 2)).sum() * getattr(net, "<script>alert(1)</script>")).backward()
    from gradtrace.analysis.check import CheckReport
    from gradtrace.analysis.diagnostics import Finding

    found = Finding("non_finite", 0, "<b>w</b>", None, "</script><script>alert(3)</script>",
                    "<img src=x onerror=alert(2)>")
    page = report_html(t.result, check_result=CheckReport(checks=[], findings=[found]))
    _no_network(page)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<b>w</b>" not in page and "alert(3)</script>" not in page
    assert page.count("<script") == 2  # the data and the code, nothing the trace wrote
    assert _data(page)["verdict"]["items"][0]["message"] == "<img src=x onerror=alert(2)>"


@pytest.mark.slow  # `gradtrace run` and `report` in forked children
def test_report_command_and_run_print_the_page_last(tmp_path):
    p = tmp_path / "train.py"
    p.write_text(textwrap.dedent("""
        import torch
        w = torch.zeros(2, 1, requires_grad=True)
        X, y = torch.randn(8, 2), torch.randn(8, 1)
        for _ in range(5):
            ((X @ w - y) ** 2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
        raise SystemExit("<script>bad</script>")
    """))
    r = gradtrace_cmd("run", "-o", "out/trace.gtrace", str(p), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "gradtrace: report: out/report.html"
    page = (tmp_path / "out" / "report.html").read_text()
    _no_network(page)
    assert "exited" in page
    r = gradtrace_cmd("report", "out/trace.gtrace", "-o", "again.html", "--no-animations", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "gradtrace: report: again.html"
    assert (tmp_path / "again.html").read_text().startswith("<!DOCTYPE html>")
    r = gradtrace_cmd("report", "missing.gtrace", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
