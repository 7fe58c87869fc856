"""`tornstore leaderboard`: a month of simulated polls of a faction (members joining and leaving, personal
stats every two hours), stored through the real CLI; the leaderboard the CLI prints equals one computed here
straight from the raw responses, for a month and for a since/until range, before and after the compactor
folds and prunes the month (summaries and history joined without counting a month twice). On a SQLite file
and on a PostgreSQL database, against the same snapshots."""
# ruff: noqa: F811 (test functions take the fixtures imported from test_compactor by name)
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tornstore.eventstore.db import close_sync, connect_sync

from .crashkit import cli
from .test_compactor import backend, module_stores, stores  # noqa: F401 (fixtures)
from .test_stat_history import START, month_of_polls, write

JANUARY_END = START + 31 * 86400 - 1


def expected_board(lines: list[dict], fid: int, since: int, until: int) -> list[dict]:
    """The leaderboard of `xantaken` over [since, until], from the raw JSON: members from the faction's member
    lists (the one before `since` and those in the period), values from v2 `drugs.xanax` and v1 `xantaken`."""
    lists: list[tuple[int, set[int]]] = []
    values: dict[int, list[tuple[int, int]]] = {}
    for line in sorted(lines, key=lambda line: line["observed_at"]):
        url, body, t = line["url"], line["body"], line["observed_at"]
        if url.endswith(f"/v2/faction/{fid}/members"):
            lists.append((t, {m["id"] for m in body["members"]}))
        elif "personalstats" in url:
            pid = int(url.split("/user/")[1].split("?")[0].split("/")[0])
            ps = body["personalstats"]
            value = ps["drugs"]["xanax"] if "/v2/" in url else ps["xantaken"]
            values.setdefault(pid, []).append((t, value))
    before = [ids for t, ids in lists if t < since][-1:]
    during = [(t, ids) for t, ids in lists if since <= t <= until]
    members = set().union(*before, *(ids for _, ids in during))
    joined: dict[int, int] = {}
    left: dict[int, int] = {}
    previous = before[0] if before else None
    for t, ids in during:
        if previous is not None:
            for pid in ids - previous:
                joined.setdefault(pid, t)
                left.pop(pid, None)
            for pid in previous - ids:
                left[pid] = t
        previous = ids
    board = []
    for pid in members:
        seen = values.get(pid, [])
        earlier = [v for t, v in seen if t < since]
        inside = [v for t, v in seen if since <= t <= until]
        upto = [v for t, v in seen if t <= until]
        start = earlier[-1] if earlier else (inside[0] if inside else None)
        end = upto[-1] if upto else None
        change = end - start if end is not None and start is not None else None
        board.append({"player_id": pid, "start": start, "end": end, "change": change,
                      "joined": joined.get(pid), "left": left.get(pid)})
    board.sort(key=lambda r: (r["change"] is None, -(r["change"] or 0), r["player_id"]))
    return board


def printed(db: Path | str, *args: str) -> dict:
    done = cli(db, "leaderboard", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rows_of(board: dict) -> list[dict]:
    return [{k: r[k] for k in ("player_id", "start", "end", "change", "joined", "left")} for r in board["rows"]]


@pytest.fixture(scope="module")
def world(module_stores, tmp_path_factory) -> tuple[Path | str, int, list[dict]]:
    fid, lines = month_of_polls()
    base = tmp_path_factory.mktemp("board")
    db = module_stores.new(base / "torn.db")
    done = cli(db, "ingest", "--init", str(write(base / "month.ndjson", lines)))
    assert done.returncode == 0, done.stderr
    return db, fid, lines


def test_a_month_equals_the_raw_polls(world):
    db, fid, lines = world
    board = printed(db, str(fid), "--stat", "xantaken", "--month", "2026-01")
    expected = expected_board(lines, fid, START, JANUARY_END)
    assert rows_of(board) == expected
    assert board["members_source"] == "member_lists" and board["since"] == START and board["until"] == JANUARY_END
    assert [r["rank"] for r in board["rows"]] == list(range(1, len(expected) + 1))
    # the month really has a story: members joined or left, and Xanax was taken
    assert any(r["joined"] or r["left"] for r in expected) and sum(r["change"] or 0 for r in expected) > 30
    assert all(0 <= (r["change"] or 0) <= 31 * 3 for r in expected)   # at most three a day


def test_since_until_equals_the_raw_polls(world):
    db, fid, lines = world
    since, until = START + 9 * 86400, START + 19 * 86400 - 1   # January 10 to the end of the 19th
    board = printed(db, str(fid), "--stat", "drugs.xanax", "--since", "2026-01-10", "--until", "2026-01-19")
    assert board["stat"] == "xantaken"   # a v2 spelling is taken, and answered by its name
    assert rows_of(board) == expected_board(lines, fid, since, until)


def test_table_csv_and_errors(world):
    db, fid, lines = world
    table = cli(db, "leaderboard", str(fid), "--stat", "xantaken", "--month", "2026-01")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("xantaken leaderboard of ") and "2026-01" in table.stdout.splitlines()[0]
    out = cli(db, "leaderboard", str(fid), "--stat", "xantaken", "--month", "2026-01", "--csv")
    got = list(csv.reader(io.StringIO(out.stdout)))
    assert got[0] == ["rank", "player_id", "name", "start", "end", "change", "joined", "left"]
    assert [int(r[1]) for r in got[1:]] == [r["player_id"] for r in expected_board(lines, fid, START, JANUARY_END)]
    typo = cli(db, "leaderboard", str(fid), "--stat", "xantakn", "--month", "2026-01")
    assert typo.returncode == 1 and typo.stderr.strip() == (
        "Error: unknown player stat 'xantakn': did you mean xantaken, cantaken, exttaken?")
    month = cli(db, "leaderboard", str(fid), "--stat", "xantaken", "--month", "2026-13")
    assert month.returncode == 1 and "is not a month" in month.stderr


def test_json_snapshot(world, snapshot):
    db, fid, _ = world
    board = printed(db, str(fid), "--stat", "refills", "--month", "2026-01", "--limit", "3")
    assert board == snapshot


def test_stats_and_history_of_any_stat(world, snapshot):
    db, fid, lines = world
    pid = expected_board(lines, fid, START, JANUARY_END)[0]["player_id"]
    done = cli(db, "stats", "player", str(pid), "--json")
    assert done.returncode == 0, done.stderr
    stats = {s["stat"]: s for s in json.loads(done.stdout)["stats"]}
    assert {"xantaken", "refills", "attackswon", "networth"} <= set(stats) and len(stats) > 150
    series = cli(db, "history", "player", str(pid), "--stat", "xantaken", "--json")
    points = json.loads(series.stdout)["points"]
    assert points[-1]["value"] == stats["xantaken"]["value"] and all(p["source"] == "history" for p in points)
    assert [p["value"] for p in points] == sorted(p["value"] for p in points)


def test_a_pruned_month_reads_the_same_from_its_summaries(world, tmp_path, stores):
    """January folded and pruned: its leaderboard comes from stat_summary and equals the one from history.
    (Its member lists are pruned too: members are those the store still knows of; their changes match.)"""
    db, fid, _ = world
    before = {r["player_id"]: r for r in rows_of(printed(db, str(fid), "--stat", "xantaken", "--month", "2026-01"))}
    copy = stores.copy(db, tmp_path / "pruned.db")
    done = cli(copy, "compact", "--now", "2026-03-01T00:00:00Z", "--retention-months", "0", "--no-backup")
    assert done.returncode == 0, done.stderr
    conn = connect_sync(copy)
    try:
        assert conn.execute("SELECT COUNT(*) FROM stat_history WHERE recorded_at <= ?",
                            (JANUARY_END,)).fetchone()[0] == 0   # January's detail is gone
        assert conn.execute("SELECT COUNT(*) FROM stat_summary WHERE stat = 'xantaken' AND period_start = ?",
                            (START,)).fetchone()[0] >= len(before) - 2
    finally:
        close_sync(conn)
    after = rows_of(printed(copy, str(fid), "--stat", "xantaken", "--month", "2026-01"))
    compared = [r for r in after if r["change"] is not None]
    assert compared
    for row in compared:
        assert (row["start"], row["end"], row["change"]) == tuple(before[row["player_id"]][k]
                                                                  for k in ("start", "end", "change"))
