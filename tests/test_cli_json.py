"""--json on the commands that did not have it: plot and demo (init, migrate, replay and export-events are in
test_cli_log.py, collect in test_cli_collect.py). One JSON document on stdout, checked against the files."""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.cli.main import cli
from tornstore.projections import charts

from .test_queries import T5, build_world, month_end


def run(*args: str):
    return CliRunner().invoke(cli, list(args), env={"TORNSTORE_DB": None})


def test_plot_json_describes_the_chart(db_path, tmp_path):
    pytest.importorskip("matplotlib")
    build_world(db_path)
    out = tmp_path / "strength.png"
    result = run("plot", "player", "1", "--stat", "strength", "-o", str(out), "--db", str(db_path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "output": str(out), "kind": "player", "id": 1, "name": "Alice", "stat": "strength",
        # Aug and Sep from summaries; Oct's summary is left out for its kept history (T1, T2), then T5.
        "points": 5, "summary_points": 2, "first_at": month_end(2025, 8), "last_at": T5,
    }
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_still_one_line_with_json(db_path, tmp_path, monkeypatch):
    build_world(db_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run("--db", str(db_path), "plot", "faction", "9420", "--stat", "respect", "-o",
                 str(tmp_path / "x.png"), "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"Error: {charts.INSTALL_HINT}\n"


def test_demo_json_matches_the_database_it_wrote(tmp_path):
    db, chart = tmp_path / "demo.db", tmp_path / "demo.png"
    real = tmp_path / "real.db"       # the group's --db (or TORNSTORE_DB) names a real store: never the demo's
    result = run("--db", str(real), "demo", "--months", "1", "--factions", "1", "--interval", "3600",
                 "--profile-every", "24", "--out", str(db), "--chart", str(chart), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the banner, the progress bar and the note went to stderr
    assert "simulating 1 month(s)" in result.stderr
    assert f"note: the demo writes {db}, not {real}" in result.stderr and not real.exists()
    conn = sqlite3.connect(db)
    try:
        for table, rows in data["tables"].items():
            assert rows == conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0], table
    finally:
        conn.close()
    assert data["database"] == str(db) and data["appended"] == data["tables"]["events"] > 0
    assert data["requests"] >= data["responses"] > 0 and len(data["faction_ids"]) == 1
    assert [c["months_folded"] for c in data["compactions"]] == [1]
    if data["chart"] is not None:
        assert Path(data["chart"]) == chart and chart.stat().st_size > 10_000 and data["chart_error"] is None
    else:
        assert data["chart_error"] == charts.INSTALL_HINT
