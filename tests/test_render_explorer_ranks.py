"""render/explorer_ranks: the ranks panel's data and frame, from ranks recorded in-process
(the panel in a browser, on a real torchrun job, is in tests/test_distributed.py)."""

from __future__ import annotations

import json
import re

import torch

import gradtrace
from gradtrace.analysis.distributed import check_ranks
from gradtrace.render.explorer import page_of
from gradtrace.render.explorer_ranks import RANK_VALUES, ranks_data, ranks_html
from gradtrace.tracefile.ranks import rank_path


def _record(path, rank: int, world: int, monkeypatch, lr: float = 0.1, steps: int = 3) -> None:
    """Rank ``rank`` of a run without DDP (each rank its own batch): local gradients only."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    torch.manual_seed(10 + rank)
    X = torch.randn(8, 2)
    y = X @ torch.tensor([[1.0], [-2.0]])
    with gradtrace.trace(path):
        for _ in range(steps):
            loss = ((model(X) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def _data(html_text: str) -> dict:
    m = re.search(r'<script type="application/json" id="gt-data">(.*?)</script>', html_text, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_each_rank_batch_and_local_gradient_and_the_findings_linked(tmp_path, monkeypatch):
    run_path = tmp_path / "trace.gtrace"
    _record(rank_path(run_path, 0), 0, 2, monkeypatch)
    _record(rank_path(run_path, 1), 1, 2, monkeypatch, lr=0.2)  # another update: the replicas drift
    run = gradtrace.load(tmp_path)
    report = check_ranks(run)
    d = ranks_data(run, report, run.steps.indices)
    assert (d["world_size"], d["ranks"], d["missing"]) == (2, [0, 1], [])
    [f] = [f for f in d["findings"] if f["kind"] == "ranks_diverged"]
    assert (f["step"], f["rank"], f["title"]) == (0, 1, "The ranks' replicas drift apart")
    for key, s in d["steps"].items():
        for r in (0, 1):
            step = run.rank(r).step(int(key))
            [x] = [b for b in s["batch"][str(r)] if b["name"] == "X"]
            assert x["value"]["values"] == step.value(next(
                tid for tid, info in step.tensors.items() if info.label == "X")).array.reshape(-1).tolist()
            for p in s["params"]:
                acc = next(e for e in step.events if e.kind == "accumulate" and step.name(e.tensor) == p["name"])
                assert p["local"][str(r)]["values"] == acc.after.array.reshape(-1).tolist()
        for p in s["params"]:  # no DDP: nothing all-reduced, no bucket, no check
            assert p["synced"] == {} and p["bucket"] == {} and p["check"] is None and p["same_bits"] is None
            local = [torch.tensor(p["local"][str(r)]["values"], dtype=torch.float64) for r in (0, 1)]
            assert p["mean"]["values"] == ((local[0] + local[1]) / 2).tolist()
    page = page_of(run, report)
    assert "id='ranks-panel'" in page and "2 of 2 ranks" in page
    assert _data(page)["ranks"]["steps"] == json.loads(json.dumps(d["steps"]))


def test_a_large_tensor_is_shown_by_its_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    w = torch.nn.Parameter(torch.ones(RANK_VALUES + 1))
    with gradtrace.trace(tmp_path / "trace.rank0.gtrace"):
        (w * 2.0).sum().backward()
    run = gradtrace.load(tmp_path)
    [p] = ranks_data(run, None, run.steps.indices)["steps"]["0"]["params"]
    local = p["local"]["0"]
    assert "values" not in local and local["shape"] == str(RANK_VALUES + 1)  # 65 twos: norm 2·√65
    assert local["stats"].startswith("norm 16.12, mean 2, min 2, max 2")


def test_a_page_of_one_process_has_no_ranks_panel(demo_trace):
    t = demo_trace("linreg")
    page = page_of(t, None)
    assert "ranks-panel" not in page and "explorer_ranks" not in page and "data-ranks-ready" not in page
    assert "ranks" not in _data(page)
    assert ranks_html({"ranks": None}) == ""
