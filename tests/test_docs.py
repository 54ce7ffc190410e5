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


def _script(name: str):
    """docs/<name>.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gen_cli():
    return _script("gen_cli")


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


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_point_to_files(page):
    path = DOCS / page
    for link in _links(path):
        if "://" in link:
            continue
        assert (path.parent / link).exists(), f"docs/{page} links to a missing {link}"


def test_readme_links_point_to_files():
    for link in _links(ROOT / "README.md"):
        if "://" not in link:
            assert (ROOT / link).exists(), f"README.md links to a missing {link}"


def test_demos_readme_links_point_to_files():
    path = ROOT / "demos" / "README.md"
    for link in _links(path):
        if "://" not in link:
            assert (path.parent / link).exists(), f"demos/README.md links to a missing {link}"


def test_gallery_covers_every_demo_and_shows_every_picture():
    """docs/gallery.py draws every demo in demos/, and docs/gallery.md shows (or links)
    every picture it draws, under a heading per demo, and nothing else from the folder."""
    gallery = _script("gallery")
    assert sorted(gallery.DEMOS) == sorted(p.stem for p in (ROOT / "demos").glob("*.py"))
    text = (DOCS / "gallery.md").read_text(encoding="utf-8")
    linked = set(_links(DOCS / "gallery.md"))
    expected = {f"gallery/{gallery.filename(name, p)}" for name in gallery.DEMOS
                for p in gallery.PICTURES}
    assert expected <= linked, f"not shown in docs/gallery.md: {sorted(expected - linked)}"
    on_disk = {f"gallery/{p.name}" for p in (DOCS / "gallery").iterdir()}
    assert on_disk == expected, f"docs/gallery/ differs from what the script draws: {on_disk ^ expected}"
    headings = re.findall(r"^## (\w+):", text, flags=re.M)
    assert headings == list(gallery.DEMOS)
    for name in gallery.DEMOS:
        assert f"![{name}: back-propagation" in text and f"![{name}: training" in text


@pytest.mark.slow  # records a demo and draws its GIFs, twice
def test_gallery_script_records_draws_and_redraws_the_same_bytes(tmp_path, capsys):
    """One demo end to end: recorded by `gradtrace run` in a subprocess, drawn from the
    trace; a second run reuses the trace (--traces) and writes the same bytes."""
    from PIL import Image

    gallery = _script("gallery")
    out, traces = tmp_path / "gallery", tmp_path / "traces"
    assert gallery.main(["custom_function", "--out", str(out), "--traces", str(traces)]) == 0
    printed = capsys.readouterr().out
    assert "custom_function: recording demos/custom_function.py" in printed
    assert "check: gradients WRONG at step 0" in printed  # the demo's own lesson, relayed
    files = {p: out / gallery.filename("custom_function", p) for p in gallery.PICTURES}
    assert sorted(out.iterdir()) == sorted(files.values())
    for picture, path in files.items():
        assert f"wrote {path} (" in printed
        if path.suffix == ".svg":
            text = path.read_text(encoding="utf-8")
            assert "<svg" in text and "SquareBackward" in text
        else:
            opts = gallery.ANIMATE[picture]
            with Image.open(path) as im:
                assert im.n_frames > 10
                w, h = (24.0, 13.5) if picture == "backprop" else (12.0, 6.75)
                assert im.size == (round(w * opts["dpi"]), round(h * opts["dpi"]))
    with Image.open(files["training"]) as im:
        assert im.n_frames == gallery.ANIMATE["training"]["frames"]  # 200 steps, subsampled
    before = {p: f.read_bytes() for p, f in files.items()}
    assert gallery.main(["--only", "custom_function", "--what", "graph,backward,backprop",
                         "--out", str(out), "--traces", str(traces)]) == 0
    printed = capsys.readouterr().out
    assert "custom_function: reusing" in printed and "training.gif" not in printed
    assert {p: f.read_bytes() for p, f in files.items()} == before


def test_gallery_script_refuses_unknown_names(capsys):
    gallery = _script("gallery")
    with pytest.raises(SystemExit) as e:
        gallery.main(["--only", "linreg,nope"])
    assert e.value.code == 2 and "unknown demo 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        gallery.main(["--what", "graph,movie"])
    assert e.value.code == 2 and "--what takes" in capsys.readouterr().err


def _pycon(page: str) -> str:
    """The page's ```pycon blocks, joined into one doctest text (blank line between)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return "\n\n".join(re.findall(r"```pycon\n(.*?)```", text, flags=re.S))


@pytest.mark.slow  # the whole of docs/api.md run as a notebook: demos recorded, checked, drawn
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
