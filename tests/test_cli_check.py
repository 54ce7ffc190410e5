"""cli.check: `gradtrace check`: its text and JSON, options, exit codes, the verdict after a run."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

import gradtrace
from conftest import gradtrace_cmd, gradtrace_main
from gradtrace.analysis.check import CheckOptions, check_trace
from gradtrace.cli import cli
import gradtrace.cli.check as cli_check
from gradtrace.config import CHECK_MAX_STEPS
from test_analysis_check import _doubled_w_trace
from test_analysis_errmodel import Legendre3


def test_cli_check_json_and_exit_codes(tmp_path):
    path = tmp_path / "doubled.gtrace"
    _doubled_w_trace(path)
    runner = CliRunner()
    r = runner.invoke(cli, ["check", str(path), "--json", "--no-numeric"])
    assert r.exit_code == 3, r.output   # a failed check exits with 3, --strict or not
    doc = json.loads(r.output)
    assert [(c["step"], c["param"], c["status"]) for c in doc["checks"]] == [
        (0, "w", "fail"), (0, "b", "pass"), (1, "w", "fail"), (1, "b", "pass")]
    r = runner.invoke(cli, ["check", str(path), "--numeric"])
    assert r.exit_code == 3 and r.output.startswith("gradients WRONG at step 0 (w)")
    assert "numeric w: 0/2 passed, 2 failed" in r.output


def test_cli_strict_and_usage_errors(tmp_path, capsys):
    path = tmp_path / "doubled.gtrace"
    _doubled_w_trace(path)
    code, out, _ = gradtrace_main(capsys, "check", str(path), "--strict", "--no-numeric")
    assert code == 3 and "FAIL analytic_mse step 0 w" in out
    code, out, err = gradtrace_main(capsys, "check", str(path), "--steps", "7:3")
    assert code == 2 and out == ""
    assert err.splitlines() == ["gradtrace: error: step range '7:3' is empty or negative; "
                                "use A:B with 0 <= A < B"]
    code, out, err = gradtrace_main(capsys, "check", str(tmp_path / "missing.gtrace"))
    assert code == 2 and len(err.splitlines()) == 1 and "missing.gtrace" in err


def test_cli_strict_exits_3_on_a_finding_and_0_without(tmp_path):
    w = torch.zeros(1, requires_grad=True)
    x = torch.rand(5)
    path = tmp_path / "data.gtrace"
    with gradtrace.trace(path):
        for _ in range(2):
            ((x * w - x) ** 2).mean().backward()
            w.data -= 0.1 * w.grad.data
            w.grad.data.zero_()
    runner = CliRunner()
    r = runner.invoke(cli, ["check", str(path), "--strict"])
    assert r.exit_code == 3 and "data_update (step 0" in r.output
    r = runner.invoke(cli, ["check", str(path)])
    assert r.exit_code == 0 and "gradients ok" in r.output


@pytest.mark.slow  # `gradtrace run` in a forked child
def test_run_prints_the_verdict_and_the_findings(tmp_path):
    script = tmp_path / "nozero.py"
    script.write_text(textwrap.dedent("""
        import torch
        torch.manual_seed(0)
        X, y = torch.randn(10, 2), torch.randn(10, 1)
        w = torch.zeros(2, 1, requires_grad=True)
        for i in range(3):
            ((X @ w - y) ** 2).sum().backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
        print("done")
    """))
    r = gradtrace_cmd("run", "-o", str(tmp_path / "t.gtrace"), str(script), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "done\n"
    lines = r.stderr.splitlines()
    [verdict] = [ln for ln in lines if ln.startswith("gradtrace: check: ")]
    assert verdict.startswith("gradtrace: check: gradients ok: analytic_mse 3 passed (max rel err ")
    assert "numeric 3 passed" in verdict and verdict.endswith("; 1 finding (forgot_zero_grad)")
    assert any(ln.startswith("gradtrace:   forgot_zero_grad (step 1, nozero.py:7)") for ln in lines)


def test_gradtrace_check_exit_codes(tmp_path):
    """0 when every check passed, 3 when one failed; --strict leaves a clean run at 0."""
    from click.testing import CliRunner

    from gradtrace.cli import cli

    good = tmp_path / "good.gtrace"
    with gradtrace.trace(good):
        Legendre3.mutation = "none"
        x = torch.linspace(-1, 1, 200)
        d = torch.tensor(0.3, requires_grad=True)
        (Legendre3.apply(d * x) - x).pow(2).sum().backward()
    bad = tmp_path / "bad.gtrace"
    try:
        Legendre3.mutation, Legendre3.factor = "factor", 2.0
        with gradtrace.trace(bad):
            d = torch.tensor(0.3, requires_grad=True)
            (Legendre3.apply(d * x) - x).pow(2).sum().backward()
    finally:
        Legendre3.mutation, Legendre3.factor = "none", 1.0
    runner = CliRunner()
    r = runner.invoke(cli, ["check", str(good)])
    assert r.exit_code == 0 and r.output.startswith("gradients ok"), r.output
    assert "bound" in r.output
    r = runner.invoke(cli, ["check", str(good), "--strict"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["check", str(bad)])
    assert r.exit_code == 3 and r.output.startswith("gradients WRONG at step 0 (d)"), r.output
    assert "bound" in r.output and "Legendre3" in r.output


# -- the text and the JSON are the library's report -----------------------------------------------

def test_the_text_is_the_reports_summary_lines_and_the_json_its_document(recorded_demos, capsys):
    path = recorded_demos.path("linreg")
    options = CheckOptions(steps="0:3", numeric="none", max_steps=CHECK_MAX_STEPS)
    report = check_trace(gradtrace.load(path), options)
    code, out, err = gradtrace_main(capsys, "check", str(path), "--steps", "0:3", "--no-numeric")
    assert (code, err) == (0, "")
    assert out.splitlines() == report.summary_lines()
    code, out, err = gradtrace_main(capsys, "check", str(path), "--steps", "0:3", "--no-numeric", "--json")
    assert code == 0
    assert json.loads(out) == json.loads(report.to_json())
    assert {(c["step"], c["kind"]) for c in json.loads(out)["checks"]} == {
        (s, "analytic_mse") for s in (0, 1, 2)}


def test_numeric_numeric_and_no_numeric_choose_every_step_or_none(recorded_demos, capsys):
    path = str(recorded_demos.path("linreg"))
    kinds = {}
    for flag in ("--numeric", "--no-numeric"):
        code, out, _ = gradtrace_main(capsys, "check", path, "--steps", "5:8", "--json", flag)
        assert code == 0
        kinds[flag] = sorted((c["step"], c["kind"], c["param"]) for c in json.loads(out)["checks"])
    analytic = [(s, "analytic_mse", p) for s in (5, 6, 7) for p in ("b", "w")]
    assert kinds["--no-numeric"] == sorted(analytic)
    assert kinds["--numeric"] == sorted(analytic + [(s, "numeric", p) for s in (5, 6, 7) for p in ("b", "w")])


def test_a_negative_max_steps_is_a_usage_error(recorded_demos, capsys):
    code, out, err = gradtrace_main(capsys, "check", str(recorded_demos.path("linreg")), "--max-steps", "-1")
    assert code == 2 and out == ""
    assert "--max-steps" in err and "-1" in err


def test_a_file_that_is_not_a_trace_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "notes.gtrace"
    path.write_text("not a trace\n")
    code, out, err = gradtrace_main(capsys, "check", str(path))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "notes.gtrace" in err and err.startswith("gradtrace: error: ")


# -- a distributed run: every rank and the checks across ranks ------------------------------------

def _rank(path, rank: int, monkeypatch) -> None:
    """Rank ``rank`` of 2 (without DDP: each rank its own batch), 2 steps of a linear model."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    torch.manual_seed(rank)
    X, y = torch.randn(8, 2), torch.randn(8, 1)
    w = torch.zeros(2, 1, requires_grad=True)
    with gradtrace.trace(path):
        for _ in range(2):
            ((X @ w - y) ** 2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad = None


def test_the_check_of_a_run_folder_checks_every_rank(tmp_path, monkeypatch):
    from gradtrace.tracefile.ranks import RankedRun

    for r in (0, 1):
        _rank(tmp_path / f"trace.rank{r}.gtrace", r, monkeypatch)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    run = gradtrace.load(tmp_path)
    assert isinstance(run, RankedRun)
    report = cli_check._check(run)
    assert {(c.rank, c.step, c.kind) for c in report.checks if c.kind == "analytic_mse"} == {
        (r, s, "analytic_mse") for r in (0, 1) for s in (0, 1)}
    # the ranks applied different updates (their own batches, no all-reduce): they drifted
    assert [(f.kind, f.step, f.rank) for f in report.findings] == [("ranks_diverged", 0, 1)]
    r = CliRunner().invoke(cli, ["check", str(tmp_path), "--strict"])
    assert r.exit_code == 3 and "ranks_diverged (rank 1, step 0" in r.output, r.output


# -- after `gradtrace run` -------------------------------------------------------------------------

def test_after_run_says_the_verdict_and_at_most_three_failures_on_stderr(capsys):
    trace = _doubled_w_trace()
    made: dict = {}
    cli_check.after_run(trace, None, None, made)
    out, err = capsys.readouterr()
    report = made["check"]
    assert out == "" and report.exit_code() == 3
    lines = err.splitlines()
    assert lines[0] == f"gradtrace: check: {report.verdict()}"
    assert len(report.failed) > 3
    assert lines[1:] == [f"gradtrace:   FAIL {c}" for c in report.failed[:3]] + [
        f"gradtrace:   {f}" for f in report.findings]


def test_after_run_lists_the_findings(capsys):
    torch.manual_seed(0)
    X, y = torch.randn(10, 2), torch.randn(10, 1)
    w = torch.zeros(2, 1, requires_grad=True)
    with gradtrace.trace() as t:
        for _ in range(3):  # .grad never cleared
            ((X @ w - y) ** 2).sum().backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
    made: dict = {}
    cli_check.after_run(t.result, None, None, made)
    _, err = capsys.readouterr()
    report = made["check"]
    assert report.findings and not report.failed
    assert err.splitlines() == [f"gradtrace: check: {report.verdict()}"] + [
        f"gradtrace:   {f}" for f in report.findings]
    assert "forgot_zero_grad" in report.verdict()
