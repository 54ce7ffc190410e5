"""gradtrace/record/mode.py: the TorchFunctionMode's dispatch to its rooms, and its ways on and off the stack."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

import gradtrace
from fake_writer import FakeWriter
from gradtrace.config import Config
from gradtrace.record.mode import Mode
from gradtrace.record.state import Run


def _stack() -> list:
    return [torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack())]


class Rooms:
    """Forward, events and backward at once: each call noted, then run as it would be."""

    def __init__(self, run: Run):
        self.run = run
        self.seen: list[tuple[str, object]] = []
        self.busy: list[int] = []

    def _note(self, what, func, args, kwargs):
        self.seen.append((what, func))
        self.busy.append(self.run.busy)
        return func(*args, **kwargs)

    def on_op(self, func, args, kwargs):
        return self._note("op", func, args, kwargs)

    def on_backward(self, func, args, kwargs):
        return self._note("backward", func, args, kwargs)

    def on_get(self, kind, func, args, kwargs):
        return self._note("get", func, args, kwargs)

    def on_change(self, kind, func, args, kwargs):
        return self._note("change", func, args, kwargs)


class Other(TorchFunctionMode):
    """Somebody else's mode (a user's, a library's)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def mode():
    """A Mode over fake rooms, off the stack; whatever a test leaves is removed after it."""
    assert _stack() == [] and sys.getprofile() is None
    run = Run(Config(), FakeWriter())
    rooms = Rooms(run)
    m = Mode(run, rooms, rooms, rooms)
    m.rooms = rooms
    try:
        yield m
    finally:
        m.remove()
        while torch._C._len_torch_function_stack():
            torch._C._pop_torch_function_stack()
        sys.setprofile(None)


# -- dispatch ----------------------------------------------------------------------------------
def test_each_kind_of_call_goes_to_its_room(mode):
    x = torch.ones(2, requires_grad=True)
    mode.put_on_stack()
    y = x * 2
    _ = x.shape, x.dim()               # metadata passes straight through
    _ = x.data
    y.add_(1)
    y.sum().backward()
    _ = x.grad
    mode.remove()
    T = torch.Tensor
    assert mode.rooms.seen == [
        ("op", T.mul), ("get", T.data.__get__), ("change", T.add_), ("op", T.sum),
        ("backward", T.backward), ("get", T.grad.__get__)]
    assert torch.equal(x.grad, torch.full((2,), 2.0))
    assert mode.run.busy == 0 and mode.rooms.busy == [1] * 6  # busy while each is recorded


def test_a_dormant_mode_passes_every_call_through(mode):
    x = torch.ones(3, requires_grad=True)
    mode.put_on_stack()
    mode.run.dormant = True
    y = (x * 3).sum()
    y.backward()
    assert mode.rooms.seen == [] and float(y.detach()) == 9.0 and torch.equal(x.grad, torch.full((3,), 3.0))


def test_a_call_inside_torch_func_is_counted_not_recorded(mode):
    x = torch.ones(4, 2)
    mode.put_on_stack()
    out = torch.func.vmap(lambda r: r * 2 + 1)(x)
    mode.remove()
    assert torch.equal(out, torch.full((4, 2), 3.0))
    assert mode.run.transform_ops == 2  # the mul and the add, inside the transform
    assert not any(f in (torch.Tensor.mul, torch.Tensor.add) for _, f in mode.rooms.seen)


def test_a_signal_that_arrives_while_recording_is_raised_once_the_call_is_done(mode):
    x = torch.ones(2)
    results = []

    def arrives(func, args, kwargs):
        mode.run.pending_signal = KeyboardInterrupt   # as the session's handler would
        out = func(*args, **kwargs)
        results.append(out)
        return out

    mode.rooms.on_op = arrives
    mode.put_on_stack()
    with pytest.raises(KeyboardInterrupt):
        x + 1
    mode.remove()
    assert len(results) == 1
    assert torch.equal(results[0], torch.full((2,), 2.0))  # the call itself ran to the end
    assert mode.run.pending_signal is None and mode.run.busy == 0


def test_the_kind_of_each_function_is_worked_out_once(mode):
    x = torch.ones(2)
    mode.put_on_stack()
    for _ in range(3):
        x * 2
    mode.remove()
    assert list(mode.kinds) == [torch.Tensor.mul] and len(mode.rooms.seen) == 3


# -- on and off the stack ----------------------------------------------------------------------
def test_on_the_stack_and_off_it(mode):
    mode.put_on_stack()
    assert _stack() == [mode] and mode.on_top() and mode.run.mode_on and not mode.run.dormant
    mode.take_off_stack()
    assert _stack() == [] and not mode.on_top() and not mode.run.mode_on


def test_taking_it_off_leaves_the_modes_above_it_in_their_order(mode):
    a, b = Other(), Other()
    mode.put_on_stack()
    torch._C._push_on_torch_function_stack(a)
    torch._C._push_on_torch_function_stack(b)
    assert not mode.on_top()
    mode.take_off_stack()
    assert _stack() == [a, b] and not mode.run.mode_on


def test_stepping_aside_only_from_the_top_and_back_once(mode):
    owner = object()
    mode.put_on_stack()
    assert mode.step_aside(owner) is True
    assert _stack() == [] and mode.aside is owner and not mode.run.mode_on
    assert mode.step_aside(object()) is False and mode.aside is owner  # aside already
    assert mode.step_back() is True and _stack() == [mode] and mode.aside is None
    assert mode.step_back() is False and _stack() == [mode]


def test_no_stepping_aside_under_another_mode(mode):
    other = Other()
    mode.put_on_stack()
    torch._C._push_on_torch_function_stack(other)
    assert mode.step_aside(object()) is False
    assert _stack() == [mode, other] and mode.aside is None and mode.run.mode_on


def _idle_inside(mode, then=None):
    """Make the next op's handler call go_idle() (as a step that begins unrecorded does),
    and ``then`` after it; what the handler saw of the mode and the profile function."""
    seen = {}
    record = mode.rooms.on_op

    def handler(func, args, kwargs):
        mode.go_idle()
        seen["hook"] = sys.getprofile() == mode._profile_pop
        seen["stack"] = _stack()   # torch takes a mode off while its handler runs
        if then is not None:
            then()
        return record(func, args, kwargs)

    mode.rooms.on_op = handler
    return seen


def test_going_idle_takes_the_mode_off_once_its_handler_has_returned(mode):
    x = torch.ones(2)
    seen = _idle_inside(mode)
    mode.put_on_stack()
    y = x * 2                 # goes idle inside; torch puts the mode back after the handler
    assert seen == {"hook": True, "stack": []}
    # the first Python event after that (this assert's calls) took it off for good
    assert _stack() == [] and not mode.run.mode_on and sys.getprofile() is None
    assert mode.run.dormant and torch.equal(y, torch.full((2,), 2.0))
    x * 3                     # off the stack: no handler, nothing seen
    assert len(mode.rooms.seen) == 1


def test_going_idle_outside_a_handler_takes_it_off_at_once(mode):
    mode.put_on_stack()
    mode.go_idle()            # its own return is the event that pops it
    assert _stack() == [] and sys.getprofile() is None and mode.run.dormant


def test_going_idle_leaves_someone_elses_profile_function(mode):
    def theirs(frame, event, arg):
        pass

    mode.put_on_stack()
    sys.setprofile(theirs)
    mode.go_idle()
    assert sys.getprofile() is theirs and mode.run.dormant and _stack() == [mode]
    mode.activate()
    assert sys.getprofile() is theirs and not mode.run.dormant


def test_activating_before_the_idle_hook_ran_keeps_the_mode_and_drops_the_hook(mode):
    x = torch.ones(2)
    seen = _idle_inside(mode, then=mode.activate)  # a recorded step begins at once after
    mode.put_on_stack()
    x * 2
    assert seen["hook"] and sys.getprofile() is None
    assert _stack() == [mode] and mode.run.mode_on and not mode.run.dormant


def test_activating_after_the_idle_hook_ran_puts_the_mode_back(mode):
    mode.put_on_stack()
    mode.go_idle()
    assert _stack() == []
    mode.activate()
    assert _stack() == [mode] and mode.run.mode_on and not mode.run.dormant
    assert sys.getprofile() is None


@pytest.mark.parametrize("state", ["on", "under another", "aside", "idle", "off"])
def test_remove_leaves_nothing_whatever_the_state(mode, state):
    other = Other()
    if state != "off":
        mode.put_on_stack()
    if state == "under another":
        torch._C._push_on_torch_function_stack(other)
    elif state == "aside":
        mode.step_aside(object())
    elif state == "idle":
        mode.go_idle()
    mode.remove()
    assert _stack() == ([other] if state == "under another" else [])
    assert sys.getprofile() is None and mode.aside is None and not mode.run.mode_on


# -- through a trace ---------------------------------------------------------------------------
def test_a_mode_the_script_entered_during_the_trace_outlives_it():
    w = torch.ones(2, requires_grad=True)
    theirs = Other()
    with gradtrace.trace() as t:
        theirs.__enter__()
        (w * 2).sum().backward()
    try:
        assert _stack() == [theirs]          # gradtrace's mode is gone, theirs stays
        before = theirs.calls
        w * 3
        assert theirs.calls == before + 1
    finally:
        theirs.__exit__(None, None, None)
    assert _stack() == [] and sys.getprofile() is None
    assert [o.name for o in t.steps[0].graph_ops] == ["mul", "sum"]
