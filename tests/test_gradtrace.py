"""gradtrace/__init__.py: the facade (its names, their lazy import, the conveniences it lends)."""

from __future__ import annotations

import pytest

import gradtrace
from gradtrace.tracefile import conveniences


def test_every_public_name_resolves_and_dir_lists_it():
    for name in gradtrace.__all__:
        assert getattr(gradtrace, name) is not None, name
    assert set(gradtrace.__all__) <= set(dir(gradtrace))
    assert dir(gradtrace) == sorted(dir(gradtrace))


def test_a_lazy_name_is_the_defining_modules_object_and_is_looked_up_once():
    from gradtrace.record.session import trace
    from gradtrace.tracefile.model import Step
    from gradtrace.tracefile.ranks import load

    assert gradtrace.trace is trace and gradtrace.load is load and gradtrace.Step is Step
    # after the first lookup the name is a plain module attribute: no __getattr__ call again
    assert vars(gradtrace)["Step"] is Step


def test_every_lazy_name_is_public_and_its_module_defines_it():
    import importlib

    for name, module in gradtrace._LAZY.items():
        assert name in gradtrace.__all__, name
        assert hasattr(importlib.import_module(module, "gradtrace"), name), (name, module)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="module 'gradtrace' has no attribute 'nope'"):
        gradtrace.nope  # noqa: B018


def test_the_errors_are_the_one_family():
    for name in ("TraceFileError", "UsageError", "RenderError"):
        assert issubclass(getattr(gradtrace, name), gradtrace.GradtraceError), name


def test_importing_the_facade_registers_every_convenience():
    assert set(conveniences._IMPLEMENTATIONS) == set(conveniences.NAMES)
    assert conveniences._IMPLEMENTATIONS["check"] is gradtrace._check


def test_the_conveniences_reach_their_layers(demo_trace):
    from gradtrace.analysis.check import CheckReport
    from gradtrace.render.animate import Animation
    from gradtrace.render.graph import GraphPicture

    trace = demo_trace("linreg")
    assert isinstance(trace.check(), CheckReport)
    assert isinstance(trace.steps[0].graph(), GraphPicture)
    anim = trace.animate(kind="training", frames=2)
    assert isinstance(anim, Animation) and len(anim) == 2
    html = trace._repr_html_()
    assert html is not None and f"{len(trace.steps)} steps recorded" in html
    assert "w (2, 1)" in html


def test_html_of_an_object_it_has_no_picture_for_is_none():
    assert gradtrace._html(object()) is None
    assert conveniences.html(object()) is None
