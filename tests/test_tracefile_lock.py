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

