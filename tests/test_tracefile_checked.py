"""Reading what a file claims, checked (gradtrace/tracefile/checked.py): fields, op arguments, the value index."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError
from gradtrace.tracefile import checked as ck
from gradtrace.tracefile.checked import Limits, Malformed, parse_values
from gradtrace.tracefile.model import Stats


@pytest.fixture(scope="module")
def _recorded(tmp_path_factory):
    """A 20-step run recorded once for the module; each test gets its own copy."""
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    path = tmp_path_factory.mktemp("checked") / "run.gtrace"
    with gradtrace.trace(path):
        for _ in range(20):
            (X @ w).pow(2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
    return path


@pytest.fixture
def trace_file(tmp_path, _recorded):
    path = tmp_path / "run.gtrace"
    shutil.copyfile(_recorded, path)
    return path


def _vidx_of(path, step=0):
    import struct

    c = sqlite3.connect(path)
    (blob,) = c.execute("SELECT vidx FROM step WHERE idx=?", (step,)).fetchone()
    c.close()
    return list(struct.unpack(f"<{len(blob) // 8}q", blob))


def _set_vidx(path, ints, step=0):
    import struct

    c = sqlite3.connect(path)
    c.execute("UPDATE step SET vidx=? WHERE idx=?", (struct.pack(f"<{len(ints)}q", *ints), step))
    c.commit()
    c.close()


def _one_line_error_step(path, idx):
    t = gradtrace.load(path)
    with pytest.raises(TraceFileError) as info:
        t.step(idx)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_a_billion_zeros_are_statistics_not_memory(trace_file):
    import json

    from gradtrace.tracefile.checked import Limits, parse_values

    # A cleared gradient (kind 2, no bytes) claiming 10^9 float32 elements.
    _set_vidx(trace_file, _vidx_of(trace_file) + [10 ** 6, -1, 2, 0, 0, 0, 1, 10 ** 9])
    gradtrace.load(trace_file).steps[0]  # the whole step reads
    c = sqlite3.connect(trace_file)
    body, blob = c.execute("SELECT body, vals FROM step WHERE idx=0").fetchone()
    c.close()
    vals, _, built = parse_values(_vidx_of(trace_file), blob, json.loads(body), Limits(), "step 0")
    v = vals[10 ** 6]
    assert v.data is None and v.stats.numel == 10 ** 9 and v.stats.norm == 0.0
    assert built < 1 << 20


def test_small_zeros_are_still_tensors(trace_file):
    t = gradtrace.load(trace_file)
    zeros = [e.before for s in t.steps for e in s.events
             if e.kind == "accumulate" and e.before is not None and e.before.data is not None]
    assert zeros and all(float(v.data.abs().sum()) == 0 for v in zeros)


@pytest.mark.parametrize("change, fragment", [
    (lambda ints: ints[:-2], "cut short"),
    (lambda ints: ints[:6] + [-1] + ints[7:], "dimensions"),
    (lambda ints: ints[:6] + [10 ** 12] + ints[7:], "dimensions"),
    (lambda ints: ints + [10 ** 6, -1, 2, 0, 0, 0, 3, 10 ** 9, 10 ** 9, 10 ** 9], "more than the limit"),
    (lambda ints: ints + [10 ** 6, -1, 0, 0, 0, 4 * 10 ** 9, 1, 10 ** 9], "bytes"),
    (lambda ints: ints + [10 ** 6, -1, 7, 0, 0, 0, 0], "unknown kind"),
    (lambda ints: ints + [10 ** 6, -1, 0, 99, 0, 0, 0], "unknown dtype"),
    (lambda ints: ints + ints[:7 + ints[6]], "twice"),
])
def test_value_index_lies_are_one_line(trace_file, change, fragment):
    _set_vidx(trace_file, change(_vidx_of(trace_file)))
    msg = _one_line_error_step(trace_file, 0)
    assert "step 0 is corrupt" in msg and fragment in msg

