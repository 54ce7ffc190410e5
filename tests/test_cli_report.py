"""cli.report: `gradtrace report`: where the page goes, the animations it says, a run folder, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

import gradtrace
import gradtrace.cli.report as cli_report
from conftest import gradtrace_main
from gradtrace.render.report import NOT_MADE_YET


def _record(path) -> None:
    """Two steps of a small linear model, recorded to ``path``."""
    torch.manual_seed(0)
    X, y = torch.randn(6, 2), torch.randn(6, 1)
    w = torch.zeros(2, 1, requires_grad=True)
    with gradtrace.trace(path):
        for _ in range(2):
            ((X @ w - y) ** 2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad = None


def _page_data(path) -> dict:
    m = re.search(r'<script type="application/json" id="gt-data">(.*?)</script>',
                  path.read_text(encoding="utf-8"), re.S)
    assert m is not None, "the page holds its data"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """One recording, under the default name (trace.gtrace) and under another (a.gtrace)."""
    folder = tmp_path_factory.mktemp("report")
    _record(folder / "a.gtrace")
    (folder / "default").mkdir()
    (folder / "default" / "trace.gtrace").write_bytes((folder / "a.gtrace").read_bytes())
    return folder


def test_the_page_is_named_after_the_trace_and_the_path_is_said(traces, capsys, monkeypatch):
    monkeypatch.chdir(traces)
    code, out, err = gradtrace_main(capsys, "report", "a.gtrace", "--no-animations")
    assert (code, out) == (0, "")
    assert err.splitlines()[-1] == "gradtrace: report: a.report.html"
    assert len(_page_data(traces / "a.report.html")["steps"]) == 2
    code, _, err = gradtrace_main(capsys, "report", "default/trace.gtrace", "--no-animations")
    assert code == 0 and err.splitlines()[-1] == "gradtrace: report: default/report.html"
    assert (traces / "default" / "report.html").is_file()


def test_output_puts_the_page_where_it_is_asked(traces, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli_report.report, [str(traces / "a.gtrace"), "-o", "mine.html", "--no-animations"])
    assert r.exit_code == 0 and r.stderr.splitlines()[-1] == "gradtrace: report: mine.html", r.output
    assert (tmp_path / "mine.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_animations_not_made_yet_are_not_rendered_and_the_page_says_how(traces, tmp_path, capsys):
    with_note = tmp_path / "with.html"
    without = tmp_path / "without.html"
    code, _, _ = gradtrace_main(capsys, "report", str(traces / "a.gtrace"), "-o", str(with_note))
    assert code == 0
    code, _, _ = gradtrace_main(capsys, "report", str(traces / "a.gtrace"), "-o", str(without),
                                "--no-animations")
    assert code == 0
    assert not (traces / "a.backprop.gif").exists() and not (traces / "a.training.gif").exists()
    assert NOT_MADE_YET in with_note.read_text(encoding="utf-8")
    assert NOT_MADE_YET not in without.read_text(encoding="utf-8")


def test_a_run_folders_page_is_named_after_the_runs_trace_path(tmp_path, capsys, monkeypatch):
    for r in (0, 1):
        monkeypatch.setenv("RANK", str(r))
        monkeypatch.setenv("WORLD_SIZE", "2")
        _record(tmp_path / f"trace.rank{r}.gtrace")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    code, _, err = gradtrace_main(capsys, "report", str(tmp_path), "--no-animations")
    assert code == 0, err
    assert err.splitlines()[-1].endswith("report.html")
    page = _page_data(tmp_path / "report.html")
    assert page["ranks"]["world_size"] == 2 and page["ranks"]["ranks"] == [0, 1]
    assert not list(tmp_path.glob("trace.rank*.report.html"))


def test_a_missing_trace_is_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = gradtrace_main(capsys, "report", str(tmp_path / "missing.gtrace"))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "missing.gtrace" in err
    assert not list(tmp_path.iterdir())
