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
    assert "<link" not in page and "<script" not in page.lower()


def test_report_sections_and_self_contained(demo_trace):
    t = demo_trace("linreg")
    from gradtrace.render.graph import graph_of_step

    page = report_html(t, graphs={"first": graph_of_step(t.steps[0], view="both").svg()})
    _no_network(page)
    assert "What autograd did" in page and "<h3>Loss</h3>" in page
    assert page.count("<svg") >= 2                 # loss curve and timeline, inline
    assert "<iframe class='graph' sandbox" in page  # the graph cannot run anything
    assert "300" in page                            # the steps table reaches the end
    assert "Checks were not run" in page


def test_user_text_is_escaped():
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    net.register_parameter("<script>alert(1)</script>", nn.Parameter(torch.ones(1)))
    with gradtrace.trace() as t:
        (net(torch.randn(3, 2)).sum() * getattr(net, "<script>alert(1)</script>")).backward()
    page = report_html(t.result, check_result={
        "checks": [], "findings": [{"kind": "x", "message": "<img src=x onerror=alert(2)>",
                                    "step": 0, "param": "<b>w</b>", "op": None, "source": None}]})
    _no_network(page)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<b>w</b>" not in page


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
