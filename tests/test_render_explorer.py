"""The explorer page: its data in the page (escaped) and, in a real headless Chromium, the
page itself: offline from file://, step k shows step k's values, findings link to their step,
node and line, and it fits 1366x768 and 1920x1080 with nothing clipped."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from conftest import DEMOS
from gradtrace.analysis.graph import build_graph
from gradtrace.render.explorer import page_of

ALL_DEMOS = sorted(p.stem for p in DEMOS.glob("*.py"))
VIEWPORTS = [(1366, 768), (1920, 1080)]


def _floats(texts):
    """Numbers as the inspector writes them (JS's shortest round-trip text) read back."""
    return [float(x) for x in texts]


# -- the page (no browser) ------------------------------------------------------------------------
def test_the_page_data_cannot_close_its_script(demo_trace):
    t = demo_trace("linreg")
    page = page_of(t)
    body = page.split('<script type="application/json" id="gt-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in body
    assert json.loads(body)["source"]["files"][0]["name"] == "linreg.py"


def test_untrusted_strings_in_the_data_cannot_end_the_script_or_start_markup():
    """A trace's strings are data: whatever they say, the JSON element reads back the same."""
    from gradtrace.render.explorer import _json_script

    evil = "</script><script>alert(1)</script><!-- & \u2028\u2029 ]]>"
    element = _json_script({"scalars": [{"index": 0}], "name": evil})
    head, tail = '<script type="application/json" id="gt-data">', "</script>"
    assert element.startswith(head) and element.endswith(tail)
    body = element[len(head):-len(tail)]
    assert not set(body) & set("<>&\u2028\u2029")
    assert json.loads(body) == {"scalars": {"index": [0]}, "name": evil}


# -- a real browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pages(recorded_demos, tmp_path_factory):
    """demo name -> (its explorer page on disk, its trace, its check report), made once."""
    folder = tmp_path_factory.mktemp("explorer")
    made: dict = {}

    def get(name: str):
        if name not in made:
            t = recorded_demos.trace(name)
            report = t.check()
            path = folder / f"{name}.html"
            path.write_text(page_of(t, report), encoding="utf-8")
            made[name] = (path, t, report)
        return made[name]

    return get


def _open(browser, path, size=(1366, 768)):
    page = browser.new_page()
    page.set_viewport_size({"width": size[0], "height": size[1]})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"request: {r.url}")
            if not r.url.startswith(("file:", "data:")) else None)
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.goto(path.as_uri())
    page.wait_for_selector("html[data-ready='1']", timeout=30000)
    return page, problems


_FIT = """() => {
  const W = innerWidth, bad = [];
  for (const id of ["top", "scrubber", "curves", "graph-panel", "inspector", "backward",
                    "source-panel", "findings-panel", "loss-canvas", "timeline-canvas", "slider"]) {
    const r = document.getElementById(id).getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0) bad.push(id + " is not shown");
    if (r.left < -0.5 || r.right > W + 0.5) bad.push(id + " sticks out: " + r.left + ".." + r.right);
  }
  if (document.documentElement.scrollWidth > W) bad.push("the page scrolls sideways");
  const g = document.getElementById("graph").getBoundingClientRect();
  if (g.top > innerHeight * 0.75) bad.push("the graph starts below the first screen: " + g.top);
  document.querySelectorAll("#graph-svg .node").forEach(n => {
    const r = n.getBoundingClientRect(), box = n.querySelector("rect").getBoundingClientRect();
    const c = n.querySelector(".content").getBoundingClientRect();
    if (r.left < g.left - 1 || r.right > g.right + 1 || r.top < g.top - 1 || r.bottom > g.bottom + 1)
      bad.push(n.id + " is outside the graph's frame");
    if (c.width && (c.left < box.left - 1 || c.right > box.right + 1 || c.top < box.top - 1 || c.bottom > box.bottom + 1))
      bad.push(n.id + "'s text sticks out of its box");
  });
  const ids = [...document.querySelectorAll("[id]")].map(e => e.id);
  if (new Set(ids).size !== ids.length) bad.push("ids are not unique");
  return bad;
}"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_DEMOS)
def test_each_demo_offline_fits_and_is_not_blank(browser, pages, name, tmp_path):
    from PIL import Image

    path, t, _ = pages(name)
    for size in VIEWPORTS:
        page, problems = _open(browser, path, size)
        try:
            assert problems == [], problems
            assert page.evaluate(_FIT) == []
            assert page.locator("#graph-svg .node").count() > 0
            shot = page.screenshot()
            (tmp_path / f"{name}-{size[0]}.png").write_bytes(shot)
            img = Image.open(io.BytesIO(shot)).convert("RGB")
            assert img.size == size
            colours = img.getcolors(maxcolors=1 << 20) or []
            assert len(colours) > 50, "the screenshot is blank"
            assert max(c for c, _ in colours) < 0.9 * size[0] * size[1]
            # the last step too: the slider reaches it and the page still fits
            page.keyboard.press("End")
            assert page.input_value("#slider") == str(len(t.steps) - 1)
            assert page.evaluate(_FIT) == []
            assert problems == [], problems
        finally:
            page.close()


@pytest.mark.slow
def test_step_k_shows_exactly_the_traces_values_for_step_k(browser, pages):
    import gradtrace

    path, t, _ = pages("linreg")
    again = gradtrace.load(t.path)  # what a reader of the file sees
    page, problems = _open(browser, path)
    try:
        for k in (0, 1, 57, len(again.steps) - 2):
            pos = again.steps.indices.index(k)
            page.locator("#slider").fill(str(pos))
            step = again.step(k)
            assert page.inner_text("#step-label").startswith(f"step {k} ")
            assert page.inner_text("#graph-step") == str(k)
            model = build_graph(step, "both")
            for title in ("w", "b", "matmul"):
                [n] = model.find(title)
                page.click(f"#node-{n}")
                assert page.inner_text("#inspector-title") == title
                a = model.graph.nodes[n]
                got = _floats(page.locator("#inspector-body .data-values td").all_inner_texts())
                assert got == a["data"].data.reshape(-1).tolist()
                got = _floats(page.locator("#inspector-body .grad-values td").all_inner_texts())
                assert got == a["grad"].data.reshape(-1).tolist()
            # the loss node's label, as the graph writes a number
            [loss] = model.find("loss", "loss")
            from gradtrace.formatting import number

            label = page.locator(f"#node-{loss} .content").text_content()
            assert number(step.loss, 4) in label
        page.keyboard.press("Home")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        assert page.input_value("#slider") == "2"
        assert problems == [], problems
    finally:
        page.close()


@pytest.mark.slow
def test_clicking_a_finding_selects_its_step_node_and_line(browser, pages):
    path, t, report = pages("exploding_lr")
    [nonfinite] = [f for f in report.findings if f.kind == "non_finite"]
    page, problems = _open(browser, path)
    try:
        items = page.locator("#findings li")
        i = [f.kind for f in report.findings].index("non_finite")
        items.nth(i).locator("button.open").click()
        assert page.inner_text("#graph-step") == str(nonfinite.step) == "14"
        assert page.inner_text("#inspector-title") == nonfinite.op == "mse_loss"
        # step 31: inf and nan among the numbers of linear's output, each element as recorded
        page.locator("#slider").fill(str(t.steps.indices.index(31)))
        [linear] = build_graph(t.step(31), "both").find("linear")
        page.click(f"#node-{linear}")
        want = t.step(31).value(next(o for o in t.step(31).ops if o.name == "linear").outputs[0])
        got = page.locator("#inspector-body .data-values td").all_inner_texts()
        expect = want.data.reshape(-1).tolist()
        assert "nan" in got and "inf" in got and len(got) == len(expect)
        assert all(g == str(x).lower() if not np.isfinite(x) else float(g) == x for g, x in zip(got, expect))
        items.nth(i).locator("button.open").click()
        assert page.locator("#graph-svg .node.selected").count() == 1
        line = page.locator("#source tr.selected-line")
        assert line.count() == 1
        assert line.locator("td.ln").inner_text() == nonfinite.source.rsplit(":", 1)[1]
        assert "mse_loss" in line.locator("td.did").inner_text()  # what that line did in step 14
        # the backward pass of that step, node by node in autograd's order
        page.click("#bw-next")
        assert page.locator("#bw-list li.current").count() == 1
        assert page.locator("#graph-svg .node.bw-current").count() == 1
        assert problems == [], problems
    finally:
        page.close()


@pytest.mark.slow
def test_a_failed_check_links_to_its_parameter(browser, pages):
    path, t, report = pages("custom_function")
    assert report.failed
    page, problems = _open(browser, path)
    try:
        page.locator("#findings li.bad button.open").first.click()
        first = report.failed[0]
        assert page.inner_text("#graph-step") == str(first.step)
        assert page.inner_text("#inspector-title") == first.param
        assert re.search(r"wrong", page.inner_text("#verdict"))
        assert problems == [], problems
    finally:
        page.close()


@pytest.mark.slow
def test_a_page_over_budget_says_which_steps_it_holds(browser, recorded_demos, tmp_path):
    t = recorded_demos.trace("exploding_lr")
    path = tmp_path / "small.html"
    path.write_text(page_of(t, t.check(), budget=40_000), encoding="utf-8")
    page, problems = _open(browser, path)
    try:
        data = page.evaluate("gradtraceExplorer.data")
        held = data["held"]
        assert 0 in held and 14 in held and len(held) < len(t.steps)
        missing = next(i for i in t.steps.indices if i not in held)
        page.locator("#slider").fill(str(t.steps.indices.index(missing)))
        note = page.inner_text("#graph-note")
        assert f"Step {missing}'s values are not on this page" in note
        assert "not on this page" in page.inner_text("#inspector-body")
        assert page.inner_text("#step-label").startswith(f"step {missing} ")  # its scalars are
        after = min(h for h in held if h > missing)
        page.click(f"#graph-note button:has-text('go to step {after}')")
        assert page.inner_text("#graph-step") == str(after) and page.inner_text("#graph-note") == ""
        assert "of 35 recorded steps" in page.inner_text("#curves")
        assert problems == [], problems
    finally:
        page.close()
