"""gradtrace/cli/settings.py: every option of every command is a setting, applied through
click's default_map, beaten by the command line; --quiet and --verbose."""

from __future__ import annotations

import re

import click
import pytest
import torch

import gradtrace
from gradtrace.cli import cli, main
from gradtrace.cli.settings import is_setting, iter_commands, key_of, options_of

from conftest import ROOT, gradtrace_cmd


@pytest.fixture(scope="module")
def ten_steps(tmp_path_factory):
    """A trace of 10 steps, recorded in-process."""
    path = tmp_path_factory.mktemp("settings") / "t.gtrace"
    w = torch.zeros(2, requires_grad=True)
    with gradtrace.trace(path):
        for _ in range(10):
            ((w * 3 - 1) ** 2).sum().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
    return path


@pytest.fixture
def here(tmp_path, monkeypatch):
    """The current folder is an empty project, read for settings (GRADTRACE_CONFIG unset)."""
    monkeypatch.delenv("GRADTRACE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def gt(capsys, *argv) -> tuple[int, str, str]:
    """`gradtrace ARGV` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _rows(out: str) -> int:
    """Step rows of a summary table (the '...' row and the totals left out)."""
    return len(re.findall(r"^\s+\d+ ", out, flags=re.M))


# -- every option, found by introspection, has a key and a variable, documented ----------------
def test_every_option_of_every_command_has_a_documented_key_and_variable():
    cli_md = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    settings = {o.dotted: o for o in options_of(cli)}
    checked = 0
    for path, command in iter_commands(cli):
        section = cli_md.split(f"## {' '.join(('gradtrace', *path))}\n", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in ("help", "version"):
                continue
            if not is_setting(param):
                assert getattr(param, "gradtrace_not_a_setting"), param.opts  # says why not
                continue
            dotted = key_of(param) if param.name in ("quiet", "verbose") else \
                ".".join((*path, key_of(param)))
            opt = settings[dotted]
            assert opt.variable == "GRADTRACE_" + dotted.upper().replace(".", "_").replace("-", "_")
            if param.name in ("quiet", "verbose"):  # one setting for all: in the group's table
                section = cli_md.split("## gradtrace\n", 1)[1].split("\n## ", 1)[0]
            assert re.search(rf"\| `{re.escape(opt.key)}` \| `{opt.variable}` \|", section), \
                f"gradtrace {' '.join(path)} {param.opts}: key/variable not in docs/cli.md"
            checked += 1
    assert checked >= 40
    assert {"run.every", "run.values", "graph.theme", "animate.fps", "quiet", "verbose",
            "run.max-ops-per-step"} <= set(settings)


def test_an_option_added_to_a_command_is_a_setting_without_more_code(here, monkeypatch, capsys):
    @click.command()
    @click.option("--colour-depth", type=click.IntRange(1, 32), default=8)
    def paint(colour_depth):
        click.echo(f"depth {colour_depth}")

    monkeypatch.setitem(cli.commands, "paint", paint)
    assert "paint.colour-depth" in {o.dotted for o in options_of(cli)}
    (here / "pyproject.toml").write_text("[tool.gradtrace.paint]\ncolour_depth = 16\n")
    assert gt(capsys, "paint")[:2] == (0, "depth 16\n")
    monkeypatch.setenv("GRADTRACE_PAINT_COLOUR_DEPTH", "24")
    assert gt(capsys, "paint")[:2] == (0, "depth 24\n")
    assert gt(capsys, "paint", "--colour-depth", "2")[:2] == (0, "depth 2\n")
    monkeypatch.setenv("GRADTRACE_PAINT_COLOUR_DEPTH", "64")
    code, out, err = gt(capsys, "paint")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("gradtrace: error: GRADTRACE_PAINT_COLOUR_DEPTH: paint.colour-depth: '64': ")


# -- the precedence table, case by case: file vs environment vs flag ---------------------------
CASES = [  # (file's limit, GRADTRACE_SUMMARY_LIMIT, --limit) -> rows shown
    (None, None, None, 10),  # default 50: every row
    (2, None, None, 2),
    (None, "4", None, 4),
    (2, "4", None, 4),
    (2, None, "6", 6),
    (None, "4", "6", 6),
    (2, "4", "6", 6),
]


@pytest.mark.parametrize("file_limit,env_limit,flag,rows", CASES)
def test_precedence_file_environment_flag(here, monkeypatch, capsys, ten_steps, file_limit,
                                          env_limit, flag, rows):
    if file_limit is not None:
        (here / "pyproject.toml").write_text(f"[tool.gradtrace.summary]\nlimit = {file_limit}\n")
    if env_limit is not None:
        monkeypatch.setenv("GRADTRACE_SUMMARY_LIMIT", env_limit)
    code, out, _ = gt(capsys, "summary", ten_steps, *(["--limit", flag] if flag else []))
    assert code == 0 and _rows(out) == rows


def test_a_flag_setting_and_its_negation(here, monkeypatch, capsys, ten_steps):
    (here / "pyproject.toml").write_text("[tool.gradtrace.summary]\njson = true\n")
    code, out, _ = gt(capsys, "summary", ten_steps)
    assert code == 0 and out.startswith("{")
    monkeypatch.setenv("GRADTRACE_SUMMARY_JSON", "0")
    code, out, _ = gt(capsys, "summary", ten_steps)
    assert code == 0 and out.startswith(str(ten_steps))


@pytest.mark.parametrize("text,variable,message", [
    ("[tool.gradtrace.summary]\nlimt = 3\n", None,
     "gradtrace: error: pyproject.toml: [tool.gradtrace.summary] limt: not a setting gradtrace "
     "knows (did you mean limit?); the keys here are: json, limit"),
    ("[tool.gradtrace.graph]\ntheme = \"neon\"\n", None,
     "gradtrace: error: pyproject.toml: [tool.gradtrace.graph] theme: \"neon\": 'neon' is not one of"),
    ("", ("GRADTRACE_GRAPH_VIEW", "sideways"),
     "gradtrace: error: GRADTRACE_GRAPH_VIEW: graph.view: 'sideways': 'sideways' is not one of"),
    ("[tool.gradtrace.animate]\noutput = 3\n", None,
     "gradtrace: error: pyproject.toml: [tool.gradtrace.animate] output: 3: not a list of strings"),
])
def test_unknown_key_and_bad_value_one_line_naming_key_and_file(here, monkeypatch, capsys,
                                                               ten_steps, text, variable, message):
    (here / "pyproject.toml").write_text(text)
    if variable:
        monkeypatch.setenv(*variable)
    code, out, err = gt(capsys, "summary", ten_steps)  # any command stops at it
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(message), err


def test_list_settings_for_a_repeatable_option(here, monkeypatch):
    (here / "pyproject.toml").write_text('[tool.gradtrace.animate]\noutput = ["a.gif", "my b.html"]\n')
    from gradtrace.cli.settings import gather

    assert gather(cli, environ={}).get("animate.output").value == ("a.gif", "my b.html")
    env = {"GRADTRACE_ANIMATE_OUTPUT": "c.gif 'my d.html'"}
    assert gather(cli, environ=env).get("animate.output").value == ("c.gif", "my d.html")


# -- --quiet and --verbose -------------------------------------------------------------------
def test_quiet_and_verbose(here, monkeypatch, capsys, ten_steps):
    code, out, err = gt(capsys, "graph", ten_steps, "-o", here / "g.dot")
    assert code == 0 and err.startswith("gradtrace: graph of step 0")
    for argv in (["-q", "graph"], ["graph", "--quiet"], ["graph", "-q"]):
        code, out, err = gt(capsys, *argv, ten_steps, "-o", here / "g.dot")
        assert (code, out, err) == (0, "", "")
    # errors are never silenced
    code, out, err = gt(capsys, "-q", "graph", here / "missing.gtrace")
    assert code == 2 and err.startswith("gradtrace: error: ") and err.count("\n") == 1
    (here / "pyproject.toml").write_text("[tool.gradtrace]\nquiet = true\n[tool.gradtrace.graph]\n"
                                         "theme = \"dark\"\n")
    assert gt(capsys, "graph", ten_steps, "-o", here / "g.dot")[2] == ""
    code, out, err = gt(capsys, "graph", "-v", ten_steps, "-o", here / "g.dot")  # the flag wins
    assert code == 0 and err.splitlines() == [
        "gradtrace: settings file: pyproject.toml",
        'gradtrace: graph.theme = "dark" (from pyproject.toml [tool.gradtrace.graph])',
        f"gradtrace: graph of step 0 (both view, {err.split('both view, ')[1].split(' nodes')[0]} "
        f"nodes): g.dot"]
    monkeypatch.setenv("GRADTRACE_VERBOSE", "1")  # the environment beats the file's quiet
    assert "settings file" in gt(capsys, "graph", ten_steps, "-o", here / "g.dot")[2]
    code, _, err = gt(capsys, "summary", "-q", "-v", ten_steps)  # on the line: the last wins
    assert code == 0 and "settings file" in err
    assert gt(capsys, "-v", "summary", "-q", ten_steps)[2] == ""  # the command's beats the group's
    monkeypatch.setenv("GRADTRACE_QUIET", "1")
    code, _, err = gt(capsys, "summary", ten_steps)
    assert code == 2 and err == ("gradtrace: error: quiet and verbose both set in the environment "
                                 "(GRADTRACE_QUIET and GRADTRACE_VERBOSE); choose one\n")
