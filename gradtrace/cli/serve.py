"""`gradtrace serve TRACE`: the explorer of a trace too long for one page, with its steps sent on
demand by a read-only server on 127.0.0.1 (standard library only).

The server answers three kinds of path and nothing else: ``/`` (the page), ``/steps/N.json``
(recorded step N, built by the same code as the page's own steps) and ``/favicon.ico`` (an
empty 204, so a browser's automatic request leaves no error). It binds the loopback address
only, checks the Host header (a page on another site cannot reach it through a name that
resolves to 127.0.0.1), never reads a path from the request, and stops on Ctrl-C.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

import click

from ..errors import GradtraceError, UsageError
from .common import info, load_trace, trace_argument

__all__ = ["serve", "ExplorerServer", "SERVE_BUDGET"]

#: Bytes of step data put in the served page itself (the rest is fetched step by step).
SERVE_BUDGET = 2 << 20
_STEP = re.compile(r"/steps/(\d{1,12})\.json")
LOOPBACK = "127.0.0.1"


class ExplorerServer(HTTPServer):
    """An HTTP server for one trace's explorer, on 127.0.0.1. ``url`` is where it listens."""

    def __init__(self, trace, report=None, *, port: int = 0, budget: int = SERVE_BUDGET,
                 warn: Callable[[str], None] | None = None):
        from ..render.explorer import page_of
        from ..render.explorer_data import Shapes

        self.trace = trace
        self.warn = warn or (lambda message: None)
        self.shapes = Shapes(self.warn)
        self.page = page_of(trace, report, budget=budget, mode="serve", warn=self.warn,
                            shapes=self.shapes).encode("utf-8")
        self.recorded = set(trace.steps.indices)
        self.lock = threading.Lock()
        try:
            super().__init__((LOOPBACK, port), _Handler)
        except OSError as e:
            raise UsageError(f"cannot listen on {LOOPBACK}:{port} ({e.strerror}); "
                             "choose another --port or leave it out for a free one") from None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/"

    def step_json(self, index: int) -> bytes:
        from ..render.explorer_data import step_data

        with self.lock:
            d = step_data(self.trace.step(index), self.shapes)
            if d["shape"] is not None:
                d["geometry"] = self.shapes.geometry(d["shape"]).to_json()
        return json.dumps(d, separators=(",", ":"), allow_nan=False).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    server_version = "gradtrace"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # the terminal stays quiet
        pass

    def _send(self, code: int, body: bytes, kind: str, head_only: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _refuse(self, code: int, why: str, head_only: bool) -> None:
        self._send(code, (why + "\n").encode(), "text/plain; charset=utf-8", head_only)

    def do_HEAD(self) -> None:
        self.do_GET(head_only=True)

    def do_GET(self, head_only: bool = False) -> None:
        port = self.server.server_address[1]
        host = self.headers.get("Host", "")
        if host not in (f"{LOOPBACK}:{port}", f"localhost:{port}"):
            return self._refuse(403, "gradtrace serve answers only requests to itself", head_only)
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            return self._send(200, self.server.page, "text/html; charset=utf-8", head_only)
        if path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return None
        m = _STEP.fullmatch(path)
        if m is None:
            return self._refuse(404, "not found: this server serves one trace's page and steps", head_only)
        index = int(m.group(1))
        if index not in self.server.recorded:
            return self._refuse(404, f"step {index} was not recorded", head_only)
        try:
            body = self.server.step_json(index)
        except GradtraceError as e:
            self.server.warn(f"serve: step {index}: {e}")
            return self._refuse(500, str(e), head_only)
        return self._send(200, body, "application/json", head_only)


@click.command()
@trace_argument
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")
@click.option("--check/--no-check", "run_check", default=True, show_default=True,
              help="Run the gradient checks and diagnostics first (the page's verdict and findings).")
def serve(trace_path, port, run_check):
    """Serve the explorer of TRACE on 127.0.0.1, every recorded step fetched on demand
    (for runs too long for report.html to hold every step). Ctrl-C stops it."""
    trace = load_trace(trace_path)
    report = None
    if run_check:
        from .check import _check  # a distributed run: every rank's checks and those across ranks

        try:
            report = _check(trace)
        except GradtraceError as e:
            info(f"serve: checks left out ({e})")
    server = ExplorerServer(trace, report, port=port, warn=info)
    info(f"serving {trace.path} at {server.url} (read-only; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        info("serve: stopped")
    finally:
        server.server_close()
