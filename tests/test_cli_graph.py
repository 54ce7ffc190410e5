"""cli/graph.py: `gradtrace graph` and the graph.svg that `gradtrace run` writes: real subprocesses, plus
the cheaper option checks through the same main() in this process."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

import gradtrace
from gradtrace.render.graph import graph_of_step

from conftest import (DEMOS, fresh_gradtrace_cmd, gradtrace_cmd, gradtrace_main, imported_modules,
                      record_demo)

MAGIC = {"svg": b"<?xml", "png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "dot": b"digraph gradtrace {"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """crop_yield.py (seed 3) run under `gradtrace run`, steps 0-2 recorded."""
    d = tmp_path_factory.mktemp("graph-cli")
    r = gradtrace_cmd("run", "--no-report", "--steps", "0:3", "-o", "out/trace.gtrace",
                      str(DEMOS / "crop_yield.py"), cwd=d)
    assert r.returncode == 0, r.stderr
    return d, r


@pytest.fixture(scope="module")
def recorded_here(tmp_path_factory):
    """The same run recorded in this process (gradtrace.trace, steps 0-2), for the tests of
    the command's options: (folder, None), the folder holding out/trace.gtrace."""
    d = tmp_path_factory.mktemp("graph-in-process")
    (d / "out").mkdir()
    record_demo("crop_yield", d / "out" / "trace.gtrace", step_range=(0, 3))
    return d, None


@pytest.mark.slow  # `gradtrace run` / `graph` in forked children
def test_run_writes_graph_svg_next_to_the_trace(recorded):
    d, r = recorded
    assert "gradtrace: graph of step 0: out/graph.svg" in r.stderr.splitlines()
    svg = (d / "out" / "graph.svg").read_text()
    ET.fromstring(svg)
    for name in (">w<", ">b<", ">matmul<", ">AccumulateGrad<"):
        assert name in svg
    assert "Fontconfig" not in r.stderr   # the bundled libraries' start-up noise is hidden


@pytest.fixture(scope="module")
def commands(recorded):
    """The subprocess calls, started together (each one spends most of its time importing)."""
    d, _ = recorded
    calls = {ext: ("graph", "out/trace.gtrace", "-o", f"g.{ext}") for ext in MAGIC}
    calls["bad-step"] = ("graph", "out/trace.gtrace", "--step", "99", "-o", "never.svg")
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {k: pool.submit(gradtrace_cmd, *args, cwd=d) for k, args in calls.items()}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.slow  # `gradtrace run` / `graph` in forked children
@pytest.mark.parametrize("ext", ["svg", "png", "pdf", "dot"])
def test_graph_writes_each_format(recorded, commands, ext):
    d, _ = recorded
    r = commands[ext]
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"gradtrace: graph of step 0 (both view, 14 nodes): g.{ext}"]
    assert r.stdout == ""
    assert (d / f"g.{ext}").read_bytes().startswith(MAGIC[ext])
    if ext == "dot":  # the same bytes as the Python API gives for that step
        step = gradtrace.load(d / "out" / "trace.gtrace").steps[0]
        assert (d / "g.dot").read_text() == graph_of_step(step, view="both").dot


@pytest.mark.slow  # `gradtrace run` / `graph` in forked children
def test_bad_step_is_one_line_and_exit_2(recorded, commands):
    d, _ = recorded
    r = commands["bad-step"]
    assert r.returncode == 2
    assert r.stderr == "gradtrace: error: step 99 was not recorded; recorded steps are 0..2\n"
    assert not (d / "never.svg").exists()


def test_options_in_process(recorded_here, capsys, monkeypatch):
    d, _ = recorded_here
    monkeypatch.chdir(d)
    code, out, err = gradtrace_main(capsys, "graph", "out/trace.gtrace", "--step", "last", "--view", "backward",
                           "-o", "last.svg")
    assert code == 0 and err == "gradtrace: graph of step 2 (backward view, 12 nodes): last.svg\n"
    assert ">DivBackward0<" in (d / "last.svg").read_text()
    code, out, err = gradtrace_main(capsys, "graph", "out/trace.gtrace", "-o", "-", "--view", "forward")
    assert code == 0 and err == ""
    assert out == graph_of_step(gradtrace.load("out/trace.gtrace").steps[0], view="forward").dot
    code, out, err = gradtrace_main(capsys, "graph", "out/trace.gtrace", "-o", "-", "--view", "backward",
                           "--no-fold")
    step = gradtrace.load("out/trace.gtrace").steps[0]
    assert code == 0 and out == graph_of_step(step, view="backward", fold=False).dot
    assert out != graph_of_step(step, view="backward").dot and "style=invis" not in out
    code, out, err = gradtrace_main(capsys, "graph", "out/trace.gtrace", "--no-values", "--theme", "dark",
                           "--no-legend", "-o", "plain.gv")
    dot = (d / "plain.gv").read_text()
    assert code == 0 and 'bgcolor="#1e1e1e"' in dot and "<I>data</I>" not in dot and "legend" not in dot
    code, out, err = gradtrace_main(capsys, "graph", "out/trace.gtrace", "--engine", "matplotlib", "-o", "m.png")
    assert code == 0 and (d / "m.png").read_bytes().startswith(MAGIC["png"])
    code, out, err = gradtrace_main(capsys, "graph", "out/trace.gtrace")   # default: graph.svg by the trace
    assert code == 0 and err.endswith(": out/graph.svg\n")


@pytest.mark.parametrize("args,message,exit_code", [
    (["--step", "abc"], "--step takes a step number, 'first' or 'last', not 'abc'", 2),
    (["-o", "g.jpg"], "-o g.jpg: unknown picture type; use .svg, .png, .pdf or .dot", 2),
    (["--engine", "dot", "-o", "g.svg"], "the `dot` program is not on PATH", 1),
])
def test_user_errors_are_one_line(recorded_here, capsys, monkeypatch, args, message, exit_code):
    d, _ = recorded_here
    monkeypatch.chdir(d)
    monkeypatch.setattr("shutil.which", lambda name: None)
    code, out, err = gradtrace_main(capsys, "graph", "out/trace.gtrace", *args)
    assert code == exit_code and err.startswith(f"gradtrace: error: {message}") and err.count("\n") == 1


def test_missing_trace(tmp_path, capsys):
    code, out, err = gradtrace_main(capsys, "graph", str(tmp_path / "nope.gtrace"))
    assert code == 2 and err.startswith("gradtrace: error: ") and err.count("\n") == 1


@pytest.mark.slow  # fresh interpreters: what the commands import
def test_graph_and_summary_start_without_torch(recorded_demos, tmp_path):
    """A fresh interpreter draws a step with its values (decoded by numpy) and prints the
    summary table, and never imports torch (issue 15: they start in well under a second)."""
    trace = str(recorded_demos.path("linreg"))
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    r = fresh_gradtrace_cmd("graph", trace, "--step", "2", "-o", "-", env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = imported_modules(r.stderr)
    assert "gradtrace.tracefile.arrays" in imported and "numpy" in imported
    assert "torch" not in imported
    dot = r.stdout
    want = graph_of_step(gradtrace.load(trace).step(2), view="both").dot  # this process: torch here
    assert dot == want and "grad" in dot and "loss" in dot
    r = fresh_gradtrace_cmd("graph", trace, "-o", str(tmp_path / "g.svg"), env=env, timeout=120)
    assert r.returncode == 0 and (tmp_path / "g.svg").read_bytes().startswith(MAGIC["svg"])
    assert "torch" not in imported_modules(r.stderr)
    r = fresh_gradtrace_cmd("summary", trace, env=env, timeout=120)
    assert r.returncode == 0 and "301 steps recorded" in r.stdout
    assert not imported_modules(r.stderr) & {"torch", "numpy", "matplotlib"}
