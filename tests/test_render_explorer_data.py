"""render/explorer_data: the explorer's JSON-ready data (scalars, values and their table, step
data, the verdict in plain words, the source lines, the steps a page holds within its budget)."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

from gradtrace.analysis.check import CheckReport, CheckResult
from gradtrace.analysis.diagnostics import Finding
from gradtrace.analysis.graph import build_graph
from gradtrace.render import explorer_data
from gradtrace.render.explorer import page_of
from gradtrace.render.explorer_data import (FINDING_TITLES, FULL_VALUES, Shapes, Values, page_data,
                                            plain_verdict, scalars, script_lines, step_data,
                                            value_json)
from gradtrace.tracefile.model import Source, Stats

from synthetic_graph import linear_step, stats_only, value


def _bytes(doc) -> int:
    return len(json.dumps(doc, separators=(",", ":")))


def _refs(step) -> list[int]:
    return [n[k] for n in step["nodes"].values() for k in ("data", "grad") if n[k] is not None]


# -- moved from test_render_explorer.py -------------------------------------------------------
def test_step_data_holds_the_traces_values(demo_trace):
    t = demo_trace("linreg")
    step = t.step(7)
    d = step_data(step, Shapes())
    model = build_graph(step, "both")
    for n, a in model.graph.nodes(data=True):
        for name in ("data", "grad"):
            v, shown = a[name], d["nodes"][str(n)][name]
            if v is None:
                assert shown is None
            else:
                assert shown["shape"] == list(v.shape)
                assert shown["values"] == v.data.reshape(-1).tolist()
    assert d["loss"] == step.loss
    assert [o["name"] for o in d["order"]] == [g.name for g in step.backward.execution_order]
    # what each source line did: the loss line issued the ops, the sgd line updated and zeroed
    lines = {k.rsplit(":", 1)[1]: v for k, v in d["lines"].items()}
    assert lines["44"] == ["reshape", "sub", "pow", "div"]
    assert lines["51"] == ["w, b updated"] and lines["52"] == ["w, b zeroed"]
    assert lines["71"] == ["sum", "backward (8 grad_fn nodes)", "b, w: .grad added onto zeros"]


def test_a_value_repeated_across_steps_is_in_the_page_once(demo_trace):
    t = demo_trace("exploding_lr")  # full batch: the same X and y in every step
    data = page_data(t)
    table = data["values"]
    assert len({json.dumps(v, sort_keys=True) for v in table}) == len(table)  # each value once
    referred = set()
    batch_refs = set()
    for k in data["held"]:
        step, d = t.step(k), data["steps"][str(k)]
        model = build_graph(step, "both" if step.backward is not None else "forward")
        for n, a in model.graph.nodes(data=True):
            for name in ("data", "grad"):
                v, ref = a[name], d["nodes"][str(n)][name]
                if v is None:
                    assert ref is None
                    continue
                assert isinstance(ref, int)
                referred.add(ref)
                shown = table[ref]  # what the page's script resolves the number to
                assert shown["shape"] == list(v.shape) and shown["dtype"] == v.dtype
                # float32 elements as the base64 of their bytes: the very same numbers
                got = np.frombuffer(base64.b64decode(shown["f4"]), "<f4")
                assert got.tobytes() == np.ascontiguousarray(v.data, "<f4").tobytes()
            if a["title"] == "inputs" and a["kind"] == "input":
                batch_refs.add(d["nodes"][str(n)]["data"])
    assert len(data["held"]) == 35 and len(batch_refs) == 1      # 35 steps, one copy of the batch
    assert referred == set(range(len(table)))                    # nothing held that no step shows
    text = json.dumps(data, separators=(",", ":"))
    x = t.step(0).value(next(o for o in t.step(0).ops if o.name == "linear").inputs[0])
    first = base64.b64encode(np.ascontiguousarray(x.data, "<f4").tobytes())[:40].decode()
    assert text.count(first) == 1                               # the batch's numbers: once
    assert page_of(t) == page_of(t)                              # the same page every time


def test_the_budget_holds_the_findings_steps_first_then_a_sample(demo_trace):
    t = demo_trace("exploding_lr")
    report = t.check()
    full = page_data(t, report)
    assert full["held"] == t.steps.indices and "every recorded step" in full["held_note"]
    # what a step costs on its own: its data and every value it refers to
    size = {int(k): _bytes(s) + sum(_bytes(full["values"][r]) + 1 for r in set(_refs(s)))
            for k, s in full["steps"].items()}
    budget = 6 * max(size.values())
    small = page_data(t, report, budget=budget)
    held = small["held"]
    assert 6 <= len(held) < len(t.steps) and held == sorted(held)
    # the budget counts a value shared by held steps once: the page's step data and table fit
    assert sum(_bytes(small["steps"][str(i)]) for i in held) + _bytes(small["values"]) <= budget
    assert sum(size[i] for i in held) > _bytes(small["steps"]) + _bytes(small["values"])
    assert {0, 14, t.steps.indices[-1]} <= set(held)          # first, the non_finite step, last
    assert [r["index"] for r in small["scalars"]] == t.steps.indices  # scalars: all of them
    assert f"{len(held)} of {len(t.steps)}" in small["held_note"] and "gradtrace serve" in small["held_note"]


def test_one_layout_per_graph_shape(demo_trace):
    t = demo_trace("linreg")
    data = page_data(t)
    # every training step has the same graph; the evaluation passes have no backward
    assert len(data["shapes"]) <= 3
    shape = data["shapes"][str(data["steps"]["0"]["shape"])]
    titles = {n["title"] for n in shape["nodes"].values()}
    assert {"w", "b", "X", "matmul", "loss", "AccumulateGrad"} <= titles
    assert all(e["path"].startswith("M") for e in shape["edges"])



# -- numbers and values ----------------------------------------------------------------------------
def test_numbers_for_json_keep_floats_and_spell_nonfinite_ones():
    num = explorer_data._num
    assert [num(x) for x in (None, True, 3, 0.1, np.float32(0.5))] == [None, True, 3, 0.1, 0.5]
    assert [num(x) for x in (math.nan, math.inf, -math.inf)] == ["nan", "inf", "-inf"]
    assert type(num(np.float64(2.0))) is float


def test_a_small_kept_value_is_given_element_by_element():
    v = value([[1.5, -2.0], [np.nan, np.inf]])
    assert value_json(v) == {"shape": [2, 2], "dtype": "float32", "values": [1.5, -2.0, "nan", "inf"]}
    assert value_json(None) is None


def test_a_value_of_exactly_full_values_elements_is_kept_and_one_more_is_summarised():
    assert len(value_json(value(np.ones(FULL_VALUES)))["values"]) == FULL_VALUES
    big = value_json(value(np.arange(FULL_VALUES + 1.0)))
    n = FULL_VALUES + 1
    assert "values" not in big
    assert big["why"] == f"{n} elements: the page keeps up to {FULL_VALUES} of a tensor"
    assert big["stats"]["numel"] == n and big["stats"]["max"] == n - 1
    assert big["stats"]["mean"] == pytest.approx((n - 1) / 2)
    assert big["stats"]["norm"] == pytest.approx(math.sqrt(sum(i * i for i in range(n))))


def test_a_value_kept_as_statistics_says_so():
    out = value_json(stats_only((3,), Stats(3, 2.0, math.nan, -1.0, 1.0, 1)))
    assert out == {"shape": [3], "dtype": "float32", "why": "only statistics were recorded",
                   "stats": {"numel": 3, "norm": 2.0, "mean": "nan", "min": -1.0, "max": 1.0,
                             "nonfinite": 1}}


def test_a_complex_value_is_given_by_its_statistics():
    assert "values" not in value_json(value([3 + 4j], dtype="complex64"))


def _decode(item: dict) -> np.ndarray:
    (key,) = [k for k in ("f4", "f8") if k in item]
    return np.frombuffer(base64.b64decode(item[key]), "<" + key)


@pytest.mark.parametrize("dtype,key", [("float32", "f4"), ("float16", "f4"), ("float64", "f8")])
def test_the_table_packs_floats_as_the_base64_of_their_little_endian_bytes(dtype, key):
    numbers = [0.1, -2.5, 1e-3]
    values = Values()
    item = values.items[values.ref(value(numbers, dtype=dtype))]
    assert key in item and "values" not in item and item["dtype"] == dtype
    # the same doubles the numbers are in their own dtype
    assert _decode(item).astype(np.float64).tolist() == np.asarray(numbers, dtype).astype(np.float64).tolist()


def test_the_table_keeps_ints_and_bools_as_lists():
    values = Values()
    assert values.items[values.ref(value([1, 2], dtype="int64"))]["values"] == [1, 2]
    assert values.items[values.ref(value([True], dtype="bool"))]["values"] == [True]


def test_the_table_holds_each_distinct_value_once():
    values = Values()
    a = values.ref(value([1.0, 2.0]))
    assert values.ref(value([1.0, 2.0])) == a                      # same dtype, shape, bytes
    assert values.ref(value([1.0, 2.0], dtype="float64")) != a      # another dtype
    assert values.ref(value([[1.0, 2.0]])) != a                     # another shape
    assert values.ref(value([2.0, 1.0])) != a                       # other bytes
    st = Stats(2, 1.0, 0.5, 0.0, 1.0, 0)
    s = values.ref(stats_only((2,), st))
    assert values.ref(stats_only((2,), st)) == s and s != a        # the same statistics: one copy
    assert values.ref(None) is None
    assert len(values.items) == len(values.sizes) == 5
    assert values.sizes == [len(json.dumps(i, separators=(",", ":"))) + 1 for i in values.items]


# -- scalars -------------------------------------------------------------------------------------
class _Trace:
    """A stand-in trace: the step table's rows and (optionally) the per-step scalars."""

    def __init__(self, rows, scalars=None):
        self._rows, self._scalars = rows, scalars

    def step_rows(self):
        return self._rows

    def scalars(self):
        return self._scalars


class _Scalars:
    def __init__(self, steps, loss, fresh, zeros, added, updated):
        self.steps, self.loss = np.array(steps), np.array(loss, dtype=float)
        self._counts = {k: np.array(v) for k, v in
                        dict(fresh=fresh, zeros=zeros, added=added, updated=updated).items()}

    def __len__(self):
        return len(self.steps)

    def counts(self):
        return self._counts


def test_a_recorded_steps_scalars_come_from_its_row():
    row = {"index": 4, "loss": 0.123456, "has_backward": True, "ops": 5, "updates": 2,
           "zeroings": None}
    (out,) = scalars(_Trace([row]))
    assert out == {"index": 4, "loss": 0.123456, "loss_text": "0.1235", "backward": True,
                   "recorded": True, "ops": 5, "backward_nodes": 0, "accumulate_fresh": 0,
                   "accumulate_added": 0, "accumulate_on_top": 0, "zeroings": 0, "updates": 2,
                   "grad_writes": 0}


def test_a_step_kept_as_scalars_only_gives_its_loss_and_counts():
    rows = [{"index": 0, "loss": 1.0, "has_backward": True, "ops": 3}]
    sc = _Scalars(steps=[0, 1, 2], loss=[1.0, 0.5, math.nan], fresh=[2, 0, 0], zeros=[0, 1, 0],
                  added=[0, 1, 0], updated=[2, 2, 0])
    first, second, third = scalars(_Trace(rows, sc))
    assert first["recorded"] and first["ops"] == 3                 # the step table's row
    assert (second["recorded"], second["loss"], second["backward"]) == (False, 0.5, True)
    assert (second["accumulate_fresh"], second["accumulate_added"], second["accumulate_on_top"],
            second["updates"], second["ops"]) == (0, 2, 1, 2, 0)
    assert (third["loss"], third["loss_text"], third["backward"]) == (None, None, False)


def test_scalars_no_longer_than_the_step_table_are_not_read():
    rows = [{"index": 0, "loss": 2.0}, {"index": 1, "loss": None}]
    sc = _Scalars(steps=[0], loss=[9.0], fresh=[0], zeros=[0], added=[0], updated=[0])
    out = scalars(_Trace(rows, sc))
    assert [(r["index"], r["loss"], r["loss_text"]) for r in out] == [(0, 2.0, "2"), (1, None, None)]


# -- the verdict ---------------------------------------------------------------------------------
def _check(status: str, param: str = "w", step: int = 0, kind: str = "numeric") -> CheckResult:
    return CheckResult(kind, step, param, status, detail=f"{kind} {param} {status}")


def _finding(kind: str, step: int | None = 3) -> Finding:
    return Finding(kind, step, "w", "mse_loss", "train.py:9", f"{kind} happened")


def test_no_report_is_a_page_without_checks():
    assert plain_verdict(None) == {"mood": "na", "headline": "Checks were not run for this page.",
                                   "items": [], "detail": ""}


def test_passing_checks_say_the_gradients_are_right():
    report = CheckReport(checks=[_check("pass"), _check("pass", step=1), _check("not_applicable")],
                         findings=[])
    v = plain_verdict(report)
    assert (v["mood"], v["items"]) == ("ok", [])
    assert v["headline"] == "The gradients are right: 2 checks agree with what autograd computed."
    assert v["detail"] == report.verdict()


def test_failed_checks_of_one_parameter_are_one_item_counting_the_steps():
    report = CheckReport(checks=[_check("fail", step=2), _check("fail", step=5), _check("pass", "b"),
                                 _check("fail", "b", step=7)], findings=[])
    v = plain_verdict(report)
    assert v["mood"] == "bad"
    assert v["headline"] == ("The gradients are wrong: w at step 2 does not match the loss it "
                             "came from.")
    assert [(i["title"], i["step"], i["message"]) for i in v["items"]] == [
        ("The gradient of w is wrong (2 steps)", 2, "numeric check, step 2: numeric w fail"),
        ("The gradient of b is wrong", 7, "numeric check, step 7: numeric b fail")]


def test_a_serious_finding_turns_a_good_verdict_bad():
    v = plain_verdict(CheckReport(checks=[_check("pass")], findings=[_finding("non_finite")]))
    assert v["mood"] == "bad"
    assert v["headline"].endswith(f" But training went wrong: {FINDING_TITLES['non_finite'].lower()}.")
    (item,) = v["items"]
    assert (item["kind"], item["mood"], item["step"], item["op"], item["source"], item["message"]) == \
        ("non_finite", "bad", 3, "mse_loss", "train.py:9", "non_finite happened")


def test_advice_alone_is_a_warning_worth_a_look():
    v = plain_verdict(CheckReport(checks=[_check("pass")],
                                  findings=[_finding("ill_conditioned"), _finding("data_update")]))
    assert v["mood"] == "warn" and v["headline"].endswith(" 2 things worth a look.")
    # a kind without a title of its own is named by its words
    assert "data_update" not in FINDING_TITLES
    assert [i["title"] for i in v["items"]] == [FINDING_TITLES["ill_conditioned"], "data update"]
    one = plain_verdict(CheckReport(checks=[], findings=[_finding("ill_conditioned")]))
    assert one["mood"] == "warn" and one["headline"] == (
        "No gradient check applies to this run; the training itself is described below. "
        "1 thing worth a look.")
    assert plain_verdict(CheckReport(checks=[], findings=[]))["mood"] == "na"


# -- the source lines ----------------------------------------------------------------------------
class _Run:
    def __init__(self, script, sources):
        self.info = type("Info", (), {"script": script})()
        self.sources = dict(enumerate(sources))


def test_a_script_still_saying_what_was_recorded_is_shown_whole(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("import torch\nx = 1\ny = x + 1\n")
    out = script_lines(_Run(str(path), [Source(str(path), 3, "y = x + 1")]))
    assert out == {"files": [{"file": str(path), "name": "train.py", "complete": True,
                              "lines": [[1, "import torch"], [2, "x = 1"], [3, "y = x + 1"]]}]}


def test_a_changed_missing_or_oversized_file_shows_only_the_recorded_lines(tmp_path):
    changed = tmp_path / "changed.py"
    changed.write_text("a = 1\nb = 3\n")
    big = tmp_path / "big.py"
    big.write_text("z = 0\n" * 100)
    sources = [Source(str(changed), 2, "b = 2"), Source(str(tmp_path / "gone.py"), 1, "q()"),
               Source(str(big), 1, "z = 0"), Source("<stdin>", 4, "w()")]
    out = script_lines(_Run(None, sources), max_bytes=100)
    # without a script, the files in the order of their paths ("/..." before "<stdin>")
    assert [(f["name"], f["complete"], f["lines"]) for f in out["files"]] == [
        ("big.py", False, [[1, "z = 0"]]), ("changed.py", False, [[2, "b = 2"]]),
        ("gone.py", False, [[1, "q()"]]), ("<stdin>", False, [[4, "w()"]])]


def test_the_script_is_the_first_file(tmp_path):
    other, script = tmp_path / "a_helpers.py", tmp_path / "z_train.py"
    sources = [Source(str(other), 1, "h()"), Source(str(script), 1, "t()")]
    out = script_lines(_Run(str(script), sources))
    assert [f["name"] for f in out["files"]] == ["z_train.py", "a_helpers.py"]


# -- the steps a page holds ----------------------------------------------------------------------
def test_every_step_is_held_when_all_fit():
    assert explorer_data._pick([0, 1, 2, 3], [0, 3], lambda i: 10, budget=1000) == [0, 1, 2, 3]


def test_the_first_step_asked_for_is_held_even_over_the_budget():
    assert explorer_data._pick([0, 1, 2], [2, 0], lambda i: 100, budget=50) == [2]


def test_the_steps_asked_for_come_first_then_a_sample_within_the_budget():
    held = explorer_data._pick(list(range(100)), [0, 50, 99], lambda i: 10, budget=300)
    assert {0, 50, 99} <= set(held) and held == sorted(held) and len(held) * 10 <= 300
    assert len(held) >= 20                                    # the budget is mostly used


def test_a_value_shared_by_held_steps_is_counted_once():
    """Each step costs 10 and refers to value 0 (100 bytes): counted for each step, one step
    would fit in 200 bytes; counted once, up to ten."""
    held = explorer_data._pick(list(range(10)), [0], lambda i: 10, budget=200,
                               refs=lambda i: [0], ref_size=lambda r: 100)
    assert len(held) >= 5 and 100 + 10 * len(held) <= 200 and held[0] == 0


# -- shapes and step data ------------------------------------------------------------------------
def test_one_shape_is_laid_out_once_as_wide_as_its_widest_step(monkeypatch):
    laid_out = []

    def geometry(model, options, warn=None):
        laid_out.append(model)
        return f"geometry {len(laid_out)}"

    monkeypatch.setattr(explorer_data, "geometry", geometry)
    shapes = Shapes()
    a, b = linear_step(), linear_step()
    sid = shapes.id_of(a)
    assert shapes.id_of(b) == sid and shapes.laid_out == [sid]
    narrow, wide = value([[1.0], [2.0]]), value([[1.2345], [-2.5]])
    shapes.widen(sid, 1, 3, narrow, None)
    shapes.widen(sid, 1, 9, wide, None)
    shapes.widen(sid, 1, 5, narrow, None)                     # narrower: the widest stays
    assert shapes.geometry(sid) == "geometry 1" and shapes.geometry(sid) == "geometry 1"
    (model,) = laid_out
    assert model.graph.nodes[1]["data"] is wide and a.graph.nodes[1]["data"] is not wide
    shapes.widen(sid, 1, 99, narrow, None)                    # laid out already: no change
    assert shapes.widest[sid] == {}


@pytest.fixture(scope="module")
def forward_only():
    """One step of a forward pass without backward, recorded in this process."""
    import torch

    import gradtrace

    w = torch.ones(2, 1, requires_grad=True)
    with gradtrace.trace() as t:
        (torch.ones(3, 2) @ w).sum()
    return t.result


def test_a_step_without_backward_has_a_forward_graph_and_no_order(forward_only):
    step = forward_only.steps[0]
    d = step_data(step, Shapes())
    model = build_graph(step, "forward")
    assert d["order"] == [] and d["note"] == "" and d["shape"] == 0
    assert sorted(d["nodes"], key=int) == [str(n) for n in model.graph.nodes]
    for n, a in model.graph.nodes(data=True):
        assert d["nodes"][str(n)]["grad"] is None
        assert d["nodes"][str(n)]["kind_name"] == explorer_data.LEGEND[a["kind"]]


def test_a_served_page_says_every_step_is_fetched(forward_only):
    data = page_data(forward_only, mode="serve")
    assert data["mode"] == "serve" and data["held"] == [0]
    assert data["held_note"] == ("Served by `gradtrace serve`: every one of the 1 recorded steps "
                                 "is fetched when you go to it.")
    assert set(data["shapes"]) == {str(s["shape"]) for s in data["steps"].values()}
    assert json.dumps(data, sort_keys=True) == json.dumps(page_data(forward_only, mode="serve"),
                                                          sort_keys=True)
