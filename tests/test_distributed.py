"""`torchrun ... gradtrace run`: a 2-rank gloo DDP job on the CPU, one trace per rank, checked
across ranks; its mutated twins caught; a rank killed mid-run. Real torchrun subprocesses
(the launcher is torch's own), so these are slow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gradtrace
from gradtrace.analysis.distributed import check_ranks
from gradtrace.tracefile.ranks import RankedRun

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
        d = t.rank(r).info.distributed
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
