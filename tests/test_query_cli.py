"""The query commands through click's runner (and once as a real process): tables for people, --json
for programs (snapshot-tested), one-line errors with exit code 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.cli.main import cli

from .test_queries import T2, T5, build_world

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def world_db(db_path: Path) -> str:
    build_world(db_path)
    return str(db_path)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"Error: {text}"], result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


# ------------------------------------------------------------------------------------------------ --json
@pytest.mark.parametrize("args", [
    ("player", "1"),
    ("faction", "9420"),
    ("war", "77"),
    ("territory", "AAC"),
    ("history", "player", "1", "--stat", "strength"),
    ("history", "faction", "9420", "--stat", "respect", "--since", "2025-10-01", "--until", "2025-10-31"),
    ("changes", "--after", "0", "--limit", "3"),
], ids=["player", "faction", "war", "territory", "history-player", "history-faction-range", "changes"])
def test_json_output(world_db, snapshot, args):
    result = run("--db", world_db, *args, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == snapshot


# ------------------------------------------------------------------------------------------------ for people
def test_player_record(world_db):
    result = run("--db", world_db, "player", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["player", "Alice", "[1]"]
    assert any(line.split() == ["faction", "Alpha", "[9420]"] for line in lines)
    assert any(line.split() == ["strength", "350"] for line in lines)
    assert any(line.startswith("freshness") and "unchanged since" in line for line in lines)


def test_faction_record_and_member_table(world_db):
    result = run("--db", world_db, "faction", "9420")
    assert result.exit_code == 0, result.output
    assert "respect       1,050,000" in result.stdout
    assert "members       3 (listed: 3, from member_list)" in result.stdout
    table = result.stdout.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["id", "name", "level", "status", "last", "action"]
    assert [row.split()[:2] for row in table[2:]] == [["3", "Carol"], ["1", "Alice"], ["4", "-"]]


def test_war_and_territory_records(world_db):
    war = run("--db", world_db, "war", "77")
    assert war.exit_code == 0 and "5,000 - 3,100 (target 5,000)" in war.stdout
    assert "winner    Alpha [9420]" in war.stdout
    territory = run("--db", world_db, "territory", "aac")
    assert territory.exit_code == 0 and "owner          Alpha [9420]" in territory.stdout
    assert "ongoing war    812" in territory.stdout


def test_history_table_marks_summary_and_history_points(world_db):
    result = run("--db", world_db, "history", "player", "1", "--stat", "strength", "--since", str(T2 - 1))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "strength of player Alice [1]: 2 point(s)"
    rows = [line.split() for line in result.stdout.splitlines()[3:]]
    assert rows == [["2025-10-20", "00:00:00Z", "300", "history"], ["2025-11-12", "00:00:00Z", "350", "history"]]
    everything = run("--db", world_db, "history", "player", "1", "--stat", "strength")
    assert [line.split()[-1] for line in everything.stdout.splitlines()[3:]] == ["summary"] * 2 + ["history"] * 3


def test_history_with_an_empty_range_says_so(world_db):
    result = run("--db", world_db, "history", "faction", "9420", "--stat", "best_chain", "--since", "2030-01-01")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no best_chain data for faction Alpha [9420] in that time range"


def test_changes_lists_texts_and_the_next_position(world_db):
    result = run("--db", world_db, "changes", "--after", "0")
    assert result.exit_code == 0, result.output
    assert "Bob [2] left Alpha [9420]" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("next: --after ")


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("args, message", [
    (("player", "999"), "no player 999 in the database"),
    (("faction", "999"), "no faction 999 in the database"),
    (("war", "999"), "no war 999 in the database"),
    (("war", "77", "--type", "territory"), "no territory war 77 in the database"),
    (("territory", "zzz"), "no territory ZZZ in the database"),
    (("history", "player", "999", "--stat", "strength"), "no player 999 in the database"),
    (("history", "player", "1", "--stat", "respect"),
     "unknown player stat 'respect': use one of strength, defense, speed, dexterity, total_stats, level, "
     "life_maximum, networth"),
    (("history", "faction", "9420", "--stat", "respect", "--since", "last week"),
     "--since: 'last week' is not a date: use YYYY-MM-DD, ISO 8601 (2026-01-05T12:00:00Z) or Unix seconds"),
    (("player", "1", "--json"), None),
])
def test_errors_are_one_line_with_exit_code_1(world_db, args, message):
    result = run("--db", world_db, *args)
    if message is None:
        assert result.exit_code == 0
        return
    assert_one_line_error(result, message)


def test_missing_database_is_one_line(tmp_path):
    missing = tmp_path / "nope.db"
    result = run("--db", str(missing), "player", "1")
    assert_one_line_error(result, f"no database at {missing}: create it with `tornstore --db {missing} init`")
    assert not missing.exists()


def test_help_texts_have_examples():
    for command in (["player"], ["faction"], ["war"], ["territory"], ["history"], ["changes"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout and "tornstore --db torn.db" in result.stdout


# ------------------------------------------------------------------------------------------------ real process
def test_real_process_player_json(world_db):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TORNSTORE_DB", None)
    proc = subprocess.run([sys.executable, "-m", "tornstore", "--db", world_db, "player", "1", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["name"] == "Alice" and data["stats"]["strength"] == 350 and data["freshness"]["last_checked"] == T5
    assert data == json.loads(run("--db", world_db, "player", "1", "--json").stdout)


def test_a_file_that_is_not_a_database_is_one_line(tmp_path):
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database\n" * 100)
    result = run("--db", str(garbage), "faction", "9420")
    assert_one_line_error(result, "database error: file is not a database")
