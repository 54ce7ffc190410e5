"""render/graph_options: GraphOptions (its checks and make()), the themes and the legend's words."""

from __future__ import annotations

import dataclasses

import pytest

from gradtrace.analysis.graph import BUDGET, NODE_KINDS, VIEWS
from gradtrace.errors import UsageError
from gradtrace.render import palette
from gradtrace.render.graph_options import ENGINES, LEGEND, THEME, THEMES, GraphOptions, Theme

CHOICES = {"view": VIEWS, "theme": THEMES, "engine": ENGINES, "direction": ("auto", "TB", "LR")}
COUNTS = ("max_values", "max_rows", "max_cols", "budget")


def test_the_default_budget_is_the_graph_models():
    assert GraphOptions().budget == BUDGET
    assert GraphOptions().view == "both" and GraphOptions().engine == "auto"


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_every_allowed_choice_is_accepted(name):
    for allowed in CHOICES[name]:
        assert getattr(GraphOptions(**{name: allowed}), name) == allowed


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_an_unknown_choice_is_a_usage_error_naming_the_choices(name):
    with pytest.raises(UsageError) as e:
        GraphOptions(**{name: "sideways"})
    assert str(e.value) == f"{name} must be one of {', '.join(CHOICES[name])}, not 'sideways'"


@pytest.mark.parametrize("name", COUNTS)
def test_a_count_may_be_zero(name):
    assert getattr(GraphOptions(**{name: 0}), name) == 0


@pytest.mark.parametrize("name", COUNTS)
@pytest.mark.parametrize("bad", [-1, 2.5, "3"])
def test_a_count_below_zero_or_not_whole_is_a_usage_error(name, bad):
    with pytest.raises(UsageError) as e:
        GraphOptions(**{name: bad})
    assert str(e.value) == f"{name} must be a whole number, 0 or more, not {bad!r}"


def test_make_changes_the_given_options_and_keeps_the_rest():
    base = GraphOptions(theme="dark", values=False)
    made = GraphOptions.make(base, view="forward")
    assert (made.view, made.theme, made.values) == ("forward", "dark", False)
    assert base.view == "both"                               # the given options are not changed
    assert GraphOptions.make() == GraphOptions()
    assert GraphOptions.make(None, legend=False) == GraphOptions(legend=False)


def test_make_refuses_an_unknown_option_and_lists_the_known_ones():
    known = sorted(f.name for f in dataclasses.fields(GraphOptions))
    with pytest.raises(UsageError) as e:
        GraphOptions.make(colour="red", zoom=2)
    assert str(e.value) == f"unknown graph option 'colour'; the options are {', '.join(known)}"


def test_make_checks_the_changed_values_too():
    with pytest.raises(UsageError, match="^theme must be one of lecture, light, dark, not 'neon'$"):
        GraphOptions.make(theme="neon")


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GraphOptions().view = "forward"  # type: ignore[misc]


def test_there_is_one_theme_per_name_with_a_colour_for_every_node_kind():
    assert sorted(THEME) == sorted(THEMES)
    for name, theme in THEME.items():
        assert isinstance(theme, Theme) and theme.name == name
        assert set(theme.fill) == set(theme.line) == set(NODE_KINDS)
        assert theme.small < theme.font                     # captions are smaller than titles


def test_the_lecture_theme_has_the_largest_fonts():
    lecture = THEME["lecture"]
    for other in (THEME["light"], THEME["dark"]):
        assert lecture.font > other.font and lecture.small > other.small


def test_every_theme_colour_comes_from_the_palette():
    """One palette: each colour a theme names is one of palette.py's."""
    known = {v for k, v in vars(palette).items() if k.isupper() and isinstance(v, str)}
    for table in ("KIND_FILL", "KIND_LINE", "KIND_FILL_DARK", "KIND_LINE_DARK"):
        known |= set(getattr(palette, table).values())
    for theme in THEME.values():
        colours = [getattr(theme, f.name) for f in dataclasses.fields(Theme)
                   if isinstance(getattr(theme, f.name), str) and f.name != "name"]
        colours += list(theme.fill.values()) + list(theme.line.values())
        assert colours and set(colours) <= known, theme.name
    assert THEME["dark"].fill == dict(palette.KIND_FILL_DARK)
    assert THEME["light"].line == dict(palette.KIND_LINE)


def test_the_legend_has_words_for_every_node_kind():
    assert set(LEGEND) == set(NODE_KINDS)
    assert all(LEGEND[k] for k in NODE_KINDS)
