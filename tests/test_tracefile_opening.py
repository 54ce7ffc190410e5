"""Opening a trace file (gradtrace/tracefile/opening.py): load, is_trace, check_header, one line if not."""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest

import gradtrace
from gradtrace.errors import TraceFileError, TraceWriteError
from gradtrace.tracefile.checked import Limits
from gradtrace.tracefile.opening import check_header, is_trace, load
from gradtrace.tracefile.reader import Trace
from gradtrace.tracefile.schema import APPLICATION_ID, FORMAT_VERSION, OLDEST_READABLE


def _one_line_error(path, *fragments):
    with pytest.raises(TraceFileError) as info:
        t = gradtrace.load(path)
        t.steps[len(t.steps) - 1]  # reading a step must fail the same way
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for frag in fragments:
        assert frag in msg
    return msg


def test_loads_with_header_and_version(twenty_step_file):
    t = gradtrace.load(twenty_step_file)
    assert t.info.format_version == FORMAT_VERSION
    assert t.info.status == "completed"
    conn = sqlite3.connect(twenty_step_file)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.gtrace", "no such file", "gradtrace run")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.gtrace"
    p.write_bytes(b"")
    _one_line_error(p, "empty")


def test_foreign_text_file(tmp_path):
    p = tmp_path / "notes.gtrace"
    p.write_text("import os; os.system('echo pwned')\n")
    _one_line_error(p, "not a gradtrace trace file")


def test_foreign_sqlite_database(tmp_path):
    p = tmp_path / "other.db"
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    _one_line_error(p, "not a gradtrace trace file")


def test_newer_format(twenty_step_file):
    c = sqlite3.connect(twenty_step_file)
    c.execute(f"PRAGMA user_version={FORMAT_VERSION + 1}")
    c.commit()
    c.close()
    _one_line_error(twenty_step_file, f"format {FORMAT_VERSION + 1}", "newer gradtrace", "upgrade")


def test_older_incompatible_format(twenty_step_file):
    c = sqlite3.connect(twenty_step_file)
    c.execute("PRAGMA user_version=0")
    c.commit()
    c.close()
    _one_line_error(twenty_step_file, "format 0 is older")


def test_truncated_file(twenty_step_file):
    data = twenty_step_file.read_bytes()
    twenty_step_file.write_bytes(data[: len(data) // 2])
    _one_line_error(twenty_step_file, "record the run again")


def test_corrupted_pages(twenty_step_file):
    data = bytearray(twenty_step_file.read_bytes())
    for i in range(4096, len(data) - 1, 997):
        data[i] ^= 0x5A
    twenty_step_file.write_bytes(bytes(data))
    _one_line_error(twenty_step_file, "corrupt")


def test_a_directory(tmp_path):
    _one_line_error(tmp_path, "is a directory")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    p = tmp_path / "pipe.gtrace"
    os.mkfifo(p)
    _one_line_error(p, "not a regular file")


def test_a_generated_column_is_refused(twenty_step_file):
    c = sqlite3.connect(twenty_step_file)
    c.execute("ALTER TABLE tensor ADD COLUMN big BLOB GENERATED ALWAYS AS (zeroblob(100)) VIRTUAL")
    c.commit()
    c.close()
    _one_line_error(twenty_step_file, "does not have the columns")


@pytest.mark.parametrize("folder", ["proj#1", "a?b", "x%20y", "with space", "données-训练"])
def test_paths_are_paths(tmp_path, twenty_step_file, folder):
    import shutil

    d = tmp_path / folder
    d.mkdir()
    p = d / f"run#{folder}?.gtrace"
    shutil.copyfile(twenty_step_file, p)
    t = gradtrace.load(p)
    assert len(t.steps) == 20 and t.path == str(p)
    assert not (tmp_path / "proj").exists() and sorted(x.name for x in d.iterdir()) == [p.name]


def test_a_trace_of_an_earlier_gradtrace_killed_mid_run_is_still_recognised(tmp_path):
    # Its header was still in the write-ahead log: the file itself says nothing yet.
    path = tmp_path / "old.gtrace"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):  # as a killed process leaves them (no checkpoint on close)
        shutil.copy(f"{path}{suffix}", copy / f"old.gtrace{suffix}")
    conn.close()
    assert int.from_bytes((copy / "old.gtrace").read_bytes()[68:72], "big") != APPLICATION_ID
    assert is_trace(copy / "old.gtrace", replacing=True)
    assert not is_trace(tmp_path / "missing.gtrace", replacing=True)


# -- is_trace: what a run may overwrite --------------------------------------------------------
def test_is_trace_tells_a_trace_from_anything_else(twenty_step_file, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a trace")
    assert is_trace(twenty_step_file) and is_trace(twenty_step_file, replacing=True)
    assert not is_trace(notes)
    assert not is_trace(tmp_path / "missing.gtrace")
    assert not is_trace(tmp_path)  # a folder is no trace, and asking is not an error


def test_replacing_a_file_that_is_not_a_trace_is_refused_by_name(tmp_path):
    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("CREATE TABLE meta (key TEXT, value TEXT)").connection.close()
    for path in (db, tmp_path / "train.py"):
        if not path.exists():
            path.write_text("print('hello')\n")
        before = path.read_bytes()
        with pytest.raises(TraceFileError) as e:
            is_trace(path, replacing=True)
        assert str(e.value) == f"{path}: exists and is not a gradtrace trace; choose another path with -o"
        assert path.read_bytes() == before


def test_replacing_a_directory_says_to_give_a_file_inside_it(tmp_path):
    with pytest.raises(TraceFileError) as e:
        is_trace(tmp_path, replacing=True)
    assert not isinstance(e.value, TraceWriteError)
    assert str(e.value) == (f"{tmp_path}: is a directory; give a file path such as "
                            f"{tmp_path / 'trace.gtrace'}")


# -- check_header: the header, the tables and their columns ------------------------------------
def _edit(path, *statements):
    c = sqlite3.connect(path)
    for sql in statements:
        c.execute(sql)
    c.commit()
    c.close()


def test_check_header_gives_the_format_version(twenty_step_file):
    c = sqlite3.connect(twenty_step_file)
    assert check_header(c, str(twenty_step_file)) == FORMAT_VERSION
    c.close()


def test_a_format_before_the_scalars_tables_needs_none_of_them(twenty_step_file):
    """The scalars tables came with format 4: a format 3 file without them passes the header."""
    _edit(twenty_step_file, "DROP TABLE scalars", "DROP TABLE scalar_param", "PRAGMA user_version=3")
    c = sqlite3.connect(twenty_step_file)
    assert check_header(c, str(twenty_step_file)) == 3
    c.close()


def test_a_format_4_file_without_its_scalars_tables_is_truncated(twenty_step_file):
    _edit(twenty_step_file, "DROP TABLE scalars", "DROP TABLE scalar_param")
    msg = _one_line_error(twenty_step_file, "truncated or corrupt")
    assert "tables scalar_param, scalars are missing" in msg


def test_a_view_in_place_of_a_table_counts_as_missing(twenty_step_file):
    """A view computes when read: nothing named like a table but made of a query is read."""
    _edit(twenty_step_file, "ALTER TABLE source RENAME TO source_old",
          "CREATE VIEW source AS SELECT * FROM source_old")
    _one_line_error(twenty_step_file, "tables source are missing", "record the run again")


def test_an_extra_column_is_refused_naming_the_table_and_format(twenty_step_file):
    _edit(twenty_step_file, "ALTER TABLE meta ADD COLUMN extra TEXT")
    _one_line_error(twenty_step_file, f"the meta table does not have the columns gradtrace writes "
                                f"(format {FORMAT_VERSION})")


def test_our_application_id_without_a_meta_table_is_still_foreign(tmp_path):
    p = tmp_path / "x.gtrace"
    _edit(p, f"PRAGMA application_id={APPLICATION_ID}", "CREATE TABLE t (x)")
    _one_line_error(p, "not a gradtrace trace file", "`gradtrace run`")


def test_the_sqlite_magic_with_nothing_behind_it_is_corrupt(tmp_path):
    p = tmp_path / "x.gtrace"
    p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    _one_line_error(p, "truncated or corrupt", "record the run again")


def test_the_versions_in_the_refusals_are_the_readable_range(twenty_step_file):
    _edit(twenty_step_file, f"PRAGMA user_version={FORMAT_VERSION + 3}")
    msg = _one_line_error(twenty_step_file)
    assert f"this one reads formats {OLDEST_READABLE} to {FORMAT_VERSION}" in msg


# -- load: what it reads and what it never does --------------------------------------------------
def test_load_reads_without_changing_a_byte_of_the_file(twenty_step_file):
    before = twenty_step_file.read_bytes()
    t = load(twenty_step_file)
    assert isinstance(t, Trace) and t.path == str(twenty_step_file)
    assert len(t.steps) == 20 and t.steps[19].index == 19
    t.close()
    assert twenty_step_file.read_bytes() == before
    assert sorted(p.name for p in twenty_step_file.parent.iterdir()) == [twenty_step_file.name]


def test_a_read_only_trace_loads(twenty_step_file):
    twenty_step_file.chmod(0o444)
    t = load(twenty_step_file)
    assert t.info.status == "completed" and len(t.steps) == 20
    t.close()


def test_the_limits_given_to_load_bound_what_is_read(twenty_step_file):
    import math

    biggest = max(math.prod(i.shape) for i in load(twenty_step_file).tensors.values())
    assert len(load(twenty_step_file, limits=Limits(max_numel=biggest)).tensors) > 0
    t = load(twenty_step_file, limits=Limits(max_numel=biggest - 1))
    assert t.limits == Limits(max_numel=biggest - 1)
    with pytest.raises(TraceFileError) as e:
        t.tensors
    msg = str(e.value)
    assert msg.startswith(f"{twenty_step_file}: ") and "\n" not in msg
    assert f"claims {biggest} elements, more than the limit of {biggest - 1}" in msg


class _Boom:
    """Unpickling this would create a file: proof that something was unpickled."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    boom = _Boom()
    boom.marker = marker
    p = tmp_path / "evil.gtrace"
    p.write_bytes(pickle.dumps(boom))
    _one_line_error(p, "not a gradtrace trace file")
    assert not marker.exists()
