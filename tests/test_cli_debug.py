"""gradtrace/cli/debug.py: `gradtrace debug`, its output parsed."""

from __future__ import annotations

import json
import re
from importlib import metadata

import pytest

from gradtrace.cli import cli
from gradtrace.cli.settings import options_of
from gradtrace.version import __version__

from test_cli_settings import gt, here, ten_steps  # noqa: F401  (fixtures)

_SETTING = re.compile(r"^(?P<key>[\w.-]+) = (?P<value>.*?)\s+# (?P<source>.*); (?P<var>GRADTRACE_\w+)$")


def sections(out: str) -> dict[str, list[str]]:
    """`-- name ---` headings -> their lines."""
    found: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^-- (\w+) -+$", line)
        if m:
            current = found.setdefault(m.group(1), [])
        elif line:
            assert current is not None, line
            current.append(line)
    return found


def fields(lines: list[str]) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in lines)


def test_debug_sys_versions_engine_and_fonts(capsys):
    code, out, err = gt(capsys, "debug", "sys")
    assert code == 0 and err == ""
    sys_ = fields(sections(out)["sys"])
    assert sys_["gradtrace"].startswith(__version__ + " (")
    assert sys_["torch"] == metadata.version("torch") and sys_["click"] == metadata.version("click")
    assert sys_["graph engine"].split()[0] in ("dot", "pygraphviz", "matplotlib")
    assert sys_["dot program"] == "not on PATH" or sys_["dot program"].endswith("dot")
    assert sys_["graph engine"].startswith("pygraphviz") == (sys_["dot program"] == "not on PATH"
                                                            and "graphviz library" in sys_["pygraphviz"])
    assert re.match(r"^[\w ]+ \(/.*\.(ttf|otf|ttc)\)$", sys_["font"])
    assert int(sys_["fonts known to matplotlib"]) > 0


def test_debug_config_every_setting_its_value_and_source(here, monkeypatch, capsys):  # noqa: F811
    (here / "pyproject.toml").write_text('[tool.gradtrace]\nquiet = true\n[tool.gradtrace.run]\n'
                                         'every = 2\nsteps = "0:10"\n[tool.gradtrace.graph]\ntheme = "dark"\n')
    monkeypatch.setenv("GRADTRACE_RUN_EVERY", "3")
    monkeypatch.setenv("GRADTRACE_NOT_A_THING", "x")
    code, out, err = gt(capsys, "debug", "config")
    assert code == 0 and err == ""
    lines = sections(out)["config"]
    assert lines[0] == "file: pyproject.toml (the nearest with [tool.gradtrace])"
    rows = {m["key"]: m for m in map(_SETTING.match, lines[1:])}
    assert set(rows) == {o.dotted for o in options_of(cli)}  # every setting, nothing else
    assert (rows["run.every"]["value"], rows["run.every"]["source"]) == ("3", "GRADTRACE_RUN_EVERY")
    assert rows["run.steps"]["value"] == '"0:10"'
    assert rows["run.steps"]["source"] == rows["graph.theme"]["source"].replace(".graph]", ".run]")
    assert (rows["graph.theme"]["value"], rows["graph.theme"]["source"]) == (
        '"dark"', "pyproject.toml [tool.gradtrace.graph]")
    assert (rows["quiet"]["value"], rows["run.values"]["value"]) == ("true", '"full"')
    assert rows["run.values"]["source"] == "default" and rows["run.output"]["value"] == "(unset)"
    assert all(m["var"] == o.variable for o in options_of(cli) for m in [rows[o.dotted]])


def test_debug_env_and_a_bad_setting_shown_not_stopping(here, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("GRADTRACE_GRAPH_THEME", "dark")
    monkeypatch.setenv("GRADTRACE_DEBUG", "1")
    monkeypatch.setenv("GRADTRACE_OTHER", "")
    code, out, _ = gt(capsys, "debug", "env")
    env = fields(sections(out)["env"])
    assert env["GRADTRACE_GRAPH_THEME"] == '"dark"  # graph.theme'
    assert env["GRADTRACE_DEBUG"].startswith('"1"  # set: an internal error shows its traceback')
    assert env["GRADTRACE_OTHER"] == '""  # not a gradtrace setting (ignored)'
    (here / "pyproject.toml").write_text("[tool.gradtrace.run]\nevry = 2\n")
    code, out, err = gt(capsys, "debug")
    assert code == 2 and set(sections(out)) == {"sys", "config", "env"}
    assert sections(out)["config"][0].startswith(
        "error: pyproject.toml: [tool.gradtrace.run] evry: not a setting gradtrace knows")
    assert gt(capsys, "summary")[0] == 2  # any other command stops at it


def test_debug_trace_meta(capsys, ten_steps):  # noqa: F811
    code, out, err = gt(capsys, "debug", "trace", ten_steps)
    assert code == 0
    meta = fields(sections(out)["trace"])
    assert meta["status"] == '"completed"' and meta["format_version"].isdigit()
    assert json.loads(meta["config"])["every"] == 1 and meta["steps recorded"] == "10"
    assert json.loads(meta["gradtrace_version"]) == __version__
    assert gt(capsys, "debug", "config", ten_steps)[0] == 2  # TRACE goes with `trace` only


@pytest.mark.parametrize("topic", ["sys", "config", "env"])
def test_debug_topics_print_one_section(capsys, topic):
    code, out, _ = gt(capsys, "debug", topic)
    assert code == 0 and list(sections(out)) == [topic]
