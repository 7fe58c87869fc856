"""Query commands: player, faction, war, territory, history, changes, stats, leaderboard. Each runs one query
of `projections.queries`, the same function the Store's async method of that name runs."""
from __future__ import annotations

import sqlite3
import sys
from typing import Any

import click
import msgspec

from tornstore.eventstore import db
from tornstore.eventstore.migrate import migrate
from tornstore.projections import queries
from tornstore.projections.queries import QueryError, format_time

from .common import (UserError, csv_writer, db_option, emit_json, emit_record, emit_table, existing_db, friendly_errors,
                     stdout_closed, utc_iso)


def query(ctx: click.Context, name: str, *args: Any, **kwargs: Any):
    """Run one query of `projections.queries` (the functions behind the Store's methods) on the database.

    A command runs one query and exits, so it uses a plain sqlite3 connection (no worker thread);
    library errors become one-line user errors.
    """
    path = existing_db(ctx)
    try:
        conn = db.connect_sync(path)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"database error: {exc}") from None
    try:
        migrate(conn)
        return getattr(queries, name)(conn, *args, **kwargs)
    except QueryError as exc:
        raise UserError(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise UserError(f"database error: {exc}") from None
    finally:
        db.close_sync(conn)


def parse_date(value: str | None, option: str, *, end_of_day: bool = False) -> int | None:
    if value is None:
        return None
    try:
        return queries.parse_when(value, end_of_day=end_of_day)
    except QueryError as exc:
        raise UserError(f"{option}: {exc}") from None


def _num(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return f"{value:,}"
    return value


def _label(name: str | None, entity_id: Any) -> str | None:
    if entity_id is None:
        return None
    return f"{name} [{entity_id}]" if name else f"[{entity_id}]"


def _json(view: Any) -> None:
    emit_json(msgspec.to_builtins(view))


# ------------------------------------------------------------------------------------------------ player
@click.command()
@click.argument("player_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@db_option
@click.pass_context
@friendly_errors
def player(ctx: click.Context, player_id: int, as_json: bool) -> None:
    """Show a player: current state, faction, newest stats and how fresh it is.

    \b
    Examples:
      tornstore --db torn.db player 2491575
      tornstore --db torn.db player 2491575 --json | jq .stats.total_stats
    """
    view = query(ctx, "player", player_id)
    if view is None:
        raise UserError(f"no player {player_id} in the database")
    if as_json:
        _json(view)
        return
    record = {
        "player": _label(view.name, view.player_id),
        "level": view.level,
        "rank": view.rank,
        "faction": _label(view.faction_name, view.faction_id) or "none",
        "status": view.status_state + (f" ({view.status_description})" if view.status_description
                                       and view.status_description != view.status_state else "")
        if view.status_state else None,
        "life": f"{_num(view.life_current)}/{_num(view.life_maximum)}" if view.life_maximum else None,
        "last action": (f"{view.last_action_status or '-'} at {format_time(view.last_action_at)}"
                        if view.last_action_at else view.last_action_status),
        "last updated": format_time(view.last_updated),
    }
    if view.stats is not None:
        for stat in queries.PLAYER_STATS:
            if stat != "level":
                record[stat.replace("_", " ")] = _num(getattr(view.stats, stat))
        record["stats as of"] = f"{format_time(view.stats.at)} ({view.stats.source})"
    record["freshness"] = view.freshness.describe()
    emit_record(record)


# ------------------------------------------------------------------------------------------------ faction
@click.command()
@click.argument("faction_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@db_option
@click.pass_context
@friendly_errors
def faction(ctx: click.Context, faction_id: int, as_json: bool) -> None:
    """Show a faction: respect, chain, leaders, territories and its member list.

    \b
    Examples:
      tornstore --db torn.db faction 9420
      tornstore --db torn.db faction 9420 --json | jq '.members[].name'
    """
    view = query(ctx, "faction", faction_id)
    if view is None:
        raise UserError(f"no faction {faction_id} in the database")
    if as_json:
        _json(view)
        return
    emit_record({
        "faction": f"{_label(view.name, view.faction_id)}" + (f" {view.tag}" if view.tag else ""),
        "respect": _num(view.respect),
        "best chain": _num(view.best_chain),
        "members": f"{_num(view.member_count)} (listed: {len(view.members)}, from {view.members_source})",
        "leader": _label(view.leader_name, view.leader_id),
        "co-leader": _label(view.co_leader_name, view.co_leader_id),
        "age (days)": _num(view.age),
        "territories": ", ".join(view.territories) or None,
        "last updated": format_time(view.last_updated) + (" (stub: named only, not fetched)" if view.is_stub else ""),
        "freshness": view.freshness.describe(),
    })
    if view.members:
        click.echo()
        emit_table([(m.player_id, m.name, m.level, m.status_state, m.last_action_status) for m in view.members],
                   ["id", "name", "level", "status", "last action"])


# ------------------------------------------------------------------------------------------------ war
@click.command()
@click.argument("war_id", type=int)
@click.option("--type", "war_type", type=click.Choice(["ranked", "territory"]),
              help="Which numbering the id belongs to (default: the war seen most recently with that id).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@db_option
@click.pass_context
@friendly_errors
def war(ctx: click.Context, war_id: int, war_type: str | None, as_json: bool) -> None:
    """Show the newest snapshot of a ranked or territory war.

    \b
    Examples:
      tornstore --db torn.db war 23451
      tornstore --db torn.db war 812 --type territory --json
    """
    view = query(ctx, "war", war_id, war_type)
    if view is None:
        raise UserError(f"no {war_type + ' ' if war_type else ''}war {war_id} in the database")
    if as_json:
        _json(view)
        return
    emit_record({
        "war": f"{view.war_type} war {view.war_id}" + (f" on {view.territory_id}" if view.territory_id else ""),
        "status": view.status,
        "attacker": _label(view.attacking_faction_name, view.attacking_faction_id),
        "defender": _label(view.defending_faction_name, view.defending_faction_id),
        "score": f"{_num(view.attacking_score) or 0} - {_num(view.defending_score) or 0}"
                 + (f" (target {_num(view.required_score)})" if view.required_score else ""),
        "winner": _label(view.winner_faction_name, view.winner_faction_id),
        "started": format_time(view.started_at),
        "ends": format_time(view.ends_at),
        "as of": f"{format_time(view.recorded_at)} ({view.source}, {view.snapshots} snapshots kept)",
    })


# ------------------------------------------------------------------------------------------------ territory
@click.command()
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@db_option
@click.pass_context
@friendly_errors
def territory(ctx: click.Context, code: str, as_json: bool) -> None:
    """Show a territory by its code: owner, racket, war status, since when it is held.

    \b
    Examples:
      tornstore --db torn.db territory AAC
      tornstore --db torn.db territory aac --json
    """
    view = query(ctx, "territory", code)
    if view is None:
        raise UserError(f"no territory {code.upper()} in the database")
    if as_json:
        _json(view)
        return
    emit_record({
        "territory": view.territory_id,
        "owner": _label(view.faction_name, view.faction_id) or "unowned",
        "owned since": format_time(view.owned_since) if view.owned_since else None,
        "sector": view.sector,
        "coordinates": view.coordinates,
        "racket": f"{view.racket_type} (level {view.racket_level})" if view.racket_type else None,
        "war status": view.war_status,
        "ongoing war": view.war_id,
        "changed hands": f"{view.ownership_changes} time(s) in {view.history_rows} kept snapshot(s)",
        "last updated": format_time(view.last_updated),
        "freshness": view.freshness.describe(),
    })


# ------------------------------------------------------------------------------------------------ history
STAT_HELP = ("player: " + ", ".join(queries.PLAYER_STATS) + "; faction: " + ", ".join(queries.FACTION_STATS)
             + "; or any personal or faction stat the store keeps, e.g. xantaken, refills, attackswon "
             "(`tornstore stats player ID` lists them)")
ALL_STATS = tuple(dict.fromkeys(s for stats in queries.STATS.values() for s in stats))


class StatChoice(click.Choice):
    """A stat name for a history or plot query: the plan's typed stats (player_stats_history, faction_history)
    or any stat of stat_history, which the library checks (an unknown one is a one-line error naming close
    ones). Completion offers the typed stats of the kind on the line (`history faction 9420 --stat <TAB>`:
    faction stats only); `tornstore stats KIND ID` lists the others."""

    def __init__(self, kind: str | None = None) -> None:
        super().__init__(ALL_STATS)
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import difflib

        from tornstore.projections.handlers.stat_history import known_stats, stat_name
        text = str(value).strip()
        known = {*ALL_STATS, *known_stats("player"), *known_stats("faction")}
        if text in known or stat_name(text) in known or "_" in text:
            return text   # (a name with '_' may be a stat Torn added lately: the library checks it in the store)
        close = difflib.get_close_matches(text, sorted(known), n=5, cutoff=0.6)
        self.fail(f"{text!r} is not a known stat." + (f" Did you mean {', '.join(map(repr, close))}?" if close else "")
                  + f" Typed stats: {', '.join(map(repr, ALL_STATS))}; `tornstore stats player|faction ID` lists "
                  "every stat kept.", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str):
        from click.shell_completion import CompletionItem

        # While `--stat` still lacks its value click leaves the arguments unparsed, in ctx.args.
        kind = self.kind or ctx.params.get("kind") or next((a for a in ctx.args if a in queries.STATS), None)
        names = queries.STATS.get(kind or "", ALL_STATS)
        return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def series_for(ctx: click.Context, kind: str, entity_id: int, stat: str, since: str | None,
               until: str | None) -> queries.Series:
    """The series a history or plot command asks for; a missing entity is a user error. The plan's typed
    stats are read from their tables (player_stats_history, faction_history); any other name from
    stat_history (`tornstore stats KIND ID` lists them)."""
    if stat not in queries.STATS[kind] and stat in ALL_STATS:
        raise UserError(f"unknown {kind} stat {stat!r}: use one of {', '.join(queries.STATS[kind])}")
    start = parse_date(since, "--since")
    end = parse_date(until, "--until", end_of_day=True)
    if stat in queries.STATS[kind]:
        series = query(ctx, "history", kind, entity_id, stat, start, end)
    else:
        series = query(ctx, "stat_series", kind, entity_id, stat, start, end)
    if series.name is None and not series.points:
        raise UserError(f"no {kind} {entity_id} in the database")
    return series


@click.command()
@click.argument("kind", type=click.Choice(["player", "faction"]))
@click.argument("entity_id", type=int)
@click.option("--stat", required=True, type=StatChoice(), metavar="NAME", help=f"Which stat ({STAT_HELP}).")
@click.option("--since", metavar="DATE", help="From this time on: YYYY-MM-DD, ISO 8601 or Unix seconds (UTC).")
@click.option("--until", metavar="DATE", help="Up to this time, inclusive; a bare date includes that whole day.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV for spreadsheets: at (Unix seconds), at_utc, the stat, source; a header row first.")
@db_option
@click.pass_context
@friendly_errors
def history(ctx: click.Context, kind: str, entity_id: int, stat: str, since: str | None, until: str | None,
            as_json: bool, as_csv: bool) -> None:
    """One stat over time: monthly summaries for pruned months, then every kept history row.

    Months whose detail was pruned show one point at the end of the month (source 'summary'); recent
    times show each recorded change (source 'history'). No month is counted twice.

    \b
    Examples:
      tornstore --db torn.db history player 2491575 --stat total_stats
      tornstore --db torn.db history faction 9420 --stat respect --since 2025-06-01 --until 2025-12-31
      tornstore --db torn.db history faction 9420 --stat member_count --since 1764100000 --json
      tornstore --db torn.db history player 2491575 --stat strength --csv > strength.csv
      tornstore --db torn.db history player 2491575 --stat xantaken --since 2026-10-01
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    series = series_for(ctx, kind, entity_id, stat, since, until)
    if as_json:
        _json(series)
        return
    stat = series.stat   # (a v2 spelling given is shown by its stable name)
    if as_csv:
        try:
            writer = csv_writer(sys.stdout)
            writer.writerow(["at", "at_utc", stat, "source"])
            writer.writerows([p.at, utc_iso(p.at), p.value, p.source] for p in series.points)
            sys.stdout.flush()
        except BrokenPipeError:
            stdout_closed()
        return
    if not series.points:
        click.echo(f"no {stat} data for {kind} {_label(series.name, entity_id)} in that time range")
        return
    click.echo(f"{stat} of {kind} {_label(series.name, entity_id)}: {len(series.points)} point(s)")
    emit_table([(format_time(p.at), _num(p.value), p.source) for p in series.points], ["time", stat, "source"])


# ------------------------------------------------------------------------------------------------ changes
@click.command()
@click.option("--after", "position", default=0, show_default=True, metavar="POSITION",
              help="Only changes after this event position (the next_position a previous run printed).")
@click.option("--limit", default=100, show_default=True, help="At most this many changes.")
@click.option("--respect-jump", default=queries.DEFAULT_RESPECT_JUMP, show_default=True,
              help="Smallest change of faction respect reported.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@db_option
@click.pass_context
@friendly_errors
def changes(ctx: click.Context, position: int, limit: int, respect_jump: int, as_json: bool) -> None:
    """Alert-worthy changes after an event position: members joining or leaving, level ups, respect jumps,
    territories changing hands, wars starting and ending.

    \b
    Examples:
      tornstore --db torn.db changes --after 120000
      tornstore --db torn.db changes --after 120000 --json | jq -r '.changes[].text'
    """
    if limit < 1:
        raise UserError("--limit must be at least 1")
    feed = query(ctx, "changes_since", position, limit, respect_threshold=respect_jump)
    if as_json:
        _json(feed)
        return
    if feed.changes:
        emit_table([(c.position, format_time(c.observed_at), c.kind, c.text) for c in feed.changes],
                   ["position", "time", "kind", "change"])
    else:
        click.echo("no changes")
    click.echo(f"next: --after {feed.next_position}" + (" (more to read)" if feed.more else ""))


# ------------------------------------------------------------------------------------------------ stats
@click.command()
@click.argument("kind", type=click.Choice(["player", "faction"]))
@click.argument("entity_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@db_option
@click.pass_context
@friendly_errors
def stats(ctx: click.Context, kind: str, entity_id: int, as_json: bool) -> None:
    """Every personal (or faction) stat the store keeps of one player (or faction), with its newest value.

    Any name listed here works with `history ... --stat NAME`, `plot ... --stat NAME` and `leaderboard`.

    \b
    Examples:
      tornstore --db torn.db stats player 2491575
      tornstore --db torn.db stats faction 9420
      tornstore --db torn.db stats player 2491575 --json | jq '.stats[] | select(.stat == "xantaken")'
    """
    view = query(ctx, "stats_of", kind, entity_id)
    if as_json:
        _json(view)
        return
    if not view.stats:
        raise UserError(f"no stats of {kind} {entity_id} in the database (poll its personalstats"
                        + (" or faction stats" if kind == "faction" else "") + " first)")
    click.echo(f"{len(view.stats)} stat(s) of {kind} {_label(view.name, entity_id)}")
    emit_table([(s.stat, _num(s.value), format_time(s.at), s.source) for s in view.stats],
               ["stat", "value", "as of", "source"])


# ------------------------------------------------------------------------------------------------ leaderboard
@click.command()
@click.argument("faction_id", type=int)
@click.option("--stat", required=True, metavar="NAME",
              help="Which personal stat, e.g. xantaken, refills, attackswon, respectforfaction.")
@click.option("--month", metavar="YYYY-MM", help="A UTC calendar month, e.g. 2026-10.")
@click.option("--since", metavar="DATE", help="From this time on: YYYY-MM-DD, ISO 8601 or Unix seconds (UTC).")
@click.option("--until", metavar="DATE", help="Up to this time, inclusive; a bare date includes that whole day.")
@click.option("--limit", type=int, default=None, help="Show only the first N members.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV: rank, player_id, name, start, end, change, joined, left; a header row first.")
@db_option
@click.pass_context
@friendly_errors
def leaderboard(ctx: click.Context, faction_id: int, stat: str, month: str | None, since: str | None,
                until: str | None, limit: int | None, as_json: bool, as_csv: bool) -> None:
    """A faction's members ranked by how much a stat grew over a month (or --since/--until).

    The change is the value at the end minus the value when the period began: recent months are read from
    stat_history, pruned months from their monthly summaries, never a month twice. Members who joined or
    left during the period are listed, marked.

    \b
    Examples:
      tornstore --db torn.db leaderboard 9420 --stat xantaken --month 2026-10
      tornstore --db torn.db leaderboard 9420 --stat refills --since 2026-11-01 --until 2026-11-15
      tornstore --db torn.db leaderboard 9420 --stat attackswon --month 2026-10 --json | jq '.rows[0]'
      tornstore --db torn.db leaderboard 9420 --stat respectforfaction --month 2026-10 --csv > respect.csv
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    if month is not None and (since is not None or until is not None):
        raise click.UsageError("--month or --since/--until: choose one")
    if month is None and since is None:
        raise click.UsageError("give --month YYYY-MM, or --since (and --until, default now)")
    start = parse_date(since, "--since")
    end = parse_date(until, "--until", end_of_day=True)
    if month is None and end is None:
        end = _now()
    board = query(ctx, "leaderboard", faction_id, stat, month, start, end)
    rows = board.rows[:limit] if limit is not None else board.rows
    if as_json:
        out = msgspec.to_builtins(board)
        out["rows"] = out["rows"][:len(rows)]
        emit_json(out)
        return
    if as_csv:
        try:
            writer = csv_writer(sys.stdout)
            writer.writerow(["rank", "player_id", "name", "start", "end", "change", "joined", "left"])
            writer.writerows([r.rank, r.player_id, r.name, r.start, r.end, r.change, r.joined, r.left]
                             for r in rows)
            sys.stdout.flush()
        except BrokenPipeError:
            stdout_closed()
        return
    period = board.month or f"{format_time(board.since)} .. {format_time(board.until)}"
    click.echo(f"{board.stat} leaderboard of {_label(board.faction_name, faction_id)}, {period}"
               + ("" if board.members_source == "member_lists"
                  else " (members: the players known in the faction now; no member list stored for the period)"))
    if not rows:
        click.echo("no members known")
        return

    def note(r: queries.LeaderRow) -> str | None:
        parts = []
        if r.joined is not None:
            parts.append(f"joined {format_time(r.joined)[:10]}")
        if r.left is not None:
            parts.append(f"left {format_time(r.left)[:10]}")
        return ", ".join(parts) or None

    emit_table([(r.rank, _label(r.name, r.player_id), _num(r.change), _num(r.start), _num(r.end), note(r))
                for r in rows], ["#", "member", "change", "start", "end", "note"])


def _now() -> int:
    import time
    return int(time.time())


def register(group: click.Group) -> None:
    for command in (player, faction, war, territory, history, changes, stats, leaderboard):
        group.add_command(command)
