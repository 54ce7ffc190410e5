"""Reading a file's claims, checked (gradtrace/tracefile/checked.py): fields, arguments, values."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.tracefile import checked as ck
from gradtrace.tracefile.checked import Limits, Malformed, parse_values
from gradtrace.tracefile.model import Stats
from test_tracefile_steps import _one_line_error_step


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


def test_a_billion_zeros_are_statistics_not_memory(twenty_step_file):
    import json

    from gradtrace.tracefile.checked import Limits, parse_values

    # A cleared gradient (kind 2, no bytes) claiming 10^9 float32 elements.
    _set_vidx(twenty_step_file, _vidx_of(twenty_step_file) + [10 ** 6, -1, 2, 0, 0, 0, 1, 10 ** 9])
    gradtrace.load(twenty_step_file).steps[0]  # the whole step reads
    c = sqlite3.connect(twenty_step_file)
    body, blob = c.execute("SELECT body, vals FROM step WHERE idx=0").fetchone()
    c.close()
    vals, _, built = parse_values(_vidx_of(twenty_step_file), blob, json.loads(body), Limits(), "step 0")
    v = vals[10 ** 6]
    assert v.data is None and v.stats.numel == 10 ** 9 and v.stats.norm == 0.0
    assert built < 1 << 20


def test_small_zeros_are_still_tensors(twenty_step_file):
    t = gradtrace.load(twenty_step_file)
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
def test_value_index_lies_are_one_line(twenty_step_file, change, fragment):
    _set_vidx(twenty_step_file, change(_vidx_of(twenty_step_file)))
    msg = _one_line_error_step(twenty_step_file, 0)
    assert "step 0 is corrupt" in msg and fragment in msg


# -- the field checks ---------------------------------------------------------------------------
def test_json_value_reads_text_and_utf8_bytes_alike():
    assert ck.json_value('{"a": [1, 2.5, null]}', "x") == {"a": [1, 2.5, None]}
    assert ck.json_value('"é"'.encode(), "x") == "é"


@pytest.mark.parametrize("raw, says", [
    (b"\xff\xfe", "meta 'x' is not UTF-8 text"),
    (12, "meta 'x' is a number, not JSON text"),
    (None, "meta 'x' is null, not JSON text"),
    ("{not json", "meta 'x' is not JSON ("),
    ("[" * 100_000 + "]" * 100_000, "meta 'x' nests too deeply"),
])
def test_json_value_refuses_what_is_not_json_text(raw, says):
    with pytest.raises(Malformed) as e:
        ck.json_value(raw, "meta 'x'")
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


def test_a_whole_number_is_an_int_and_nothing_else():
    assert ck.integer(7, "n") == 7 and ck.integer(0, "n", 0, 0) == 0
    for bad, kind in ((True, "a boolean"), (7.0, "a number"), ("7", "text"), (None, "null"),
                      ([7], "a list")):
        with pytest.raises(Malformed, match=f"^n is {kind}, not a whole number$"):
            ck.integer(bad, "n")
    with pytest.raises(Malformed, match="^n is -1, out of range$"):
        ck.integer(-1, "n", 0)
    with pytest.raises(Malformed, match="^n is 11, out of range$"):
        ck.integer(11, "n", 0, 10)
    assert ck.opt_integer(None, "n", 0) is None
    with pytest.raises(Malformed, match="out of range"):
        ck.opt_integer(-3, "n", 0)


def test_a_flag_is_zero_or_one():
    assert [ck.flag(x, "f") for x in (0, 1, False, True)] == [False, True, False, True]
    assert ck.opt_flag(None, "f") is None
    for bad in (2, -1, "1", 1.0, None):
        with pytest.raises(Malformed, match="^f is .*, not 0 or 1$"):
            ck.flag(bad, "f")


def test_numbers_texts_and_id_lists():
    assert ck.number(3, "x") == 3.0 and type(ck.number(3, "x")) is float
    assert ck.number(-0.5, "x") == -0.5
    with pytest.raises(Malformed, match="^x is a boolean, not a number$"):
        ck.number(True, "x")
    assert ck.text("w", "x") == "w" and ck.opt_text(None, "x") is None
    with pytest.raises(Malformed, match="^x is a number, not text$"):
        ck.text(3, "x")
    assert ck.int_list([3, 1, 2], "ids") == (3, 1, 2) and ck.int_list([], "ids") == ()
    with pytest.raises(Malformed, match="^ids is an object, not a list of ids$"):
        ck.int_list({}, "ids")
    with pytest.raises(Malformed, match="^ids holds a boolean, not ids$"):
        ck.int_list([1, False], "ids")


def test_a_row_has_exactly_its_width():
    assert ck.row([1, 2, 3], 3, "an op") == [1, 2, 3]
    with pytest.raises(Malformed, match="^an op has 2 fields, not 3$"):
        ck.row([1, 2], 3, "an op")
    with pytest.raises(Malformed, match="^an op is text, not a row$"):
        ck.row("[1, 2, 3]", 3, "an op")


def test_a_shape_is_sizes_within_the_limits():
    limits = Limits(max_numel=24)
    assert ck.shape([2, 3, 4], "s", limits) == (2, 3, 4)
    assert ck.shape([], "s", limits) == () and ck.shape([0, 10 ** 9], "s", limits) == (0, 10 ** 9)
    assert ck.shape([1] * ck.MAX_NDIM, "s", limits) == (1,) * ck.MAX_NDIM
    with pytest.raises(Malformed, match=f"at most {ck.MAX_NDIM} sizes"):
        ck.shape([1] * (ck.MAX_NDIM + 1), "s", limits)
    with pytest.raises(Malformed, match="^s holds -1, not a size$"):
        ck.shape([2, -1], "s", limits)
    with pytest.raises(Malformed, match="^s holds 2.0, not a size$"):
        ck.shape([2.0], "s", limits)
    with pytest.raises(Malformed, match="^s claims 25 elements, more than the limit of 24$"):
        ck.shape([5, 5], "s", limits)


# -- op arguments: only what gradtrace writes ---------------------------------------------------
def test_decode_arg_turns_the_stored_encoding_back():
    assert ck.decode_arg("$t12", "a") == {"tensor": 12}
    assert ck.decode_arg("$$t12", "a") == "$t12"  # a string that began with $ had one more
    assert ck.decode_arg("mean", "a") == "mean"
    assert ck.decode_arg({"tuple": [1, "$t3", {"tuple": []}]}, "a") == (1, {"tensor": 3}, ())
    assert ck.decode_arg([None, True, 1.5], "a") == [None, True, 1.5]
    assert ck.decode_arg({"slice": [None, "$t1", 2]}, "a") == {"slice": [None, {"tensor": 1}, 2]}
    assert ck.decode_arg({"dict": {"k": "$t4"}}, "a") == {"dict": {"k": {"tensor": 4}}}
    for kept in ({"dtype": "float32"}, {"device": "cpu"}, {"repr": "<object>"}, {"ellipsis": True}):
        assert ck.decode_arg(kept, "a") == kept


@pytest.mark.parametrize("arg, says", [
    ("$tx", "holds '$tx', not a tensor id"),
    ({"tuple": 3}, "holds an object that gradtrace does not write"),
    ({"slice": [1, 2]}, "holds an object that gradtrace does not write"),
    ({"ellipsis": False}, "holds an object that gradtrace does not write"),
    ({"tuple": [], "dict": {}}, "holds an object that gradtrace does not write"),
    ({"pickle": "gASVAAAA"}, "holds an object that gradtrace does not write"),
    ({"dtype": 4}, "holds an object that gradtrace does not write"),
])
def test_decode_arg_refuses_anything_else(arg, says):
    with pytest.raises(Malformed) as e:
        ck.decode_arg(arg, "op 3's arguments")
    assert str(e.value) == f"op 3's arguments {says}"


def test_decode_arg_stops_at_its_depth():
    def nested(depth):
        a = 1
        for _ in range(depth):
            a = [a]
        return a

    assert ck.decode_arg(nested(ck.MAX_DEPTH), "a") == nested(ck.MAX_DEPTH)
    with pytest.raises(Malformed, match=f"^a nests deeper than {ck.MAX_DEPTH}$"):
        ck.decode_arg(nested(ck.MAX_DEPTH + 1), "a")


# -- the value index -----------------------------------------------------------------------------
def test_int64s_round_trip_little_endian():
    ints = [0, -1, 2 ** 63 - 1, -2 ** 63, 12345]
    blob = ck.to_int64s(ints)
    assert blob == b"".join(i.to_bytes(8, "little", signed=True) for i in ints)
    assert ck.from_int64s(blob, "v") == ints
    assert ck.from_int64s(b"", "v") == []
    for bad in (blob[:-1], "text", None):
        with pytest.raises(Malformed, match="^v is not a list of 8-byte integers$"):
            ck.from_int64s(bad, "v")


def _entry(vid, tid, kind, code, offset, nbytes, shape):
    return [vid, tid, kind, code, offset, nbytes, len(shape), *shape]


def test_parse_values_builds_each_kind_of_value():
    x = np.array([[1.5, -2.0, 0.25]], dtype="<f4")
    blob = b"pad!" + x.tobytes()
    body = {"dtypes": ["int64", "float32"], "stats": [3.0, 0.5, -1.0, 2.0], "stats_int": [6, 0]}
    ints = (_entry(0, 7, 0, 1, 4, 12, (1, 3)) + _entry(1, -1, 1, 1, 0, 0, (2, 3))
            + _entry(2, 7, 2, 0, 0, 0, (4,)) + _entry(3, 8, 2, 1, 0, 0, (0, 2)))
    vals, by_tid, built = parse_values(ints, blob, body, Limits(), "step 0")
    assert sorted(vals) == [0, 1, 2, 3]
    assert vals[0].shape == (1, 3) and vals[0].dtype == "float32"
    assert np.array_equal(vals[0].array, x)
    assert not vals[1].kept and vals[1].stats == Stats(6, 3.0, 0.5, -1.0, 2.0, 0)
    assert vals[2].dtype == "int64" and vals[2].array.tolist() == [0, 0, 0, 0]
    assert vals[2].stats == Stats(4, 0.0, 0.0, 0.0, 0.0, 0)
    empty = vals[3].stats
    assert empty.numel == 0 and math.isnan(empty.norm) and vals[3].array.shape == (0, 2)
    assert by_tid == {7: vals[0], 8: vals[3]}  # a tensor's first value; -1 is no tensor
    assert built == 12 + 4 * 8  # the bytes kept and the zeros built


def test_null_statistics_read_as_nan():
    body = {"dtypes": ["float32"], "stats": [None, None, 1.0, None], "stats_int": [5, None]}
    vals, _, _ = parse_values(_entry(0, -1, 1, 0, 0, 0, (5,)), b"", body, Limits(), "step 0")
    s = vals[0].stats
    assert math.isnan(s.norm) and math.isnan(s.mean) and math.isnan(s.max)
    assert (s.numel, s.min, s.nonfinite) == (5, 1.0, 0)


def test_zeros_beyond_a_steps_budget_are_statistics_only():
    limits = Limits(zeros_numel=10, step_zeros_numel=15)
    ints = _entry(0, -1, 2, 0, 0, 0, (8,)) + _entry(1, -1, 2, 0, 0, 0, (8,)) + \
        _entry(2, -1, 2, 0, 0, 0, (11,))
    vals, _, built = parse_values(ints, b"", {"dtypes": ["float64"]}, limits, "step 0")
    assert vals[0].kept and not vals[1].kept and not vals[2].kept  # 8 + 8 > 15; 11 > 10
    assert vals[1].stats == Stats(8, 0.0, 0.0, 0.0, 0.0, 0)
    assert vals[2].stats == Stats(11, 0.0, 0.0, 0.0, 0.0, 0)
    assert built == 8 * 8


@pytest.mark.parametrize("body, ints, says", [
    ({"dtypes": "float32"}, [], "the value index's dtypes or statistics are not lists"),
    ({"dtypes": ["float32"]}, _entry(0, -1, 1, 0, 0, 0, (2,)), "value 0: its statistics are missing"),
    ({"dtypes": ["float32"], "stats": [1, 1, 1, 1], "stats_int": [-2, 0]},
     _entry(0, -1, 1, 0, 0, 0, (2,)), "value 0's element count is -2, out of range"),
    ({"dtypes": ["float32"], "stats": ["1", 1, 1, 1], "stats_int": [2, 0]},
     _entry(0, -1, 1, 0, 0, 0, (2,)), "value 0's statistics is text, not a number"),
    ({"dtypes": ["torch.FloatStorage"]}, _entry(0, -1, 2, 0, 0, 0, (2,)), "value 0 has an unknown dtype"),
    ({"dtypes": ["float32"]}, _entry(0, -1, 2, 0, 0, 0, (2, -3)), "value 0 has a negative size"),
    ({"dtypes": ["float32"]}, _entry(0, -1, 0, 0, 0, 4, (2,)),
     "value 0 claims 4 bytes at 0; its shape [2] needs 8 of the 0 stored"),
    ({"dtypes": ["float32"]}, [0, -1, 0, 0, 0, 0, 3, 1], "the value index is cut short"),
])
def test_parse_values_refuses_an_index_that_lies(body, ints, says):
    with pytest.raises(Malformed) as e:
        parse_values(ints, b"", body, Limits(), "step 4")
    assert str(e.value) == f"step 4: {says}"


def test_a_value_of_stored_bytes_is_those_bytes_and_nothing_is_unpickled(tmp_path):
    """Bytes that happen to be a pickle are read as numbers of the stored dtype, never loaded."""
    import pickle

    marker = tmp_path / "unpickled"
    payload = pickle.dumps((shutil.copyfile, (__file__, str(marker))))
    payload += b"\x00" * (-len(payload) % 8)
    ints = _entry(0, -1, 0, 0, 0, len(payload), (len(payload) // 8,))
    vals, _, _ = parse_values(ints, payload, {"dtypes": ["int64"]}, Limits(), "step 0")
    assert vals[0].array.tolist() == np.frombuffer(payload, "<i8").tolist()
    assert not marker.exists()


# -- the optimizers in the meta ---------------------------------------------------------------
def test_optimizers_are_read_field_by_field():
    (o,) = ck.optimizers([{"kind": "SGD", "step": 2, "source": None, "groups": [
        {"params": [1, 2], "frozen": [2], "hyper": {"lr": 0.1, "nesterov": False,
                                                    "betas": [0.9, 0.999], "foreach": None}}]}],
        "meta 'optimizers'")
    assert (o.kind, o.step, o.source, o.params) == ("SGD", 2, None, (1, 2))
    (g,) = o.groups
    assert g.frozen == (2,) and g.hyper == {"lr": 0.1, "nesterov": False, "betas": (0.9, 0.999),
                                            "foreach": None}


@pytest.mark.parametrize("value, says", [
    ({}, "meta 'optimizers' is not a list of at most 64 optimizers"),
    ([{}] * 65, "meta 'optimizers' is not a list of at most 64 optimizers"),
    ([{"kind": "SGD", "step": 0}], "meta 'optimizers'[0] is not an optimizer with a list of param groups"),
    ([{"kind": "SGD", "step": 0, "groups": [{"params": [1], "hyper": []}]}],
     "meta 'optimizers'[0]'s group 0 is not a group with at most 64 hyper-parameters"),
    ([{"kind": "SGD", "step": 0, "groups": [{"params": [1], "hyper": {"lr": "0.1"}}]}],
     "meta 'optimizers'[0]'s group 0's lr is text, not a number"),
    ([{"kind": "SGD", "step": 0, "groups": [{"params": [1], "hyper": {"b": [0.5] * 17}}]}],
     "meta 'optimizers'[0]'s group 0's b has 17 numbers, more than 16"),
    ([{"kind": "SGD", "step": -1, "groups": []}], "meta 'optimizers'[0]'s step is -1, out of range"),
    ([{"kind": 3, "step": 0, "groups": []}], "meta 'optimizers'[0]'s kind is a number, not text"),
    ([{"kind": "SGD", "step": 0, "groups": [{"params": "1"}]}],
     "meta 'optimizers'[0]'s group 0's params is text, not a list of ids"),
])
def test_optimizers_that_gradtrace_does_not_write_are_refused(value, says):
    with pytest.raises(Malformed) as e:
        ck.optimizers(value, "meta 'optimizers'")
    assert str(e.value) == says
