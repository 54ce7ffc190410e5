"""One `gradtrace run`, each analysis once: the check, the linear recognition of a step,
reading a step and drawing step 0's graph are counted (benchmarks/repeated_work.py's
counters) over an in-process run of a small script."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""\
    import torch
    torch.manual_seed(0)
    X = torch.randn(16, 2)
    y = X @ torch.tensor([[2.0], [-3.4]]) + 4.2
    w = torch.zeros(2, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for i in range(6):
        loss = ((X @ w + b - y) ** 2).sum() / 2
        loss.backward()
        with torch.no_grad():
            w -= 0.01 * w.grad
            b -= 0.01 * b.grad
            w.grad.zero_()
            b.grad.zero_()
    """)


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("repeated_work", ROOT / "benchmarks" / "repeated_work.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("repeated_work", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("animate", [False, pytest.param(True, marks=pytest.mark.slow)],  # GIFs
                         ids=["no-animate", "animate"])
def test_run_makes_each_analysis_once(tmp_path, animate):
    bench = _bench()
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    counts, err, _ = bench.run_counted(str(script), *(["--animate"] if animate else []),
                                       out_dir=tmp_path / "out")
    assert "check: gradients ok" in err, err
    assert "report: " in err, err
    assert (tmp_path / "out" / "report.html").is_file()
    if animate:
        assert (tmp_path / "out" / "training.gif").is_file(), err
    assert counts["check_trace"] == 1
    graphs = bench.per_step(counts, "graph_of_step")
    assert graphs == {0: 1}, graphs                   # step 0, for graph.svg; the report lays
    reads = bench.per_step(counts, "read_step")       # out its own graphs from the same DOT
    assert sorted(reads) == list(range(6)) and set(reads.values()) == {1}, reads
    assert counts["recognize"] == 6                   # once per step with a backward pass
    page = (tmp_path / "out" / "report.html").read_text()
    assert "The gradients are right" in page          # the check's result, not a second check
    assert '"held":[0,1,2,3,4,5]' in page             # every step's data, read once
