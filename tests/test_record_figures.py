"""record/figures.py: a script's figures under gradtrace run, and matplotlib loaded only when
the script uses it."""

from __future__ import annotations

import pytest

import textwrap

from conftest import fresh_gradtrace_cmd

NO_PLOT = textwrap.dedent("""\
    import sys
    import torch
    w = torch.ones(2, requires_grad=True)
    (w * w).sum().backward()
    print("matplotlib" in sys.modules)
    """)

PLOT = textwrap.dedent("""\
    import sys
    import torch
    import matplotlib.pyplot as plt
    w = torch.ones(2, requires_grad=True)
    (w * w).sum().backward()
    plt.plot([1, 2, 3])
    plt.show()
    print(plt.get_backend())
    """)


@pytest.mark.slow  # runs gradtrace or python in a child process
def test_a_script_without_plots_does_not_load_matplotlib(tmp_path):
    (tmp_path / "s.py").write_text(NO_PLOT)
    r = fresh_gradtrace_cmd("run", "--no-report", "-o", "out/trace.gtrace", "s.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "False\n"       # as under python: the script never asked for it
    assert "figure saved" not in r.stderr


@pytest.mark.slow  # runs gradtrace or python in a child process
def test_a_script_with_plots_gets_the_saving_backend(tmp_path):
    (tmp_path / "s.py").write_text(PLOT)
    r = fresh_gradtrace_cmd("run", "--no-report", "-o", "out/trace.gtrace", "s.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("gradtrace.record.mplbackend")
    assert "figure saved: out/figure-1.png" in r.stderr
    assert (tmp_path / "out" / "figure-1.png").stat().st_size > 1000
