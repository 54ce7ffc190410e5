"""The run's tables besides the steps (gradtrace/tracefile/tables.py): meta, source, tensor."""

from __future__ import annotations

import json

import pytest

from gradtrace.tracefile.checked import Limits, Malformed
from gradtrace.tracefile.model import Source, TensorInfo
from gradtrace.tracefile.ranks import RANK_LIMIT
from gradtrace.tracefile.rows import TensorRow
from gradtrace.tracefile.schema import FORMAT_VERSION
from gradtrace.tracefile.tables import read_info, read_sources, read_tensors, tensor_info


def _q(tables: dict):
    """A query over canned rows: the table is the word after FROM (what the readers select)."""
    def q(sql, args=()):
        return list(tables.get(sql.split(" FROM ")[1].split()[0], []))
    return q


def _meta(**values):
    return _q({"meta": [(k, json.dumps(v)) for k, v in values.items()]})


# -- meta -------------------------------------------------------------------------------------
def test_an_empty_meta_table_reads_as_a_run_still_going():
    info = read_info(_meta())
    assert (info.format_version, info.status, info.script, info.argv, info.exit_code) == \
        (FORMAT_VERSION, "running", None, (), None)
    assert (info.steps_seen, info.ops_dropped, info.config, info.modules, info.distributed,
            info.optimizers, info.policy, info.kept) == (0, 0, {}, {}, {}, (), {}, {})
    assert (info.gradtrace_version, info.torch_version, info.created, info.error) == ("", "", "", None)


def test_the_meta_is_read_key_by_key():
    info = read_info(_meta(version=3, status="raised", script="fit.py", argv=["fit.py", "-v"],
                           exit_code=1, error="ValueError: x", steps_seen=12, ops_dropped=2,
                           modules={"net.0": "Linear"}, config={"full": True}, created="2026-01-02",
                           policy={"budget": 10}, kept={"first": 3}, torch_version="2.13"))
    assert (info.format_version, info.status, info.script, info.argv, info.exit_code, info.error) == \
        (3, "raised", "fit.py", ("fit.py", "-v"), 1, "ValueError: x")
    assert (info.steps_seen, info.ops_dropped, info.modules, info.config) == \
        (12, 2, {"net.0": "Linear"}, {"full": True})
    assert (info.created, info.policy, info.kept, info.torch_version) == \
        ("2026-01-02", {"budget": 10}, {"first": 3}, "2.13")


def test_an_exit_code_written_as_a_boolean_is_the_code_the_process_exited_with():
    """Before 2026-12-04 gradtrace stored sys.exit(True) as true: every reader refused the file."""
    assert read_info(_meta(exit_code=True)).exit_code == 1
    assert read_info(_meta(exit_code=False)).exit_code == 0


def test_what_ran_unrecorded_is_read_as_counts():
    info = read_info(_meta(unrecorded={"thread_backward": 3, "transform_ops": 0}))
    assert info.unrecorded == {"thread_backward": 3, "transform_ops": 0}
    assert read_info(_meta()).unrecorded == {}  # a trace written before it was kept


def test_a_json_null_in_the_meta_is_the_default():
    info = read_info(_meta(status=None, steps_seen=None, argv=None))
    assert (info.status, info.steps_seen, info.argv) == ("running", 0, ())


def test_an_argv_of_one_string_is_one_argument():
    assert read_info(_meta(argv="fit.py")).argv == ("fit.py",)


@pytest.mark.parametrize("meta, says", [
    ({"status": "paused"}, "meta 'status' is 'paused', not one of running, completed, raised, exited, interrupted"),
    ({"status": 3}, "meta 'status' is a number, not text"),
    ({"argv": ["fit.py", 3]}, "meta 'argv' is a number, not text"),
    ({"config": [1]}, "meta 'config' is not an object"),
    ({"modules": {"net.0": 5}}, "meta 'modules' of 'net.0' is a number, not text"),
    ({"steps_seen": -1}, "meta 'steps_seen' is -1, out of range"),
    ({"exit_code": "0"}, "meta 'exit_code' is text, not a whole number"),
    ({"version": 4.0}, "meta 'version' is a number, not a whole number"),
    ({"unrecorded": [1]}, "meta 'unrecorded' is not an object of counts"),
    ({"unrecorded": {"thread_backward": -1}}, "meta 'unrecorded' 'thread_backward' is -1, out of range"),
    ({"unrecorded": {"thread_backward": "3"}},
     "meta 'unrecorded' 'thread_backward' is text, not a whole number"),
])
def test_meta_that_gradtrace_does_not_write_is_refused_by_key(meta, says):
    with pytest.raises(Malformed) as e:
        read_info(_meta(**meta))
    assert str(e.value) == says


def test_meta_keys_and_values_must_be_text_and_json():
    with pytest.raises(Malformed, match=r"^a meta key is a number, not text$"):
        read_info(_q({"meta": [(3, "1")]}))
    with pytest.raises(Malformed, match=r"^meta 'status' is not JSON \("):
        read_info(_q({"meta": [("status", "completed")]}))  # JSON text is quoted


def test_a_distributed_run_reads_its_rank_and_world():
    d = read_info(_meta(distributed={"rank": 1, "world_size": 4, "backend": "gloo" * 20})).distributed
    assert d == {"rank": 1, "world_size": 4, "local_rank": 1, "backend": ("gloo" * 20)[:40]}
    d = read_info(_meta(distributed={"rank": 3, "world_size": 4, "local_rank": 0, "buckets": [
        {"from_step": 0, "params": [[2, 1], [0]], "bytes": [16, 8]}]})).distributed
    assert d["local_rank"] == 0 and d["backend"] is None
    assert d["buckets"] == [{"from_step": 0, "params": [[2, 1], [0]], "bytes": [16, 8], "rebuilt": False}]


@pytest.mark.parametrize("distributed, says", [
    ({"rank": 4, "world_size": 4}, "meta 'distributed': rank 4 is not below world_size 4"),
    ({"rank": 0, "world_size": 0}, "meta 'distributed' world_size is 0, out of range"),
    ({"rank": 0, "world_size": RANK_LIMIT + 1},
     f"meta 'distributed' world_size is {RANK_LIMIT + 1}, out of range"),
    ({"rank": -1, "world_size": 2}, "meta 'distributed' rank is -1, out of range"),
    ({"rank": 0, "world_size": 2, "backend": 1}, "meta 'distributed' backend is a number, not text"),
    ([0, 2], "meta 'distributed' is not an object"),
])
def test_a_distributed_meta_that_gradtrace_does_not_write_is_refused(distributed, says):
    with pytest.raises(Malformed) as e:
        read_info(_meta(distributed=distributed))
    assert str(e.value) == says


# -- source ---------------------------------------------------------------------------------------
def test_source_lines_by_sid_with_missing_text_as_empty():
    got = read_sources(_q({"source": [(0, "fit.py", 3, "loss.backward()", "main"),
                                      (4, "lib.py", 10, None, None)]}))
    assert got == {0: Source("fit.py", 3, "loss.backward()", "main"), 4: Source("lib.py", 10, "", "")}
    assert read_sources(_q({})) == {}


@pytest.mark.parametrize("row, says", [
    (("0", "fit.py", 3, "", ""), "a source id is text, not a whole number"),
    ((0, None, 3, "", ""), "source line 0's file is null, not text"),
    ((0, "fit.py", 3.5, "", ""), "source line 0's line number is a number, not a whole number"),
    ((0, "fit.py", 3, b"code", ""), "source line 0's code is bytes, not text"),
])
def test_a_source_line_that_gradtrace_does_not_write_is_refused(row, says):
    with pytest.raises(Malformed) as e:
        read_sources(_q({"source": [row]}))
    assert str(e.value) == says


# -- tensor ----------------------------------------------------------------------------------------
def test_tensors_from_the_table_and_each_steps_column_in_tid_order():
    tables = {
        "tensor": [(5, "X", "input", "[8, 3]", "float32", 0)],
        "step": [(0, json.dumps([[2, "w", "param", [3], "float32", 1],
                                 [0, None, "activation", [], "float64", 1]])),
                 (1, json.dumps([[0, "loss"], [9, "ghost"], [5, None]]))],  # names given later
    }
    got = read_tensors(_q(tables), FORMAT_VERSION, Limits())
    assert list(got) == [0, 2, 5]
    assert got[0] == TensorInfo(0, "loss", "activation", (), "float64", True)
    assert got[2] == TensorInfo(2, "w", "param", (3,), "float32", True)
    assert got[5] == TensorInfo(5, None, "input", (8, 3), "float32", False)  # its name taken away
    assert 9 not in got  # a name for a tensor never seen is not a tensor


def test_format_1_has_no_step_tensors_column_to_read():
    tables = {"tensor": [(1, "w", "param", "[2]", "float32", 1)],
              "step": [(0, json.dumps([[3, "x", "input", [1], "float32", 0]]))]}
    assert list(read_tensors(_q(tables), 1, Limits())) == [1]
    assert list(read_tensors(_q(tables), 2, Limits())) == [1, 3]


@pytest.mark.parametrize("tables, says", [
    ({"tensor": [(1, "w", "param", "[2", "float32", 1)]}, "tensor 1's shape is not JSON ("),
    ({"tensor": [(True, "w", "param", "[2]", "float32", 1)]}, "a tensor id is a boolean, not a whole number"),
    ({"step": [(0, json.dumps([[1, "w", "param", [2], "float32"]]))]},
     "step 0's tensors: a row has 5 fields, not 6"),
    ({"step": [(0, json.dumps([["1", "w"]]))]}, "step 0's tensors: a tensor id is text, not a whole number"),
    ({"step": [(0, json.dumps([[1, 7]]))]}, "step 0's tensors: tensor 1's name is a number, not text"),
    ({"step": [(0, json.dumps({"1": "w"}))]}, "step 0's tensors is not a list"),
])
def test_tensor_rows_that_gradtrace_does_not_write_are_refused(tables, says):
    with pytest.raises(Malformed) as e:
        read_tensors(_q(tables), FORMAT_VERSION, Limits())
    assert str(e.value).startswith(says)


def test_one_tensor_row_is_checked_field_by_field():
    good = TensorRow(3, "w", "param", [2, 2], "float32", 1)
    assert tensor_info(good, "here", Limits()) == TensorInfo(3, "w", "param", (2, 2), "float32", True)
    for bad, says in ((good._replace(role="Param"), "here: tensor 3 has role 'Param', not param, input or activation"),
                      (good._replace(dtype=None), "here: tensor 3's dtype is null, not text"),
                      (good._replace(requires_grad=2), "here: tensor 3's requires_grad is 2, not 0 or 1"),
                      (good._replace(shape=[5, 5]), "here: tensor 3's shape claims 25 elements, more than the limit of 24")):
        with pytest.raises(Malformed) as e:
            tensor_info(bad, "here", Limits(max_numel=24))
        assert str(e.value) == says
