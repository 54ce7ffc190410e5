"""`gradtrace run` against `python` itself, in real subprocesses: the same script run both
ways gives the same output, the same exit status, the same traceback and warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import gradtrace_cmd

QUIET = ("--no-report", "--no-animate")


def _script(tmp_path, body, name="script.py"):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(body))
    return p


def _python(*args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _theirs(stderr: str) -> str:
    """stderr without gradtrace's own lines: what the script (or python) wrote."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("gradtrace: "))


def _package(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "show.py").write_text("import sys\nprint(sys.argv[1:])\n")


def test_module_gets_every_argument_after_its_name(tmp_path):
    _package(tmp_path)
    args = ["--every", "3", "-o", "x", "--", "-m", "y"]
    plain = _python("-m", "pkg.show", *args, cwd=tmp_path)
    for traced in (gradtrace_cmd("run", *QUIET, "-m", "pkg.show", *args, cwd=tmp_path),
                   gradtrace_cmd("run", "--every", "2", "-mpkg.show", *args, cwd=tmp_path)):
        assert traced.returncode == plain.returncode == 0, traced.stderr
        assert traced.stdout == plain.stdout == f"{args}\n"
    # --every 3 went to the module, not to us: the default trace path, every step recorded
    assert (tmp_path / "gradtrace-out" / "show" / "trace.gtrace").is_file()
    assert not (tmp_path / "x").exists()


def test_unknown_option_before_the_script_is_a_usage_error(tmp_path):
    p = _script(tmp_path, "print('ran')\n")
    r = gradtrace_cmd("run", "--evry", "3", str(p), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""  # the script did not run
    assert "No such option '--evry'" in r.stderr and "Did you mean '--every'?" in r.stderr
    assert "no such script" not in r.stderr
    r = gradtrace_cmd("run", "-x", str(p), cwd=tmp_path)
    assert r.returncode == 2 and "No such option '-x'" in r.stderr
    # after the script, the same option is the script's
    r = gradtrace_cmd("run", *QUIET, "-o", "t.gtrace", str(p), "--evry", "3", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr


def test_module_that_cannot_run_exits_1_with_pythons_message(tmp_path):
    _package(tmp_path)
    for module, said in [("no_such_module", "No module named no_such_module"),
                         ("pkg", "No module named pkg.__main__; 'pkg' is a package and cannot "
                                 "be directly executed"),
                         ("nosuch.sub", "Error while finding module specification for "
                                        "'nosuch.sub' (ModuleNotFoundError: No module named "
                                        "'nosuch')")]:
        plain = _python("-m", module, cwd=tmp_path)
        traced = gradtrace_cmd("run", "-m", module, cwd=tmp_path)
        assert traced.returncode == plain.returncode == 1
        assert plain.stderr == f"{sys.executable}: {said}\n"
        assert traced.stderr == f"gradtrace: error: {said}\n"  # one line, nothing recorded
        assert traced.stdout == plain.stdout == ""
    assert not (tmp_path / "gradtrace-out").exists()
