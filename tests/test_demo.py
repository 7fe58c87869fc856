"""`tornstore demo`, small: simulator on loopback, collector, compactor at a month boundary, report, chart."""
from __future__ import annotations

import sqlite3

from click.testing import CliRunner

from cli.main import cli


def test_demo_collects_compacts_and_reports(tmp_path):
    db, chart = tmp_path / "demo.db", tmp_path / "demo.png"
    result = CliRunner().invoke(cli, ["demo", "--months", "2", "--factions", "1", "--interval", "3600",
                                      "--profile-every", "24", "--out", str(db), "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "HTTP requests" in out and "change detection" in out
    assert "compactor at 2026-02-01: folded 1 month(s)" in out
    assert "respect of" in out and "a summary row" in out
    assert chart.exists() and chart.stat().st_size > 10_000
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM faction_summary").fetchone()[0] >= 1
        assert conn.execute("SELECT COUNT(*) FROM player_stats_summary").fetchone()[0] >= 5
        assert conn.execute("SELECT state FROM compaction_ledger").fetchall() == [("folded",), ("folded",)]
        # the demo's key never reaches the database
        assert conn.execute("SELECT COUNT(*) FROM events WHERE source_url LIKE '%key=%'").fetchone()[0] == 0
    finally:
        conn.close()
    assert b"DEMOdemoDEMOdemo" not in db.read_bytes()
