"""One run per trace file (gradtrace/tracefile/lock.py): TraceLock, its lock file, re-entrance, refusals."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

import gradtrace
from gradtrace.errors import TraceFileError, TraceWriteError
from gradtrace.tracefile.lock import TraceLock, lock_path


def _one_step():
    import torch

    w = torch.ones(2, requires_grad=True)
    (w * 3).sum().backward()


def test_one_writer_per_trace_in_a_program_too(tmp_path):
    path = tmp_path / "x.gtrace"
    with gradtrace.trace(path) as outer:
        _one_step()
        with pytest.raises(TraceFileError) as e:
            with gradtrace.trace(path):
                pass
        assert str(e.value) == (f"{path}: is being written by another gradtrace.trace() of this "
                                "program; end that one first or choose another path")
    assert len(outer.result.steps) == 1  # untouched by the refused one
    assert not Path(f"{path}.lock").exists()
    with gradtrace.trace(path) as again:  # free again once the first has ended
        pass
    assert again.result.info.status == "completed"



def test_the_lock_file_sits_beside_the_trace():
    assert lock_path("runs/a.gtrace") == Path("runs/a.gtrace.lock")
    assert lock_path(Path("/x/run#1.gtrace")) == Path("/x/run#1.gtrace.lock")


def test_a_held_lock_names_this_process_and_goes_when_let_go(tmp_path):
    trace = tmp_path / "a.gtrace"
    with TraceLock(trace) as lock:
        assert lock.path == lock_path(trace)
        assert lock.path.read_bytes() == f"gradtrace run pid {os.getpid()}\n".encode()
    assert list(tmp_path.iterdir()) == []


def test_the_lock_is_re_entrant_and_goes_with_its_outermost_holder(tmp_path):
    trace = tmp_path / "a.gtrace"
    outer = TraceLock(trace).acquire()
    assert outer.acquire() is outer  # acquiring again is a no-op
    with TraceLock(trace, writer=True):  # what the writer does inside `gradtrace run`
        assert lock_path(trace).exists()
    assert lock_path(trace).exists()  # the outer holder still has it
    outer.release()
    assert not lock_path(trace).exists()
    outer.release()  # letting go twice does nothing
    assert not lock_path(trace).exists()


def test_a_second_writer_in_this_process_is_refused_but_a_reader_of_the_lock_is_not(tmp_path):
    trace = tmp_path / "a.gtrace"
    with TraceLock(trace, writer=True):
        with pytest.raises(TraceFileError) as e:
            TraceLock(trace, writer=True).acquire()
        assert str(e.value) == (f"{trace}: is being written by another gradtrace.trace() of this "
                                "program; end that one first or choose another path")
        with TraceLock(trace):
            pass
        assert lock_path(trace).exists()
    with TraceLock(trace, writer=True):  # free once the first writer let go
        assert lock_path(trace).exists()


def _held_elsewhere(path: Path, content: bytes) -> int:
    """The lock file, flocked through its own open file: as another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, content)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.parametrize("content, who", [(b"gradtrace run pid 4242\n", " (pid 4242)"),
                                          (b"", ""), (b"gradtrace run pid x1\n", "")])
def test_a_lock_another_run_holds_is_refused_naming_its_pid(tmp_path, content, who):
    trace = tmp_path / "a.gtrace"
    fd = _held_elsewhere(lock_path(trace), content)
    try:
        with pytest.raises(TraceFileError) as e:
            TraceLock(trace).acquire()
        assert not isinstance(e.value, TraceWriteError)
        assert str(e.value) == (f"{trace}: another gradtrace run{who} is writing this trace; "
                                "wait for it to end or choose another path with -o")
        assert lock_path(trace).read_bytes() == content  # the holder's file is left alone
    finally:
        os.close(fd)
    with TraceLock(trace):  # its holder gone, the lock is free
        assert lock_path(trace).read_bytes() == f"gradtrace run pid {os.getpid()}\n".encode()


def test_a_lock_file_left_by_a_killed_run_is_taken_over(tmp_path):
    trace = tmp_path / "a.gtrace"
    lock_path(trace).write_text("gradtrace run pid 999999\n")  # nobody holds its flock
    with TraceLock(trace):
        assert lock_path(trace).read_text() == f"gradtrace run pid {os.getpid()}\n"
    assert not lock_path(trace).exists()


def test_a_file_at_the_lock_path_that_is_not_a_lock_is_left_alone(tmp_path):
    trace = tmp_path / "a.gtrace"
    lock_path(trace).write_text("my notes\n")
    with pytest.raises(TraceFileError) as e:
        TraceLock(trace).acquire()
    assert str(e.value) == (f"{lock_path(trace)}: exists and is not a gradtrace lock file; move "
                            "it away or choose another path with -o")
    assert lock_path(trace).read_text() == "my notes\n"


def test_folders_made_for_the_lock_go_with_it_unless_something_was_written(tmp_path):
    trace = tmp_path / "new" / "deeper" / "a.gtrace"
    with TraceLock(trace):
        assert trace.parent.is_dir()
    assert list(tmp_path.iterdir()) == []
    with TraceLock(trace):
        trace.write_text("a trace")
    assert [p.name for p in trace.parent.iterdir()] == ["a.gtrace"]


def test_an_unwritable_place_is_a_write_error_before_anything_is_made(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TraceWriteError) as e:
        TraceLock(blocker / "sub" / "a.gtrace").acquire()
    assert str(e.value).startswith(f"{blocker / 'sub' / 'a.gtrace'}: cannot write the trace file (")
    assert str(e.value).endswith("); choose another path with -o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and blocker.read_text() == "x"


def test_reading_a_trace_a_run_is_still_writing_says_so(tmp_path):
    """A reader met SQLite's 'database is locked' and said 'truncated or corrupt; record the
    run again' of a run that was only not finished."""
    import torch

    p = tmp_path / "live.gtrace"
    w = torch.zeros(2, requires_grad=True)
    with gradtrace.trace(p):
        (w * 2).sum().backward()
        (w * 3).sum().backward()  # the first step is written: the file is the writer's now
        with pytest.raises(TraceFileError) as e:
            gradtrace.load(p).steps[0]
        msg = str(e.value)
        assert f"is being written by a gradtrace run that has not ended (pid {os.getpid()}); " \
               "read it once that run ends" in msg and "corrupt" not in msg, msg
    assert len(gradtrace.load(p).steps) == 2
