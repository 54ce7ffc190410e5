"""gradtrace/errors.py: the one error family, its one-line messages and the exit code each carries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import gradtrace_main
from gradtrace import errors
from gradtrace.errors import (ConfigError, FrameIndexError, GradtraceError, NoSuchModuleError,
                              NotApplicableError, NothingToDrawError, NotRecordedError, RenderError,
                              TraceFileError, TraceWriteError, UsageError)

CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _documented_exit_codes() -> dict[int, str]:
    """docs/cli.md's "Exit codes" table: code -> its meaning."""
    text = CLI_DOC.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n#", 1)[0]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.+?) \|$", section, re.M)}


def test_config_error_is_a_usage_error():
    assert issubclass(ConfigError, UsageError) and ConfigError("f", "k", "bad").exit_code == 2


def test_the_exit_code_constants_are_the_documented_ones():
    doc = _documented_exit_codes()
    assert errors.EXIT_OK == 0 and doc[0].startswith("Done")
    assert doc[errors.EXIT_FAILURE].startswith("gradtrace could not do its job")
    assert doc[errors.EXIT_USAGE].startswith("Usage or bad input")
    assert doc[errors.EXIT_CHECK_FAILED].startswith("`gradtrace check`: a gradient check failed")
    assert len({errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_CHECK_FAILED}) == 4


def test_every_exported_error_is_one_family():
    """Everything __all__ exports is either an exit code or a GradtraceError subclass."""
    names = set(errors.__all__)
    classes = {n for n in names if not n.startswith("EXIT_")}
    assert {n for n in names if n.startswith("EXIT_")} == {
        "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_CHECK_FAILED"}
    for name in classes:
        cls = getattr(errors, name)
        assert isinstance(cls, type) and issubclass(cls, GradtraceError), name
    # and no GradtraceError subclass of the module is left out of __all__
    defined = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, GradtraceError)}
    assert defined == classes


@pytest.mark.parametrize("cls, code", [
    (GradtraceError, errors.EXIT_USAGE),
    (UsageError, errors.EXIT_USAGE),
    (ConfigError, errors.EXIT_USAGE),
    (TraceFileError, errors.EXIT_USAGE),        # a missing, foreign or corrupt trace: bad input
    (TraceWriteError, errors.EXIT_FAILURE),     # a full disk, an unwritable folder
    (RenderError, errors.EXIT_FAILURE),         # no `dot`, a picture that cannot be written
    (NoSuchModuleError, errors.EXIT_FAILURE),   # python -m MODULE exits with 1
    (NothingToDrawError, errors.EXIT_USAGE),
    (NotRecordedError, errors.EXIT_USAGE),      # a step that was not recorded
    (FrameIndexError, errors.EXIT_USAGE),
    (NotApplicableError, errors.EXIT_USAGE),
])
def test_each_error_carries_the_exit_code_docs_cli_gives_its_cause(cls, code):
    assert cls.exit_code == code
    assert code in _documented_exit_codes()


def test_a_write_error_is_a_trace_file_error_that_exits_with_failure():
    e = TraceWriteError("/tmp/run.gtrace", "cannot write")
    assert isinstance(e, TraceFileError) and isinstance(e, GradtraceError)
    assert e.exit_code == errors.EXIT_FAILURE != TraceFileError("x", "y").exit_code


def test_nothing_to_draw_is_both_usage_and_render_and_exits_as_usage():
    e = NothingToDrawError("step 3 has no backward pass")
    assert isinstance(e, UsageError) and isinstance(e, RenderError)
    assert e.exit_code == errors.EXIT_USAGE and str(e) == "step 3 has no backward pass"


def test_a_trace_file_error_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "run.gtrace"
    e = TraceFileError(path, "truncated\n  or corrupt\t(bad page)\n")
    assert e.path == str(path) and isinstance(e.path, str)
    assert e.problem == "truncated or corrupt (bad page)"
    assert str(e) == f"{path}: truncated or corrupt (bad page)"
    assert "\n" not in str(e)


def test_a_trace_file_error_takes_any_problem_and_makes_it_text():
    e = TraceFileError("t.gtrace", ValueError("bad  value"))
    assert e.problem == "bad value" and str(e) == "t.gtrace: bad value"


def test_a_config_error_names_where_and_the_key_on_one_line():
    e = ConfigError("pyproject.toml", "[tool.gradtrace.run] evry",
                    "not a setting gradtrace knows\n(did you mean every?)")
    assert (e.where, e.key) == ("pyproject.toml", "[tool.gradtrace.run] evry")
    assert e.problem == "not a setting gradtrace knows (did you mean every?)"
    assert str(e) == ("pyproject.toml: [tool.gradtrace.run] evry: not a setting gradtrace knows "
                      "(did you mean every?)")


def test_not_recorded_is_a_key_error_whose_message_is_not_quoted():
    msg = "step 7 was not recorded; recorded: 0..5"
    with pytest.raises(KeyError) as info:
        raise NotRecordedError(msg)
    assert str(info.value) == msg            # a plain KeyError would show repr(msg)
    assert str(KeyError(msg)) == repr(msg)   # (what the mixin is there to avoid)
    assert isinstance(info.value, UsageError)


def test_frame_index_is_an_index_error_with_its_message():
    with pytest.raises(IndexError) as info:
        raise FrameIndexError("no frame 9: the animation has frames 0..3")
    assert str(info.value) == "no frame 9: the animation has frames 0..3"
    assert isinstance(info.value, GradtraceError)


def test_a_lookup_error_without_a_message_reads_as_empty():
    assert str(NotRecordedError()) == "" and str(FrameIndexError()) == ""


# The first call of gradtrace.cli.main in a process imports the commands (~0.6 s, shared
# with every other in-process CLI test of the session).
def test_the_command_exits_with_the_code_the_error_carries(capsys, tmp_path):
    """A GradtraceError that stops `gradtrace` is one line on stderr and its exit_code."""
    not_a_trace = tmp_path / "notes.txt"
    not_a_trace.write_text("hello\n")
    code, out, err = gradtrace_main(capsys, "summary", str(not_a_trace))
    assert code == TraceFileError.exit_code == errors.EXIT_USAGE
    assert out == ""
    assert err.startswith(f"gradtrace: error: {not_a_trace}: ") and err.count("\n") == 1
