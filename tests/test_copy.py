"""`tornstore copy` (issue 18, "Moving up"): a real store, with history, summaries, a snapshot and a
ledger, copied SQLite -> PostgreSQL and back through the CLI; every table equal on both ends, verify OK on
both, a non-empty target refused and left unchanged.

Against the real server at 127.0.0.1:5432 (or TORNSTORE_TEST_POSTGRES), one database per test, dropped
afterwards; where none is reachable the PostgreSQL tests skip and say so (TORNSTORE_REQUIRE_POSTGRES=1: fail).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tornstore.eventstore import db
from tornstore.projections.copy import NOT_COPIED, TABLES, primary_key
from tornstore.projections.store import ingest_files

from .conftest import OBSERVED_AT, fixture_capture_lines

REQUIRED = os.environ.get("TORNSTORE_REQUIRE_POSTGRES") == "1"
RECENT = 1784073600   # 2026-07-15, after the compaction's horizon
CHANGED = {"respect", "level", "age", "best_chain", "score", "current", "max"}


def _pg():
    if REQUIRED:
        import psycopg
    else:
        psycopg = pytest.importorskip("psycopg",
                                      reason="psycopg 3 is not installed (pip install 'tornstore[postgresql]')")
    return psycopg


@pytest.fixture
def pg_url(postgres_url):
    """The test's own new database on the server (conftest.postgres_url), dropped after the test."""
    return postgres_url



def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TORNSTORE_DB"}
    result = subprocess.run([sys.executable, "-m", "tornstore.cli.main", *args], capture_output=True, text=True,
                            env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _changed(value, key=None):
    """A body with some values moved on (a later observation of the same entities)."""
    if isinstance(value, dict):
        return {k: _changed(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_changed(v, key) for v in value]
    if key in CHANGED and isinstance(value, int) and not isinstance(value, bool):
        return value + 7
    return value


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store with a log, history, summaries of folded months, a snapshot, a ledger and a backup row."""
    tmp = tmp_path_factory.mktemp("copy")
    first, second = tmp / "first.ndjson", tmp / "second.ndjson"
    first.write_text("\n".join(fixture_capture_lines()) + "\n")
    later = []
    for line in fixture_capture_lines(OBSERVED_AT + 40 * 86400):
        record = json.loads(line)
        record["body"] = _changed(record["body"])
        later.append(json.dumps(record))
    second.write_text("\n".join(later) + "\n")
    path = tmp / "torn.db"
    ingest_files(str(path), [str(first)], now=OBSERVED_AT + 60)
    report = ingest_files(str(path), [str(second)], now=OBSERVED_AT + 40 * 86400 + 60)
    assert report.appended > 0   # the second capture changed something
    run("--db", str(path), "compact", "--now", "2026-08-01T00:00:00Z", "--json")
    # and history after the horizon: live *_history rows, and events a replay applies after the snapshot
    third = tmp / "third.ndjson"
    recent = []
    for line in fixture_capture_lines(RECENT):
        record = json.loads(line)
        record["body"] = _changed(_changed(record["body"]))
        recent.append(json.dumps(record))
    third.write_text("\n".join(recent) + "\n")
    assert ingest_files(str(path), [str(third)], now=RECENT + 60).appended > 0
    return path


def rows(target: str | Path) -> dict[str, list[tuple]]:
    """Every copied table's rows, in primary-key order, plus the sequences."""
    conn = db.connect_sync(str(target))
    try:
        out = {}
        for table in TABLES:
            info = conn.execute(f"PRAGMA main.table_info({table})").fetchall()
            cols = ", ".join(r[1] for r in info)
            key = ", ".join(primary_key(conn, table))
            out[table] = [tuple(r) for r in conn.execute(f"SELECT {cols} FROM main.{table} ORDER BY {key}")]
        out["(sequences)"] = [(t, db.sequence_value(conn, t)) for t in (*TABLES, "backups")]
        return out
    finally:
        conn.close()


def test_store_is_worth_copying(store):
    got = rows(store)
    for table in ("events", "stat_summary", "war_summary", "compaction_ledger", "projection_snapshots",
                  "factions_at_horizon", "sequences_at_horizon", "player_stats_history_at_horizon",
                  "player_stats_history", "faction_history"):
        assert got[table], f"{table} is empty: the test store does not exercise it"


def test_sqlite_to_postgres_and_back(store, pg_url, tmp_path, snapshot):
    original = rows(store)
    result = run("copy", "--from", str(store), "--to", pg_url, "--json", "--batch", "100")
    report = json.loads(result.stdout)
    assert report["ok"] and report["verify"]["source"]["ok"] and report["verify"]["target"]["ok"]
    assert rows(pg_url) == original
    assert report["tables"] == {t: len(original[t]) for t in TABLES}
    assert report["not_copied"]["backups"]["rows"] == 1
    assert report["replayed_events"] > 0   # events after the snapshot's prefix, applied on the target
    small = {"tables": report["tables"], "not_copied": {t: v["rows"] for t, v in report["not_copied"].items()},
             "verify": {end: v["ok"] for end, v in report["verify"].items()}, "ok": report["ok"]}
    assert small == snapshot

    back = tmp_path / "back.db"
    text = run("--db", pg_url, "copy", "--to", str(back)).stdout
    assert "verify source: OK" in text and "verify target: OK" in text and "verdict: OK" in text
    assert rows(back) == original
    run("--db", str(back), "verify")


def test_sqlite_to_sqlite_with_password_free_output(store, tmp_path):
    target = tmp_path / "moved.db"
    report = json.loads(run("--db", str(store), "copy", "--to", str(target), "--json").stdout)
    assert report["ok"] and report["source"] == str(store)
    assert rows(target) == rows(store)
    # a new id never reuses one the source handed out (pruned rows included)
    conn = sqlite3.connect(target)
    assert dict(conn.execute("SELECT name, seq FROM sqlite_sequence")) == {
        t: v for t, v in rows(store)["(sequences)"] if v}
    conn.close()


def test_a_target_holding_data_is_refused_and_left_unchanged(store, pg_url, tmp_path):
    run("copy", "--from", str(store), "--to", pg_url)
    before = rows(pg_url)
    again = run("copy", "--from", str(store), "--to", pg_url, check=False)
    assert again.returncode == 1 and "already holds tornstore data (events:" in again.stderr
    assert rows(pg_url) == before

    target = tmp_path / "other.db"
    run("copy", "--from", str(store), "--to", str(target))
    size = target.stat().st_size
    refused = run("copy", "--from", str(store), "--to", str(target), check=False)
    assert refused.returncode == 1 and "nothing was changed" in refused.stderr
    assert target.stat().st_size == size and rows(target) == rows(store)


def test_passwords_never_printed_and_missing_source(tmp_path):
    missing = run("copy", "--from", str(tmp_path / "none.db"), "--to", "postgresql://u:s3cret@127.0.0.1:1/x",
                  check=False)
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert "s3cret" not in missing.stdout + missing.stderr
    db_file = tmp_path / "a.db"
    run("--db", str(db_file), "init")
    refused = run("copy", "--from", str(db_file), "--to", "postgresql://u:s3cret@127.0.0.1:1/x", check=False)
    assert refused.returncode == 1 and "s3cret" not in refused.stdout + refused.stderr


def test_an_unknown_table_is_an_error_not_a_skip(store, tmp_path):
    source = tmp_path / "newer.db"
    run("copy", "--from", str(store), "--to", str(source))
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE added_by_a_later_migration (id INTEGER PRIMARY KEY)")
    conn.close()
    result = run("copy", "--from", str(source), "--to", str(tmp_path / "t.db"), check=False)
    assert result.returncode == 1 and "added_by_a_later_migration" in result.stderr


def test_every_schema_table_is_known(tmp_path):
    conn = db.connect_sync(tmp_path / "fresh.db")
    from tornstore.eventstore.migrate import migrate
    migrate(conn)
    present = {t for t in db.table_names(conn) if not t.startswith("sqlite_")}
    conn.close()
    assert present == set(TABLES) | set(NOT_COPIED)


def test_backup_of_a_postgres_store_is_a_verified_sqlite_file(store, pg_url, tmp_path):
    """`tornstore backup` on PostgreSQL writes a SQLite copy (-o required); it holds what the database does."""
    run("copy", "--from", str(store), "--to", pg_url)
    refused = run("--db", pg_url, "backup", check=False)
    assert refused.returncode != 0 and "-o PATH" in refused.stderr
    dest = tmp_path / "backup.db"
    result = run("--db", pg_url, "backup", "-o", str(dest), "--json")
    assert json.loads(result.stdout)["path"] == str(dest)
    assert rows(dest) == rows(pg_url)
    run("--db", str(dest), "verify")
