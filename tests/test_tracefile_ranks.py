"""tracefile.ranks: which rank a process is, the names of rank traces, a run folder read
together; analysis.distributed's findings across ranks on runs recorded in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import gradtrace_main

import gradtrace
from gradtrace.analysis.distributed import check_ranks, rank_findings
from gradtrace.errors import UsageError
from gradtrace.tracefile.ranks import (RankedRun, RankInfo, buckets_at, rank_files, rank_path,
                                       run_path_of)


def test_rank_info_from_the_environment_torchrun_sets():
    assert RankInfo.from_env({}) is None
    assert RankInfo.from_env({"RANK": "1"}) is None  # no world size: not a distributed run
    info = RankInfo.from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert info == RankInfo(rank=1, world_size=4, local_rank=1)
    assert info.as_meta("gloo") == {"rank": 1, "world_size": 4, "local_rank": 1, "backend": "gloo"}
    assert RankInfo.from_env({"RANK": "0", "WORLD_SIZE": "1"}).local_rank == 0


@pytest.mark.parametrize("env,says", [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not a whole number"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not a rank of WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0 is not a number of processes"),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK='-1' is not a whole number"),
])
def test_a_bad_rank_environment_is_a_usage_error_naming_the_variable(env, says):
    with pytest.raises(UsageError, match=says.replace("(", r"\(")):
        RankInfo.from_env(env)


def test_rank_file_names():
    run = Path("out/train/trace.gtrace")
    assert rank_path(run, 0) == Path("out/train/trace.rank0.gtrace")
    assert rank_path(Path("runs/a.gtrace"), 12) == Path("runs/a.rank12.gtrace")
    assert run_path_of(Path("out/train/trace.rank3.gtrace")) == (run, 3)
    for not_a_rank in ("trace.gtrace", "trace.rank.gtrace", "trace.rank01.gtrace",
                       "trace.rank1.gtrace.lock", "trace.rank-1.gtrace", "x.rank999999.gtrace"):
        assert run_path_of(Path(not_a_rank)) is None, not_a_rank


def _record(path: Path, rank: int, world: int, monkeypatch, lr=0.1, steps=3):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    X = torch.randn(16, 2)
    y = X @ torch.tensor([[1.0], [-2.0]])
    with gradtrace.trace(path):
        for _ in range(steps):
            loss = ((model(X) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_a_run_folder_is_read_as_all_its_ranks(tmp_path, monkeypatch):
    run = tmp_path / "trace.gtrace"
    for r in (0, 1):
        _record(rank_path(run, r), r, 2, monkeypatch)
    (tmp_path / "trace.rank1.gtrace.lock").write_text("gradtrace run pid 1\n")
    (tmp_path / "notes.txt").write_text("not a trace")
    found = rank_files(tmp_path)
    assert found == (run, {0: rank_path(run, 0), 1: rank_path(run, 1)})
    assert rank_files(rank_path(run, 1)) == found  # one rank's file finds its siblings
    t = gradtrace.load(tmp_path)
    assert isinstance(t, RankedRun) and t.ranks == [0, 1] and t.world_size == 2
    assert not t.missing
    assert t.rank(1).info.distributed == {"rank": 1, "world_size": 2, "local_rank": 1,
                                          "backend": None}
    assert len(t.steps) == 3  # what a single trace has is rank 0's
    assert set(t.step_of_ranks(2)) == {0, 1}
    assert isinstance(gradtrace.load(rank_path(run, 1)), RankedRun)
    with pytest.raises(UsageError, match="no trace of rank 5"):
        t.rank(5)
    # the same seed and lr on both ranks: nothing to say
    assert rank_findings(t) == []


def test_a_folder_with_the_ranks_of_two_runs_is_refused_by_name(tmp_path, monkeypatch):
    _record(tmp_path / "a.rank0.gtrace", 0, 1, monkeypatch, steps=1)
    _record(tmp_path / "b.rank0.gtrace", 0, 1, monkeypatch, steps=1)
    with pytest.raises(UsageError, match=r"holds the ranks of several runs \(a.gtrace, b.gtrace\)"):
        gradtrace.load(tmp_path)


def test_findings_across_ranks_diverged_step_counts_and_a_missing_rank(tmp_path, monkeypatch):
    run = tmp_path / "trace.gtrace"
    _record(rank_path(run, 0), 0, 3, monkeypatch, lr=0.1, steps=3)
    _record(rank_path(run, 1), 1, 3, monkeypatch, lr=0.2, steps=4)  # another update, one more step
    t = gradtrace.load(tmp_path)
    assert t.missing == (2,)
    kinds = {f.kind: f for f in rank_findings(t)}
    assert set(kinds) == {"rank_missing", "ranks_step_count", "ranks_diverged"}
    div = kinds["ranks_diverged"]
    assert div.step == 0 and div.param in ("model.weight", "model.bias") and div.rank == 1
    assert "differs across ranks after step 0" in div.message
    assert "rank 0: 3, rank 1: 4" in kinds["ranks_step_count"].message
    assert kinds["rank_missing"].rank == 2
    report = check_ranks(t)
    assert {c.rank for c in report.checks} == {0, 1}  # each rank's own checks, each named
    assert report.ok and report.exit_code(strict=True) == 3
    assert "(rank 1, step 0" in str(div)


def test_summary_and_check_take_the_run_folder(tmp_path, monkeypatch, capsys):
    run = tmp_path / "trace.gtrace"
    for r in (0, 1):
        _record(rank_path(run, r), r, 2, monkeypatch)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    capsys.readouterr()
    code, out, err = gradtrace_main(capsys, "summary", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["world_size"] == 2 and set(doc["ranks"]) == {"0", "1"}
    assert doc["ranks"]["1"]["totals"]["steps"] == 3
    code, out, err = gradtrace_main(capsys, "summary", str(tmp_path))
    assert "a run of 2 ranks" in out and "rank 1: " in out
    code, out, err = gradtrace_main(capsys, "check", str(tmp_path))
    assert code == 0, out + err
    assert out.startswith("gradients ok")


def test_the_buckets_of_a_step_from_the_layouts_in_the_meta():
    layouts = {"buckets": [
        {"from_step": 0, "params": [[0, 1, 2]], "bytes": [40], "rebuilt": False},
        {"from_step": 1, "params": [[2], [0, 1]], "bytes": [8, 32], "rebuilt": True}]}
    assert buckets_at({}, 3) is None and buckets_at({"buckets": []}, 0) is None
    [b] = buckets_at(layouts, 0)
    assert (b.label, b.params, b.nbytes, b.rebuilt) == ("bucket 0 of 1", (0, 1, 2), 40, False)
    later = buckets_at(layouts, 7)
    assert [(b.label, b.params, b.nbytes) for b in later] == [("bucket 0 of 2", (2,), 8),
                                                               ("bucket 1 of 2", (0, 1), 32)]
    # a rebuild whose layout torch had not told yet: not known, rather than the old layout
    told_late = {"buckets": [layouts["buckets"][0],
                             {"from_step": 1, "params": None, "bytes": None, "rebuilt": True}]}
    assert buckets_at(told_late, 0) is not None and buckets_at(told_late, 1) is None
    # sizes without the parameters (DDP's first buckets when torch's assignment differed)
    sized = buckets_at({"buckets": [{"from_step": 0, "params": None, "bytes": [4, 8], "rebuilt": False}]}, 0)
    assert [(b.label, b.params, b.nbytes) for b in sized] == [("bucket 0 of 2", None, 4), ("bucket 1 of 2", None, 8)]


@pytest.mark.parametrize("buckets,says", [
    ("x", "buckets is not a list"),
    ([{"from_step": -1, "params": None, "bytes": None}], "from_step is -1, out of range"),
    ([{"from_step": 0, "params": [["a"]], "bytes": None}], "bucket 0 holds text, not ids"),
    ([{"from_step": 0, "params": None, "bytes": [1.5]}], "bytes is a number"),
    ([{"from_step": 0}] * 17, "not a list of at most 16 layouts"),
])
def test_bucket_layouts_that_gradtrace_does_not_write_are_one_line(tmp_path, monkeypatch, buckets, says):
    import sqlite3

    from gradtrace.errors import TraceFileError

    path = tmp_path / "trace.rank0.gtrace"
    _record(path, 0, 1, monkeypatch, steps=1)
    with sqlite3.connect(path) as c:
        meta = {"rank": 0, "world_size": 1, "local_rank": 0, "backend": "gloo", "buckets": buckets}
        c.execute("UPDATE meta SET value = ? WHERE key = 'distributed'", (json.dumps(meta),))
    with pytest.raises(TraceFileError) as e:
        gradtrace.load(path).rank(0).info
    assert says in str(e.value) and "\n" not in str(e.value)
