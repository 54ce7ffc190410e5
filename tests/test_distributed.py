"""`torchrun ... gradtrace run`: a 2-rank gloo DDP job on the CPU, one trace per rank, checked
across ranks; its mutated twins caught; a rank killed mid-run. Real torchrun subprocesses
(the launcher is torch's own), so these are slow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gradtrace
from gradtrace.analysis.distributed import check_ranks
from gradtrace.tracefile.ranks import RankedRun
from conftest import gradtrace_cmd

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "distributed" / "ddp_linreg.py"


def _torchrun(tmp: Path, *cmd: str, params: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, DDP_PARAMS=str(tmp / params), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--standalone", *cmd], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _traced(tmp: Path, mode: str, *options: str) -> subprocess.CompletedProcess:
    return _torchrun(tmp, "--no-python", sys.executable, "-m", "gradtrace", "run", *options,
                     "-o", f"{mode}/trace.gtrace", str(SCRIPT), mode, params=f"traced-{mode}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out = {"plain": _torchrun(tmp, str(SCRIPT), "ok", params="plain"),
           "ok": _traced(tmp, "ok", "--no-animate")}
    for mode in ("perturb", "unused"):
        out[mode] = _traced(tmp, mode, "--no-animate", "--no-report")
    return tmp, out


def test_each_rank_records_its_trace_and_the_run_is_unchanged(runs):
    tmp, out = runs
    for name in ("plain", "ok"):
        assert out[name].returncode == 0, out[name].stderr[-3000:]
    assert out["ok"].stdout == out["plain"].stdout  # rank 0 prints the losses: the same
    for r in (0, 1):
        plain = torch.load(tmp / f"plain.{r}")
        traced = torch.load(tmp / f"traced-ok.{r}")
        assert plain.keys() == traced.keys()
        assert all(torch.equal(plain[k], traced[k]) for k in plain), r
    folder = tmp / "ok"
    assert sorted(p.name for p in folder.glob("*.gtrace")) == ["trace.rank0.gtrace", "trace.rank1.gtrace"]
    assert (folder / "graph.svg").is_file() and (folder / "report.html").is_file()
    assert not list(folder.glob("trace.rank1.*.svg"))  # rank 0 alone writes the outputs
    assert "all 2 ranks' traces are finished" in out["ok"].stderr
    assert "rank 1 of 2: rank 0 checks and draws the run" in out["ok"].stderr
    t = gradtrace.load(folder)
    assert isinstance(t, RankedRun) and t.ranks == [0, 1]
    for r in (0, 1):
        d = dict(t.rank(r).info.distributed)
        assert d.pop("buckets")  # DDP's gradient buckets: see the bucket test
        assert d == {"rank": r, "world_size": 2, "local_rank": r, "backend": "gloo"}


def test_the_synchronised_grad_is_the_mean_of_the_local_gradients(runs):
    tmp, _ = runs
    t = gradtrace.load(tmp / "ok" / "trace.rank1.gtrace")
    seen = 0
    for index in t.steps.indices:
        steps = t.step_of_ranks(index)
        events = [{t.rank(r).name(e.tensor): e for e in s.events if e.kind == "allreduce"}
                  for r, s in sorted(steps.items())]
        assert set(events[0]) == {"model.module.lin.weight", "model.module.lin.bias"}
        for name in events[0]:
            local = [ev[name].before.data for ev in events]
            synced = [ev[name].after.data for ev in events]
            assert torch.equal(synced[0], synced[1])  # the same bits on every rank
            assert torch.allclose(synced[0], (local[0] + local[1]) / 2, rtol=1e-6, atol=1e-7)
            # the accumulation ends at the rank's own gradient, the all-reduce takes it on
            acc = next(e for e in steps[0].events if e.kind == "accumulate"
                       and t.rank(0).name(e.tensor) == name)
            assert torch.equal(acc.after.data, local[0])
            seen += 1
    assert seen == 2 * 12
    report = check_ranks(t)
    assert report.ok and not report.findings
    allreduce = report.of("allreduce")
    assert len(allreduce) == 24 and all(c.passed for c in allreduce)
    assert all(c.passed for c in report.of("analytic_mse"))


def test_a_rank_that_drifts_is_caught_with_the_parameter_and_the_step(runs):
    tmp, out = runs
    assert out["perturb"].returncode == 0, out["perturb"].stderr[-3000:]
    report = check_ranks(gradtrace.load(tmp / "perturb"))
    diverged = [f for f in report.findings if f.kind == "ranks_diverged"]
    assert len(diverged) == 1
    f = diverged[0]
    assert (f.step, f.param, f.rank) == (4, "model.module.lin.bias", 1)
    assert "ranks_diverged (rank 1, step 4" in out["perturb"].stderr


def test_a_parameter_used_on_rank_0_only_is_named(runs):
    tmp, out = runs
    assert out["unused"].returncode == 0, out["unused"].stderr[-3000:]
    report = check_ranks(gradtrace.load(tmp / "unused"))
    lacking = sorted((f.param, f.rank, f.step) for f in report.findings if f.kind == "no_grad_on_rank")
    assert lacking == [("model.module.extra.bias", 1, 0), ("model.module.extra.weight", 1, 0)]
    assert not report.failed
    # DDP still wrote rank 1's .grad of the head (the mean of rank 0's gradient and rank 1's
    # zeros): an allreduce event with no local gradient, checked against that mean.
    run = gradtrace.load(tmp / "unused")
    rank1 = run.rank(1)
    extra = {"model.module.extra.bias", "model.module.extra.weight"}
    for step in rank1.steps:
        synced = {rank1.name(e.tensor): e for e in step.events if e.kind == "allreduce"}
        assert extra <= set(synced), (step.index, sorted(synced))
        assert all(synced[n].before is None and synced[n].after is not None for n in extra)
    checked = [c for c in report.checks if c.kind == "allreduce" and c.param in extra]
    assert len(checked) == 2 * len(rank1.steps)
    assert all(c.status == "pass" for c in checked), [c for c in checked if c.status != "pass"][:2]


def test_a_rank_killed_mid_run_leaves_readable_traces(tmp_path):
    r = _traced(tmp_path, "die", "--no-animate", "--no-report", "--rank-wait", "5")
    assert r.returncode != 0  # torchrun reports the dead worker
    t = gradtrace.load(tmp_path / "die")
    assert t.ranks == [0, 1]
    killed = t.rank(1)
    assert killed.info.status == "running"  # killed by SIGKILL: never finished
    assert killed.steps.indices == [0, 1, 2, 3]  # every step it finished
    kinds = {f.kind for f in check_ranks(t).findings}
    assert "rank_missing" in kinds


def _logged(tmp: Path, run: str, rank: int) -> dict:
    return json.loads((tmp / f"{run}.{rank}.ddp.json").read_text())


def test_the_buckets_recorded_are_those_ddp_logs_of_an_untraced_run(runs):
    """DDP starts with one bucket of every parameter, and rebuilds the buckets in the
    forward after the first backward pass (4-byte buckets: the bias, then the weight);
    its logging data (of the untraced run) says the rebuilt layout, and each allreduce
    event of the traced run carries its bucket."""
    tmp, _ = runs
    t = gradtrace.load(tmp / "ok")
    for r in (0, 1):
        plain, traced = _logged(tmp, "plain", r), _logged(tmp, "traced-ok", r)
        assert traced == plain  # tracing changes nothing DDP does with its buckets
        names = plain["names"]
        rebuilt = [[names[int(i)] for i in g.split()] for g in plain["rebuilt_per_bucket_param_indices"].split(",")]
        assert rebuilt == [["lin.bias"], ["lin.weight"]] == plain["buckets"]
        trace = t.rank(r)
        first, later = trace.info.distributed["buckets"]
        short = lambda tids: [trace.name(i).removeprefix("model.module.") for i in tids]
        assert (first["from_step"], first["rebuilt"]) == (0, False)
        assert [short(g) for g in first["params"]] == [names]  # one bucket at first
        assert first["bytes"] == [int(x) for x in plain["bucket_sizes"].split(",")]
        assert (later["from_step"], later["rebuilt"]) == (1, True)
        assert [short(g) for g in later["params"]] == rebuilt
        assert later["bytes"] == [int(x) for x in plain["rebuilt_bucket_sizes"].split(",")]
        for index in trace.steps.indices:
            step = trace.step(index)
            labels = {short([e.tensor])[0]: step.bucket_of(e.tensor).label
                      for e in step.events if e.kind == "allreduce"}
            assert labels == ({"lin.weight": "bucket 0 of 1", "lin.bias": "bucket 0 of 1"} if index == 0 else
                              {"lin.bias": "bucket 0 of 2", "lin.weight": "bucket 1 of 2"}), index


def test_the_first_buckets_of_a_run_ddp_never_rebuilds_are_torchs_own(runs):
    """With find_unused_parameters=True DDP keeps its first buckets (4 bytes: one per
    parameter); its logging data says only their sizes, the parameters recorded are those
    of torch's own assignment, and they are the buckets the reducer holds."""
    tmp, _ = runs
    t = gradtrace.load(tmp / "unused")
    for r in (0, 1):
        held = _logged(tmp, "traced-unused", r)
        trace = t.rank(r)
        [layout] = trace.info.distributed["buckets"]
        short = lambda tids: [trace.name(i).removeprefix("model.module.") for i in tids]
        assert [short(g) for g in layout["params"]] == held["buckets"]
        assert held["buckets"] == [["extra.bias"], ["extra.weight"], ["lin.bias"], ["lin.weight"]]
        assert layout["bytes"] == [int(x) for x in held["bucket_sizes"].split(",")] == [4, 8, 4, 8]
        assert held["has_rebuilt_buckets"] == 0 and not layout["rebuilt"]


def _page_data(html_text: str) -> dict:
    m = re.search(r'<script type="application/json" id="gt-data">(.*?)</script>', html_text, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_the_report_holds_each_ranks_values_as_the_traces_say(runs):
    """rank 0's report.html: for every step it holds, each rank's batch, local gradient and
    synchronised .grad equal what gradtrace.load(folder).rank(r) reads."""
    tmp, _ = runs
    t = gradtrace.load(tmp / "ok")
    ranks = _page_data((tmp / "ok" / "report.html").read_text(encoding="utf-8"))["ranks"]
    assert (ranks["world_size"], ranks["ranks"], ranks["missing"]) == (2, [0, 1], [])
    assert sorted(map(int, ranks["steps"])) == t.steps.indices and ranks["findings"] == []
    for key, d in ranks["steps"].items():
        index = int(key)
        assert [p["name"] for p in d["params"]] == ["model.module.lin.bias", "model.module.lin.weight"]
        for r in (0, 1):
            step = t.rank(r).step(index)
            batch = {b["name"]: b["value"]["values"] for b in d["batch"][str(r)]}
            inputs = {step.name(i): step.value(i).array.reshape(-1).tolist()
                      for i in {tid for op in step.ops for tid in op.inputs}
                      if step.tensors[i].role == "input"}
            assert batch == inputs and set(batch) == {"xb", "yb"}
            events = {step.name(e.tensor): e for e in step.events if e.kind == "allreduce"}
            for p in d["params"]:
                e = events[p["name"]]
                assert p["local"][str(r)]["values"] == e.before.array.reshape(-1).tolist()
                assert p["synced"][str(r)]["values"] == e.after.array.reshape(-1).tolist()
                assert p["bucket"][str(r)] == step.bucket_of(e.tensor).label
        for p in d["params"]:
            assert p["same_bits"] is True and p["check"]["status"] == "pass"
            local = [torch.tensor(p["local"][str(r)]["values"], dtype=torch.float64) for r in (0, 1)]
            assert p["mean"]["values"] == ((local[0] + local[1]) / 2).tolist()
            assert p["mean"]["values"] == pytest.approx(p["synced"]["0"]["values"], rel=1e-6, abs=1e-7)


def test_the_ranks_panel_holds_what_fits_its_budget_and_the_steps_findings_point_at(runs):
    from gradtrace.render.explorer_ranks import ranks_data

    tmp, _ = runs
    run = gradtrace.load(tmp / "perturb")
    report = check_ranks(run)
    every = ranks_data(run, report, run.steps.indices)
    assert sorted(map(int, every["steps"])) == run.steps.indices
    assert [(f["kind"], f["step"], f["rank"]) for f in every["findings"]] == [("ranks_diverged", 4, 1)]
    r = gradtrace_cmd("report", str(tmp / "perturb"), "--no-animations", timeout=240)
    assert r.returncode == 0 and r.stderr.strip().endswith("perturb/report.html"), r.stderr
    page = _page_data((tmp / "perturb" / "report.html").read_text(encoding="utf-8"))
    assert page["ranks"]["findings"] == every["findings"]  # the folder's report checks across ranks
    size = len(json.dumps(every["steps"]["4"], separators=(",", ":")))
    few = ranks_data(run, report, run.steps.indices, budget=3 * size)
    assert 4 in map(int, few["steps"]) and 1 < len(few["steps"]) <= 3
    assert few["steps"]["4"] == every["steps"]["4"]


def test_graph_of_the_folder_draws_rank_0_and_names_the_bucket(runs):
    tmp, _ = runs
    folder = tmp / "ok"
    r = gradtrace_cmd("graph", str(folder), "--step", "3", "-o", "-", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "→ all-reduce, bucket 1 of 2 → model.module.lin.weight.grad" in r.stdout
    assert "→ all-reduce, bucket 0 of 2 → model.module.lin.bias.grad" in r.stdout
    r = gradtrace_cmd("graph", str(folder), timeout=120)
    assert r.returncode == 0 and "graph of rank 0 of 2 (--rank R for another), step 0" in r.stderr, r.stderr
    r = gradtrace_cmd("graph", str(folder), "--rank", "1", timeout=120)
    assert r.returncode == 0 and "graph of rank 1 of 2, step 0" in r.stderr, r.stderr
    assert (folder / "graph.rank1.svg").is_file()
    r = gradtrace_cmd("graph", str(folder), "--rank", "2", timeout=120)
    assert r.returncode == 2 and r.stderr.strip().endswith("no trace of rank 2 (ranks here: 0, 1)"), r.stderr


def test_the_ranks_panel_in_the_browser(runs, browser):
    """The unused-parameter twin's page: the finding's link goes to its step, marks the
    parameter's row and rank 1's cell; rank 1's local gradient there is what its trace says."""
    from playwright.sync_api import expect

    from gradtrace.render.explorer import page_of

    tmp, _ = runs
    run = gradtrace.load(tmp / "unused")
    page_file = tmp / "unused" / "page.html"
    page_file.write_text(page_of(run, check_ranks(run)), encoding="utf-8")
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(page_file.as_uri())
        page.wait_for_selector("html[data-ranks-ready='1']", timeout=30000)
        page.locator("#slider").fill("5")
        expect(page.locator("#ranks-step")).to_have_text("5", timeout=30000)
        links = page.locator("#ranks-findings li.rank-finding[data-kind='no_grad_on_rank'] button")
        assert links.count() == 2
        links.first.click()
        expect(page.locator("#ranks-step")).to_have_text("0", timeout=30000)
        row = page.locator("#ranks-grads tr.hl")
        expect(row).to_have_attribute("data-param", "model.module.extra.bias")
        step = run.rank(1).step(0)
        acc = next(e for e in step.events if e.kind == "allreduce"
                   and step.name(e.tensor) == "model.module.lin.weight")
        from gradtrace.formatting import number
        cell = page.locator("#ranks-grads tr[data-param='model.module.lin.weight'] td[data-rank='1'][data-what='local']")
        assert cell.inner_text() == "1×2 [" + ", ".join(number(x) for x in acc.before.array.reshape(-1)) + "]"
        assert page.locator("#ranks-grads tr.hl td.hl[data-rank='1']").count() == 1
        assert problems == []
    finally:
        page.close()
