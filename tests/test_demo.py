"""`tornstore demo`, small: simulator on loopback, collector, compactor at a month boundary, report, chart. On a
SQLite file (`--out`) and on a PostgreSQL database (`--db URL`)."""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.cli.main import cli
from tornstore.eventstore.db import close_sync, connect_sync, is_url, table_names


def _slow_on_postgres(request, db: Path | str) -> None:
    """The demo is slow on PostgreSQL (10 to 20 s a run on 2 cores): one test runs there by default, the
    others with --runslow, as the suite's slow variants do."""
    if is_url(db) and not request.config.getoption("--runslow"):
        pytest.skip("slow variant: run with --runslow (the demo on PostgreSQL)")


def _where(db: Path | str) -> list[str]:
    """The demo's option naming its store: --out FILE, or --db URL."""
    return ["--db", db] if is_url(db) else ["--out", str(db)]


def test_demo_collects_compacts_and_reports(db_path, tmp_path):
    db, chart = db_path, tmp_path / "demo.png"
    result = CliRunner().invoke(cli, ["demo", "--months", "2", "--factions", "1", "--interval", "3600",
                                      "--profile-every", "24", *_where(db), "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "HTTP requests" in out and "change detection" in out
    assert "compactor at 2026-02-01: folded 1 month(s)" in out
    assert "respect of" in out and "a summary row" in out
    assert chart.exists() and chart.stat().st_size > 10_000
    conn = connect_sync(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM faction_summary").fetchone()[0] >= 1
        assert conn.execute("SELECT COUNT(*) FROM player_stats_summary").fetchone()[0] >= 5
        assert conn.execute("SELECT state FROM compaction_ledger").fetchall() == [("folded",), ("folded",)]
        # the demo's key never reaches the database
        assert conn.execute("SELECT COUNT(*) FROM events WHERE source_url LIKE '%key=%'").fetchone()[0] == 0
        if is_url(db):       # no file to read: every row of every table
            for table in table_names(conn):
                assert "DEMOdemoDEMOdemo" not in repr(conn.execute(f"SELECT * FROM {table}").fetchall()), table
    finally:
        close_sync(conn)
    if not is_url(db):
        assert b"DEMOdemoDEMOdemo" not in db.read_bytes()


def _events(db):
    conn = connect_sync(db)
    try:
        # (sorted here: PostgreSQL orders text by its collation, SQLite by bytes)
        return sorted(conn.execute("SELECT s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.hash "
                                   "FROM events e JOIN streams s USING (stream_id)").fetchall())
    finally:
        close_sync(conn)


def test_the_demo_is_deterministic_and_its_report_matches_the_database(db_path, tmp_path, request):
    """The simulator runs in its own process on a shared clock and ingest runs behind the collector:
    the same seed still gives every stream the same history, and the report counts what was stored.
    (Positions may interleave differently: a round's two faction polls answer in either order.) The first
    run goes to db_path, the second to a file: on PostgreSQL both backends store the same history."""
    _slow_on_postgres(request, db_path)
    logs = []
    for run, db in (("a", db_path), ("b", tmp_path / "b.db")):
        result = CliRunner().invoke(cli, ["demo", "--months", "1", "--factions", "2", "--interval", "1800",
                                          "--profile-every", "48", *_where(db),
                                          "--chart", str(tmp_path / f"{run}.png")])
        assert result.exit_code == 0, result.output
        logs.append(_events(db))
        appended = int(re.search(r"([\d,]+) appended as events", result.output).group(1).replace(",", ""))
        assert appended == len(logs[-1]) > 0   # one month: nothing pruned yet
    assert logs[0] == logs[1]


def test_after_the_demo_verify_passes_and_replay_changes_nothing(db_path, tmp_path, request):
    """The README's tour, shortened: three months (the third boundary prunes), then verify, replay, verify."""
    _slow_on_postgres(request, db_path)
    db = db_path
    result = CliRunner().invoke(cli, ["demo", "--months", "3", "--factions", "1", "--interval", "3600",
                                      "--profile-every", "24", *_where(db), "--chart", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output
    assert re.search(r"compactor at 2026-04-01: .* pruned [1-9][\d,]* events", result.output), result.output

    def tables() -> dict:
        if is_url(db):
            return _pg_tables(db)
        conn = sqlite3.connect(db)
        try:
            names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND (name IN "
                                                 "('players', 'factions', 'territories') OR name LIKE '%_history' "
                                                 "OR name LIKE '%_summary') ORDER BY name")]
            return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY rowid').fetchall() for n in names}
        finally:
            conn.close()

    for step in ("verify", "replay", "verify"):
        before = tables()
        done = CliRunner().invoke(cli, ["--db", str(db), step, "--json"])
        assert done.exit_code == 0, done.output
        if step == "verify":
            report = json.loads(done.output)
            assert report["ok"] is True, report
        else:
            assert tables() == before          # replay rebuilt exactly what was there (live columns included)


def _pg_tables(url: str) -> dict:
    """The same tables on PostgreSQL, which has no rowid: each table's rows sorted (they carry their ids)."""
    conn = connect_sync(url)
    try:
        names = sorted(n for n in table_names(conn)
                       if n in ("players", "factions", "territories") or n.endswith(("_history", "_summary")))
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        close_sync(conn)
