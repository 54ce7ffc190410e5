"""gradtrace/record/session.py in-process: what a recording puts in place is taken out."""

from __future__ import annotations

import warnings

import torch

import gradtrace


def _copy_construct():
    return torch.tensor(torch.ones(2))  # torch warns: copy-construct from a tensor


def test_warning_inside_a_recorded_op_is_located_at_the_callers_line():
    show, filters = warnings._showwarnmsg, list(warnings.filters)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        with gradtrace.trace():
            _copy_construct()
        _copy_construct()  # and outside a recording, as before
    assert [(w.filename, w.category) for w in got] == [(__file__, UserWarning)] * 2
    line = _copy_construct.__code__.co_firstlineno + 1
    assert [w.lineno for w in got] == [line, line]
    assert "To copy construct from a tensor" in str(got[0].message)
    # the wrapper and the filter are gone once the recording ends
    assert warnings._showwarnmsg is show and warnings.filters == filters


def test_exit_code_is_the_one_the_process_exits_with(tmp_path):
    import sys

    import pytest

    # what python exits with (POSIX): a boolean is 0 or 1, a number as the C int the system
    # keeps the low byte of, a message 1, None 0
    for code, status in [(True, 1), (False, 0), (2**40, 0), (-1, 255), (2**63, 255), (256, 0),
                         (3, 3), ("bad input", 1), (None, 0)]:
        path = tmp_path / "run.gtrace"
        with pytest.raises(SystemExit):
            with gradtrace.trace(path):
                (torch.ones(2, requires_grad=True) * 2).sum().backward()
                sys.exit(code)
        info = gradtrace.load(path).info  # a boolean here made every reader refuse the file
        assert (info.status, info.exit_code) == ("exited", status), code
        assert type(info.exit_code) is int


def test_a_block_that_changes_directory_reads_its_trace_back(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with gradtrace.trace("run.gtrace") as t:
        (torch.ones(2, requires_grad=True) * 2).sum().backward()
        os.chdir("elsewhere")
    assert len(t.steps) == 1  # read back from tmp_path/run.gtrace, not elsewhere/run.gtrace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "run.gtrace"]  # no .lock


def test_a_child_forked_inside_the_block_leaves_the_recording_to_its_parent(tmp_path):
    import os

    read, write = os.pipe()
    with gradtrace.trace(tmp_path / "run.gtrace") as t:
        w = torch.ones(2, requires_grad=True)
        (w * 2).sum().backward()
        pid = os.fork()
        if pid == 0:  # the child leaves the block too: it must not end the parent's trace
            try:
                t.__exit__(None, None, None)
                os.write(write, b"ended quietly")
            except BaseException as e:  # before: "database is locked", raised in the child
                os.write(write, repr(e).encode()[:500])
            os._exit(0)
        os.waitpid(pid, 0)
        (w * 3).sum().backward()
    os.close(write)
    assert os.read(read, 1000) == b"ended quietly"
    os.close(read)
    assert (t.info.status, len(t.steps)) == ("completed", 2)
