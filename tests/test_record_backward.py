"""The backward pass as recorded: every .grad accumulation carries its kind, seen at record time."""

from __future__ import annotations

import pytest

from conftest import record_demo
from gradtrace.tracefile.model import ACCUMULATIONS

#: The accumulation kinds a demo's steps show, per parameter: (first step, the later ones).
EXPECTED = {"linreg": ("fresh", "zeros"), "forgot_zero_grad": ("fresh", "added"),
            "linreg_concise": ("fresh", "fresh")}  # zero_grad() sets .grad to None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_accumulation_in_a_demo_carries_its_kind(name):
    t = record_demo(name)[0].result
    first, later = EXPECTED[name]
    accs = [(s.index, e) for s in t.steps for e in s.accumulations]
    assert accs
    for index, e in accs:
        assert e.accumulation in ACCUMULATIONS
        assert e.accumulation == (first if index == 0 else later), (index, t.name(e.tensor))
        assert e.fresh == (e.accumulation == "fresh")
        assert e.idiom == {"fresh": "fresh", "zeros": "added onto zeros", "added": "added"}[e.accumulation]
    for row, s in zip(t.step_rows(), t.steps):  # the summary counts agree with the events
        kinds = [e.accumulation for e in s.accumulations]
        assert row["accumulate_fresh"] == kinds.count("fresh")
        assert row["accumulate_added"] == kinds.count("zeros") + kinds.count("added")
        assert row["accumulate_on_top"] == kinds.count("added")
    assert all(e.accumulation is None for s in t.steps for e in s.events if e.kind != "accumulate")
