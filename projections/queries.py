"""What a bot asks the store: current views, one joined history series, a change feed, freshness.

Every query is a plain synchronous function `fn(conn, ...)` over a `sqlite3.Connection`; `Store` exposes
each as an async method that runs it in aiosqlite's worker thread in one round trip:

    async with Store.open("torn.db") as store:
        me = await store.player(2491575)                    # PlayerView | None
        series = await store.history("faction", 9420, "respect", since=1767225600)
        feed = await store.changes_since(last_position)     # ChangeFeed; keep feed.next_position

Each function reads inside one read transaction, so its answer is one consistent snapshot even while a
writer commits between two of its SELECTs. Results are msgspec Structs (`msgspec.to_builtins(view)` gives
plain dicts for JSON). Everything comes from the database: no query reads the wall clock; the few that
report an age take `now` from the caller.

Times are Unix seconds, UTC. Entity names in results ("faction:9420", "user:2491575", "territory:AAC",
"rankedwar:123", "territorywar:456") follow the stream naming of `eventstore.routing`.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import msgspec

from tornstore.eventstore.routing import RoutingError, parse_url

T = TypeVar("T")

_decode = msgspec.json.Decoder().decode


class QueryError(ValueError):
    """A question the store cannot answer as asked (unknown stat, unknown kind, bad date): the message
    says what would be accepted."""


# ------------------------------------------------------------------------------------------------ results
class StreamFreshness(msgspec.Struct, kw_only=True):
    """One stream of an entity (one kind of endpoint): when it was first seen, last changed, last polled."""
    stream: str                 # entity_type:entity_id:view
    version: int                # events appended to it so far
    first_seen: int
    last_changed: int           # "unchanged since"
    last_checked: int           # newest poll that brought data (changed or not)


class Gap(msgspec.Struct, kw_only=True):
    """A poll that brought no data (Torn error, HTTP error, timeout): a row of the `gaps` table."""
    observed_at: int
    source_url: str
    target: str | None
    error_code: int | None
    reason: str


class Freshness(msgspec.Struct, kw_only=True):
    """How current what we know about an entity is.

    `last_changed` is "unchanged since" (the newest change of any of its streams) and `last_checked` the
    newest poll that brought data. `gaps` are the polls for this entity after `last_checked` that brought
    no data (at most the 50 newest; `gap_count` counts them all): "no data between `no_data_from` and
    `no_data_until`". With no stream at all (never seen), every gap recorded for the entity is listed.
    `age_seconds` is `now - last_checked`, only when the caller passed `now`.
    """
    entity_type: str
    entity_id: str
    first_seen: int | None = None
    last_changed: int | None = None
    last_checked: int | None = None
    streams: list[StreamFreshness] = []
    gaps: list[Gap] = []
    gap_count: int = 0
    no_data_from: int | None = None
    no_data_until: int | None = None
    age_seconds: int | None = None

    def describe(self) -> str:
        """One line for people: 'unchanged since ..., last checked ...; no data between ... and ...'."""
        if self.last_checked is None:
            text = "never seen"
        else:
            text = f"unchanged since {format_time(self.last_changed)}, last checked {format_time(self.last_checked)}"
        if self.gap_count:
            text += (f"; no data between {format_time(self.no_data_from)} and {format_time(self.no_data_until)}"
                     f" ({self.gap_count} failed poll{'s' if self.gap_count != 1 else ''})")
        return text


class PlayerStats(msgspec.Struct, kw_only=True):
    """The newest tracked stats of a player: from `player_stats_history` (source 'history') or, when its
    detail was pruned, the `*_end` values of the newest monthly summary (source 'summary')."""
    at: int
    source: str
    strength: int | None = None
    defense: int | None = None
    speed: int | None = None
    dexterity: int | None = None
    total_stats: int | None = None
    level: int | None = None
    life_maximum: int | None = None
    networth: int | None = None


class PlayerView(msgspec.Struct, kw_only=True):
    """The `players` row of one player, with its faction's name, newest stats and freshness."""
    player_id: int
    name: str
    level: int | None
    rank: str | None
    faction_id: int | None
    faction_name: str | None
    faction_tag: str | None
    status_state: str | None
    status_description: str | None
    life_current: int | None
    life_maximum: int | None
    last_action_status: str | None
    last_action_at: int | None
    created_at: int
    last_updated: int
    stats: PlayerStats | None
    freshness: Freshness


class Member(msgspec.Struct, kw_only=True):
    """One member of a faction, with what the `players` table knows of them (None when never projected)."""
    player_id: int
    name: str | None = None
    level: int | None = None
    status_state: str | None = None
    last_action_status: str | None = None
    last_action_at: int | None = None


class FactionView(msgspec.Struct, kw_only=True):
    """The `factions` row of one faction with its members, territories and freshness.

    `members` come from the newest member list seen for the faction (its v1.faction or v2.members stream;
    `members_source` 'member_list'); without one, from players whose `faction_id` points here
    (`members_source` 'players'). `is_stub` means the faction was only named by a player or a war.
    """
    faction_id: int
    name: str
    tag: str | None
    leader_id: int | None
    leader_name: str | None
    co_leader_id: int | None
    co_leader_name: str | None
    respect: int | None
    age: int | None
    best_chain: int | None
    member_count: int | None
    is_stub: bool
    created_at: int
    last_updated: int
    members: list[Member]
    members_source: str
    territories: list[str]
    freshness: Freshness


class WarView(msgspec.Struct, kw_only=True):
    """The newest snapshot of a war (ranked or territory) and how many snapshots are kept.

    `source` is 'history' (newest `war_status_history` row, `recorded_at` its time) or 'summary' (its
    detail was pruned: the newest `war_summary` row, `recorded_at` its period_end, `status` 'completed'
    when it names a winner, else None).
    """
    war_id: int
    war_type: str
    territory_id: str | None
    attacking_faction_id: int | None
    attacking_faction_name: str | None
    defending_faction_id: int | None
    defending_faction_name: str | None
    attacking_score: int | None
    defending_score: int | None
    required_score: int | None
    status: str | None
    started_at: int | None
    ends_at: int | None
    winner_faction_id: int | None
    winner_faction_name: str | None
    recorded_at: int
    snapshots: int
    source: str


class TerritoryView(msgspec.Struct, kw_only=True):
    """The current state of one territory (`territories` row, else its newest history row), its owner's
    name, since when the owner has held it (as far as retained history tells: `owned_since`), how often it
    changed hands in retained history, and the ongoing war on it, if any."""
    territory_id: str
    faction_id: int | None
    faction_name: str | None
    faction_tag: str | None
    sector: str | None
    coordinates: str | None
    coordinate_x: float | None
    coordinate_y: float | None
    racket_level: int | None
    racket_type: str | None
    war_status: str | None
    last_updated: int
    owned_since: int | None
    ownership_changes: int
    history_rows: int
    war_id: int | None
    freshness: Freshness


class Point(msgspec.Struct, kw_only=True):
    """One point of a series. `source` 'history' (a history row at `at`) or 'summary' (a month folded by the
    compactor: the `*_end` value at `at` = period_end; `period_start` is set)."""
    at: int
    value: int | float
    source: str
    period_start: int | None = None


class Series(msgspec.Struct, kw_only=True):
    """One stat of one player or faction over time, oldest first: monthly summary points for the months
    before the earliest retained history row, then every retained history row. Never both for a month."""
    kind: str                   # 'player' or 'faction'
    entity_id: int
    stat: str
    name: str | None            # the player's or faction's name, when known
    since: int | None
    until: int | None
    points: list[Point]

    @property
    def summary_points(self) -> list[Point]:
        return [p for p in self.points if p.source == "summary"]

    @property
    def history_points(self) -> list[Point]:
        return [p for p in self.points if p.source == "history"]


class Change(msgspec.Struct, kw_only=True):
    """One thing worth an alert, found at event `position`.

    kind, entity, before -> after:
      member_joined            faction:<id>   None -> player id
      member_left              faction:<id>   player id -> None
      level_up                 user:<id>      old level -> new level
      respect_jump             faction:<id>   old respect -> new respect (|change| >= threshold)
      territory_changed_hands  territory:<code>  old owner faction id (None: unowned) -> new owner
      war_started              rankedwar:<id> | territorywar:<id>  previous status (None) -> 'ongoing'
      war_ended                rankedwar:<id> | territorywar:<id>  'ongoing' -> 'completed' | 'cancelled'
    """
    kind: str
    entity: str
    position: int
    observed_at: int
    before: int | str | None
    after: int | str | None
    text: str


class ChangeFeed(msgspec.Struct, kw_only=True):
    """Changes after the position asked for, in position order. Ask again from `next_position`; `more` says
    there is more to read already (the limit or the scan window was reached)."""
    changes: list[Change]
    next_position: int
    more: bool


# ------------------------------------------------------------------------------------------------ helpers
PLAYER_STATS = ("strength", "defense", "speed", "dexterity", "total_stats", "level", "life_maximum", "networth")
FACTION_STATS = ("respect", "member_count", "best_chain")
STATS = {"player": PLAYER_STATS, "faction": FACTION_STATS}
# kind -> (history table, summary table, id column, time column)
_TABLES = {
    "player": ("player_stats_history", "player_stats_summary", "player_id", "timestamp"),
    "faction": ("faction_history", "faction_summary", "faction_id", "timestamp"),
}
MEMBER_LIST_VIEWS = ("v1.faction", "v2.members")
DEFAULT_RESPECT_JUMP = 10_000
MAX_GAPS_LISTED = 50


def _snapshot(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run the reads of `fn` in one read transaction (one consistent snapshot under WAL)."""
    if conn.in_transaction:
        return fn(conn, *args)
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("COMMIT")


def format_time(ts: int | None) -> str:
    """'2026-01-01 00:00:00Z' (UTC), '-' for None."""
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # a value no calendar holds: show it, never a traceback
        return f"{ts} (not a valid time)"


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_when(text: str | int, *, end_of_day: bool = False) -> int:
    """Unix seconds from 'YYYY-MM-DD', ISO 8601 ('2026-01-05T12:00', '...Z', '...+02:00') or Unix seconds.

    Dates and times without a zone are UTC. With `end_of_day`, a bare date means its last second
    (23:59:59 UTC), so `until=2026-01-31` includes all of the 31st.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value = str(text).strip()
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise QueryError(f"{value!r} is not a date: use YYYY-MM-DD, ISO 8601 (2026-01-05T12:00:00Z) "
                         "or Unix seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    seconds = int(parsed.timestamp())
    if end_of_day and _DATE_ONLY.match(value):
        seconds += 86_399
    return seconds


def _row_dict(cursor: sqlite3.Cursor, row: tuple | None) -> dict | None:
    if row is None:
        return None
    return _as_dict(cursor, row)


def _as_dict(cursor: sqlite3.Cursor, row: tuple) -> dict:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def _fetch_one(conn: sqlite3.Connection, sql: str, args: Iterable = ()) -> dict | None:
    cur = conn.execute(sql, tuple(args))
    return _row_dict(cur, cur.fetchone())


def _fetch_all(conn: sqlite3.Connection, sql: str, args: Iterable = ()) -> list[dict]:
    cur = conn.execute(sql, tuple(args))
    return [_as_dict(cur, row) for row in cur.fetchall()]


def _names(conn: sqlite3.Connection, table: str, id_col: str, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = sorted({i for i in ids if i is not None})
    out: dict[int, str] = {}
    for i in range(0, len(wanted), 500):
        part = wanted[i:i + 500]
        out.update(conn.execute(f"SELECT {id_col}, name FROM {table} WHERE {id_col} IN "
                                f"({','.join('?' * len(part))})", part).fetchall())
    return out


def _label(name: str | None, entity_id: Any) -> str:
    return f"{name} [{entity_id}]" if name else f"[{entity_id}]"


# ------------------------------------------------------------------------------------------------ freshness
_ENTITY_TYPES = {"player": ("user",), "user": ("user",), "faction": ("faction",), "territory": ("territory",),
                 "war": ("rankedwar", "territorywar"), "rankedwar": ("rankedwar",),
                 "territorywar": ("territorywar",)}


def _territory_codes(url: str) -> set[str] | None:
    """Codes a territory poll asked for (torn/AAC,CAA or ?ids=AAC,CAA); None when it asked for the map."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s and s != "v2"]
    query = dict(parse_qsl(parts.query))
    listed = query.get("ids") or (segments[1] if len(segments) > 1 and segments[1].isupper() else "")
    return {c for c in listed.split(",") if c} or None


def _gap_matches(types: tuple[str, ...], entity_id: str, target: str | None, url: str) -> bool:
    """Is a gap about this entity? By its target ('faction:9420', 'territory:AAC,CAA'), else by its URL."""
    if target:
        kind, _, ids = target.partition(":")
        if kind in types:
            return entity_id in ids.split(",")
        if not (kind == "torn" and "territory" in types):
            return False
    try:
        ep = parse_url(url)
    except RoutingError:
        return False
    if "territory" in types:
        if ep.section != "torn" or "territory" not in ep.selections:
            return False
        codes = _territory_codes(url)
        return codes is None or entity_id in codes
    return ep.section in types and ep.section in ("user", "faction") and ep.entity_id == entity_id


def freshness(conn: sqlite3.Connection, entity_type: str, entity_id: Any, now: int | None = None) -> Freshness:
    """See `Freshness`. `entity_type`: player (or user), faction, territory, war, rankedwar, territorywar."""
    return _snapshot(conn, _freshness, entity_type, entity_id, now)


def _freshness(conn: sqlite3.Connection, entity_type: str, entity_id: Any, now: int | None) -> Freshness:
    types = _ENTITY_TYPES.get(str(entity_type).lower())
    if types is None:
        raise QueryError(f"unknown entity type {entity_type!r}: use one of {', '.join(sorted(_ENTITY_TYPES))}")
    eid = str(entity_id)
    rows = conn.execute(
        f"SELECT entity_type, entity_id, view, version, first_seen, last_changed, last_checked FROM streams "
        f"WHERE entity_type IN ({','.join('?' * len(types))}) AND entity_id = ? ORDER BY view",
        (*types, eid)).fetchall()
    streams = [StreamFreshness(stream=f"{r[0]}:{r[1]}:{r[2]}", version=r[3], first_seen=r[4], last_changed=r[5],
                               last_checked=r[6]) for r in rows]
    out = Freshness(entity_type=types[0] if len(types) == 1 else "war", entity_id=eid, streams=streams)
    if streams:
        out.first_seen = min(s.first_seen for s in streams)
        out.last_changed = max(s.last_changed for s in streams)
        out.last_checked = max(s.last_checked for s in streams)
    after = out.last_checked if out.last_checked is not None else -1
    # Candidates: gaps filed under a target of this kind, and gaps with no target (matched by URL).
    candidates = conn.execute(
        "SELECT observed_at, source_url, target, error_code, reason, id FROM gaps "
        "WHERE target IS NULL AND observed_at > ? "
        "UNION ALL SELECT observed_at, source_url, target, error_code, reason, id FROM gaps "
        "WHERE observed_at > ? AND (" + " OR ".join("(target >= ? AND target < ?)" for _ in types)
        + (" OR target = 'torn'" if "territory" in types else "") + ") ORDER BY observed_at, id",
        (after, after, *(x for t in types for x in (f"{t}:", f"{t};")))).fetchall()
    gaps = [Gap(observed_at=r[0], source_url=r[1], target=r[2], error_code=r[3], reason=r[4])
            for r in candidates if _gap_matches(types, eid, r[2], r[1])]
    if gaps:
        out.gap_count = len(gaps)
        out.no_data_from = gaps[0].observed_at
        out.no_data_until = gaps[-1].observed_at
        out.gaps = gaps[-MAX_GAPS_LISTED:]
    if now is not None and out.last_checked is not None:
        out.age_seconds = max(0, int(now) - out.last_checked)
    return out


# ------------------------------------------------------------------------------------------------ player
def player(conn: sqlite3.Connection, player_id: int, now: int | None = None) -> PlayerView | None:
    """The current row of a player (None when never projected)."""
    return _snapshot(conn, _player, int(player_id), now)


def _newest_player_stats(conn: sqlite3.Connection, player_id: int) -> PlayerStats | None:
    cols = ", ".join(PLAYER_STATS)
    row = _fetch_one(conn, f"SELECT timestamp AS at, {cols} FROM player_stats_history WHERE player_id = ? "
                           "ORDER BY timestamp DESC, id DESC LIMIT 1", (player_id,))
    if row is not None:
        return PlayerStats(source="history", **row)
    row = _fetch_one(conn, "SELECT period_end AS at, " + ", ".join(f"{s}_end AS {s}" for s in PLAYER_STATS)
                     + " FROM player_stats_summary WHERE player_id = ? ORDER BY period_end DESC LIMIT 1",
                     (player_id,))
    return PlayerStats(source="summary", **row) if row is not None else None


def _player(conn: sqlite3.Connection, player_id: int, now: int | None) -> PlayerView | None:
    row = _fetch_one(
        conn,
        "SELECT p.player_id, p.name, p.level, p.rank, p.faction_id, f.name AS faction_name, "
        "f.tag AS faction_tag, p.status_state, p.status_description, p.life_current, p.life_maximum, "
        "p.last_action_status, p.last_action_at, p.created_at, p.last_updated "
        "FROM players p LEFT JOIN factions f ON f.faction_id = p.faction_id WHERE p.player_id = ?",
        (player_id,))
    if row is None:
        return None
    return PlayerView(**row, stats=_newest_player_stats(conn, player_id),
                      freshness=_freshness(conn, "user", player_id, now))


# ------------------------------------------------------------------------------------------------ faction
def faction(conn: sqlite3.Connection, faction_id: int, now: int | None = None) -> FactionView | None:
    """The current row of a faction with its members (None when never projected)."""
    return _snapshot(conn, _faction, int(faction_id), now)


def _latest_member_ids(conn: sqlite3.Connection, faction_id: int) -> list[int] | None:
    """Member ids from the newest event (by observed_at) of the faction's member-list streams."""
    rows = conn.execute(
        "SELECT e.payload FROM events e JOIN streams s USING (stream_id) "
        "WHERE s.entity_type = 'faction' AND s.entity_id = ? AND s.view IN (?, ?) "
        "ORDER BY e.observed_at DESC, e.position DESC LIMIT 20",
        (str(faction_id), *MEMBER_LIST_VIEWS)).fetchall()
    for (payload,) in rows:
        ids = _member_ids(payload)
        if ids is not None:
            return sorted(ids)
    return None


def _member_ids(payload: str | bytes) -> set[int] | None:
    try:
        data = _decode(payload)
    except msgspec.DecodeError:
        return None
    ids = data.get("member_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list):
        return None
    return {int(i) for i in ids}


def _faction(conn: sqlite3.Connection, faction_id: int, now: int | None) -> FactionView | None:
    row = _fetch_one(
        conn,
        "SELECT f.faction_id, f.name, f.tag, f.leader_id, l.name AS leader_name, f.co_leader_id, "
        "c.name AS co_leader_name, f.respect, f.age, f.best_chain, f.member_count, f.is_stub, f.created_at, "
        "f.last_updated FROM factions f LEFT JOIN players l ON l.player_id = f.leader_id "
        "LEFT JOIN players c ON c.player_id = f.co_leader_id WHERE f.faction_id = ?", (faction_id,))
    if row is None:
        return None
    row["is_stub"] = bool(row["is_stub"])
    member_cols = "player_id, name, level, status_state, last_action_status, last_action_at"
    ids = _latest_member_ids(conn, faction_id)
    if ids is not None:
        source = "member_list"
        known: dict[int, dict] = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for r in _fetch_all(conn, f"SELECT {member_cols} FROM players WHERE player_id IN "
                                      f"({','.join('?' * len(part))})", part):
                known[r["player_id"]] = r
        members = [Member(**known[i]) if i in known else Member(player_id=i) for i in ids]
        members.sort(key=lambda m: (-(m.level or 0), m.player_id))
    else:
        source = "players"
        members = [Member(**r) for r in _fetch_all(
            conn, f"SELECT {member_cols} FROM players WHERE faction_id = ? ORDER BY level DESC, player_id",
            (faction_id,))]
    territories = [r[0] for r in conn.execute(
        "SELECT territory_id FROM territories WHERE faction_id = ? ORDER BY territory_id", (faction_id,))]
    return FactionView(**row, members=members, members_source=source, territories=territories,
                       freshness=_freshness(conn, "faction", faction_id, now))


# ------------------------------------------------------------------------------------------------ war
def war(conn: sqlite3.Connection, war_id: int, war_type: str | None = None) -> WarView | None:
    """The newest snapshot of a war. Ranked and territory wars are numbered apart: without `war_type`
    ('ranked' or 'territory') the one seen most recently under that id is returned."""
    if war_type not in (None, "ranked", "territory"):
        raise QueryError(f"unknown war type {war_type!r}: use 'ranked' or 'territory'")
    return _snapshot(conn, _war, int(war_id), war_type)


def _war(conn: sqlite3.Connection, war_id: int, war_type: str | None) -> WarView | None:
    type_sql = " AND war_type = ?" if war_type else ""
    type_args = (war_type,) if war_type else ()
    row = _fetch_one(
        conn,
        "SELECT war_id, war_type, territory_id, attacking_faction_id, defending_faction_id, attacking_score, "
        "defending_score, required_score, status, started_at, ends_at, winner_faction_id, recorded_at "
        f"FROM war_status_history WHERE war_id = ?{type_sql} ORDER BY recorded_at DESC, id DESC LIMIT 1",
        (war_id, *type_args))
    source = "history"
    if row is not None:
        row["snapshots"] = conn.execute(
            "SELECT COUNT(*) FROM war_status_history WHERE war_id = ? AND war_type = ?",
            (war_id, row["war_type"])).fetchone()[0]
    else:
        summary = _fetch_one(
            conn,
            "SELECT war_id, war_type, territory_id, attacking_faction_id, defending_faction_id, "
            "final_attacking_score AS attacking_score, final_defending_score AS defending_score, "
            "winner_faction_id, period_end AS recorded_at FROM war_summary "
            f"WHERE war_id = ?{type_sql} ORDER BY period_end DESC LIMIT 1", (war_id, *type_args))
        if summary is None:
            return None
        row = dict(summary, required_score=None, started_at=None, ends_at=None, snapshots=0,
                   status="completed" if summary["winner_faction_id"] is not None else None)
        source = "summary"
    names = _names(conn, "factions", "faction_id",
                   (row["attacking_faction_id"], row["defending_faction_id"], row["winner_faction_id"]))
    return WarView(**row, source=source,
                   attacking_faction_name=names.get(row["attacking_faction_id"]),
                   defending_faction_name=names.get(row["defending_faction_id"]),
                   winner_faction_name=names.get(row["winner_faction_id"]))


# ------------------------------------------------------------------------------------------------ territory
def territory(conn: sqlite3.Connection, code: str, now: int | None = None) -> TerritoryView | None:
    """The current state of a territory by its code ('AAC'; case does not matter)."""
    return _snapshot(conn, _territory, str(code).strip().upper(), now)


def _territory(conn: sqlite3.Connection, code: str, now: int | None) -> TerritoryView | None:
    cols = ("territory_id, faction_id, sector, coordinates, coordinate_x, coordinate_y, racket_level, "
            "racket_type, war_status")
    row = _fetch_one(conn, f"SELECT {cols}, last_updated FROM territories WHERE territory_id = ?", (code,))
    history = conn.execute(
        "SELECT faction_id, recorded_at FROM territory_ownership_history WHERE territory_id = ? "
        "ORDER BY recorded_at DESC, id DESC", (code,)).fetchall()
    if row is None:
        row = _fetch_one(conn, f"SELECT {cols}, recorded_at AS last_updated FROM territory_ownership_history "
                               "WHERE territory_id = ? ORDER BY recorded_at DESC, id DESC LIMIT 1", (code,))
        if row is None:
            return None
    owned_since = None
    if row["faction_id"] is not None:
        for owner, recorded_at in history:  # newest first: walk back while the owner is the current one
            if owner != row["faction_id"]:
                break
            owned_since = recorded_at
    changes = sum(1 for newer, older in pairwise(history) if newer[0] != older[0])
    war_row = conn.execute(
        "SELECT war_id, status FROM war_status_history WHERE territory_id = ? "
        "ORDER BY recorded_at DESC, id DESC LIMIT 1", (code,)).fetchone()
    owner = _fetch_one(conn, "SELECT name, tag FROM factions WHERE faction_id = ?", (row["faction_id"],)) or {}
    return TerritoryView(**row, faction_name=owner.get("name"), faction_tag=owner.get("tag"),
                         owned_since=owned_since, ownership_changes=changes, history_rows=len(history),
                         war_id=war_row[0] if war_row and war_row[1] == "ongoing" else None,
                         freshness=_freshness(conn, "territory", code, now))


# ------------------------------------------------------------------------------------------------ history
def history(conn: sqlite3.Connection, kind: str, entity_id: int, stat: str, since: int | None = None,
            until: int | None = None) -> Series:
    """One stat over time: summaries for months before the earliest history row, history rows after.

    A summary month is used only when it ended before the earliest retained history row of the entity
    (`period_end < MIN(timestamp)`; period_end is the month's last second): a month that was folded but
    not yet pruned is shown from its history rows, never twice. `since` / `until` (Unix seconds,
    inclusive) filter points by their time.
    """
    kind = str(kind).lower()
    if kind not in STATS:
        raise QueryError(f"unknown history kind {kind!r}: use 'player' or 'faction'")
    if stat not in STATS[kind]:
        raise QueryError(f"unknown {kind} stat {stat!r}: use one of {', '.join(STATS[kind])}")
    return _snapshot(conn, _history, kind, int(entity_id), stat, since, until)


def _history(conn: sqlite3.Connection, kind: str, entity_id: int, stat: str, since: int | None,
             until: int | None) -> Series:
    hist, summary, id_col, t_col = _TABLES[kind]
    first = conn.execute(f"SELECT MIN({t_col}) FROM {hist} WHERE {id_col} = ?", (entity_id,)).fetchone()[0]
    s_sql = (f"SELECT period_start, period_end, {stat}_end FROM {summary} WHERE {id_col} = ? "
             f"AND period_type = 'monthly' AND {stat}_end IS NOT NULL")
    s_args: list = [entity_id]
    h_sql = f"SELECT {t_col}, {stat} FROM {hist} WHERE {id_col} = ? AND {stat} IS NOT NULL"
    h_args: list = [entity_id]
    if first is not None:  # period_end is the month's last second (projections.compactor.periods)
        s_sql += " AND period_end < ?"
        s_args.append(first)
    if since is not None:
        s_sql += " AND period_end >= ?"
        h_sql += f" AND {t_col} >= ?"
        s_args.append(since)
        h_args.append(since)
    if until is not None:
        s_sql += " AND period_end <= ?"
        h_sql += f" AND {t_col} <= ?"
        s_args.append(until)
        h_args.append(until)
    points = [Point(at=end, value=value, source="summary", period_start=start)
              for start, end, value in conn.execute(s_sql + " ORDER BY period_end", s_args)]
    points += [Point(at=t, value=value, source="history")
               for t, value in conn.execute(h_sql + f" ORDER BY {t_col}, id", h_args)]
    table = "players" if kind == "player" else "factions"
    name_row = conn.execute(f"SELECT name FROM {table} WHERE {id_col} = ?", (entity_id,)).fetchone()
    return Series(kind=kind, entity_id=entity_id, stat=stat, name=name_row[0] if name_row else None,
                  since=since, until=until, points=points)


# ------------------------------------------------------------------------------------------------ changes
def head_position(conn: sqlite3.Connection) -> int:
    """The newest event position (0 for an empty log): start a change feed here to see only new changes."""
    return conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]


def changes_since(conn: sqlite3.Connection, position: int, limit: int = 100,
                  respect_threshold: int = DEFAULT_RESPECT_JUMP, scan: int = 10_000) -> ChangeFeed:
    """Changes found in events after `position`, oldest first.

    At most `scan` events are looked at per call and at most `limit` changes returned, except that the
    changes of one event are never split (a list where five members joined at once comes whole). A
    change only counts against something seen before it: the first sight of a faction's member list,
    a player's level or a war that is already over is not a change.

    Level, respect and owner changes compare with the previous history row, or, when the compactor has
    pruned it, with the last monthly summary. Member moves compare two member-list events; the
    compactor never prunes a stream's latest event, so a feed that keeps up misses none, but asking
    again about positions whose previous list was pruned finds no move there.
    """
    if limit < 1 or scan < 1:
        raise QueryError("limit and scan must be at least 1")
    return _snapshot(conn, _changes_since, int(position), int(limit), int(respect_threshold), int(scan))


def _changes_since(conn: sqlite3.Connection, position: int, limit: int, threshold: int,
                   scan: int) -> ChangeFeed:
    end = head_position(conn)
    if end <= position:
        return ChangeFeed(changes=[], next_position=max(position, 0), more=False)
    row = conn.execute("SELECT position FROM events WHERE position > ? ORDER BY position LIMIT 1 OFFSET ?",
                       (position, scan - 1)).fetchone()
    hi = row[0] if row else end
    min_t = conn.execute("SELECT MIN(observed_at) FROM events WHERE position > ? AND position <= ?",
                         (position, hi)).fetchone()[0]
    window = (position, hi)
    changes: list[Change] = []
    if min_t is not None:
        changes += _member_changes(conn, window)
        changes += _level_changes(conn, window, min_t)
        changes += _respect_changes(conn, window, min_t, threshold)
        changes += _territory_changes(conn, window, min_t)
        changes += _war_changes(conn, window, min_t)
    order = {k: i for i, k in enumerate(("war_ended", "war_started", "territory_changed_hands", "member_left",
                                         "member_joined", "respect_jump", "level_up"))}
    changes.sort(key=lambda c: (c.position, order.get(c.kind, 99), c.entity, str(c.before), str(c.after)))
    next_position, more = hi, hi < end
    if len(changes) > limit:
        boundary = changes[limit - 1].position
        if changes[limit].position == boundary:
            # Keep the boundary event whole if anything before it fits; else it alone goes over the limit.
            earlier = [c for c in changes if c.position < boundary]
            if earlier:
                boundary = earlier[-1].position
        changes = [c for c in changes if c.position <= boundary]
        next_position, more = boundary, True
    return ChangeFeed(changes=changes, next_position=next_position, more=more)


def _member_changes(conn: sqlite3.Connection, window: tuple[int, int]) -> list[Change]:
    events = conn.execute(
        "SELECT e.position, e.observed_at, s.entity_id, e.payload FROM events e JOIN streams s USING (stream_id) "
        "WHERE e.position > ? AND e.position <= ? AND s.entity_type = 'faction' AND s.view IN (?, ?) "
        "ORDER BY e.position", (*window, *MEMBER_LIST_VIEWS)).fetchall()
    found: list[tuple[int, int, int, str, int]] = []  # position, observed_at, faction, kind, player
    for pos, observed_at, fid, payload in events:
        current = _member_ids(payload)
        if current is None:
            continue
        # The member list as last seen before this event, from any of the faction's member-list streams
        # (so a faction polled through both v1 and v2 reports each move once).
        previous = None
        for (older,) in conn.execute(
                "SELECT e.payload FROM events e JOIN streams s USING (stream_id) "
                "WHERE s.entity_type = 'faction' AND s.entity_id = ? AND s.view IN (?, ?) "
                "AND (e.observed_at < ? OR (e.observed_at = ? AND e.position < ?)) "
                "ORDER BY e.observed_at DESC, e.position DESC LIMIT 20",
                (fid, *MEMBER_LIST_VIEWS, observed_at, observed_at, pos)):
            previous = _member_ids(older)
            if previous is not None:
                break
        if previous is None:
            continue
        found += [(pos, observed_at, int(fid), "member_joined", p) for p in sorted(current - previous)]
        found += [(pos, observed_at, int(fid), "member_left", p) for p in sorted(previous - current)]
    if not found:
        return []
    players = _names(conn, "players", "player_id", (f[4] for f in found))
    factions = _names(conn, "factions", "faction_id", (f[2] for f in found))
    out = []
    for pos, observed_at, fid, kind, pid in found:
        who, where = _label(players.get(pid), pid), _label(factions.get(fid), fid)
        joined = kind == "member_joined"
        out.append(Change(kind=kind, entity=f"faction:{fid}", position=pos, observed_at=observed_at,
                          before=None if joined else pid, after=pid if joined else None,
                          text=f"{who} {'joined' if joined else 'left'} {where}"))
    return out


def _previous(table: str, id_col: str, t_col: str, col: str) -> str:
    """A correlated subquery: `col` of the row of the same entity just before row `h`."""
    return (f"(SELECT p.{col} FROM {table} p WHERE p.{id_col} = h.{id_col} AND (p.{t_col} < h.{t_col} OR "
            f"(p.{t_col} = h.{t_col} AND p.id < h.id)) ORDER BY p.{t_col} DESC, p.id DESC LIMIT 1)")


def _before_in_summary(summary: str, id_col: str, t_col: str, col: str) -> str:
    """A correlated subquery: `col` of the newest monthly summary of row `h`'s entity that ended before it."""
    return (f"(SELECT s.{col} FROM {summary} s WHERE s.{id_col} = h.{id_col} AND s.period_end < h.{t_col} "
            f"ORDER BY s.period_end DESC LIMIT 1)")


def _window_rows(conn: sqlite3.Connection, table: str, id_col: str, t_col: str, cols: str, prev_col: str,
                 window: tuple[int, int], min_t: int, summary: str, summary_col: str) -> list[tuple]:
    """Rows made by events in the window (found through the time index), each with the value of `prev_col`
    before it and whether anything was known before it at all.

    "Before" is the entity's previous history row; when there is none (its detail was pruned), the `*_end`
    value of the newest monthly summary that ended before the row, so a change right after a pruned month
    is still a change.
    """
    prev_id = _previous(table, id_col, t_col, "id")
    summary_id = _before_in_summary(summary, id_col, t_col, "id")
    return conn.execute(
        f"SELECT h.event_position, h.{t_col}, h.{id_col}, {cols}, "
        f"CASE WHEN {prev_id} IS NOT NULL THEN {_previous(table, id_col, t_col, prev_col)} "
        f"ELSE {_before_in_summary(summary, id_col, t_col, summary_col)} END, "
        f"({prev_id} IS NOT NULL OR {summary_id} IS NOT NULL) FROM {table} h "
        f"WHERE h.{t_col} >= ? AND h.event_position > ? AND h.event_position <= ?", (min_t, *window)).fetchall()


def _level_changes(conn: sqlite3.Connection, window: tuple[int, int], min_t: int) -> list[Change]:
    rows = [r for r in _window_rows(conn, "player_stats_history", "player_id", "timestamp", "h.level", "level",
                                    window, min_t, "player_stats_summary", "level_end")
            if r[3] is not None and r[4] is not None and r[3] > r[4]]
    names = _names(conn, "players", "player_id", (r[2] for r in rows))
    return [Change(kind="level_up", entity=f"user:{pid}", position=pos, observed_at=t, before=old, after=new,
                   text=f"{_label(names.get(pid), pid)} reached level {new} (was {old})")
            for pos, t, pid, new, old, _ in rows]


def _respect_changes(conn: sqlite3.Connection, window: tuple[int, int], min_t: int,
                     threshold: int) -> list[Change]:
    rows = [r for r in _window_rows(conn, "faction_history", "faction_id", "timestamp", "h.respect", "respect",
                                    window, min_t, "faction_summary", "respect_end")
            if r[3] is not None and r[4] is not None and abs(r[3] - r[4]) >= threshold and r[3] != r[4]]
    names = _names(conn, "factions", "faction_id", (r[2] for r in rows))
    return [Change(kind="respect_jump", entity=f"faction:{fid}", position=pos, observed_at=t, before=old,
                   after=new, text=f"{_label(names.get(fid), fid)} respect {old:,} -> {new:,} ({new - old:+,})")
            for pos, t, fid, new, old, _ in rows]


def _territory_changes(conn: sqlite3.Connection, window: tuple[int, int], min_t: int) -> list[Change]:
    rows = [r for r in _window_rows(conn, "territory_ownership_history", "territory_id", "recorded_at",
                                    "h.faction_id", "faction_id", window, min_t, "territory_ownership_summary",
                                    "faction_id_end")
            if r[5] and r[3] != r[4]]
    names = _names(conn, "factions", "faction_id", (x for r in rows for x in (r[3], r[4])))

    def owner(fid):
        return "unowned" if fid is None else _label(names.get(fid), fid)
    return [Change(kind="territory_changed_hands", entity=f"territory:{code}", position=pos, observed_at=t,
                   before=old, after=new, text=f"{code} changed hands: {owner(old)} -> {owner(new)}")
            for pos, t, code, new, old, _ in rows]


def _war_changes(conn: sqlite3.Connection, window: tuple[int, int], min_t: int) -> list[Change]:
    # Previous snapshot of the same war (ranked and territory ids are numbered apart).
    prev = ("(SELECT p.status FROM war_status_history p WHERE p.war_id = h.war_id AND p.war_type = h.war_type "
            "AND (p.recorded_at < h.recorded_at OR (p.recorded_at = h.recorded_at AND p.id < h.id)) "
            "ORDER BY p.recorded_at DESC, p.id DESC LIMIT 1)")
    rows = _fetch_all(
        conn,
        "SELECT h.event_position AS position, h.recorded_at, h.war_id, h.war_type, h.territory_id, h.status, "
        "h.attacking_faction_id, h.defending_faction_id, h.attacking_score, h.defending_score, "
        f"h.winner_faction_id, h.started_at, {prev} AS previous FROM war_status_history h "
        "WHERE h.recorded_at >= ? AND h.event_position > ? AND h.event_position <= ?", (min_t, *window))
    picked = []
    for r in rows:
        if r["status"] == "ongoing" and r["previous"] != "ongoing":
            picked.append(("war_started", r))
        elif r["status"] in ("completed", "cancelled") and r["previous"] == "ongoing":
            picked.append(("war_ended", r))
    names = _names(conn, "factions", "faction_id", (r[k] for _, r in picked for k in
                                                    ("attacking_faction_id", "defending_faction_id",
                                                     "winner_faction_id")))
    out = []
    for kind, r in picked:
        what = (f"Ranked war {r['war_id']}" if r["war_type"] == "ranked"
                else f"Territory war {r['war_id']}" + (f" on {r['territory_id']}" if r["territory_id"] else ""))
        sides = (f"{_label(names.get(r['attacking_faction_id']), r['attacking_faction_id'])} vs "
                 f"{_label(names.get(r['defending_faction_id']), r['defending_faction_id'])}")
        if kind == "war_started":
            when = (f", starts {format_time(r['started_at'])}"
                    if r["started_at"] and r["started_at"] > r["recorded_at"] else "")
            text = f"{what} started: {sides}{when}"
        else:
            score = f"{r['attacking_score'] or 0:,}-{r['defending_score'] or 0:,}"
            result = (f"winner {_label(names.get(r['winner_faction_id']), r['winner_faction_id'])}"
                      if r["winner_faction_id"] is not None else r["status"])
            text = f"{what} ended: {sides}, {score}, {result}"
        entity = f"{'rankedwar' if r['war_type'] == 'ranked' else 'territorywar'}:{r['war_id']}"
        out.append(Change(kind=kind, entity=entity, position=r["position"], observed_at=r["recorded_at"],
                          before=r["previous"], after=r["status"], text=text))
    return out


# ------------------------------------------------------------------------------------------------ every stat
# stat_history (a row per change of one stat) and stat_summary (a row per closed month, kept forever): see
# projections/handlers/stat_history.py for the names.
class StatValue(msgspec.Struct, kw_only=True):
    """The newest known value of one stat: from its newest history row (`at` its time), or, when its detail
    was pruned, from the newest monthly summary (`at` = period_end)."""
    stat: str
    value: int | float
    at: int
    source: str                 # 'history' or 'summary'


class EntityStats(msgspec.Struct, kw_only=True):
    kind: str                   # 'player' or 'faction'
    entity_id: int
    name: str | None
    stats: list[StatValue]      # by stat name


class LeaderRow(msgspec.Struct, kw_only=True):
    """One member on a leaderboard: the stat's value in force when the period began (`start`; for a stat
    first seen during the period, its first value in it), at its end (`end`), and `change` = end - start.
    `joined` / `left`: the time of the first member list of the period that lists / no longer lists them."""
    rank: int | None            # None: no value known in the period
    player_id: int
    name: str | None
    start: int | float | None
    end: int | float | None
    change: int | float | None
    joined: int | None = None
    left: int | None = None


class Leaderboard(msgspec.Struct, kw_only=True):
    """A faction's members ranked by the change of one stat over [since, until] (inclusive), most first.

    `members_source`: 'member_lists' (the faction's member lists stored in the period and the one in force
    when it began: members who joined or left during it are listed, with when) or 'players' (no member list
    is stored for the period: the players the store knows in the faction now)."""
    faction_id: int
    faction_name: str | None
    stat: str
    since: int
    until: int
    month: str | None
    members_source: str
    rows: list[LeaderRow]


_KINDS = ("player", "faction")


def _entity_kind(kind: str) -> str:
    kind = str(kind).lower()
    if kind not in _KINDS:
        raise QueryError(f"unknown kind {kind!r}: use 'player' or 'faction'")
    return kind


def stat_names(conn: sqlite3.Connection, kind: str | None = None) -> list[str]:
    """The stat names the store holds (history or summaries), for one kind or both."""
    where, args = ("WHERE entity_type = ?", (kind,)) if kind else ("", ())
    return sorted({r[0] for table in ("stat_history", "stat_summary")
                   for r in conn.execute(f"SELECT DISTINCT stat FROM {table} {where}", args)})


def _resolve_stat(conn: sqlite3.Connection, kind: str, stat: str) -> str:
    """The stable name of `stat` (a v2 `stat=` spelling or a v2 leaf path are accepted), or QueryError
    listing close names."""
    import difflib

    from .handlers.stat_history import known_stats, stat_name
    name = stat_name(str(stat).strip())
    held = stat_names(conn, kind)
    if name in held or name in known_stats(kind):
        return name
    choices = sorted(set(held) | set(known_stats(kind)))
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"`tornstore stats {kind} ID` lists the stats kept"
    raise QueryError(f"unknown {kind} stat {stat!r}: {hint}")


def stats_of(conn: sqlite3.Connection, kind: str, entity_id: int) -> EntityStats:
    """Every stat the store knows of one player or faction, with its newest value."""
    return _snapshot(conn, _stats_of, _entity_kind(kind), int(entity_id))


def _stats_of(conn: sqlite3.Connection, kind: str, entity_id: int) -> EntityStats:
    found: dict[str, StatValue] = {}
    for stat, end, value in conn.execute(
            "SELECT stat, period_end, value_end FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY stat ORDER BY "
            "period_end DESC) AS rn FROM stat_summary WHERE entity_type = ? AND entity_id = ? "
            "AND period_type = 'monthly' AND value_end IS NOT NULL) WHERE rn = 1", (kind, entity_id)):
        found[stat] = StatValue(stat=stat, value=value, at=end, source="summary")
    for stat, t, value in conn.execute(
            "SELECT stat, recorded_at, value FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY stat ORDER BY "
            "recorded_at DESC, id DESC) AS rn FROM stat_history WHERE entity_type = ? AND entity_id = ?) "
            "WHERE rn = 1", (kind, entity_id)):
        if stat not in found or t >= found[stat].at:
            found[stat] = StatValue(stat=stat, value=value, at=t, source="history")
    return EntityStats(kind=kind, entity_id=entity_id, name=_entity_name(conn, kind, entity_id),
                       stats=[found[k] for k in sorted(found)])


def _entity_name(conn: sqlite3.Connection, kind: str, entity_id: int) -> str | None:
    table, id_col = ("players", "player_id") if kind == "player" else ("factions", "faction_id")
    row = conn.execute(f"SELECT name FROM {table} WHERE {id_col} = ?", (entity_id,)).fetchone()
    return row[0] if row else None


def stat_series(conn: sqlite3.Connection, kind: str, entity_id: int, stat: str, since: int | None = None,
                until: int | None = None) -> Series:
    """One stat of a player or faction over time: monthly summary points (value_end at period_end) for the
    months that ended before the stat's earliest retained history row, then every history row; never both
    for one month. `since` / `until` (Unix seconds, inclusive) filter points by their time."""
    kind = _entity_kind(kind)
    return _snapshot(conn, _stat_series, kind, int(entity_id), stat, since, until)


def _stat_series(conn: sqlite3.Connection, kind: str, entity_id: int, stat: str, since: int | None,
                 until: int | None) -> Series:
    stat = _resolve_stat(conn, kind, stat)
    key = (kind, entity_id, stat)
    first = conn.execute("SELECT MIN(recorded_at) FROM stat_history WHERE entity_type = ? AND entity_id = ? "
                         "AND stat = ?", key).fetchone()[0]
    s_sql = ("SELECT period_start, period_end, value_end FROM stat_summary WHERE entity_type = ? "
             "AND entity_id = ? AND stat = ? AND period_type = 'monthly' AND value_end IS NOT NULL")
    h_sql = "SELECT recorded_at, value FROM stat_history WHERE entity_type = ? AND entity_id = ? AND stat = ?"
    s_args: list = list(key)
    h_args: list = list(key)
    if first is not None:   # period_end is the month's last second
        s_sql += " AND period_end < ?"
        s_args.append(first)
    if since is not None:
        s_sql += " AND period_end >= ?"
        h_sql += " AND recorded_at >= ?"
        s_args.append(since)
        h_args.append(since)
    if until is not None:
        s_sql += " AND period_end <= ?"
        h_sql += " AND recorded_at <= ?"
        s_args.append(until)
        h_args.append(until)
    points = [Point(at=end, value=value, source="summary", period_start=start)
              for start, end, value in conn.execute(s_sql + " ORDER BY period_end", s_args)]
    points += [Point(at=t, value=value, source="history")
               for t, value in conn.execute(h_sql + " ORDER BY recorded_at, id", h_args)]
    return Series(kind=kind, entity_id=entity_id, stat=stat, name=_entity_name(conn, kind, entity_id),
                  since=since, until=until, points=points)


def month_span(month: str) -> tuple[int, int]:
    """'2026-10' -> (first second, last second) of that UTC month."""
    from .compactor.periods import Period
    try:
        period = Period.parse(str(month).strip())
    except (ValueError, TypeError):
        raise QueryError(f"{month!r} is not a month: use YYYY-MM, e.g. 2026-10") from None
    return period.start, period.end


def leaderboard(conn: sqlite3.Connection, faction_id: int, stat: str, month: str | None = None,
                since: int | None = None, until: int | None = None) -> Leaderboard:
    """A faction's members ranked by how much `stat` grew over a UTC month ('2026-10') or [since, until].

    Each member's start is the value in force when the period began (the month's summary `value_start` when
    the month is folded, else the newest history row or summary end before it; for a stat first seen during
    the period, its first value in it) and the end the value in force at its end (the newest history row or
    summary end at or before it): end - start is the change, so history and summaries join without a month
    counted twice. Members: see Leaderboard.members_source. A member whose value is unknown in the period
    is listed last, without a rank."""
    if month is not None:
        if since is not None or until is not None:
            raise QueryError("give a month or since/until, not both")
        since, until = month_span(month)
    if since is None or until is None:
        raise QueryError("a leaderboard needs a month (YYYY-MM) or both since and until")
    if until < since:
        raise QueryError("until is before since")
    return _snapshot(conn, _leaderboard, int(faction_id), stat, month, int(since), int(until))


def _member_lists(conn: sqlite3.Connection, faction_id: int, since: int, until: int) -> list[tuple[int, set[int]]]:
    """(time, member ids) of the faction's member lists: the one in force at `since` (stamped `since`) and
    each one observed in the period, oldest first."""
    out: list[tuple[int, set[int]]] = []
    for (payload,) in conn.execute(
            "SELECT e.payload FROM events e JOIN streams s USING (stream_id) WHERE s.entity_type = 'faction' "
            "AND s.entity_id = ? AND s.view IN (?, ?) AND e.observed_at < ? "
            "ORDER BY e.observed_at DESC, e.position DESC LIMIT 20", (str(faction_id), *MEMBER_LIST_VIEWS, since)):
        ids = _member_ids(payload)
        if ids is not None:
            out.append((since, ids))
            break
    for t, payload in conn.execute(
            "SELECT e.observed_at, e.payload FROM events e JOIN streams s USING (stream_id) "
            "WHERE s.entity_type = 'faction' AND s.entity_id = ? AND s.view IN (?, ?) AND e.observed_at >= ? "
            "AND e.observed_at <= ? ORDER BY e.observed_at, e.position",
            (str(faction_id), *MEMBER_LIST_VIEWS, since, until)):
        ids = _member_ids(payload)
        if ids is not None:
            out.append((t, ids))
    return out


def _value_at(conn: sqlite3.Connection, key: tuple, t: int) -> tuple[int, int | float] | None:
    """(time, value) of the newest history row at or before `t`, or of the newest summary month that ended
    at or before it (its end value), whichever is newer."""
    best = conn.execute("SELECT recorded_at, value FROM stat_history WHERE entity_type = ? AND entity_id = ? "
                        "AND stat = ? AND recorded_at <= ? ORDER BY recorded_at DESC, id DESC LIMIT 1",
                        (*key, t)).fetchone()
    summary = conn.execute("SELECT period_end, value_end FROM stat_summary WHERE entity_type = ? "
                           "AND entity_id = ? AND stat = ? AND period_type = 'monthly' AND period_end <= ? "
                           "AND value_end IS NOT NULL ORDER BY period_end DESC LIMIT 1", (*key, t)).fetchone()
    if summary is not None and (best is None or summary[0] > best[0]):
        best = summary
    return (best[0], best[1]) if best is not None else None


def _period_start_value(conn: sqlite3.Connection, key: tuple, since: int, until: int) -> int | float | None:
    folded = conn.execute("SELECT value_start FROM stat_summary WHERE entity_type = ? AND entity_id = ? "
                          "AND stat = ? AND period_type = 'monthly' AND period_start = ? "
                          "AND value_start IS NOT NULL", (*key, since)).fetchone()
    if folded is not None:
        return folded[0]
    before = _value_at(conn, key, since - 1)
    if before is not None:
        return before[1]
    first = conn.execute("SELECT value FROM stat_history WHERE entity_type = ? AND entity_id = ? AND stat = ? "
                         "AND recorded_at >= ? AND recorded_at <= ? ORDER BY recorded_at, id LIMIT 1",
                         (*key, since, until)).fetchone()
    if first is not None:
        return first[0]
    summary = conn.execute("SELECT value_start FROM stat_summary WHERE entity_type = ? AND entity_id = ? "
                           "AND stat = ? AND period_type = 'monthly' AND period_start >= ? AND period_end <= ? "
                           "AND value_start IS NOT NULL ORDER BY period_start LIMIT 1",
                           (*key, since, until)).fetchone()
    return summary[0] if summary is not None else None


def _leaderboard(conn: sqlite3.Connection, faction_id: int, stat: str, month: str | None, since: int,
                 until: int) -> Leaderboard:
    stat = _resolve_stat(conn, "player", stat)
    lists = _member_lists(conn, faction_id, since, until)
    joined: dict[int, int] = {}
    left: dict[int, int] = {}
    if lists:
        source = "member_lists"
        members: set[int] = set()
        previous: set[int] | None = None
        for t, ids in lists:
            members |= ids
            if previous is not None:
                for pid in ids - previous:
                    joined.setdefault(pid, t)
                    left.pop(pid, None)
                for pid in previous - ids:
                    left[pid] = t
            previous = ids
    else:
        source = "players"
        members = {r[0] for r in conn.execute("SELECT player_id FROM players WHERE faction_id = ?", (faction_id,))}
    names = _names(conn, "players", "player_id", members)
    rows: list[LeaderRow] = []
    for pid in sorted(members):
        key = ("player", pid, stat)
        end = _value_at(conn, key, until)
        start = _period_start_value(conn, key, since, until) if end is not None else None
        change = end[1] - start if end is not None and start is not None else None
        rows.append(LeaderRow(rank=None, player_id=pid, name=names.get(pid), start=start,
                              end=end[1] if end is not None else None, change=change,
                              joined=joined.get(pid), left=left.get(pid)))
    rows.sort(key=lambda r: (r.change is None, -(r.change or 0), r.player_id))
    rank = 0
    for row in rows:
        if row.change is not None:
            rank += 1
            row.rank = rank
    return Leaderboard(faction_id=faction_id, faction_name=_entity_name(conn, "faction", faction_id), stat=stat,
                       since=since, until=until, month=month, members_source=source, rows=rows)
