"""The conveniences registry (gradtrace/tracefile/conveniences.py): trace.check(), step.graph() ..."""

from __future__ import annotations

import pytest

import gradtrace  # noqa: F401 - the facade registers the implementations
from gradtrace.tracefile import conveniences


@pytest.fixture
def registry():
    """The registry, restored after the test."""
    saved = dict(conveniences._IMPLEMENTATIONS)
    yield conveniences._IMPLEMENTATIONS
    conveniences._IMPLEMENTATIONS.clear()
    conveniences._IMPLEMENTATIONS.update(saved)


def test_the_facade_registers_every_name():
    assert set(conveniences._IMPLEMENTATIONS) == set(conveniences.NAMES)
    assert all(callable(f) for f in conveniences._IMPLEMENTATIONS.values())


def test_call_passes_its_arguments_to_the_registered_function(registry):
    conveniences.register("check", lambda *a, **kw: (a, kw))
    assert conveniences.call("check", "trace", strict=True) == (("trace",), {"strict": True})
    conveniences.register("check", lambda t: "again")  # registering again replaces
    assert conveniences.call("check", 1) == "again"


def test_only_the_known_names_can_be_registered(registry):
    with pytest.raises(ValueError) as e:
        conveniences.register("report", print)
    assert str(e.value) == ("unknown convenience 'report'; expected one of "
                            "check, animate, graph, explore, html")
    assert "report" not in registry


def test_an_unregistered_name_says_how_to_register_it(registry):
    del registry["animate"]
    with pytest.raises(RuntimeError) as e:
        conveniences.call("animate", None)
    assert str(e.value) == "gradtrace: animate() is not registered; `import gradtrace` registers it"


def test_html_is_the_registered_html_or_none_never_an_error(registry):
    conveniences.register("html", lambda obj: f"<b>{obj}</b>")
    assert conveniences.html(3) == "<b>3</b>"
    conveniences.register("html", lambda obj: {}[obj])
    assert conveniences.html(3) is None
    del registry["html"]
    assert conveniences.html(3) is None
