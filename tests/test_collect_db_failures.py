"""`collect` survives a locked, foreign, newer or unreachable database without a traceback, losing nothing.

A database it cannot open is one clear Error: line before anything is polled. A database that cannot
take responses while collecting (locked by another process) makes the collector spool them beside it;
the next run stores the spool first. A newer database is refused on a SQLite file and on a PostgreSQL
database (db_path); a file that is not a database, a missing folder and a locked file are the file's own (their
PostgreSQL analogues: a database that does not exist, a server that does not answer).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.spool import spool_path_for

from .test_cli_collect import KEY, simulator, write_config  # noqa: F401  (simulator is a fixture)
from .test_postgres_errors import PASSWORD, _missing_database, _redacted, _unreachable_server

ROOT = Path(__file__).resolve().parents[1]


def _collect(db: Path | str, config: Path, base: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TORNSTORE_DB"} | {"TK_CLI": KEY} | env
    return subprocess.run([sys.executable, "-m", "tornstore", "--db", str(db), "collect", "-c", str(config),
                           "--api-base", base, "--once", "--json", "-q"], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


def _one_clear_line(done: subprocess.CompletedProcess, says: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0] and "nothing was polled" in errors[0], done.stderr


@pytest.mark.sqlite_only("a file that is not a database, a folder that does not exist")
def test_a_database_that_cannot_be_opened_is_one_clear_line(simulator, tmp_path, db_path):  # noqa: F811 - the fixture
    config = write_config(tmp_path / "collect.toml", simulator)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("these are my notes, not a database\n" * 100)
    for db, says in ((foreign, "not a database"), (tmp_path / "no" / "such" / "dir" / "torn.db", "unable to open")):
        _one_clear_line(_collect(db, config, simulator), says)
    assert foreign.read_text().startswith("these are my notes")     # left as it was


def test_a_newer_database_is_one_clear_line(simulator, tmp_path, db_path):  # noqa: F811 - the fixture
    config = write_config(tmp_path / "collect.toml", simulator)
    conn = connect_sync(db_path)
    try:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER, "
                     "description TEXT, checksum TEXT)")
        conn.execute("INSERT INTO schema_version VALUES (99, 0, 'from the future', 'x')")
    finally:
        close_sync(conn)
    _one_clear_line(_collect(db_path, config, simulator), "99")


@pytest.mark.parametrize("where", ["missing database", "unreachable server"])
def test_a_postgres_database_not_there_is_one_clear_line(simulator, tmp_path, where):  # noqa: F811 - the fixture
    config = write_config(tmp_path / "collect.toml", simulator)
    url = _missing_database() if where == "missing database" else _unreachable_server()
    done = _collect(url, config, simulator)
    _one_clear_line(done, f"cannot connect to PostgreSQL at {_redacted(url)}")
    assert PASSWORD not in done.stdout + done.stderr


def test_a_locked_database_spools_and_the_next_run_stores_the_spool_first(simulator, tmp_path, db_path):  # noqa: F811 - the fixture
    """Another writer holds the write lock (a file's, or PostgreSQL's advisory lock) longer than the busy
    timeout: the collector spools what it fetched instead of waiting for ever, and stores it next run."""
    config = write_config(tmp_path / "collect.toml", simulator)
    db = db_path
    first = _collect(db, config, simulator, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = json.loads(first.stdout)

    holder = connect_sync(db)
    holder.execute("BEGIN IMMEDIATE")                 # another process holds the write lock throughout
    try:
        locked = _collect(db, config, simulator, cwd=tmp_path, TORNSTORE_BUSY_TIMEOUT_MS="300")
    finally:
        holder.execute("ROLLBACK")
        close_sync(holder)
    assert "Traceback" not in locked.stderr
    assert locked.returncode == 0, locked.stderr      # every poll succeeded; storing waits, nothing failed
    assert "could not save gaps and key state (kept for later)" in locked.stderr
    report = json.loads(locked.stdout)
    assert report["responses"] > 0 and report["appended"] == 0    # fetched, and nothing stored yet...
    spool = tmp_path / spool_path_for(db)            # (a URL's spool is in the current folder)
    assert spool.exists() and len(spool.read_text().splitlines()) == report["responses"]   # ...but spooled
    assert "wait in" in locked.stderr and str(spool_path_for(db)) in locked.stderr

    again = _collect(db, config, simulator, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not spool.exists()
    assert f"stored {report['responses']} spooled responses" in again.stderr
    assert before["responses"] > 0
