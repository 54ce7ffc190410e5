"""Decoding one stored step (gradtrace/tracefile/steps.py): its rows checked, references and loops refused, old formats' fields derived."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError
from gradtrace.tracefile.checked import Limits
from gradtrace.tracefile.steps import StepDecoder, _old_event_fields, step_data_columns


@pytest.fixture(scope="module")
def _recorded(tmp_path_factory):
    """A 20-step run recorded once for the module; each test gets its own copy."""
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    path = tmp_path_factory.mktemp("steps") / "run.gtrace"
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


def _one_line_error_step(path, idx):
    t = gradtrace.load(path)
    with pytest.raises(TraceFileError) as info:
        t.step(idx)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_corrupted_step_body(trace_file):
    c = sqlite3.connect(trace_file)
    c.execute("UPDATE step SET body='{\"ops\": [[1, 2' WHERE idx=3")
    c.commit()
    c.close()
    t = gradtrace.load(trace_file)
    t.steps[0]
    with pytest.raises(TraceFileError, match="step 3 is corrupt"):
        t.steps[3]


def test_a_graph_that_loops_is_refused(trace_file):
    import json

    c = sqlite3.connect(trace_file)
    (text,) = c.execute("SELECT body FROM step WHERE idx=0").fetchone()
    body = json.loads(text)
    body["nodes"][-1][4] = [0]  # the last node points back at the root
    c.execute("UPDATE step SET body=? WHERE idx=0", (json.dumps(body),))
    c.commit()
    c.close()
    assert "must not loop" in _one_line_error_step(trace_file, 0)


def _as_format_2(path):
    """Rewrite a trace as format 2 wrote it: event rows without their last two fields, the
    backward row without format 4's left_out, no scalars tables."""
    import json

    c = sqlite3.connect(path)
    for idx, body in c.execute("SELECT idx, body FROM step").fetchall():
        b = json.loads(body)
        b["events"] = [r[:11] for r in b["events"]]
        if b.get("backward"):
            b["backward"] = b["backward"][:7]
        c.execute("UPDATE step SET body=? WHERE idx=?", (json.dumps(b), idx))
    c.execute("DROP TABLE scalars")
    c.execute("DROP TABLE scalar_param")
    c.execute("UPDATE meta SET value='2' WHERE key='version'")
    c.execute("PRAGMA user_version=2")
    c.commit()
    c.close()


def _loop(zero: bool, via_data: bool):
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    for _ in range(3):
        (X @ w).pow(2).mean().backward()
        if via_data:
            w.data -= 0.1 * w.grad.data
        else:
            with torch.no_grad():
                w -= 0.1 * w.grad
        if zero:
            w.grad.zero_()


@pytest.mark.parametrize("zero, via_data, kinds", [
    (True, False, ["fresh", "zeros", "zeros"]),
    (False, True, ["fresh", "added", "added"]),
])
def test_format_2_files_are_read_with_the_fields_derived(tmp_path, zero, via_data, kinds):
    import gradtrace

    path = tmp_path / "run.gtrace"
    with gradtrace.trace(path):
        _loop(zero, via_data)
    new = gradtrace.load(path)
    new_events = [(e.kind, e.idiom, e.accumulation, e.through_data) for s in new.steps for e in s.events]
    assert [a for k, _, a, _ in new_events if k == "accumulate"] == kinds
    assert [d for k, _, _, d in new_events if k == "update"] == [via_data] * 3
    new.close()
    _as_format_2(path)
    old = gradtrace.load(path)
    assert old.info.format_version == 2
    assert [(e.kind, e.idiom, e.accumulation, e.through_data) for s in old.steps for e in s.events] \
        == new_events


def test_format_1_accumulations_have_their_kind():
    from pathlib import Path

    import gradtrace

    t = gradtrace.load(Path(__file__).parent / "data" / "format1.gtrace")
    assert [(s.index, e.accumulation) for s in t.steps for e in s.accumulations] == [
        (0, "fresh"), (1, "zeros")]
    assert not any(e.through_data for s in t.steps for e in s.events)


def test_format_3_checks_the_new_fields(tmp_path):
    import json

    import gradtrace
    from gradtrace.errors import TraceFileError

    path = tmp_path / "run.gtrace"
    with gradtrace.trace(path):
        _loop(True, False)
    for field, value, fragment in ((11, "maybe", "accumulation"), (11, None, "accumulation"),
                                   (12, "yes", "through_data")):
        c = sqlite3.connect(path)
        (body,) = c.execute("SELECT body FROM step WHERE idx=0").fetchone()
        b = json.loads(body)
        acc = next(r for r in b["events"] if r[1] == "accumulate")
        kept = acc[field]
        acc[field] = value
        c.execute("UPDATE step SET body=? WHERE idx=0", (json.dumps(b),))
        c.commit()
        with pytest.raises(TraceFileError, match=fragment):
            gradtrace.load(path).steps[0]
        acc[field] = kept
        c.execute("UPDATE step SET body=? WHERE idx=0", (json.dumps(b),))
        c.commit()
        c.close()
    assert gradtrace.load(path).steps[0].accumulations[0].accumulation == "fresh"

