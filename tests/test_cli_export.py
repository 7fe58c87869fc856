"""CSV for spreadsheets: `history ... --csv` and `export history|wars|summaries --csv`. The files are read back
with csv.DictReader and checked row by row against the database they came from."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from tornstore.eventstore.db import connect_sync
from click.testing import CliRunner

from tornstore.cli.main import cli

from .test_queries import T2, build_world

HISTORY = ("player_stats_history", "faction_history", "territory_ownership_history")
SUMMARIES = ("player_stats_summary", "faction_summary", "war_summary", "territory_ownership_summary")
TIMES = ("timestamp", "recorded_at", "started_at", "ends_at", "period_start", "period_end", "created_at")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), env={"TORNSTORE_DB": None})


def iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def db_rows(db: Path, table: str) -> list[dict[str, str]]:
    """The table as CSV cells: every column but id, as text ('' for NULL)."""
    conn = connect_sync(db)
    try:
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        return [{n: "" if v is None else str(v) for n, v in zip(names, row, strict=True) if n != "id"}
                for row in cursor]
    finally:
        conn.close()


def read_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return list(reader.fieldnames or []), list(reader)


def check_times(row: dict[str, str]) -> dict[str, str]:
    """Every time column has its readable UTC twin; returns the row without the twins."""
    for name in TIMES:
        if name in row:
            assert row.pop(f"{name}_utc") == (iso(int(row[name])) if row[name] else ""), (name, row)
    return row


def own_cells(row: dict[str, str], columns) -> dict[str, str]:
    """A row of a several-table export cut to one table's columns (and their _utc twins); every other cell
    (the other tables' columns) must be empty."""
    mine = {k: v for k, v in row.items() if k in columns or (k.endswith("_utc") and k[:-4] in columns)}
    assert not any(v for k, v in row.items() if k not in mine and k != "table"), row
    return mine


def key(row: dict[str, str]) -> tuple:
    return tuple(sorted(row.items()))


@pytest.fixture
def world_db(db_path: Path) -> Path:
    build_world(db_path)
    return db_path


# ------------------------------------------------------------------------------------------------ export
def test_export_history_holds_every_history_row(world_db, tmp_path):
    out = tmp_path / "history.csv"
    result = run("--db", str(world_db), "export", "history", "--csv", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    header, rows = read_csv(out.read_text())
    assert header[0] == "table" and len(header) == len(set(header))
    summary = json.loads(result.stdout)
    assert summary["columns"] == header and summary["output"] == str(out)
    for table in HISTORY:
        mine = [row for row in rows if row["table"] == table]
        assert summary["tables"][table] == len(mine) > 0
        expected = db_rows(world_db, table)
        got = [check_times(own_cells(row, expected[0])) for row in mine]
        assert sorted(map(key, got)) == sorted(map(key, expected))
    assert summary["rows"] == len(rows)
    # Rows come out by entity, then time.
    stats = [(int(r["player_id"]), int(r["timestamp"])) for r in rows if r["table"] == "player_stats_history"]
    assert stats == sorted(stats)


def test_export_one_history_table_to_stdout(world_db):
    result = run("--db", str(world_db), "export", "history", "--table", "faction_history", "--csv")
    assert result.exit_code == 0, result.output
    header, rows = read_csv(result.stdout)
    assert header == ["faction_id", "timestamp", "timestamp_utc", "respect", "member_count", "best_chain",
                      "event_position"]
    assert [check_times(row) for row in rows] == db_rows(world_db, "faction_history")  # in time order
    assert result.stderr == ""


def test_export_wars(world_db, snapshot):
    result = run("export", "wars", "--db", str(world_db), "--csv")
    assert result.exit_code == 0, result.output
    header, rows = read_csv(result.stdout)
    assert "table" not in header
    assert sorted(key(check_times(row)) for row in rows) == sorted(map(key, db_rows(world_db, "war_status_history")))
    assert result.stdout == snapshot  # five war snapshots: what a spreadsheet gets


def test_export_summaries(world_db, tmp_path):
    out = tmp_path / "summaries.csv"
    result = run("--db", str(world_db), "export", "summaries", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr.startswith("wrote 7 rows to ")
    _, rows = read_csv(out.read_text())
    for table in SUMMARIES:
        expected = db_rows(world_db, table)
        got = [check_times(own_cells(row, expected[0])) for row in rows if row["table"] == table]
        assert sorted(map(key, got)) == sorted(map(key, expected)), table
    one = run("--db", str(world_db), "export", "summaries", "--table", "war_summary")
    header, rows = read_csv(one.stdout)
    assert header[:4] == ["war_id", "war_type", "territory_id", "period_start"]
    assert rows[0]["period_start_utc"] == "2025-08-01T00:00:00Z" and rows[0]["period_end_utc"] == "2025-08-31T23:59:59Z"


def test_export_of_an_empty_table_is_its_header(tmp_path):
    db = tmp_path / "empty.db"
    assert run("--db", str(db), "init").exit_code == 0
    result = run("--db", str(db), "export", "wars")
    assert result.exit_code == 0 and result.stdout.count("\n") == 1 and result.stdout.startswith("war_id,")


@pytest.mark.parametrize("args, code, message", [
    (("export", "history", "--json"), 2, "Error: --json needs -o FILE: without it stdout carries the CSV"),
    (("export", "history", "--table", "war_status_history"), 2, "Invalid value for '--table'"),
    (("export", "wars", "-o", "{tmp}/no/such/dir/wars.csv"), 1,
     "Error: cannot write {tmp}/no/such/dir/wars.csv: No such file or directory"),
])
def test_export_mistakes(world_db, tmp_path, args, code, message):
    result = run("--db", str(world_db), *(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == code, result.output
    assert message.format(tmp=tmp_path) in result.stderr and result.stdout == ""
    if code == 1:
        assert result.stderr.count("\n") == 1


def test_export_refuses_a_missing_database(tmp_path):
    missing = tmp_path / "nope.db"
    result = run("--db", str(missing), "export", "summaries")
    assert result.exit_code == 1
    assert result.stderr == f"Error: no database at {missing}: create it with `tornstore --db {missing} init`\n"
    assert not missing.exists()


# ------------------------------------------------------------------------------------------------ history --csv
def test_history_csv_is_the_series(world_db):
    result = run("--db", str(world_db), "history", "player", "1", "--stat", "strength", "--csv")
    assert result.exit_code == 0, result.output
    header, rows = read_csv(result.stdout)
    assert header == ["at", "at_utc", "strength", "source"]
    series = json.loads(run("--db", str(world_db), "history", "player", "1", "--stat", "strength", "--json").stdout)
    assert [(int(r["at"]), r["at_utc"], int(r["strength"]), r["source"]) for r in rows] == [
        (p["at"], iso(p["at"]), p["value"], p["source"]) for p in series["points"]]
    assert [r["source"] for r in rows] == ["summary"] * 2 + ["history"] * 3


def test_history_csv_matches_the_history_table(world_db):
    result = run("--db", str(world_db), "history", "faction", "9420", "--stat", "respect", "--since", str(T2),
                 "--csv")
    _, rows = read_csv(result.stdout)
    table = [r for r in db_rows(world_db, "faction_history") if int(r["timestamp"]) >= T2]
    assert [(r["at"], r["respect"]) for r in rows] == [(r["timestamp"], r["respect"]) for r in table]


def test_history_csv_of_an_empty_range_is_its_header(world_db):
    result = run("--db", str(world_db), "history", "faction", "9420", "--stat", "respect", "--since", "2030-01-01",
                 "--csv")
    assert result.exit_code == 0 and result.stdout == "at,at_utc,respect,source\n"


def test_history_json_and_csv_together_is_a_usage_error(world_db):
    result = run("--db", str(world_db), "history", "player", "1", "--stat", "level", "--json", "--csv")
    assert result.exit_code == 2 and "Error: --json and --csv: choose one" in result.stderr
