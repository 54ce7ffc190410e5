"""Decoding one stored step (gradtrace/tracefile/steps.py): rows checked, old formats derived."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError
from gradtrace.tracefile.checked import Limits, to_int64s
from gradtrace.tracefile.model import Source, Stats, TensorInfo, Value
from gradtrace.tracefile.rows import BackwardRow, EventRow, NodeRow, OpRow
from gradtrace.tracefile.schema import FORMAT_VERSION
from gradtrace.tracefile.steps import StepDecoder, _old_event_fields, step_data_columns


def _one_line_error_step(path, idx):
    t = gradtrace.load(path)
    with pytest.raises(TraceFileError) as info:
        t.step(idx)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_corrupted_step_body(twenty_step_file):
    c = sqlite3.connect(twenty_step_file)
    c.execute("UPDATE step SET body='{\"ops\": [[1, 2' WHERE idx=3")
    c.commit()
    c.close()
    t = gradtrace.load(twenty_step_file)
    t.steps[0]
    with pytest.raises(TraceFileError, match="step 3 is corrupt"):
        t.steps[3]


def test_a_graph_that_loops_is_refused(twenty_step_file):
    import json

    c = sqlite3.connect(twenty_step_file)
    (text,) = c.execute("SELECT body FROM step WHERE idx=0").fetchone()
    body = json.loads(text)
    body["nodes"][-1][4] = [0]  # the last node points back at the root
    c.execute("UPDATE step SET body=? WHERE idx=0", (json.dumps(body),))
    c.commit()
    c.close()
    assert "must not loop" in _one_line_error_step(twenty_step_file, 0)


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


# -- one step decoded from a synthetic row -----------------------------------------------------
def _op(idx, seq, parent=None, sid=None, args=("$t0",)):
    return list(OpRow(idx, seq, "mul", "Tensor.mul", [0], [idx + 1], list(args), {}, "MulBackward0",
                      None, parent, 1 if parent is None else 0, sid))


def _body():
    """w (tid 0, value 0: [1.5, -2]) times 3, summed; backward; the accumulation into w.grad."""
    return {
        "ops": [_op(1, 1, sid=7), _op(0, 0, sid=99)],  # out of order on purpose; sid 99 unknown
        "backward": list(BackwardRow(2, "Tensor.backward", [2], None, [], [], 7, 0)),
        "nodes": [list(NodeRow(0, "SumBackward0", 1, None, [1], 0, [], [1])),
                  list(NodeRow(1, "AccumulateGrad", None, 0, [], 1, [1], []))],
        "events": [list(EventRow(3, "accumulate", 0, "fresh", None, 1, 1, 1, None, 0, 7, "fresh", 0))],
        "dtypes": ["float32"], "stats": [], "stats_int": [],
    }


_W = np.array([1.5, -2.0], "<f4").tobytes()
_G = np.array([3.0, 3.0], "<f4").tobytes()
_INDEX = [0, 0, 0, 0, 0, 8, 1, 2, 1, -1, 0, 0, 8, 8, 1, 2]  # value 0 of tid 0, value 1: a gradient
_SOURCES = {7: Source("train.py", 12, "loss.backward()", "main")}
_TENSORS = {0: TensorInfo(0, "w", "param", (2,), "float32", True)}


def _decoder(version=FORMAT_VERSION, limits=None):
    return StepDecoder("run.gtrace", version, limits or Limits(), lambda: _SOURCES, lambda: _TENSORS)


def _decode(body, index=_INDEX, blob=_W + _G, dropped=0, idx=5, version=FORMAT_VERSION):
    text = json.dumps(body)
    return _decoder(version).decode(idx, (text, None if index is None else to_int64s(index), blob,
                                          dropped))


def test_the_columns_a_step_is_decoded_from_by_format():
    assert step_data_columns(1) == "body, NULL, vals, ops_dropped"  # format 1: index in the body
    assert step_data_columns(2) == step_data_columns(FORMAT_VERSION) == "body, vidx, vals, ops_dropped"


def test_a_step_decodes_its_ops_backward_events_and_values():
    step, size = _decode(_body(), dropped=4)
    assert step.index == 5 and step.ops_dropped == 4 and step.tensors is _TENSORS
    assert [o.index for o in step.ops] == [0, 1]  # sorted by index
    assert all(o.step == 5 for o in step.ops) and step.ops[0].args == ({"tensor": 0},)
    assert step.ops[1].source == _SOURCES[7] and step.ops[0].source is None  # an unknown sid
    bw = step.backward
    assert (bw.seq, bw.api, bw.roots, bw.source, bw.left_out) == (2, "Tensor.backward", (2,),
                                                                  _SOURCES[7], 0)
    assert [(n.nid, n.name, n.next) for n in bw.nodes] == [(0, "SumBackward0", (1,)),
                                                          (1, "AccumulateGrad", ())]
    assert bw.nodes[0].grad_inputs[0] is bw.nodes[1].grad_outputs[0]  # one value, shared
    (e,) = step.events
    assert (e.kind, e.tensor, e.accumulation, e.fresh, e.before) == ("accumulate", 0, "fresh", True, None)
    assert e.after.array.tolist() == [3.0, 3.0] and e.incoming is e.after
    assert list(step.values) == [0] and step.value(0).array.tolist() == [1.5, -2.0]
    assert size == len(_W + _G) + 4 * len(json.dumps(_body()))  # bytes kept and rows decoded


def test_a_format_1_step_has_its_value_index_in_the_body():
    body = _body()
    body["values"] = _INDEX
    for e in body["events"]:
        del e[11:]  # format 1 events end before accumulation
    body["backward"] = body["backward"][:7]
    step, _ = _decode(body, index=None, version=1)
    assert step.value(0).array.tolist() == [1.5, -2.0]
    assert step.events[0].accumulation == "fresh" and not step.events[0].through_data


def test_a_step_without_a_backward_pass_or_rows():
    step, _ = _decode({}, index=[], blob=None)
    assert (step.ops, step.backward, step.events, step.values) == ((), None, (), {})


def test_buckets_are_asked_for_only_in_a_step_that_all_reduced():
    dec = _decoder()
    dec.buckets = lambda idx: ("buckets of", idx)
    body = _body()
    assert dec.decode(5, (json.dumps(body), to_int64s(_INDEX), _W + _G, 0))[0].buckets is None
    body["events"].append(list(EventRow(4, "allreduce", 0, "", 1, 1, None, None,
                                        "DistributedDataParallel", 0, None, None, 0)))
    assert dec.decode(5, (json.dumps(body), to_int64s(_INDEX), _W + _G, 0))[0].buckets == \
        ("buckets of", 5)


def _set(path, value):
    def change(body):
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return body
    return change


@pytest.mark.parametrize("change, says", [
    (lambda b: [b], "its body is not an object"),
    (_set(["ops"], {"0": []}), "its ops are not a list of rows"),
    (lambda b: {**b, "ops": [b["ops"][0][:12]]}, "an op has 12 fields, not 13"),
    (lambda b: {**b, "ops": b["ops"] + [_op(1, 5)]}, "op 1 appears twice"),
    (lambda b: {**b, "ops": [_op(0, 0, parent=9)]},
     "op 0's parent op 9 is not in the step, or its parents form a loop"),
    (lambda b: {**b, "ops": [_op(0, 0, parent=1), _op(1, 1, parent=0)]},
     "op 0's parent op 1 is not in the step, or its parents form a loop"),
    (_set(["ops", 0, 6], "$t0"), "op 1's arguments are not a list and an object"),
    (_set(["ops", 0, 2], 3), "op 1's name is a number, not text"),
    (_set(["ops", 0, 11], 2), "op 1's is_graph is 2, not 0 or 1"),
    (_set(["nodes", 0, 0], 1), "its backward pass: node 0 has id 1; nodes are numbered in order"),
    (_set(["nodes", 1, 4], [0]), "its backward pass: node 1 points back to node 0 (the graph must not loop)"),
    (_set(["nodes", 0, 7], [99]), "its backward pass: node 0's gradient refers to value 99, which the step does not hold"),
    (_set(["backward", 7], -1), "its backward pass's left-out count is -1, out of range"),
    (_set(["events", 0, 1], "explode"),
     "event 3 has kind 'explode', not one of accumulate, zero, update, grad_write, allreduce"),
    (_set(["events", 0, 11], "maybe"), "event 3's accumulation is 'maybe', not fresh, zeros, added"),
    (_set(["events", 0, 1], "zero"), "event 3's accumulation is 'fresh', not null"),
    (_set(["events", 0, 5], 42), "event 3's value after refers to value 42, which the step does not hold"),
])
def test_a_step_that_gradtrace_did_not_write_is_one_line_naming_file_and_step(change, says):
    with pytest.raises(TraceFileError) as e:
        _decode(change(_body()))
    assert str(e.value) == (f"run.gtrace: step 5 is corrupt: {says}; the file is damaged or was "
                            "not written by gradtrace: record the run again")


def test_values_that_are_not_bytes_or_a_bad_dropped_count_are_one_line():
    for kw, says in (({"blob": "text"}, "its values are not bytes"),
                     ({"dropped": -1}, "its dropped-ops count is -1, out of range"),
                     ({"index": [0, 0]}, "the value index is cut short")):
        with pytest.raises(TraceFileError) as e:
            _decode(_body(), **kw)
        assert f"step 5 is corrupt: {says};" in str(e.value)


def test_a_body_that_is_not_json_is_one_line():
    with pytest.raises(TraceFileError) as e:
        _decoder().decode(2, ('{"ops": [', to_int64s([]), b"", 0))
    msg = str(e.value)
    assert msg.startswith("run.gtrace: step 2 is corrupt: its body is not JSON (") and "\n" not in msg


# -- the fields formats 1 and 2 did not store ----------------------------------------------------
def _val(array=None, stats=None):
    return Value(0, (2,), "float32", None, stats, array=array)


def test_old_events_derive_accumulation_from_the_idiom_first():
    zeros, ones = _val(np.zeros(2, np.float32)), _val(np.ones(2, np.float32))
    assert _old_event_fields("zero", "p.grad.zero_()", None, None) == (None, False)
    assert _old_event_fields("update", "p.data.sub_()", None, None) == (None, True)
    assert _old_event_fields("accumulate", "fresh", True, None) == ("fresh", False)
    assert _old_event_fields("accumulate", "whatever", None, None) == ("fresh", False)  # no before
    assert _old_event_fields("accumulate", "added onto zeros", False, ones) == ("zeros", False)
    assert _old_event_fields("accumulate", "added", False, zeros) == ("added", False)


def test_old_events_with_another_idiom_are_told_by_the_value_before():
    zeros, ones = _val(np.zeros(2, np.float32)), _val(np.array([0.0, 1.0], np.float32))
    assert _old_event_fields("accumulate", "p.grad.data += g", False, zeros) == ("zeros", True)
    assert _old_event_fields("accumulate", "other", False, ones) == ("added", False)
    only_stats = _val(stats=Stats(2, 0.0, 0.0, 0.0, 0.0, 0))
    assert _old_event_fields("accumulate", "other", False, only_stats) == ("zeros", False)
    nonzero = _val(stats=Stats(2, 1.0, 0.5, 0.0, 1.0, 0))
    assert _old_event_fields("accumulate", "other", False, nonzero) == ("added", False)
    empty = _val(stats=Stats(0, math.nan, math.nan, math.nan, math.nan, 0))
    assert _old_event_fields("accumulate", "other", False, empty) == ("added", False)
