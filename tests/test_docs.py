"""The docs cannot drift: the CLI reference is the click help, the documented commands run."""

from __future__ import annotations

import contextlib
import doctest
import importlib.util
import io
import re

import click
import pytest

from conftest import ROOT

DOCS = ROOT / "docs"


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date():
    gen = _gen_cli()
    expected = gen.generate()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == expected, ("docs/cli.md differs from the click help texts; "
                                 "regenerate it with: python docs/gen_cli.py")


def test_cli_reference_names_every_command_and_option():
    """Belt and braces: every command and every option string appears in docs/cli.md."""
    from gradtrace.cli import cli

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert f"## gradtrace {name}\n" in text
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    assert opt in text, f"gradtrace {name}: {opt} missing from docs/cli.md"


def test_cli_reference_does_not_depend_on_the_terminal(monkeypatch):
    gen = _gen_cli()
    monkeypatch.setenv("COLUMNS", "40")
    narrow = gen.generate()
    monkeypatch.setenv("COLUMNS", "200")
    assert gen.generate() == narrow


def test_gen_cli_writes_and_checks(tmp_path, monkeypatch):
    gen = _gen_cli()
    target = tmp_path / "cli.md"
    monkeypatch.setattr(gen, "CLI_MD", target)
    assert gen.main(["--check"]) == 1  # missing
    target.write_text("# old\n")
    assert gen.main(["--check"]) == 1  # stale
    assert gen.main([]) == 0           # regenerate: one command
    assert gen.main(["--check"]) == 0
    assert target.read_text(encoding="utf-8") == gen.generate()


def _links(path):
    return re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", ["quickstart.md", "cli.md", "api.md"])
def test_relative_links_point_to_files(page):
    path = DOCS / page
    for link in _links(path):
        if "://" in link:
            continue
        assert (path.parent / link).exists(), f"docs/{page} links to a missing {link}"


def test_demos_readme_links_point_to_files():
    path = ROOT / "demos" / "README.md"
    for link in _links(path):
        if "://" not in link:
            assert (path.parent / link).exists(), f"demos/README.md links to a missing {link}"


def _pycon(page: str) -> str:
    """The page's ```pycon blocks, joined into one doctest text (blank line between)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return "\n\n".join(re.findall(r"```pycon\n(.*?)```", text, flags=re.S))


def test_api_walkthrough_is_a_passing_doctest(tmp_path, monkeypatch):
    """docs/api.md's examples, run in order in one namespace as a notebook would, with
    their outputs compared: the page shows what the code really prints."""
    (tmp_path / "demos").symlink_to(ROOT / "demos")
    monkeypatch.chdir(tmp_path)
    text = _pycon("api.md")
    test = doctest.DocTestParser().get_doctest(text, {"__name__": "__api_md__"}, "docs/api.md",
                                               str(DOCS / "api.md"), 0)
    assert len(test.examples) >= 30
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with contextlib.redirect_stdout(io.StringIO()):
        result = runner.run(test, out=report.write)
    assert result.failed == 0, report.getvalue()
