"""The hostile-file corpus (tests/hostile.py): the reader on every file, in this process, and
every reading command on a sample through the real command line: one line or a result, never
a traceback, a hang, a blow-up of memory, a stray file or a crafted call run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostile

HERE = Path(__file__).resolve().parent

# Edits that leave a file gradtrace reads correctly: a well-formed extra row, or a crafted
# target that the replay refuses to call (the numeric check then does not apply).
LOADS_FINE = {
    # SQLite's column affinity turns a number into text on the way in: still a valid row.
    "edit-meta-key-number", "edit-source-file-7", "edit-source-function-3.5",
    # Well-formed rows that gradtrace could have written.
    "edit-tensor-row", "edit-tensor-tid--1", "edit-tensor-name-5", "edit-source-sid--5",
    "edit-step-duplicate-rows-deleted", "edit-op-kwargs-deep", "edit-op-inputs-unknown-tids",
    "edit-ops-removed", "edit-nodes-removed",
    # Values nothing refers to, claiming a billion zeros: read as statistics, never built.
    "edit-vidx-zeros-1e9", "edit-vidx-many-zeros",
    # Crafted calls: read as data; the replay refuses them (test_crafted_targets_never_run).
    "edit-dtype-arg-foreign", "edit-function-op-crafted",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """{"cases", "results", "stray_files", "sample"}: "load" for every file (read in this
    process), each command of hostile.COMMANDS for the files of hostile.cli_sample (run by
    ``python tests/hostile.py``, a fork per run)."""
    folder = tmp_path_factory.mktemp("hostile")
    cases = hostile.build(folder)
    names = [name for name, _ in cases]
    workdir = folder / "reading"
    loads = hostile.read_all(cases, workdir)
    stray = sorted(os.listdir(workdir))  # a crafted call's marker is removed as it is recorded
    sample = hostile.cli_sample(names, LOADS_FINE)
    out = folder / "results.json"
    proc = subprocess.run([sys.executable, str(HERE / "hostile.py"), str(out), str(folder / "cases"),
                           "--only", ",".join(sample)], capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = json.loads(out.read_text())
    assert cli["cases"] == len(sample)
    results = loads + [r for r in cli["results"] if r["command"] != "load"]
    return {"cases": len(cases), "results": results, "stray_files": stray + cli["stray_files"],
            "sample": sample, "cli_load": [r for r in cli["results"] if r["command"] == "load"]}


pytestmark = pytest.mark.slow


def test_corpus_is_as_large_as_promised(corpus):
    names = {r["case"] for r in corpus["results"]}
    assert sum(n.startswith("trunc-") for n in names) == 20
    assert sum(n.startswith("flip-") for n in names) == 200
    assert sum(n.startswith("edit-") for n in names) >= 100
    assert corpus["cases"] == len(names)
    assert sorted(r["case"] for r in corpus["results"] if r["command"] == "load") == sorted(names)


def test_the_command_line_sample_covers_every_kind_of_damage(corpus):
    sample = set(corpus["sample"])
    families = {hostile._family(r["case"]) for r in corpus["results"]}
    assert families == {hostile._family(n) for n in sample}
    assert {"base", *LOADS_FINE} <= sample
    assert all(r["case"] in sample for r in corpus["results"] if r["case"].startswith("edit-target-"))
    ran = {(r["case"], r["command"]) for r in corpus["results"]}
    assert all((n, c) in ran for n in sample for c in hostile.COMMANDS)
    assert 30 <= len(sample) <= corpus["cases"] // 4


def test_the_reader_in_process_agrees_with_the_command_line(corpus):
    """The sample's load, run again in a forked child: the same exit and the same line."""
    inproc = {r["case"]: r for r in corpus["results"] if r["command"] == "load"}
    for r in corpus["cli_load"]:
        assert (r["exit"], r["stderr"].strip()) == (inproc[r["case"]]["exit"],
                                                    inproc[r["case"]]["stderr"].strip()), r["case"]


def test_no_traceback_hang_or_memory_blowup(corpus):
    bad = []
    for r in corpus["results"]:
        what = f"{r['case']} / {r['command']}"
        if r["timed_out"] or r["seconds"] > 10:
            bad.append(f"{what}: took {r['seconds']} s")
        if r["rss_growth_mb"] > 1024:
            bad.append(f"{what}: grew {r['rss_growth_mb']} MB")
        if "Traceback" in r["stderr"] or "internal error" in r["stderr"]:
            bad.append(f"{what}: {r['stderr'][-400:]}")
        # 3: the check ran and found the (changed) gradients wrong: a correct result.
        if r["exit"] not in ((0, 2, 3) if r["command"] == "check" else (0, 2)):
            bad.append(f"{what}: exit {r['exit']}: {r['stderr'][-300:]}")
    assert not bad, "\n".join(bad[:30])


def test_every_failure_is_one_line_naming_the_file(corpus):
    bad = []
    for r in corpus["results"]:
        if r["exit"] != 2:
            continue
        lines = r["stderr"].splitlines()
        errors = [ln for ln in lines if ln.startswith("gradtrace: error: ")]
        if len(errors) != 1 or f"{r['case']}.gtrace" not in errors[0]:
            bad.append(f"{r['case']} / {r['command']}: {lines}")
        if len(set(lines)) != len(lines):
            bad.append(f"{r['case']} / {r['command']}: a line twice: {lines}")
    assert not bad, "\n".join(bad[:30])


def test_damage_is_detected(corpus):
    """Truncations and edits are caught by load (a few well-formed edits read fine); byte
    flips either are caught or leave a file that every command reads without error."""
    load = {r["case"]: r for r in corpus["results"] if r["command"] == "load"}
    missed = [c for c, r in load.items() if c.startswith(("trunc-", "edit-")) and r["exit"] != 2
              and c not in LOADS_FINE and not c.startswith("edit-target-")]
    assert not missed, missed
    wrongly = [c for c in LOADS_FINE if load[c]["exit"] != 0]
    assert not wrongly, [(c, load[c]["stderr"]) for c in wrongly]
    caught = sum(1 for c, r in load.items() if c.startswith("flip-") and r["exit"] == 2)
    assert caught >= 20  # most flips land in tensor bytes, which no reader can tell apart


def test_crafted_targets_never_run(corpus):
    assert not [r["case"] for r in corpus["results"] if r["marker"]]
    assert corpus["stray_files"] == []
    check = {r["case"]: r for r in corpus["results"] if r["command"] == "check"}
    assert check["base"]["exit"] == 0
    base = json.loads(check["base"]["stdout"])["checks"]
    assert [c["status"] for c in base if c["kind"] == "numeric" and c["step"] == 0] == ["pass", "pass"]
    for case, r in check.items():
        if case.startswith("edit-target-") and r["exit"] == 0:
            # The step whose op was replaced is not claimed as numerically checked.
            step0 = [c for c in json.loads(r["stdout"])["checks"] if c["kind"] == "numeric" and c["step"] == 0]
            assert step0 and all(c["status"] == "not_applicable" for c in step0), (case, step0)
            assert "not an op gradtrace replays" in step0[0]["detail"], (case, step0)


def test_corpus_report(corpus, capsys):
    """The numbers for the issue note (printed with -s)."""
    res = corpus["results"]
    one_line = sum(1 for r in res if r["exit"] == 2)
    slow = max(res, key=lambda r: r["seconds"])
    big = max(res, key=lambda r: r["rss_growth_mb"])
    with capsys.disabled():
        print(f"\nhostile corpus: {corpus['cases']} files read in-process, {len(corpus['sample'])} of "
              f"them x {len(hostile.COMMANDS) - 1} commands through the CLI = {len(res)} runs; "
              f"{one_line} ended in one error line, {len(res) - one_line} read fine; "
              f"slowest {slow['seconds']} s ({slow['case']} / {slow['command']}); "
              f"largest memory growth {big['rss_growth_mb']} MB ({big['case']} / {big['command']})")
    assert one_line > 0
