"""The trace file's schema (gradtrace/tracefile/schema.py): its tables, header ids and version history."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from gradtrace.tracefile import schema
from gradtrace.tracefile.opening import check_header
from gradtrace.tracefile.rows import ScalarParamRow, ScalarRow
from gradtrace.tracefile.schema import (
    APPLICATION_ID, FORMAT_VERSION, OLDEST_READABLE, SCHEMA, TABLES, TABLES_ADDED,
)

ROOT = Path(__file__).resolve().parents[1]


def _made():
    c = sqlite3.connect(":memory:")
    c.executescript(SCHEMA)
    return c


def test_the_schema_makes_exactly_the_tables_it_lists():
    c = _made()
    objects = c.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    assert {t for t, _ in objects} == {"table"}  # no view, trigger or index: nothing computes
    assert {n for _, n in objects} == TABLES | set(TABLES_ADDED)
    assert not TABLES & set(TABLES_ADDED)


def test_no_column_of_the_schema_is_generated_or_hidden():
    c = _made()
    for table in TABLES | set(TABLES_ADDED):
        hidden = [r[1] for r in c.execute(f"PRAGMA table_xinfo({table})") if r[6] != 0]
        assert hidden == [], table


def test_the_scalars_tables_have_the_columns_of_their_rows():
    c = _made()

    def columns(table):
        return tuple(r[1] for r in c.execute(f"PRAGMA table_info({table})"))

    assert columns("scalars") == ScalarRow._fields
    assert columns("scalar_param") == ScalarParamRow._fields
    assert columns("meta") == ("key", "value")


def test_a_database_of_the_schema_and_the_header_ids_is_a_trace_of_this_format():
    """The writer's side and the reader's agree: the schema passes the reader's header check."""
    c = _made()
    c.execute(f"PRAGMA application_id={APPLICATION_ID}")
    c.execute(f"PRAGMA user_version={FORMAT_VERSION}")
    assert check_header(c, ":memory:") == FORMAT_VERSION


def test_the_application_id_spells_gtrc():
    assert APPLICATION_ID.to_bytes(4, "big") == b"GTRC"


def test_each_added_table_came_with_a_format_this_gradtrace_reads():
    assert 1 <= OLDEST_READABLE <= FORMAT_VERSION
    assert all(OLDEST_READABLE < v <= FORMAT_VERSION for v in TABLES_ADDED.values())


def test_every_readable_format_is_in_the_version_history():
    """The docstring and docs/trace-format.md each have one entry per format, oldest first."""
    history = schema.__doc__.split("Version history")[1]
    listed = [int(n) for n in re.findall(r"^- (\d+)[ :(]", history, re.M)]
    assert listed == list(range(OLDEST_READABLE, FORMAT_VERSION + 1))
    docs = (ROOT / "docs" / "trace-format.md").read_text().split("## Version history")[1]
    rows = [int(n) for n in re.findall(r"^\| (\d+) \|", docs, re.M)]
    assert rows == list(range(1, FORMAT_VERSION + 1))
    assert f"Schema (format version {FORMAT_VERSION})" in schema.__doc__
