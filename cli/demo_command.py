"""`tornstore demo`: the whole system on a simulated Torn, no API key needed.

It starts the simulator on loopback, points the real collector at it, and lets simulated time run
through months of 4-minute polls; at each UTC month boundary the compactor folds the closed month and
prunes old detail. Then it prints what happened, a leaderboard of the members' Xanax taken in the last
closed month (their personal stats are polled with their profiles), and draws a chart.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import click

from tornstore.eventstore.gctuning import fewer_collections

from .common import UserError, emit_json, emit_table

DEMO_KEY = "DEMOdemoDEMOdemo"  # the simulator accepts any 16-character key


def _month_starts(start: int, months: int) -> list[int]:
    """The first second of each of the `months` UTC months after the one `start` is in."""
    day = dt.datetime.fromtimestamp(start, dt.UTC)
    first = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
    out = []
    for _ in range(months):
        first = (first + dt.timedelta(days=32)).replace(day=1)
        out.append(int(first.timestamp()))
    return out


async def _drive(sim, start: int, end: int, interval: int, profile_every: int, boundaries: list[int],
                 polls, full, writer, ingested, store, compact, compactions: list) -> int:
    """Move simulated time in poll-sized steps; one collector round per step; compact after each month."""
    rounds = 0
    next_boundary = 0
    t = start
    with click.progressbar(length=end - start, label="simulated time", file=sys.stderr, show_eta=False,
                           update_min_steps=3600) as bar:  # redrawn once a simulated hour, not every round
        while t < end:
            sim.set_clock(t)
            if rounds % profile_every:
                # Responses wait for the config's flush_every (simulated), as a long-running collector's do.
                await polls.run_once(flush=False)
            else:
                await polls.flush()  # keep the log in time order: older polls first
                await full.run_once()
            rounds += 1
            t += interval
            bar.update(interval)
            if next_boundary < len(boundaries) and sim.now >= boundaries[next_boundary]:
                await polls.flush()
                ingested.merge(await writer.drain())
                fold = functools.partial(compact, now=boundaries[next_boundary], backup=False)
                compactions.append((boundaries[next_boundary], await store.run(fold)))
                next_boundary += 1
    return rounds


async def run_demo(db: str | Path, *, months: int, factions: int, seed: int, interval: int,
                   profile_every: int) -> dict:
    from tornstore.eventstore.collector import Collector
    from tornstore.eventstore.collector.config import parse_config
    from tornstore.eventstore.simulator.process import SimulatorProcess
    from tornstore.eventstore.ingest import IngestReport
    from tornstore.projections.compactor import compact
    from tornstore.projections.ingest_process import IngestProcess
    from tornstore.projections.store import Store

    # The simulator serves from a process of its own (the second core), on a clock we move.
    sim = SimulatorProcess(seed=seed, factions=max(factions, 2), territories=400).start_process()
    faction_ids = sim.faction_ids[:factions]
    start = sim.start
    boundaries = _month_starts(start, months)
    end = boundaries[-1] + 6 * 3600  # a few hours into the next month: the last one is folded too

    def config(with_members: bool):
        """Every round polls the factions (v1 basic carries the members); now and then a fuller round
        polls each member's profile and personal stats (one request each) and the war lists too."""
        data = {
            "api_base": sim.url, "interval": f"{interval}s", "jitter": 0, "concurrency": 4,
            "batch": 2000, "flush_every": "4h",
            "keys": [{"key": DEMO_KEY, "owner": "demo", "access": "limited", "budget": 100}],
            "factions": [{"id": fid, "fetch": ["v1:basic"], "members": with_members,
                          "member_fetch": ["v1:profile", "v1:personalstats"]} for fid in faction_ids],
        }
        if with_members:
            data["wars"] = {"ranked": True, "territory": True}
        return parse_config(data, env={})

    async def advance(seconds: float) -> None:  # a wait inside the collector lets simulated time pass
        sim.set_clock(int(sim.now + max(seconds, 0)))
        await asyncio.sleep(0)

    clock = sim.clock
    compactions: list = []
    started = time.perf_counter()
    ingested = IngestReport()
    try:
        # Ingest runs in a process of its own too (a third process on two cores): the collector hands it
        # bodies undecoded and goes on polling while it stores; its reports are added up at each drain.
        async with Store.open(db, create=True) as store, IngestProcess(db) as writer:
            async def sink(batch: list) -> None:
                await writer.submit(batch)

            # Key use is saved once a simulated day (the collector's clock is the simulated one).
            collectors: dict[str, Any] = dict(clock=clock, sleep=advance, run=store.run, raw_bodies=True,
                                              usage_every=86400)
            polls = Collector(config(False), sink, **collectors)
            full = Collector(config(True), sink, **collectors)
            try:
                rounds = await _drive(sim, start, end, interval, profile_every, boundaries, polls, full,
                                      writer, ingested, store, compact, compactions)
            finally:
                await polls.close()
                await full.close()
                ingested.merge(await writer.drain())
            stats = {
                "rounds": rounds,
                "requests": polls.report.requests + full.report.requests,
                "responses": polls.report.responses + full.report.responses,
                "appended": ingested.appended,
                "unchanged": ingested.unchanged,
                "seconds": time.perf_counter() - started,
                "faction_ids": faction_ids,
                "compactions": compactions,
                "month": _last_closed(end),
            }
    finally:
        sim.close()
    return stats


@click.command()
@click.option("--out", "out_db", type=click.Path(dir_okay=False), default="demo.db", show_default=True,
              help="Database file to write (replaced if it exists).")
@click.option("--db", "demo_db", metavar="PATH|URL", default=None,
              help="Write the demo here instead of --out: a file (replaced if it exists) or an empty PostgreSQL "
                   "database, postgresql://user@host/db (one that holds a store already is refused).")
@click.option("--chart", type=click.Path(dir_okay=False), default="demo.png", show_default=True,
              help="PNG chart of a faction's respect (needs the [plot] extra).")
@click.option("--months", default=3, show_default=True, type=click.IntRange(1, 24), help="Simulated months.")
@click.option("--factions", default=2, show_default=True, type=click.IntRange(1, 10), help="Factions to follow.")
@click.option("--seed", default=1, show_default=True, help="World seed (same seed, same story).")
@click.option("--interval", default=240, show_default=True, type=click.IntRange(30, 3600),
              help="Seconds between polls (simulated).")
@click.option("--profile-every", default=360, show_default=True, type=click.IntRange(1, 100000),
              help="Poll member profiles and war lists every N rounds (360 x 4 min = a day).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run's figures as one JSON document (the progress bar stays on stderr).")
def demo(out_db: str, demo_db: str | None, chart: str, months: int, factions: int, seed: int, interval: int,
         profile_every: int, as_json: bool) -> None:
    """See the whole system work on a simulated Torn API, without an API key.

    Starts the simulator on loopback, collects from it while simulated time runs through months of
    4-minute polls of a few factions and their members, lets the compactor fold and prune at each month
    boundary, then prints what happened (with a leaderboard of the members' Xanax taken in the last closed
    month, from their personal stats) and writes the database and a chart. The default run makes about
    69,000 real HTTP requests and takes about a minute on 2 cores; one month of one faction about 15 s.

    \b
    Examples:
      tornstore demo
      tornstore demo --months 4 --factions 3 --out /tmp/demo.db --chart /tmp/respect.png
      tornstore demo --months 1 --factions 1 --json | jq .tables
      tornstore --db demo.db status
      createdb tornstore_demo && tornstore demo --db postgresql://localhost/tornstore_demo
    """
    from tornstore.eventstore import db as dbmod

    db = demo_db or out_db
    chosen = (click.get_current_context().obj or {}).get("db")
    if demo_db is None and chosen and str(chosen) != str(db):
        # (never the group's --db or TORNSTORE_DB: the demo replaces what it writes, and that is a real store)
        click.echo(f"note: the demo writes {dbmod.describe(db)}, not {dbmod.describe(chosen)}; to write it "
                   "elsewhere give the demo's own option: tornstore demo --db PATH|URL", err=True)
    if dbmod.is_url(db):
        try:
            taken = dbmod.exists(db)
        except sqlite3.DatabaseError as exc:
            raise UserError(str(exc)) from None
        if taken:
            raise UserError(f"{dbmod.describe(db)} is not empty: the demo writes a new store into an empty "
                            "database (dropdb and createdb it, or name another)")
    else:
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{db}{suffix}").exists():
                os.remove(f"{db}{suffix}")
    click.echo(f"simulating {months} month(s) of {interval // 60}-minute polls of {factions} faction(s) "
               f"and their members against a local Torn API simulator...", err=as_json)
    from tornstore.eventstore.spool import STORE_FAILURES
    from tornstore.projections.ingest_process import IngestProcessError

    stopped_by: tuple[type[BaseException], ...] = (IngestProcessError, *STORE_FAILURES)
    try:
        with fewer_collections():  # this process makes tens of thousands of short-lived requests
            stats = asyncio.run(run_demo(db, months=months, factions=factions, seed=seed, interval=interval,
                                         profile_every=profile_every))
    except stopped_by as exc:
        # The demo's data is simulated: nothing to spool. Say what stopped it, in one line.
        raise UserError(f"the demo stopped: {type(exc).__name__}: {exc}") from None
    if as_json:
        no_chart = _chart(db, stats, chart)
        emit_json({
            "database": dbmod.describe(db), "chart": None if no_chart else chart, "chart_error": no_chart,
            **{k: stats[k] for k in ("rounds", "requests", "responses", "appended", "unchanged", "faction_ids")},
            "seconds": round(stats["seconds"], 1),
            "compactions": [{"at": boundary, "months_folded": len(r.folded), "summary_rows": r.summary_rows,
                             "events_pruned": r.events_pruned, "history_rows_pruned": r.history_rows_pruned}
                            for boundary, r in stats["compactions"]],
            "tables": _table_counts(db),
            "leaderboard": _leaderboard_json(db, stats),
        })
        return
    _report(db, stats, chart)


TABLES = ["events", "streams", "players", "factions", "player_stats_history", "faction_history",
          "war_status_history", "territory_ownership_history", "stat_history", "player_stats_summary",
          "faction_summary", "war_summary", "territory_ownership_summary", "stat_summary"]
LEADERBOARD_STAT = "xantaken"
LEADERBOARD_ROWS = 5


def _last_closed(end: int) -> str:
    """'YYYY-MM' of the last UTC month that ended before `end`."""
    day = dt.datetime.fromtimestamp(end, dt.UTC).replace(day=1) - dt.timedelta(days=1)
    return day.strftime("%Y-%m")


def _leaderboard(db: str, stats: dict):
    from tornstore.eventstore.db import connect_sync
    from tornstore.projections.queries import leaderboard

    conn = connect_sync(db)
    try:
        return leaderboard(conn, stats["faction_ids"][0], LEADERBOARD_STAT, month=stats["month"])
    finally:
        conn.close()


def _leaderboard_json(db: str, stats: dict) -> dict:
    import msgspec

    out = msgspec.to_builtins(_leaderboard(db, stats))
    out["rows"] = out["rows"][:LEADERBOARD_ROWS]
    return out


def _table_counts(db: str) -> dict[str, int]:
    from tornstore.eventstore.db import connect_sync

    conn = connect_sync(db)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def _chart(db: str, stats: dict, chart: str) -> str | None:
    """Draw the first faction's respect to `chart`; the reason when there is no chart (no matplotlib)."""
    from tornstore.eventstore.db import connect_sync
    from tornstore.projections.charts import ChartsUnavailable, plot_series
    from tornstore.projections.queries import history

    conn = connect_sync(db)
    try:
        series = history(conn, "faction", stats["faction_ids"][0], "respect")
    finally:
        conn.close()
    try:
        plot_series(series, chart)
    except ChartsUnavailable as exc:
        return str(exc)
    return None


def _report(db: str, stats: dict, chart: str) -> None:
    from tornstore.eventstore.db import connect_sync, describe

    conn = connect_sync(db)
    try:
        def one(sql, *args):
            return conn.execute(sql, args).fetchone()[0]
        parts = stats["appended"] + stats["unchanged"]
        click.echo()
        click.echo(f"done in {stats['seconds']:.0f} s: {stats['rounds']:,} poll rounds, "
                   f"{stats['requests']:,} HTTP requests, {stats['responses']:,} responses")
        click.echo(f"change detection: {parts:,} entity snapshots seen, {stats['appended']:,} appended as "
                   f"events, {stats['unchanged']:,} unchanged ({100 * stats['unchanged'] / max(parts, 1):.1f}% "
                   f"not stored again)")
        for boundary, report in stats["compactions"]:
            click.echo(f"compactor at {_day(boundary)}: folded {len(report.folded)} month(s) into "
                       f"{report.summary_rows} summary rows, pruned {report.events_pruned:,} events and "
                       f"{report.history_rows_pruned:,} history rows")
        click.echo()
        emit_table([(t, f"{n:,}") for t, n in _table_counts(db).items()], ["table", "rows"])
        fid = stats["faction_ids"][0]
        name = one("SELECT name FROM factions WHERE faction_id = ?", fid)
        click.echo()
        click.echo(f"respect of {name} [{fid}], month by month:")
        rows = conn.execute(
            "SELECT period_start, respect_start, respect_end, respect_change, record_count FROM faction_summary "
            "WHERE faction_id = ? ORDER BY period_start", (fid,)).fetchall()
        emit_table([(_day(p)[:7], f"{a:,}", f"{b:,}", f"{c:+,}", n) for p, a, b, c, n in rows],
                   ["month", "start", "end", "change", "records"])
        latest = conn.execute("SELECT timestamp, respect FROM faction_history WHERE faction_id = ? "
                              "ORDER BY timestamp DESC LIMIT 1", (fid,)).fetchone()
        if latest:
            click.echo(f"latest detail: {latest[1]:,} at {_day(latest[0])}")
        player = conn.execute(
            "SELECT p.name, s.* FROM player_stats_summary s JOIN players p USING (player_id) "
            "ORDER BY s.level_change DESC, s.player_id LIMIT 1").fetchone()
        if player:
            cols = [d[0] for d in conn.execute("SELECT p.name, s.* FROM player_stats_summary s "
                                               "JOIN players p USING (player_id) LIMIT 0").description]
            row = dict(zip(cols, player, strict=True))
            click.echo()
            click.echo(f"a summary row (player_stats_summary, {row['name']} [{row['player_id']}], "
                       f"{_day(row['period_start'])[:7]}): level {row['level_start']} -> {row['level_end']}, "
                       f"life maximum {row['life_maximum_start']} -> {row['life_maximum_end']}, "
                       f"{row['record_count']} records")
    finally:
        conn.close()
    board = _leaderboard(db, stats)
    click.echo()
    where = describe(db)
    click.echo(f"{board.stat} leaderboard of {board.faction_name} [{board.faction_id}], {board.month} "
               f"(tornstore --db {where} leaderboard {board.faction_id} --stat {board.stat} --month {board.month}):")
    emit_table([(r.rank, f"{r.name} [{r.player_id}]", f"{r.change:+,}" if r.change is not None else None,
                 ", ".join(x for x in (f"joined {_day(r.joined)}" if r.joined else "",
                                       f"left {_day(r.left)}" if r.left else "") if x) or None)
                for r in board.rows[:LEADERBOARD_ROWS]], ["#", "member", "change", "note"])
    no_chart = _chart(db, stats, chart)
    if no_chart:
        click.echo(f"\nwrote {where} (no chart: {no_chart})")
    else:
        fid = stats["faction_ids"][0]
        click.echo(f"\nwrote {where} and {chart}; try: tornstore --db {where} status | faction {fid} "
                   f"| history faction {fid} --stat respect")


def _day(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def register(group: click.Group) -> None:
    group.add_command(demo)
