"""gradtrace/config.py: the settings file and variables, checked once; Config's precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradtrace.config import Config, Option, Settings, find_config_file, read_bool, read_int
from gradtrace.errors import ConfigError

OPTIONS = [Option(("run",), "every", "every", read_int, default=1),
           Option(("run",), "animate", "animate", read_bool, default=True),
           Option((), "quiet", "quiet", read_bool, default=False)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a pyproject.toml, the current one, GRADTRACE_CONFIG unset."""
    monkeypatch.delenv("GRADTRACE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def write(text: str) -> Path:
        path = tmp_path / "pyproject.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


# -- precedence: default -> file -> environment -> keyword, case by case ------------------------
CASES = [  # (file's every, GRADTRACE_RUN_EVERY, keyword) -> (every, source)
    (None, None, None, 1, "default"),
    (2, None, None, 2, "pyproject.toml [tool.gradtrace.run]"),
    (None, "3", None, 3, "GRADTRACE_RUN_EVERY"),
    (2, "3", None, 3, "GRADTRACE_RUN_EVERY"),
    (2, None, 4, 4, "keyword"),
    (None, "3", 4, 4, "keyword"),
    (2, "3", 4, 4, "keyword"),
]


@pytest.mark.parametrize("file_every,env_every,keyword,expected,source", CASES)
def test_config_precedence(project, monkeypatch, file_every, env_every, keyword, expected, source):
    project("[project]\nname = 'x'\n" + ("" if file_every is None else
                                        f"[tool.gradtrace.run]\nevery = {file_every}\n"))
    if env_every is not None:
        monkeypatch.setenv("GRADTRACE_RUN_EVERY", env_every)
    config = Config() if keyword is None else Config(every=keyword)
    assert (config.every, config.sources["every"]) == (expected, source)
    assert config.values == "full" and config.sources["values"] == "default"


def test_config_reads_every_recording_key_and_replace_keeps_them(project, monkeypatch):
    project('[tool.gradtrace.run]\nvalues = "stats"\nmax_numel = 7\nsteps = "2:9"\n'
            'max-ops-per-step = 50\noutput = "runs/a.gtrace"\nreport = false\n')
    monkeypatch.setenv("GRADTRACE_RUN_MAX_NODES_PER_BACKWARD", "30")
    c = Config()
    assert (c.values, c.max_value_numel, c.step_range, c.max_ops_per_step,
            c.max_nodes_per_backward, c.output) == ("stats", 7, (2, 9), 50, 30, Path("runs/a.gtrace"))
    assert c.replace(every=5) == Config(**{**{f: getattr(c, f) for f in c.sources}, "every": 5})
    with pytest.raises(TypeError, match="evry"):
        Config(evry=3)


def test_config_bad_value_names_the_key_and_the_file(project, monkeypatch):
    project("[tool.gradtrace.run]\nevery = 0\n")
    with pytest.raises(ConfigError) as e:
        Config()
    assert str(e.value).startswith("pyproject.toml: [tool.gradtrace.run] every: ")
    assert "\n" not in str(e.value)
    assert Config(every=2).every == 2  # the keyword wins: the file's value is never used
    monkeypatch.setenv("GRADTRACE_RUN_VALUES", "everything")
    with pytest.raises(ConfigError, match=r"^GRADTRACE_RUN_VALUES: run.values: .*'full' or 'stats'"):
        Config(every=2)


# -- Settings: the file, the environment, checked ---------------------------------------------
def test_environment_beats_file_and_both_are_remembered(project):
    path = project("[tool.gradtrace]\nquiet = true\n[tool.gradtrace.run]\nevery = 2\nanimate = false\n")
    s = Settings.gather(OPTIONS, environ={"GRADTRACE_RUN_EVERY": "5", "GRADTRACE_QUIET": ""})
    assert s.file == path
    assert s.get("run.every").value == 5 and s.get("run.every").where == "GRADTRACE_RUN_EVERY"
    assert s.get("run.animate").value is False and s.get("run.animate").source == "file"
    assert s.get("quiet").value is True  # an empty variable is unset: the file's value stays
    assert s.default_map() == {"quiet": True, "run": {"every": 5, "animate": False}}


@pytest.mark.parametrize("text,message", [
    ("[tool.gradtrace.run]\nevry = 3\n",
     "pyproject.toml: [tool.gradtrace.run] evry: not a setting gradtrace knows (did you mean every?)"),
    ("[tool.gradtrace.rn]\nevery = 3\n",
     "pyproject.toml: [tool.gradtrace] rn: not a command gradtrace knows (did you mean run?)"),
    ("[tool.gradtrace.run]\nevery = \"3\"\n",
     "pyproject.toml: [tool.gradtrace.run] every: \"3\": not a whole number"),
    ("[tool.gradtrace.run]\nanimate = 1\n",
     "pyproject.toml: [tool.gradtrace.run] animate: 1: not a boolean; write true or false"),
    ("[tool.gradtrace.run]\nevery = 3\nevery = 4\n", "pyproject.toml: TOML: "),
    ("[tool.gradtrace.run]\nmax_numel = 3\nmax-numel = 4\n", None),
    ("[tool]\ngradtrace = 3\n", "pyproject.toml: [tool.gradtrace]: must be a table"),
])
def test_unknown_keys_and_bad_values_are_one_line(project, text, message):
    project(text)
    options = [*OPTIONS, Option(("run",), "max-numel", "max_numel", read_int)]
    with pytest.raises(ConfigError) as e:
        Settings.gather(options, environ={})
    assert "\n" not in str(e.value)
    if message is None:
        assert "set twice" in str(e.value)
    else:
        assert str(e.value).startswith(message), str(e.value)


def test_unknown_variables(project):
    project("[project]\nname = 'gradtrace-user'\n")
    with pytest.raises(ConfigError, match=r"^GRADTRACE_RUN_EVRY: .*did you mean GRADTRACE_RUN_EVERY\?"):
        Settings.gather(OPTIONS, environ={"GRADTRACE_RUN_EVRY": "3"})
    with pytest.raises(ConfigError, match=r"^GRADTRACE_RUN_EVERY: run.every: 'x': not a whole number"):
        Settings.gather(OPTIONS, environ={"GRADTRACE_RUN_EVERY": "x"})
    s = Settings.gather(OPTIONS, environ={"GRADTRACE_UPDATE_GOLDEN": "1", "GRADTRACE_DEBUG": "1",
                                          "GRADTRACE_RUN_EVRY": "3"}, strict=False)
    assert s.unknown_env == ["GRADTRACE_RUN_EVRY", "GRADTRACE_UPDATE_GOLDEN"] and s.values == {}


def test_the_nearest_pyproject_with_a_gradtrace_table(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADTRACE_CONFIG", raising=False)
    (tmp_path / "pyproject.toml").write_text("[tool.gradtrace.run]\nevery = 2\n")
    inner = tmp_path / "pkg" / "sub"
    inner.mkdir(parents=True)
    (tmp_path / "pkg" / "pyproject.toml").write_text("[project]\nname = 'pkg'\n")  # no table
    assert find_config_file(inner, {}) == tmp_path / "pyproject.toml"
    (tmp_path / "pkg" / "pyproject.toml").write_text("[tool.gradtrace.run]\nevery = 3\n")
    assert find_config_file(inner, {}) == tmp_path / "pkg" / "pyproject.toml"
    # a broken pyproject.toml that never names gradtrace is not ours to read
    (inner / "pyproject.toml").write_text("[project\nname = ")
    assert find_config_file(inner, {}) == tmp_path / "pkg" / "pyproject.toml"
    other = tmp_path / "elsewhere.toml"
    other.write_text("[tool.gradtrace.run]\nevery = 9\n")
    assert find_config_file(inner, {"GRADTRACE_CONFIG": str(other)}) == other
    assert find_config_file(inner, {"GRADTRACE_CONFIG": ""}) is None
    with pytest.raises(ConfigError, match="^GRADTRACE_CONFIG: .*no such file"):
        find_config_file(inner, {"GRADTRACE_CONFIG": str(tmp_path / "missing.toml")})


def test_a_number_field_takes_what_its_own_check_takes(project, monkeypatch):
    monkeypatch.setenv("GRADTRACE_RUN_MAX_NUMEL", "lots")
    with pytest.raises(ConfigError, match=r"^GRADTRACE_RUN_MAX_NUMEL: run.max-numel: 'lots': not a number$"):
        Config()
    monkeypatch.setenv("GRADTRACE_RUN_MAX_NUMEL", "12")
    monkeypatch.setenv("GRADTRACE_RUN_EVERY", "every other")
    with pytest.raises(ConfigError, match=r"^GRADTRACE_RUN_EVERY: run.every: --every must be a whole number"):
        Config()
    assert Config(every=1).max_value_numel == 12
