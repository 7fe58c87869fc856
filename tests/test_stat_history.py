"""stat_history: a month of simulated personal stats polls of a faction, v1 and v2 alike, stored through the real
CLI in a subprocess into real SQLite files and PostgreSQL databases.

* rows only for changed stats: the rows of a few stats equal the change points found straight in the raw
  responses (by the names Torn gives them: v1 `xantaken`, v2 `drugs.xanax`), one stat never has two rows in
  a row with one value, and the clock-like stats are not kept;
* one name per stat across API versions: v1 and v2 polls of the same numbers add no rows;
* replay rebuilds stat_history identically (ids and all), after a compaction too; the order the polls
  arrive in does not change the rows.
"""
# ruff: noqa: F811 (test functions take the fixtures imported from test_compactor by name)
from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest

from tornstore.eventstore.simulator import World
from tornstore.eventstore.simulator.workload import BASE, PollPlan, answer, poll_rounds

from tornstore.eventstore.db import close_sync, connect_sync

from .crashkit import cli
from .test_compactor import backend, db_stores, module_stores, stores  # noqa: F401 (fixtures)

DAY = 86400
SEED = 21
START = 1767225600          # 2026-01-01 00:00 UTC: the simulated world's clock at the start
DAYS = 33                   # January and the first days of February
# Stats checked against the raw responses: name kept -> where each API version puts it
CHECKED = {"xantaken": ("xantaken", ("drugs", "xanax")), "refills": ("refills", ("other", "refills", "energy")),
           "attackswon": ("attackswon", ("attacking", "attacks", "won")),
           "respectforfaction": ("respectforfaction", ("attacking", "faction", "respect"))}


@functools.lru_cache(maxsize=1)
def month_of_polls(days: int = DAYS) -> tuple[int, list[dict]]:
    """One faction polled hourly (basic and members), its members' personal stats every two hours by v2
    (cat=all) and, every sixth hour, also by v1 at the same second (the same numbers under v1 names).
    Made once per test process (test_leaderboard uses it too); callers do not change the lines."""
    world = World(seed=SEED, factions=1, territories=10)
    fid = sorted(world.factions)[0]
    plan = PollPlan(factions=(fid,), interval=3600, api="v2", member_profiles_every=0, wars_every=0,
                    personalstats_every=2)
    lines: list[dict] = []
    for number, responses in enumerate(poll_rounds(world, plan, world.now, world.now + days * DAY)):
        for r in responses:
            lines.append({"url": r.url, "observed_at": r.observed_at, "body": r.body})
        if number % 6 == 0:   # (at the same second as a v2 poll: the same numbers)
            t = responses[0].observed_at
            for pid in sorted(world.factions[fid].members):
                url = f"{BASE}/user/{pid}?selections=personalstats"
                lines.append({"url": url, "observed_at": t, "body": answer(world, url)})
    return fid, lines


def write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def ingest(db: Path | str, capture: Path, *more: str) -> None:
    done = cli(db, "ingest", *more, str(capture))
    assert done.returncode == 0, done.stderr


def rows(db: Path | str, cols: str = "*") -> list[tuple]:
    conn = connect_sync(db)
    try:
        return conn.execute(f"SELECT {cols} FROM stat_history ORDER BY id").fetchall()
    finally:
        close_sync(conn)


def stats_kept(db: Path | str) -> set[str]:
    conn = connect_sync(db)
    try:
        return {r[0] for r in conn.execute("SELECT DISTINCT stat FROM stat_history")}
    finally:
        close_sync(conn)


def raw_values(lines: list[dict]) -> dict[tuple[int, str], list[tuple[int, int]]]:
    """(player, stat) -> [(observed_at, value)] straight from the responses, in time order (v1 before v2
    within one second, as they were appended)."""
    out: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for line in sorted(lines, key=lambda line: line["observed_at"]):
        url, body, t = line["url"], line["body"], line["observed_at"]
        if "personalstats" not in url or "error" in body:
            continue
        pid = int(url.split("/user/")[1].split("?")[0].split("/")[0])
        for name, (v1, path) in CHECKED.items():
            if "/v2/" in url:
                node = body["personalstats"]
                for part in path:
                    node = node.get(part, {}) if isinstance(node, dict) else {}
                value = node if isinstance(node, int) else None
            else:
                value = body["personalstats"].get(v1)
            if value is not None:
                out.setdefault((pid, name), []).append((t, value))
    return out


def change_points(values: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The first value and every change; several values at one second: the last one stands."""
    points: list[tuple[int, int]] = []
    for t, value in values:
        if points and points[-1][0] == t:
            points[-1] = (t, value)
            if len(points) > 1 and points[-2][1] == value:
                points.pop()
        elif not points or points[-1][1] != value:
            points.append((t, value))
    return points


@pytest.fixture(scope="module")
def polls() -> tuple[int, list[dict]]:
    return month_of_polls()


@pytest.fixture(scope="module")
def month_db(module_stores, tmp_path_factory, polls) -> Path | str:
    base = tmp_path_factory.mktemp("month")
    db = module_stores.new(base / "torn.db")
    ingest(db, write(base / "month.ndjson", polls[1]), "--init")
    return db


def test_rows_only_for_changed_stats(month_db, polls, stores):
    _, lines = polls
    conn = connect_sync(month_db)
    try:
        members = {pid for (pid, _) in raw_values(lines)}
        assert len(members) >= 8
        for (pid, stat), values in raw_values(lines).items():
            kept = conn.execute("SELECT recorded_at, value FROM stat_history WHERE entity_type = 'player' "
                                "AND entity_id = ? AND stat = ? ORDER BY recorded_at", (pid, stat)).fetchall()
            assert kept == change_points(values), (pid, stat)
        # Across every stat: never two rows in a row with the same value.
        repeats = conn.execute(
            "SELECT COUNT(*) FROM (SELECT value, LAG(value) OVER (PARTITION BY entity_type, entity_id, stat "
            "ORDER BY recorded_at, id) AS before FROM stat_history) AS r WHERE value = before").fetchone()[0]
        assert repeats == 0
        stats = {r[0] for r in conn.execute("SELECT DISTINCT stat FROM stat_history")}
        assert {"xantaken", "refills", "attackswon", "networth", "defendstotal", "lontravel"} <= stats
        assert not stats & {"useractivity", "activestreak", "bestactivestreak"}   # clock-like: not kept
        assert not any("." in s for s in stats)   # every v2 leaf has its name
        # Most polls change only a few stats: far fewer rows than stats x polls.
        polls_of_members = sum(1 for line in lines if "personalstats" in line["url"])
        assert conn.execute("SELECT COUNT(*) FROM stat_history").fetchone()[0] < polls_of_members * len(stats) / 20
        assert conn.execute("SELECT COUNT(*) FROM projection_errors").fetchone()[0] == 0
    finally:
        close_sync(conn)


def test_one_name_per_stat_whatever_the_api_version(db_path, db_stores, tmp_path, polls):
    """The v1 polls repeat the v2 numbers under v1 names: without them the rows are the same (ten days)."""
    lines = [line for line in polls[1] if line["observed_at"] < START + 10 * DAY]
    v2_only = [line for line in lines if not ("personalstats" in line["url"] and "/v2/" not in line["url"])]
    db = db_path
    ingest(db, write(tmp_path / "v2.ndjson", v2_only), "--init")
    full = db_stores.new(tmp_path / "full.db")
    ingest(full, write(tmp_path / "full.ndjson", lines), "--init")
    cols = "entity_type, entity_id, stat, recorded_at, value"
    v1_names = {"xantaken", "refills", "attackswon", "respectforfaction", "traveltimes", "revives"}
    pick = [r for r in rows(full, cols) if r[2] in v1_names]
    assert pick == [r for r in rows(db, cols) if r[2] in v1_names] and pick


def test_replay_rebuilds_stat_history_identically(tmp_path, month_db, stores):
    db = stores.copy(month_db, tmp_path / "copy.db")
    before = rows(db)
    done = cli(db, "replay")
    assert done.returncode == 0, done.stderr
    assert rows(db) == before and before
    verified = cli(db, "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


def test_shuffled_arrival_gives_the_same_rows(db_path, db_stores, tmp_path, polls):
    _, lines = polls
    personal = [line for line in lines if "personalstats" in line["url"]][:1500]
    in_order = db_stores.new(tmp_path / "in_order.db")
    ingest(in_order, write(tmp_path / "a.ndjson", personal), "--init")
    shuffled = personal[:]
    random.Random(5).shuffle(shuffled)
    db = db_path
    cli(db, "init")
    for i, part in enumerate((shuffled[:500], shuffled[500:1000], shuffled[1000:])):
        ingest(db, write(tmp_path / f"part{i}.ndjson", part))
    cols = "entity_type, entity_id, stat, recorded_at, value"
    assert sorted(rows(db, cols)) == sorted(rows(in_order, cols))
    # and replay of the shuffled log gives its rows again, ids and event positions included
    before = rows(db)
    assert cli(db, "replay").returncode == 0
    assert rows(db) == before


def test_replay_after_compaction_rebuilds_what_was_kept(db_path, tmp_path, polls):
    """Two months folded and the first pruned: replay = the state kept at the horizon + the retained log.
    (Eight days of each: January's first week, and its polls again at the start of February.)"""
    _, lines = polls
    january = [line for line in lines if line["observed_at"] < START + 8 * DAY]
    world_lines = january + [dict(line, observed_at=line["observed_at"] + 31 * DAY) for line in january]
    db = db_path
    ingest(db, write(tmp_path / "two.ndjson", world_lines), "--init")
    march = START + (31 + 28) * DAY   # 2026-03-01: January and February closed, January pruned
    done = cli(db, "compact", "--now", str(march), "--retention-months", "1", "--no-backup")
    assert done.returncode == 0, done.stderr
    conn = connect_sync(db)
    try:   # January pruned, its last values kept at the horizon; February's rows remain
        assert conn.execute("SELECT MIN(recorded_at) FROM stat_history").fetchone()[0] >= START + 31 * DAY
        assert conn.execute("SELECT COUNT(*) FROM stat_history_at_horizon").fetchone()[0] > 100
    finally:
        close_sync(conn)
    before = rows(db)
    assert cli(db, "replay").returncode == 0
    assert rows(db) == before
    verified = cli(db, "verify", "--json")
    assert json.loads(verified.stdout)["ok"] is True, verified.stdout


def test_the_tracked_stats_are_configurable(db_path, db_stores, tmp_path, polls):
    """Store.open(stats=...) in a library user's process; the same through the environment for the CLI."""
    import asyncio

    from tornstore.eventstore.records import Response
    from tornstore.projections.handlers import stat_history
    from tornstore.projections.store import Store

    _, lines = polls
    personal = [line for line in lines if "personalstats" in line["url"]][:200]

    async def run() -> None:
        async with Store.open(db_path, create=True, stats={"include": ["xantaken", "refills"]}) as s:
            await s.ingest_many([Response(url=line["url"], observed_at=line["observed_at"], body=line["body"])
                                 for line in personal])
    try:
        asyncio.run(run())
    finally:
        stat_history.configure()
    assert stats_kept(db_path) == {"xantaken", "refills"}

    import os
    import subprocess
    import sys
    env = dict(os.environ, TORNSTORE_STATS_EXCLUDE="")   # nothing excluded: the clock-like stats are kept too
    capture = write(tmp_path / "p.ndjson", personal)
    env_db = db_stores.new(tmp_path / "env.db")
    done = subprocess.run([sys.executable, "-m", "tornstore", "--db", str(env_db), "ingest", "--init",
                           str(capture)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "useractivity" in stats_kept(env_db)
    with pytest.raises(ValueError, match="unknown key"):
        Store.open(tmp_path / "x.db", stats={"inclde": ["xantaken"]})


def test_faction_stats_stat_form_and_battle_stats(db_path, tmp_path):
    """The other sources: v1 faction `stats`, v2 `faction/stats` (the key owner's faction), the v2 `stat=` list (a v2 spelling kept by its v1 name, an item
    stamped long before the poll left out), and the battle stats selections."""
    t0 = START + 3600
    faction = "https://api.torn.com/faction/9420?selections=stats"
    stat_list = "https://api.torn.com/v2/user/7/personalstats?stat=xantaken,uktravel,networth"
    battle = "https://api.torn.com/v2/user/7/battlestats"
    stats = {"gymtrains": 100, "drugsused": 5, "attackswon": 40}

    def listed(t: int, xan: int, uk: int) -> dict:
        return {"personalstats": [{"name": "xantaken", "value": xan, "timestamp": t},
                                  {"name": "uktravel", "value": uk, "timestamp": t},
                                  {"name": "networth", "value": 999, "timestamp": t - 30 * DAY}]}

    def strength(value: int) -> dict:
        return {"battlestats": {name: {"value": value if name == "strength" else 10, "modifier": 0,
                                       "modifiers": []} for name in ("strength", "defense", "speed", "dexterity")}
                | {"total": value + 30}}

    v2_faction = "https://api.torn.com/v2/faction/stats"   # the key owner's faction (the spec's only form)
    v2_stats = [{"name": "gymtrains", "value": 7}, {"name": "hosps", "value": 2}]
    lines = [
        {"url": faction, "observed_at": t0, "body": {"stats": stats}},
        {"url": faction, "observed_at": t0 + 3600, "body": {"stats": dict(stats, gymtrains=130)}},
        {"url": v2_faction, "observed_at": t0, "body": {"stats": v2_stats}, "owner": {"faction_id": 9421}},
        {"url": v2_faction, "observed_at": t0 + 3600, "body": {"stats": v2_stats}, "owner": {"faction_id": 9421}},
        {"url": stat_list, "observed_at": t0, "body": listed(t0, 10, 3)},
        {"url": stat_list, "observed_at": t0 + 3600, "body": listed(t0 + 3600, 12, 3)},
        {"url": battle, "observed_at": t0, "body": strength(1000)},
        {"url": battle, "observed_at": t0 + 3600, "body": strength(1000)},
        {"url": battle, "observed_at": t0 + 7200, "body": strength(1100)},
    ]
    db = db_path
    ingest(db, write(tmp_path / "c.ndjson", lines), "--init")
    got = {(r[0], r[1], r[2]): [] for r in rows(db, "entity_type, entity_id, stat")}
    for etype, eid, stat, t, value in rows(db, "entity_type, entity_id, stat, recorded_at, value"):
        got[(etype, eid, stat)].append((t - t0, value))
    assert got == {
        ("faction", 9420, "gymtrains"): [(0, 100), (3600, 130)],
        ("faction", 9420, "drugsused"): [(0, 5)],
        ("faction", 9420, "attackswon"): [(0, 40)],
        ("faction", 9421, "gymtrains"): [(0, 7)], ("faction", 9421, "hosps"): [(0, 2)],
        ("player", 7, "xantaken"): [(0, 10), (3600, 12)],
        ("player", 7, "lontravel"): [(0, 3)],
        ("player", 7, "strength"): [(0, 1000), (7200, 1100)],
        ("player", 7, "defense"): [(0, 10)], ("player", 7, "speed"): [(0, 10)],
        ("player", 7, "dexterity"): [(0, 10)], ("player", 7, "totalstats"): [(0, 1030), (7200, 1130)],
    }
    shown = cli(db, "stats", "faction", "9420")
    assert shown.returncode == 0 and "gymtrains" in shown.stdout and "130" in shown.stdout
    series = json.loads(cli(db, "history", "faction", "9420", "--stat", "gymtrains", "--json").stdout)
    assert [p["value"] for p in series["points"]] == [100, 130]
    typo = cli(db, "history", "faction", "9420", "--stat", "gym_trains")
    assert typo.returncode == 1 and "did you mean gymtrains" in typo.stderr
