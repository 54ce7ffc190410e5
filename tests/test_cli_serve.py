"""`gradtrace serve`: the explorer with steps fetched on demand, from a read-only server that
listens on 127.0.0.1 only, serves that trace's page and steps and nothing else, and stops on
Ctrl-C."""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from conftest import ROOT
from gradtrace.analysis.graph import build_graph
from gradtrace.cli.serve import ExplorerServer
from gradtrace.render.explorer_data import Shapes, step_data


def _same(got, want) -> bool:
    """Equal numbers, nan equal to nan ("nan" as the page's JSON and text write it)."""
    got = [float(x) for x in got]
    return len(got) == len(want) and all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(got, want))


@pytest.fixture(scope="module")
def server(recorded_demos):
    t = recorded_demos.trace("exploding_lr")
    s = ExplorerServer(t, t.check(), budget=0)  # no step in the page: every one is fetched
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.shutdown()
        s.server_close()
        thread.join(10)


def _raw(server, path: str, host: str | None = None) -> tuple[int, bytes]:
    """A GET of ``path`` exactly as written (no client-side normalising of ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host or f"127.0.0.1:{server.server_address[1]}")
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_it_listens_on_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"


def test_the_page_and_the_steps_are_the_traces(server):
    t = server.trace
    with urllib.request.urlopen(server.url, timeout=30) as r:
        page = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
    assert 'id="graph-svg"' in page and "connect-src 'self'" in page
    for k in (0, 14, t.steps.indices[-1]):
        with urllib.request.urlopen(f"{server.url}steps/{k}.json", timeout=30) as r:
            got = json.loads(r.read())
        want = step_data(t.step(k), Shapes())
        assert got["index"] == k and got["loss"] == want["loss"]
        assert got["nodes"] == want["nodes"] and got["order"] == want["order"]
        assert set(got["geometry"]["nodes"]) == set(got["nodes"])  # the shape comes along
        model = build_graph(t.step(k), "both")
        [w] = model.find("model.weight")
        assert _same(got["nodes"][str(w)]["data"]["values"], model.graph.nodes[w]["data"].data.reshape(-1).tolist())


@pytest.mark.parametrize("path", [
    "/../trace.gtrace", "/steps/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/steps/..%2f..%2fetc",
    "/trace.gtrace", "/report.html", "/steps/1.json/../../x", "/steps/-1.json", "/steps/1e3.json",
    "/steps/99999.json", "//etc/passwd", "/explorer.js",
])
def test_any_other_path_is_refused(server, path):
    status, body = _raw(server, path)
    assert status == 404, (path, status)
    assert b"root:" not in body and b"SQLite" not in body


def test_a_request_for_another_host_is_refused(server):
    status, _ = _raw(server, "/", host="evil.example:80")
    assert status == 403
    status, _ = _raw(server, "/", host=f"localhost:{server.server_address[1]}")
    assert status == 200


@pytest.mark.slow
def test_the_served_page_fetches_steps_in_the_browser(browser, server):
    from playwright.sync_api import expect

    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(server.url)
        page.wait_for_selector("html[data-ready='1']", timeout=30000)
        t = server.trace
        page.locator("#slider").fill(str(t.steps.indices.index(14)))
        # polled by playwright's selectors: the page's CSP forbids the eval of wait_for_function
        expect(page.locator("#graph-step")).to_have_text("14", timeout=60000)
        model = build_graph(t.step(14), "both")
        [w] = model.find("model.weight")
        page.click(f"#node-{w}")
        got = page.locator("#inspector-body .data-values td").all_inner_texts()
        assert _same(got, model.graph.nodes[w]["data"].data.reshape(-1).tolist())
        assert problems == []
    finally:
        page.close()


@pytest.mark.slow  # a real process, stopped by a signal (3 s)
def test_serve_prints_the_url_and_ctrl_c_stops_it(recorded_demos):
    p = subprocess.Popen([sys.executable, "-m", "gradtrace", "serve", "--no-check",
                          str(recorded_demos.path("linreg"))], stderr=subprocess.PIPE, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        line = p.stderr.readline()
        assert line.startswith("gradtrace: serving ") and "http://127.0.0.1:" in line, line
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url + "steps/0.json", timeout=60) as r:
            assert json.loads(r.read())["index"] == 0
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 0
        assert p.stderr.read().strip() == "gradtrace: serve: stopped"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
