"""gradtrace/record/state.py: the run's sequential ids, tensor rows and end-of-run notes; the step's state."""

from __future__ import annotations

import weakref

import pytest
import torch

from fake_writer import FakeWriter
from gradtrace.config import Config
from gradtrace.record.state import Run, StepState
from gradtrace.tracefile.rows import TensorRow


def _run(**options) -> tuple[Run, FakeWriter]:
    w = FakeWriter()
    return Run(Config(**options), w), w


# -- ids and tensor rows -----------------------------------------------------------------------
def test_tids_are_sequential_and_one_per_tensor():
    run, w = _run()
    a, b = torch.ones(1), torch.ones(1)
    assert [run.tid_of(a), run.tid_of(b), run.tid_of(a)] == [0, 1, 0]
    assert run.next_tid == 2 and len(w.of("add_tensor")) == 2


def test_a_tensors_role_comes_from_its_place_in_the_graph():
    run, w = _run()
    p = torch.ones(2, 3, requires_grad=True)
    h = p * 2
    x = torch.ones(4, dtype=torch.float64)
    for t in (p, h, x):
        run.new_tid(t)
    assert [row for (row,) in w.of("add_tensor")] == [
        TensorRow(0, None, "param", (2, 3), "float32", 1),
        TensorRow(1, None, "activation", (2, 3), "float32", 1),
        TensorRow(2, None, "input", (4,), "float64", 0)]
    assert run.named == set()


def test_a_given_role_and_name_win():
    run, w = _run()
    p = torch.ones(1, requires_grad=True)
    run.new_tid(p, role="activation", name="view")
    (row,), = w.of("add_tensor")
    assert (row.role, row.name) == ("activation", "view") and run.named == {0}


def test_a_parameter_takes_its_module_path_as_its_name():
    run, w = _run()
    net = torch.nn.Linear(2, 1)
    run.param_names.set(net.weight, "net.weight")
    run.new_tid(net.weight)
    run.new_tid(net.bias)  # no path known: no name
    assert [(r.name, r.role) for (r,) in w.of("add_tensor")] == [("net.weight", "param"), (None, "param")]
    assert run.named == {0}


def test_a_name_found_later_is_written_and_remembered():
    run, w = _run()
    tid = run.tid_of(torch.ones(1))
    run.name(tid, "X")
    assert w.of("name_tensor") == [(tid, "X")] and tid in run.named


def test_seq_and_op_numbers_are_separate_counters():
    run, _ = _run()
    assert [run.take_seq(), run.take_op(), run.take_seq(), run.take_seq(), run.take_op()] == [0, 0, 1, 2, 1]
    assert (run.seq, run.next_op) == (3, 2)


def test_clear_lets_go_of_every_tensor():
    run, _ = _run()
    t = torch.ones(1)
    run.tid_of(t)
    run.param_names.set(t, "w")
    run.alias.set(t, ("param", 0, "w"))
    run.clear()
    assert run.tids.get(t) is None and run.param_names.get(t) is None and run.alias.get(t) is None
    assert run.tids.d == run.alias.d == run.param_names.d == {}


def test_the_run_holds_tensors_weakly():
    """A tensor the script dropped is not kept alive by its tid."""
    run, _ = _run()
    t = torch.ones(3)
    run.tid_of(t)
    ref = weakref.ref(t)
    del t                      # no cycle: freed at once, if nothing else holds it
    assert ref() is None


@pytest.mark.parametrize("options, recording", [({}, True), ({"step_range": (2, 4)}, False),
                                                 ({"every": 3}, True)])
def test_step_zero_is_recorded_as_the_policy_decides(options, recording):
    run, _ = _run(**options)
    assert run.step == 0 and run.recording is recording


# -- signals and internal errors ---------------------------------------------------------------
def test_a_pending_signal_is_raised_once_and_cleared():
    run, _ = _run()
    run.pending_signal = KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run.raise_pending_signal()
    assert run.pending_signal is None


def test_an_internal_error_is_said_once_and_the_run_goes_on(capsys):
    run, _ = _run()
    run.internal(ValueError("bad row"))
    run.internal(ValueError("bad row"))
    run.internal(KeyError("x"))
    assert run.errors == ["ValueError: bad row", "KeyError: 'x'"]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "gradtrace: internal error while recording (ValueError: bad row); the run goes on, "
        "this part of the trace may be missing",
        "gradtrace: internal error while recording (KeyError: 'x'); the run goes on, "
        "this part of the trace may be missing"]


# -- notes -------------------------------------------------------------------------------------
def test_nothing_left_out_is_no_note():
    run, _ = _run()
    assert run.notes() == []


def test_each_thing_left_out_is_one_line_singular_or_plural():
    run, _ = _run(max_nodes_per_backward=50)
    run.transform_ops, run.thread_backward, run.truncated_passes = 1, 1, 1
    run.compiled = 2
    assert run.notes() == [
        "1 op ran inside torch.func transforms and was not recorded (gradtrace records "
        "autograd, not functorch)",
        "torch.compile'd code ran: compiled regions are not recorded op by op (what runs "
        "outside them is, and the backward pass)",
        "1 backward pass ran in other threads and was not recorded (gradtrace records the "
        "thread that started it)",
        "1 backward pass reached more grad_fn nodes than the step may hold (50, "
        "max_nodes_per_backward): the nodes beyond were not recorded"]
    run.transform_ops, run.thread_backward, run.truncated_passes = 3, 2, 4
    notes = run.notes()
    assert notes[0].startswith("3 ops ran inside torch.func transforms and were not recorded")
    assert notes[2].startswith("2 backward passes ran in other threads and were not recorded")
    assert notes[3].startswith("4 backward passes reached more grad_fn nodes")


def test_the_policys_note_counts_the_most_steps_the_run_saw():
    """Steps not kept in full are said against the steps seen: the scalars' count or the
    steps written, whichever is more."""
    run, _ = _run(budget=0)  # no step fits: each is refused
    for s in range(1, 5):
        run.policy.decide(s)
    assert run.notes() == []  # no step seen yet: nothing to say
    run.totals["steps"] = 3
    (line,) = run.notes()
    assert line == run.policy.note(3) and line.startswith("kept 0 of 3 steps in full")

    class Taker:
        seen_steps = 5

    run.scalars = Taker()
    (line,) = run.notes()
    assert line.startswith("kept 0 of 5 steps in full")


# -- the step ----------------------------------------------------------------------------------
def test_a_new_step_is_empty_until_something_happens():
    run, _ = _run()
    step = StepState(run)
    assert step.is_empty()
    run.take_seq()
    assert not step.is_empty()
    step.reset()
    assert step.is_empty() and step.first_seq == run.seq == 1
    step.ops = 1
    assert not step.is_empty()
    step.reset()
    step.has_backward = True
    assert not step.is_empty()


def test_count_adds_to_the_step_and_to_the_run():
    run, _ = _run()
    step = StepState(run)
    step.count("zero")
    step.count("zero")
    step.count("update")
    assert step.counts["zero"] == 2 and step.counts["update"] == 1
    step.reset()
    step.count("zero")
    assert step.counts["zero"] == 1 and run.totals["zero"] == 3 and run.totals["update"] == 1
    with pytest.raises(KeyError):
        step.count("no such count")


def test_reset_forgets_everything_the_step_gathered():
    run, _ = _run()
    step = StepState(run)
    t = torch.ones(1, requires_grad=True)
    g = (t * 2).grad_fn
    step.snaps.append((0, t, 0))
    step.snapped.add(0)
    step.node_op[id(g)] = 0
    step.node_refs.append(g)
    step.fwd_vid[0] = (0, 0)
    step.grad_vid[0] = (1, 2, 3)
    step.pending.set(t, ("call",))
    step.loss, step.dropped, step.nodes, step.committed_early = 1.5, 2, 3, True
    step.reset()
    assert (step.snaps, step.snapped, step.node_op, step.node_refs, step.fwd_vid, step.grad_vid) == (
        [], set(), {}, [], {}, {})
    assert step.pending.get(t) is None and step.loss is None
    assert (step.dropped, step.nodes, step.committed_early) == (0, 0, False)
    assert set(step.counts.values()) == {0}


def test_clear_lets_go_of_the_steps_tensors_and_grad_fns():
    run, _ = _run()
    step = StepState(run)
    t = torch.ones(1, requires_grad=True)
    h = t * 2
    step.node_refs.append(h.grad_fn)
    step.node_op[id(h.grad_fn)] = 0
    step.snaps.append((0, h, h._version))
    step.pending.set(h, ("call",))
    step.clear()
    assert step.node_refs == [] and step.node_op == {} and step.snaps == [] and step.pending.d == {}
