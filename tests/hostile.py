"""The hostile-file corpus: damaged and crafted copies of one small real trace; the reader run
on every one of them in-process, and every reading command run on a sample of them through
the real command line, each in a child forked from one warm process.

tests/test_hostile.py builds the corpus (``build``), reads every file in its own process with
``read_all`` (what ``gradtrace.load`` gives a Python user, read to the last field, under a
time and memory guard), and runs ``python tests/hostile.py OUT.json CASES_DIR`` for the
sample (``CLI_SAMPLE``: one torch import, one thread, then a fork per case and command, each
under a time and memory limit). Every case is built by the code here from a trace recorded
here, seeded, so the corpus is the same on every machine. ``python tests/hostile.py OUT.json``
alone builds the corpus itself and runs every command on every file (about 3,300 runs: the
whole corpus through the CLI, for a change to a command's reading path).
"""

from __future__ import annotations

import json
import os
import random
import resource
import select
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

# The script the base trace records: every kind of row a trace has (ops with arguments,
# a custom Function with inner ops, backward nodes, fresh and added accumulations,
# zeroings, updates, values kept in full, as statistics and as zeros, source lines).
BASE_SCRIPT = '''
import torch

class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g

torch.manual_seed(0)
X = torch.randn(12, 2)
y = X @ torch.tensor([[2.0], [-3.4]]) + 4.2
w = torch.zeros(2, 1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
for step in range(4):
    idx = slice(3 * step, 3 * step + 3)
    pred = torch.matmul(X[idx], w) + b
    loss = Square.apply(pred - y[idx].reshape(pred.shape)).sum() / 3
    loss.backward()
    with torch.no_grad():
        w -= 0.05 * w.grad
        b -= 0.05 * b.grad
        if step != 1:          # step 1 forgets: the next gradient lands on top
            w.grad.zero_()
            b.grad.zero_()
print("final", float(loss))
'''

MARKER = "HOSTILE_MARKER"  # a crafted op would create this file (in its cwd) if it ever ran


def record_base(folder: Path) -> Path:
    """Record BASE_SCRIPT into folder/base.gtrace (values above 8 elements as statistics:
    the data, while the batches and parameters are kept, so every step replays)."""
    import runpy

    import gradtrace

    script = folder / "base_script.py"
    script.write_text(BASE_SCRIPT)
    path = folder / "base.gtrace"
    with gradtrace.trace(path, max_value_numel=8):
        runpy.run_path(str(script), run_name="__main__")
    return path


# -- building the corpus ----------------------------------------------------------------------
def _sql(*statements):
    def edit(path: Path) -> None:
        c = sqlite3.connect(path)
        for s in statements:
            if isinstance(s, tuple):
                c.execute(*s)
            else:
                c.executescript(s)
        c.commit()
        c.close()
    return edit


def _body(step: int, change):
    """Edit step ``step``'s JSON body with ``change(body)`` (which may return a replacement)."""
    def edit(path: Path) -> None:
        c = sqlite3.connect(path)
        (text,) = c.execute("SELECT body FROM step WHERE idx=?", (step,)).fetchone()
        body = json.loads(text)
        out = change(body)
        body = body if out is None else out
        c.execute("UPDATE step SET body=? WHERE idx=?",
                  (body if isinstance(body, (str, bytes)) else json.dumps(body), step))
        c.commit()
        c.close()
    return edit


def _vidx(step: int, change):
    """Edit step ``step``'s value index (a list of ints, or raw bytes when change returns bytes)."""
    def edit(path: Path) -> None:
        import struct

        c = sqlite3.connect(path)
        (blob,) = c.execute("SELECT vidx FROM step WHERE idx=?", (step,)).fetchone()
        ints = list(struct.unpack(f"<{len(blob) // 8}q", blob))
        out = change(ints)
        if isinstance(out, bytes):
            blob = out
        else:
            ints = ints if out is None else out
            blob = struct.pack(f"<{len(ints)}q", *ints)
        c.execute("UPDATE step SET vidx=? WHERE idx=?", (blob, step))
        c.commit()
        c.close()
    return edit


def _entries(ints):
    """Start positions of the value index's entries."""
    out, i = [], 0
    while i < len(ints):
        out.append(i)
        i += 7 + ints[i + 6]
    return out


def _set_entry(field: int, value, which=0, kind=None):
    """Set field ``field`` (0 vid .. 6 ndim) of the ``which``-th entry (of ``kind``, if given)."""
    def change(ints):
        starts = [s for s in _entries(ints) if kind is None or ints[s + 2] == kind]
        ints[starts[which] + field] = value
    return change


def _op_field(field: int, value, which=0):
    def change(body):
        body["ops"][which][field] = value
    return change


def _node_field(field: int, value, which=0):
    def change(body):
        body["nodes"][which][field] = value
    return change


def _event_field(field: int, value, which=0):
    def change(body):
        body["events"][which][field] = value
    return change


def _deep(n: int):
    return "[" * n + "]" * n


def _deep_args(n: int):
    def change(body):
        a: list = []
        for _ in range(n):
            a = [a]
        body["ops"][0][6] = [a]
    return change


def _target(target, args=None):
    """The first graph op calls ``target`` (with ``args``): a replay must never run it."""
    def change(body):
        op = next(o for o in body["ops"] if o[11] and o[10] is None)
        op[3] = target
        if args is not None:
            op[6] = args
    return change


def edits(marker: str) -> list[tuple[str, object]]:
    """At least 100 edited traces: every table and column, wrong types, NULLs, huge and
    negative sizes, length mismatches, deep JSON, loops, foreign and newer schemas, and
    crafted replay targets."""
    cases: list[tuple[str, object]] = []
    add = lambda name, fn: cases.append((name, fn))  # noqa: E731
    # meta
    for key in ("version", "status", "exit_code", "error", "config", "steps_seen", "ops_dropped",
                "modules", "argv", "script", "created", "torch_version", "gradtrace_version"):
        add(f"meta-{key}-not-json", _sql(("UPDATE meta SET value='{not json' WHERE key=?", (key,))))
        add(f"meta-{key}-wrong-type", _sql(("UPDATE meta SET value=? WHERE key=?",
                                            ('[1, {"a": 2}]' if key != "argv" else '{"a": 1}', key))))
    add("meta-value-blob", _sql("UPDATE meta SET value=x'ff00fe' WHERE key='status'"))
    add("meta-value-null", _sql("UPDATE meta SET value=NULL WHERE key='config'"))
    add("meta-key-number", _sql("INSERT INTO meta VALUES (5, '1')"))
    add("meta-deep-json", _sql(("UPDATE meta SET value=? WHERE key='config'", (_deep(100000),))))
    add("meta-modules-values", _sql("UPDATE meta SET value='{\"net\": [1]}' WHERE key='modules'"))
    add("meta-status-unknown", _sql("UPDATE meta SET value='\"exploded\"' WHERE key='status'"))
    # source
    for col, val in (("sid", "-5"), ("file", "NULL"), ("file", "7"), ("line", "'ten'"),
                     ("line", "NULL"), ("code", "x'00ff'"), ("function", "3.5")):
        add(f"source-{col}-{val}", _sql(f"UPDATE source SET {col}={val} WHERE sid=(SELECT min(sid) FROM source)"))
    # tensor table and the step's tensors column
    add("tensor-row", _sql("INSERT INTO tensor VALUES (999, 'z', 'param', '[2]', 'float32', 1)"))
    for col, val in (("tid", "-1"), ("name", "5"), ("role", "'boss'"), ("shape", "'[-1]'"),
                     ("shape", "'not json'"), ("shape", f"'{_deep(5000)}'"),
                     ("shape", "'[1000000000, 1000000000, 1000000000]'"), ("shape", f"'{[1] * 100}'"),
                     ("dtype", "NULL"), ("requires_grad", "7")):
        add(f"tensor-{col}-{val[:20]}", _sql("INSERT INTO tensor VALUES (999, 'z', 'param', '[2]', 'float32', 1)",
                                             f"UPDATE tensor SET {col}={val} WHERE tid=999"))
    for name, val in (("not-json", "'[[1,'"), ("not-list", "'{\"a\": 1}'"), ("short-row", "'[[1, 2, 3]]'"),
                      ("bad-shape", "'[[1, \"w\", \"param\", [-5], \"float32\", 1]]'"),
                      ("bad-tid", "'[[\"x\", \"w\"]]'"), ("bad-name", "'[[1, [\"w\"]]]'"),
                      ("deep", f"'{_deep(50000)}'"), ("blob", "x'0102'")):
        add(f"step-tensors-{name}", _sql(f"UPDATE step SET tensors={val} WHERE idx=0"))
    # step columns
    for col, val in (("idx", "-5"), ("has_backward", "7"), ("loss", "'abc'"),
                     ("loss", "x'00'"), ("n_ops", "NULL"), ("n_ops", "'many'"), ("n_nodes", "-3"),
                     ("n_fresh", "1e300"), ("n_zero", "x'01'"), ("ops_dropped", "'x'"),
                     ("first_seq", "'x'"), ("body", "NULL"), ("body", "x'ff'"), ("vidx", "NULL"),
                     ("vidx", "'text'"), ("vals", "'text'"), ("vals", "NULL")):
        add(f"step-{col}-{val[:12]}", _sql(f"UPDATE step SET {col}={val} WHERE idx=1"))
    add("step-duplicate-rows-deleted", _sql("DELETE FROM step WHERE idx=2"))
    # body structure
    add("body-not-json", _body(0, lambda b: '{"ops": [[1, 2'))
    add("body-not-object", _body(0, lambda b: "[1, 2, 3]"))
    add("body-deep", _body(0, lambda b: _deep(200000)))
    add("body-ops-not-list", _body(0, lambda b: {**b, "ops": 5}))
    add("body-op-short", _body(0, lambda b: b["ops"][0].pop()))
    add("body-op-not-row", _body(0, lambda b: b["ops"].__setitem__(0, "op")))
    for field, val in ((0, "x"), (0, -1), (1, None), (2, 7), (3, ["torch", "matmul"]), (4, "t1"), (4, [None]),
                       (5, {"a": 1}), (6, "args"), (7, [1, 2]), (8, 3), (9, 4.5), (10, "p"),
                       (10, 10 ** 6), (11, "yes"), (12, "line")):
        add(f"op-field{field}-{str(val)[:10]}", _body(0, _op_field(field, val)))
    add("op-args-deep", _body(0, _deep_args(500)))
    add("op-args-unknown-object", _body(0, _op_field(6, [{"pickle": "cos\nsystem\n"}])))
    add("op-args-bad-tensor-ref", _body(0, _op_field(6, ["$tabc"])))
    add("op-kwargs-deep", _body(0, _op_field(7, {"k": {"tuple": [{"tuple": [[[[[[]]]]]]}]}})))
    add("op-duplicate-index", _body(0, lambda b: b["ops"].append(list(b["ops"][0]))))
    add("op-parent-loop", _body(0, lambda b: [o.__setitem__(10, o[0]) for o in b["ops"][:1]]))
    add("op-parent-missing", _body(0, _op_field(10, 123456)))
    add("op-inputs-unknown-tids", _body(0, _op_field(4, [10 ** 9, -7])))
    add("op-outputs-empty", _body(0, lambda b: [o.__setitem__(5, []) for o in b["ops"]]))
    add("ops-removed", _body(0, lambda b: {**b, "ops": []}))
    # backward and nodes
    add("backward-not-row", _body(0, lambda b: {**b, "backward": "yes"}))
    add("backward-short", _body(0, lambda b: b["backward"].pop()))
    for field, val in ((0, "s"), (1, 5), (2, "w"), (3, 10 ** 9), (4, [None]), (5, "r"), (6, "s")):
        add(f"backward-field{field}-{str(val)[:8]}",
            _body(0, lambda b, f=field, v=val: b["backward"].__setitem__(f, v)))
    add("nodes-not-list", _body(0, lambda b: {**b, "nodes": {"a": 1}}))
    add("node-cycle", _body(0, lambda b: b["nodes"][-1].__setitem__(4, [0])))
    add("node-self-loop", _body(0, lambda b: b["nodes"][1].__setitem__(4, [1])))
    add("node-next-out-of-range", _body(0, _node_field(4, [10 ** 6])))
    add("node-misnumbered", _body(0, _node_field(0, 5)))
    for field, val in ((1, None), (2, "op"), (3, [1]), (4, "n"), (5, -2), (6, "g"), (7, [10 ** 9]), (6, [3.5])):
        add(f"node-field{field}-{str(val)[:8]}", _body(0, _node_field(field, val, which=1)))
    add("nodes-removed", _body(0, lambda b: {**b, "nodes": []}))
    # events
    add("events-not-list", _body(0, lambda b: {**b, "events": 1}))
    add("event-short", _body(0, lambda b: b["events"][0].pop()))
    for field, val in ((0, None), (1, "explode"), (2, "w"), (3, 9), (4, 10 ** 9), (5, "v"), (6, [1]),
                       (7, 5), (8, 1.5), (9, "yes"), (10, [])):
        add(f"event-field{field}-{str(val)[:8]}", _body(0, _event_field(field, val)))
    # the value index
    add("vidx-cut", _vidx(0, lambda ints: ints[:-3]))
    add("vidx-odd-bytes", _vidx(0, lambda ints: b"\x01\x02\x03"))
    add("vidx-ndim-negative", _vidx(0, _set_entry(6, -3)))
    add("vidx-ndim-huge", _vidx(0, _set_entry(6, 10 ** 12)))
    add("vidx-size-negative", _vidx(0, lambda ints: ints.__setitem__(_first_sized(ints) + 7, -4)))
    add("vidx-zeros-1e9", _vidx(0, lambda ints: ints + [10 ** 6, -1, 2, 0, 0, 0, 1, 10 ** 9]))
    add("vidx-many-zeros", _vidx(0, lambda ints: ints + sum(([10 ** 6 + k, -1, 2, 0, 0, 0, 1, 4_000_000]
                                                            for k in range(40)), [])))
    add("vidx-zeros-1e18", _vidx(0, lambda ints: ints + [10 ** 6, -1, 2, 0, 0, 0, 2, 10 ** 9, 10 ** 9]))
    add("vidx-bytes-1e9", _vidx(0, lambda ints: ints + [10 ** 6, -1, 0, 0, 0, 4 * 10 ** 9, 1, 10 ** 9]))
    add("vidx-offset-past-end", _vidx(0, _set_entry(4, 10 ** 9, kind=0)))
    add("vidx-offset-negative", _vidx(0, _set_entry(4, -8, kind=0)))
    add("vidx-nbytes-mismatch", _vidx(0, _set_entry(5, 3, kind=0)))
    add("vidx-kind-unknown", _vidx(0, _set_entry(2, 9)))
    add("vidx-dtype-code", _vidx(0, _set_entry(3, 77)))
    add("vidx-dtype-code-negative", _vidx(0, _set_entry(3, -1)))
    add("vidx-duplicate-vid", _vidx(0, lambda ints: ints + ints[:7 + ints[6]]))
    add("vidx-empty", _vidx(0, lambda ints: []))
    add("vidx-stats-missing", _body(0, lambda b: {**b, "stats": [], "stats_int": []}))
    add("vidx-stats-text", _body(0, lambda b: {**b, "stats": ["a"] * len(b["stats"])}))
    add("vidx-stats-count-text", _body(0, lambda b: {**b, "stats_int": ["n"] * len(b["stats_int"])}))
    add("dtypes-foreign", _body(0, lambda b: {**b, "dtypes": ["os.system"] * len(b["dtypes"])}))
    add("dtypes-not-list", _body(0, lambda b: {**b, "dtypes": "float32"}))
    add("dtypes-nested", _body(0, lambda b: {**b, "dtypes": [["float32"]]}))
    add("vals-truncated", _sql("UPDATE step SET vals=substr(vals, 1, 3) WHERE idx=0"))
    # schema and header
    add("schema-newer", _sql("PRAGMA user_version=99"))
    add("schema-older", _sql("PRAGMA user_version=0"))
    add("schema-foreign-app", _sql("PRAGMA application_id=1"))
    add("schema-missing-table", _sql("DROP TABLE source"))
    add("schema-fewer-columns", _sql("ALTER TABLE step DROP COLUMN vals"))
    add("schema-source-fewer-columns", _sql("ALTER TABLE source DROP COLUMN function"))
    add("schema-tensor-extra-column", _sql("ALTER TABLE tensor ADD COLUMN extra TEXT"))
    add("schema-generated-column", _sql(
        "CREATE TABLE s2 AS SELECT * FROM step", "DROP TABLE step",
        "CREATE TABLE step (idx INTEGER PRIMARY KEY, first_seq INTEGER, last_seq INTEGER, "
        "has_backward INTEGER, loss REAL, n_ops INTEGER, n_nodes INTEGER, n_fresh INTEGER, "
        "n_added INTEGER, n_on_top INTEGER, n_zero INTEGER, n_update INTEGER, n_grad_write INTEGER, "
        "ops_dropped INTEGER, tensors TEXT, body TEXT, vidx BLOB, vals BLOB, "
        "big BLOB GENERATED ALWAYS AS (zeroblob(500000000)) VIRTUAL)",
        "INSERT INTO step SELECT * FROM s2", "DROP TABLE s2"))
    add("schema-step-view", _sql(
        "ALTER TABLE step RENAME TO s2",
        "CREATE VIEW step AS WITH RECURSIVE r(n) AS (SELECT 0 UNION ALL SELECT n+1 FROM r) "
        "SELECT n AS idx FROM r"))
    # crafted replay targets: nothing from the file is ever resolved or called
    touch = f"touch {marker}"
    for target, args in (("torch.os.system", [touch]), ("os.system", [touch]),
                         ("torch.save", ["$t1", marker]), ("torch.load", [marker]),
                         ("torch.serialization.load", [marker]), ("Tensor.__reduce_ex__", ["$t1", 2]),
                         ("torch.hub.load", [marker, "x"]), ("builtins.eval", [f"open('{marker}','w')"]),
                         ("torch._C._nn.__class__.__subclasses__", []),
                         ("torch.ops.aten.__getattr__", ["x"]), ("Tensor.register_hook", ["$t1", touch]),
                         ("torch.utils.cpp_extension.load", [marker, [marker]])):
        add(f"target-{target}", _body(0, _target(target, args)))
    add("target-number", _body(0, _target(5)))
    add("target-list", _body(0, _target(["torch", "os", "system"])))
    add("dtype-arg-foreign", _body(0, _target("torch.matmul", [{"dtype": "os"}, {"dtype": "__class__"}])))
    add("function-op-crafted", _body(0, _target("autograd.Function:os.system", [touch])))
    return cases


def _first_sized(ints):
    return next(s for s in _entries(ints) if ints[s + 6] > 0)


def corpus(base: Path, folder: Path, marker: str) -> list[tuple[str, Path]]:
    """Write every case into ``folder``: the file itself, 20 truncations, 200 byte flips, the edits."""
    data = base.read_bytes()
    shutil.copyfile(base, folder / "base.gtrace")
    out = [("base", folder / "base.gtrace")]  # the undamaged file, for comparison
    n = len(data)
    for k in range(20):
        cut = [0, 1, 15, 16, 99, 100, 101, 512, 1024, 4095, 4096, 4097][k] if k < 12 else \
            int(n * (k - 11) / 9) - (k % 3)
        p = folder / f"trunc-{k:02d}-{cut}.gtrace"
        p.write_bytes(data[:max(0, min(cut, n - 1))])
        out.append((p.stem, p))
    rng = random.Random(20261201)
    for k in range(200):
        buf = bytearray(data)
        at = rng.randrange(n)
        buf[at] ^= rng.randrange(1, 256)
        p = folder / f"flip-{k:03d}-{at}.gtrace"
        p.write_bytes(bytes(buf))
        out.append((p.stem, p))
    for name, edit in edits(marker):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        p = folder / f"edit-{safe}.gtrace"
        shutil.copyfile(base, p)
        try:
            edit(p)
        except sqlite3.Error as e:  # an edit SQLite itself refuses is a bug in the corpus
            raise RuntimeError(f"corpus edit {name} failed: {e}") from None
        out.append((p.stem, p))
    return out


# -- the reader, in this process, on every file -------------------------------------------------
#: A case that runs longer than this is stopped by faulthandler: the process ends with every
#: thread's stack on stderr (the hung case's name among the frames) instead of hanging CI.
HANG_SECONDS = 300
#: Above this much new memory the reader gets a MemoryError (recorded as a failure) instead of
#: the machine running out; tests/test_hostile.py asserts on the measured growth (1 GiB).
MEMORY_LIMIT = 2 << 30


def read_all(cases: list[tuple[str, Path]], folder: Path, marker: str = MARKER) -> list[dict]:
    """``gradtrace.load`` on every case, read to the last field, in this process (it is the
    reader that is tested; a fork per file cost more than the reading). One result per case,
    shaped as ``run_all``'s with the command ``"load"``: exit 0 (read fine), 2 (a
    GradtraceError: its one line as stderr) or 1 (anything else: the traceback as stderr).
    Each case runs in ``folder`` (where a crafted call would make ``marker``) under a time
    watchdog and a memory limit; its peak memory growth is measured (VmHWM, reset per case).
    The first case is read once more, untimed, before the rest."""
    import contextlib
    import faulthandler
    import io
    import traceback
    import warnings

    from gradtrace import GradtraceError

    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    results = []
    try:
        os.chdir(folder)
        # The first file once, untimed: imports and torch's first-call set-up are not reading.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                _touch_everything(str(cases[0][1]))
            except GradtraceError:
                pass
        for case, path in cases:
            limit = _vm_data_kb() * 1024 + MEMORY_LIMIT
            resource.setrlimit(resource.RLIMIT_DATA, (limit if hard < 0 else min(limit, hard), hard))
            can_reset = _reset_peak()
            rss0, t0 = _rss_kb(), time.monotonic()
            err = io.StringIO()
            faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
            try:
                with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(err), \
                        warnings.catch_warnings():
                    warnings.simplefilter("always")
                    try:
                        _touch_everything(str(path))
                        code = 0
                    except GradtraceError as e:
                        print(f"gradtrace: error: {e}", file=sys.stderr)
                        code = 2
                    except BaseException:  # a reader bug: recorded, the corpus goes on
                        traceback.print_exc()
                        code = 1
            finally:
                faulthandler.cancel_dump_traceback_later()
                resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
            seconds = time.monotonic() - t0
            peak = _status_kb("VmHWM") if can_reset else _rss_kb()
            hit = folder / marker
            results.append({
                "case": case, "command": "load", "exit": code, "timed_out": False,
                "seconds": round(seconds, 3), "rss_growth_mb": round(max(0, peak - rss0) / 1024, 1),
                "stdout": out.getvalue(), "stderr": err.getvalue(), "marker": hit.exists(),
            })
            if hit.exists():
                hit.unlink()
    finally:
        os.chdir(cwd)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    return results


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where Linux does not let us."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


#: The files every command runs on through the command line (``CLI_COMMANDS``), for the
#: one-line-error contract: the undamaged file, every crafted replay target (``check`` must
#: refuse them), the well-formed edits that read fine (the commands do all their work on
#: them), and a seeded tenth of the rest, from every family of damage.
def cli_sample(names: list[str], loads_fine: set[str]) -> list[str]:
    rng = random.Random(20261202)
    keep = [n for n in names if n == "base" or n.startswith("edit-target-") or n in loads_fine]
    rest = [n for n in names if n not in keep]
    families: dict[str, list[str]] = {}
    for n in rest:
        families.setdefault(_family(n), []).append(n)
    for fam in sorted(families):
        members = families[fam]
        keep += rng.sample(members, max(1, len(members) // 10))
    return sorted(set(keep), key=names.index)


def _family(name: str) -> str:
    """trunc, flip, or the edit's table/column (edit-op-field4-... -> edit-op)."""
    parts = name.split("-")
    return "-".join(parts[:2]) if parts[0] == "edit" else parts[0]


# -- running ------------------------------------------------------------------------------------
COMMANDS = {
    "load": None,
    "summary": ["summary", "{t}"],
    "check": ["check", "--json", "{t}"],
    "graph": ["graph", "{t}", "-o", "{o}/graph.svg"],
    "graph-last": ["graph", "{t}", "--step", "last", "--view", "backward", "-o", "{o}/last.dot"],
    # One frame each, small: the whole scene is built from the file, one frame is drawn.
    "backprop": ["animate", "{t}", "--kind", "backprop", "--dpi", "20", "--no-progress", "-o", "{o}/b.png"],
    "training": ["animate", "{t}", "--kind", "training", "--dpi", "20", "--no-progress", "-o", "{o}/t.png"],
    "report": ["report", "{t}", "--no-animations", "-o", "{o}/report.html"],
}


def _touch_everything(path: str) -> None:
    """What `gradtrace.load` gives a Python user, read to the last field."""
    import gradtrace

    t = gradtrace.load(path)
    try:
        t.info, t.sources, t.params, t.step_rows()
        for s in t.steps:
            s.ops, s.backward, s.events, s.timeline()
            for v in s.values.values():
                v.stats
        t.events
        t.check()
    finally:
        t.close()


def _child(command: str, trace: str, outdir: str) -> int:
    if command == "load":
        from gradtrace import GradtraceError

        try:
            _touch_everything(trace)
        except GradtraceError as e:
            print(f"gradtrace: error: {e}", file=sys.stderr)
            return 2
        return 0
    from gradtrace.cli import main

    argv = [a.format(t=trace, o=outdir) for a in COMMANDS[command]]
    try:
        main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def _spawn(command: str, trace: Path, outdir: Path, mem_limit: int) -> dict:
    """Fork a child that runs one command on one file; what the reaper needs to judge it."""
    outdir.mkdir(parents=True, exist_ok=True)
    out_f, err_f = outdir / "stdout", outdir / "stderr"
    job = {"command": command, "out": out_f, "err": err_f, "rss": _rss_kb(), "t0": time.monotonic()}
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            os.chdir(outdir)
            fd_out = os.open(out_f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            fd_err = os.open(err_f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            data = _vm_data_kb() * 1024
            resource.setrlimit(resource.RLIMIT_DATA, (data + mem_limit, data + mem_limit))
            code = _child(command, str(trace), str(outdir))
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 71
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code if isinstance(code, int) else 1)
    job["pid"] = pid
    return job


def _reap(job: dict, timeout: float, block: bool) -> dict | None:
    """The finished job's result, or None while it runs (a job past ``timeout`` is killed)."""
    done, status, usage = os.wait4(job["pid"], 0 if block else os.WNOHANG)
    timed_out = False
    if not done:
        if time.monotonic() - job["t0"] <= timeout:
            return None
        os.kill(job["pid"], signal.SIGKILL)
        _, status, usage = os.wait4(job["pid"], 0)
        timed_out = True
    return {
        "command": job["command"], "exit": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
        "seconds": round(time.monotonic() - job["t0"], 3),
        "rss_growth_mb": round(max(0, usage.ru_maxrss - job["rss"]) / 1024, 1),
        "stdout": job["out"].read_text(errors="replace"),
        "stderr": job["err"].read_text(errors="replace"),
    }


def run_all(jobs: list[tuple[str, str, Path]], folder: Path, marker: str, workers: int) -> list[dict]:
    """Every (case, command, file), ``workers`` children at a time, in the order given.
    ``marker`` is a relative name and each child runs in its own folder, so a marker file
    names the one run that made it; no case waits for another."""
    results = []
    todo = list(jobs)
    running: list[tuple[str, dict]] = []
    while todo or running:
        while todo and len(running) < workers:
            case, command, path = todo.pop(0)
            running.append((case, _spawn(command, path, folder / "out" / case / command, 1 << 30)))
        for case, job in list(running):
            r = _reap(job, 20.0, block=False)
            if r is not None:
                running.remove((case, job))
                r["case"] = case
                hit = folder / "out" / case / job["command"] / marker
                r["marker"] = hit.exists()
                results.append(r)
        select.select([], [], [], 0.002)
    return results


def _rss_kb() -> int:
    return _status_kb("VmRSS")


def _vm_data_kb() -> int:
    return _status_kb("VmData")


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _warm_up(folder: Path) -> None:
    """Import and draw once here, so children share it (and font caches exist) before forks."""
    import importlib

    import torch

    torch.set_num_threads(1)
    importlib.import_module("gradtrace.cli")
    import matplotlib

    matplotlib.use("Agg")
    base = folder / "base.gtrace"
    for command in COMMANDS:
        _child(command, str(base), str(folder / "warm"))


def build(folder: Path) -> list[tuple[str, Path]]:
    """Record the base trace in ``folder`` and write the corpus into ``folder/cases``: the
    (case, file) list, "base" first."""
    import contextlib
    import io
    import warnings

    cwd = os.getcwd()
    os.chdir(folder)  # BASE_SCRIPT and its recording stay in the folder
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its float(loss) of a tensor that requires grad
            base = record_base(folder)
    finally:
        os.chdir(cwd)
    cases_dir = folder / "cases"
    cases_dir.mkdir()
    return corpus(base, cases_dir, MARKER)


def main(out_json: str, cases_dir: str | None = None, only: list[str] | None = None) -> None:
    """Every command (``COMMANDS``) on the files of ``cases_dir`` (all of the corpus, built
    here, when None), or on the cases named in ``only``; the results as JSON in ``out_json``."""
    folder = Path(tempfile.mkdtemp(prefix="gradtrace-hostile-"))
    try:
        os.environ["MPLBACKEND"] = "Agg"
        cwd = os.getcwd()
        if cases_dir is None:
            cases = build(folder)
        else:
            cases = sorted(((p.stem, p) for p in Path(cases_dir).resolve().glob("*.gtrace")),
                           key=lambda c: (c[0] != "base", c[0]))
            shutil.copyfile(dict(cases)["base"], folder / "base.gtrace")
        os.chdir(folder)
        marker = MARKER  # relative: a crafted call that ran makes it in its run's own folder
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _warm_up(folder)
        if only is not None:
            cases = [c for c in cases if c[0] in only]
        before = sorted(p.name for p in folder.iterdir())
        jobs = [(name, command, path) for name, path in cases for command in COMMANDS]
        results = run_all(jobs, folder, marker, workers=max(1, min(4, os.cpu_count() or 1)))
        after = sorted(p.name for p in folder.iterdir())
        # A marker anywhere else (an absolute path resolved some other way) is a stray file too.
        after += sorted(str(p.relative_to(folder)) for p in folder.rglob(MARKER)
                        if p.parent.parent.parent != folder / "out")
        os.chdir(cwd)
        Path(out_json).write_text(json.dumps({
            "cases": len(cases), "results": results,
            "stray_files": sorted(set(after) - set(before) - {"out"}),
        }, indent=0))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Every reading command on the hostile corpus.")
    parser.add_argument("out_json")
    parser.add_argument("cases_dir", nargs="?", help="a corpus built by build() (default: build one)")
    parser.add_argument("--only", help="comma-separated case names (default: every case)")
    a = parser.parse_args()
    main(a.out_json, a.cases_dir, a.only.split(",") if a.only else None)
