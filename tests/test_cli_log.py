"""init, migrate, ingest, export-events, replay, verify through click's runner on real files: --json results,
migrate --check's exit code, ingest refusing a missing database, progress on stderr only. On a SQLite file and on
a PostgreSQL database (db_path)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.cli.main import cli
from tornstore.eventstore.db import close_sync, connect_sync, is_url, table_names
from tornstore.eventstore.migrate import available_migrations

NEWEST = available_migrations()[-1].version


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, env={"TORNSTORE_DB": None})


def count(db: Path | str, sql: str) -> int:
    conn = connect_sync(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        close_sync(conn)


def tables(db: Path | str) -> set[str]:
    conn = connect_sync(db)
    try:
        return table_names(conn)
    finally:
        close_sync(conn)


@pytest.fixture
def ingested(db_path, capture_file: Path) -> Path | str:
    db = db_path
    result = run("--db", str(db), "ingest", "--init", str(capture_file))
    assert result.exit_code == 0, result.output
    return db


# ------------------------------------------------------------------------------------------------ init, migrate
def test_init_json_says_what_it_applied(db_path):
    db = db_path
    first = run("init", "--db", str(db), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {"database": str(db), "schema_version": NEWEST,
                                        "applied": [m.version for m in available_migrations()]}
    again = run("init", "--db", str(db), "--json")
    assert json.loads(again.stdout) == {"database": str(db), "schema_version": NEWEST, "applied": []}


def test_migrate_check_exits_1_while_a_migration_is_pending(db_path):
    # A SQLite file (a PostgreSQL database) made by something else: every migration is pending.
    db = db_path
    conn = connect_sync(db)
    conn.execute("CREATE TABLE notes (text TEXT)")
    close_sync(conn)
    check = run("--db", str(db), "migrate", "--check")
    assert check.exit_code == 1, check.output
    listed = ", ".join(f"{m.version:04d} {m.description}" for m in available_migrations())
    assert check.stdout == f"schema version 0; pending: {listed}\n" and check.stderr == ""
    as_json = run("--db", str(db), "migrate", "--check", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["pending"] == [{"version": m.version, "description": m.description}
                                                     for m in available_migrations()]
    assert tables(db) == {"notes"}  # --check changed nothing

    applied = run("--db", str(db), "migrate", "--json")
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout) == {"database": str(db), "schema_version": NEWEST, "pending": [],
                                          "applied": [m.version for m in available_migrations()]}
    done = run("--db", str(db), "migrate", "--check")
    assert done.exit_code == 0 and done.stdout == f"schema version {NEWEST}; pending: none\n"


# ------------------------------------------------------------------------------------------------ ingest
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_ingest_refuses_a_missing_database(db_path, tmp_path, capture_file, source):
    # On PostgreSQL: a database that holds no store (the server's databases are made by its owner).
    db = db_path if is_url(db_path) else tmp_path / "typo.db"
    args = [str(capture_file)] if source == "file" else ["-"]
    result = run("--db", str(db), "ingest", *args, input=capture_file.read_text())
    assert result.exit_code == 1
    assert result.stderr == (f"Error: no database at {db}: create it with `tornstore --db {db} init`, "
                             "or ingest with --init\n")
    assert result.stdout == "" and list(tmp_path.glob("typo.db*")) == []
    if is_url(db):
        assert tables(db) == set()


def test_ingest_init_creates_the_database_and_counts_match_it(db_path, capture_file):
    db = db_path
    result = run("--db", str(db), "ingest", "--init", str(capture_file), "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["responses"] == len(capture_file.read_text().splitlines())
    assert counts["appended"] == count(db, "SELECT COUNT(*) FROM events") > 0
    # Into the now existing database, without --init: everything unchanged.
    again = run("--db", str(db), "ingest", str(capture_file), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["appended"] == 0


# ------------------------------------------------------------------------------------------------ export-events
def test_export_events_json_and_progress_stay_apart(ingested, tmp_path):
    out = tmp_path / "events.ndjson"
    events = count(ingested, "SELECT COUNT(*) FROM events")
    result = run("--db", str(ingested), "export-events", "-o", str(out), "--json", "--progress")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"database": str(ingested), "output": str(out), "after": 0,
                                         "events": events}
    assert len(out.read_text().splitlines()) == events
    assert result.stderr.splitlines()[-1] == f"exporting events: {events:,}/{events:,} (100%)"

    after = count(ingested, "SELECT MIN(position) FROM events")
    quiet = run("--db", str(ingested), "export-events", "-o", str(out), "--after", str(after), "--json")
    assert quiet.stderr == ""  # not a terminal, no --progress: no progress
    assert json.loads(quiet.stdout)["events"] == events - 1 == len(out.read_text().splitlines())


def test_export_events_to_stdout_keeps_progress_off_stdout(ingested):
    events = count(ingested, "SELECT COUNT(*) FROM events")
    result = run("--db", str(ingested), "export-events", "--progress")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == events and all("body" in json.loads(line) for line in lines)
    *progress, summary = result.stderr.splitlines()
    assert summary == f"exported {events} events"
    assert progress[-1] == f"exporting events: {events:,}/{events:,} (100%)"
    assert all(line.startswith("exporting events: ") for line in progress)


def test_export_events_json_needs_a_file(ingested):
    result = run("--db", str(ingested), "export-events", "--json")
    assert result.exit_code == 2
    assert "Error: --json needs -o FILE: without it stdout carries the events" in result.stderr
    assert result.stdout == ""


# ------------------------------------------------------------------------------------------------ replay, verify
def test_replay_json(ingested):
    result = run("--db", str(ingested), "replay", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["events_applied"] == count(ingested, "SELECT COUNT(*) FROM events")
    assert data["projections"] == ["factions", "players", "player_stats", "faction_history", "stat_history", "wars",
                                   "territories"]
    assert data["projection_errors"] == count(ingested, "SELECT COUNT(*) FROM projection_errors")
    assert result.stderr == ""


def test_verify_progress_goes_to_stderr_and_json_to_stdout(ingested):
    events = count(ingested, "SELECT COUNT(*) FROM events")
    result = run("verify", "--db", str(ingested), "--json", "--progress")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["hashes"]["checked"] == events
    assert result.stderr.splitlines()[-1] == f"verifying (replay in a scratch copy): {events:,}/{events:,} (100%)"
    plain = run("verify", "--db", str(ingested))
    assert plain.exit_code == 0 and plain.stderr == "" and "verdict" in plain.stdout
