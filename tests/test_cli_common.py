"""gradtrace/cli/common.py: paths printed ready to paste, and the most recent trace for readers."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from gradtrace.cli.common import most_recent_trace, shown_path
from gradtrace.errors import UsageError

from conftest import ROOT, gradtrace_cmd

#: A small training loop in the tutorials' idiom: model, loss, optimizer, zero_grad/backward/step.
SCRIPT = """\
import torch

torch.manual_seed(0)
x = torch.randn(16, 2)
y = x @ torch.tensor([2.0, -3.4]) + 4.2
net = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for epoch in range(6):
    loss = torch.nn.functional.mse_loss(net(x).squeeze(1), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"loss {loss.item():.4f}")
"""


def test_shown_path_is_quoted_for_a_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "gradtrace-out" / "a" / "trace.gtrace") == "gradtrace-out/a/trace.gtrace"
    spaced = shown_path(tmp_path / "gradtrace-out" / "my run" / "trace.gtrace")
    assert spaced == "'gradtrace-out/my run/trace.gtrace'"
    assert shlex.split(spaced) == ["gradtrace-out/my run/trace.gtrace"]
    odd = tmp_path / "it's $HOME"
    assert shlex.split(shown_path(odd)) == ["it's $HOME"]


def test_most_recent_trace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="no TRACE given and no trace under gradtrace-out/"):
        most_recent_trace()
    old = tmp_path / "gradtrace-out" / "a" / "trace.gtrace"
    new = tmp_path / "gradtrace-out" / "b c" / "trace.rank0.gtrace"
    for i, p in enumerate((old, new)):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"")
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "gradtrace-out" / "b c" / "report.html").write_text("newest, not a trace")
    assert most_recent_trace() == new.relative_to(tmp_path)
    os.utime(old, (2_000_000, 2_000_000))
    assert most_recent_trace() == old.relative_to(tmp_path)


@pytest.mark.slow  # runs gradtrace or python in a child process
def test_summary_with_no_argument_after_a_run(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    r = gradtrace_cmd("run", "--no-animate", "--no-report", "train.py", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("loss "), r.stderr
    s = gradtrace_cmd("summary", cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    assert s.stderr == ("gradtrace: no TRACE given: reading the most recent trace, "
                        "gradtrace-out/train/trace.gtrace\n")
    assert s.stdout.startswith("gradtrace-out/train/trace.gtrace: train.py (completed), 6 steps")
    c = gradtrace_cmd("check", "--json", cwd=tmp_path)
    assert c.returncode == 0 and c.stdout.startswith("{") and "most recent trace" in c.stderr
    q = gradtrace_cmd("-q", "summary", cwd=tmp_path)
    assert q.returncode == 0 and q.stderr == "" and q.stdout == s.stdout


@pytest.mark.slow  # runs gradtrace or python in a child process
def test_run_under_quiet_leaves_stdout_and_exit_code_alone(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT + "raise SystemExit(4)\n")
    r = gradtrace_cmd("run", "--quiet", "--no-animate", "--no-report", "train.py", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (4, "") and r.stdout.startswith("loss ")
    assert (tmp_path / "gradtrace-out" / "train" / "trace.gtrace").is_file()
    r = gradtrace_cmd("run", "-q", "missing.py", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("gradtrace: error: ") and r.stderr.count("\n") == 1
    # the notes at the end of recording (what the budget kept) are info too
    r = gradtrace_cmd("run", "-q", "--budget", "0", "--no-animate", "--no-report", "-o", "b.gtrace",
                      "train.py", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (4, ""), r.stderr


@pytest.mark.slow  # a real shell runs the pasted line
def test_a_pasted_hint_with_a_space_works_in_a_real_shell(tmp_path):
    folder = tmp_path / "my project"
    folder.mkdir()
    (folder / "my train.py").write_text(SCRIPT)
    r = gradtrace_cmd("run", "--no-animate", "--no-report", "my train.py", cwd=folder)
    assert r.returncode == 0, r.stderr
    hint = [line for line in r.stderr.splitlines() if line.startswith("gradtrace: next: ")]
    assert hint == ["gradtrace: next: gradtrace summary 'gradtrace-out/my train/trace.gtrace'"]
    pasted = hint[0].removeprefix("gradtrace: next: ")
    # `gradtrace` is this checkout's, as the README's `pip install -e .` would make it
    shell = f'gradtrace() {{ {shlex.quote(sys.executable)} -m gradtrace "$@"; }}; {pasted}'
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    s = subprocess.run(["bash", "-c", shell], cwd=folder, capture_output=True, text=True,
                       timeout=120, env=env)
    assert s.returncode == 0, s.stderr
    assert s.stdout.startswith("gradtrace-out/my train/trace.gtrace: my train.py (completed), 6 steps")
