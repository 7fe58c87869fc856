"""territories (current state) and territory_ownership_history (a row when something tracked changes).

One history per territory code, whichever view the news came from. Tracked: owner (faction_id), sector,
coordinates, racket level and type, war_status.

Sources (territory:<code>:<view>; a payload changes only the fields it carries):
  * v1.territory (torn territory) and v1.faction_territory (a faction's territory selection; streams of
    v1.territory made before rules r2 hold these too): owner `faction` (0 -> NULL; the listing faction
    `_faction_id` when `faction` is absent), sector, coordinate_x / coordinate_y (strings or numbers),
    `racket` (absent = the territory has no racket);
  * v2.territory (/v2/torn/territory): sector and coordinates only;
  * v2.faction_territory (/v2/faction/<id>/territory): owner = the listing faction, sector, coordinates,
    racket (null = none);
  * v2.ownership (/v2/faction/territoryownership): owner `owned_by` (null = unowned);
  * v1.racket (torn rackets): racket name and level, and the owner (`faction`, the faction holding the
    territory and so its racket; 0 -> NULL); v2.racket: racket name and level.
Collections: torn:rackets:v1.rackets lists the territories that have a racket: a territory with a racket
that is no longer listed loses it. faction:<id>:v1.territory / v2.territory list a faction's
territories: a territory no longer listed whose owner is still that faction becomes unowned (NULL) until
its new owner is seen.

Columns: sector is text (str of the number); coordinate_x / coordinate_y are floats and `coordinates` is
"x,y" from the floats' repr ("5480.74,663.71"); racket_type is the racket's name without its trailing
level numeral ("Arms Dealer IV" -> "Arms Dealer", racket_level 4), so a level change is not a type change.

war_status, from the wars projection's rows (war_status_history: those observed before this event, and
those observed at its time by events up to its position, so inline projection and replay agree whatever
the batches; the wars handler runs first; an older war row arriving later folds the territories again):
  * 'none': no ongoing territory war targets the territory;
  * 'under_attack': an ongoing war targets it and the assaulting faction has scored (score > 0), or its
    score is not reported (old v1 entries);
  * 'defending': an ongoing war targets it and the assaulters' score is still 0: the war is declared and
    the owner holds the wall.
It is re-evaluated on every territory event and, for territories not at 'none', on every war list
(torn territorywars, v1 faction, v2 wars) and war event of that territory.

Current state only moves forward (an event older than the row's last_updated writes history only, against
the row in force at its time); a row reset for replay (last_updated 0) counts as not seen yet: it
starts from blank, and collections and war lists ignore it. No history row
before Context.horizon. Owners get stub rows in `factions` when not known yet.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from tornstore.eventstore.records import Event

from ..models import (V1_TERRITORY_VIEWS, TerritoryIds, V1Faction, V1FactionTerritoryWar, V1Racket, V1Territory,
                      V1TerritoryWar, V2FactionTerritory, V2Ownership, V2Racket, V2Territory, V2TerritoryWar,
                      as_float, decode, is_set, opt_id, opt_int, racket_type)
from .base import Context, Handler, ProjectionError
from .common import History, ensure_faction, json_ids

FIELDS = ("faction_id", "sector", "coordinates", "coordinate_x", "coordinate_y", "racket_level", "racket_type",
          "war_status")
HISTORY = History("territory_ownership_history", "territory_id", "recorded_at", FIELDS)
BLANK = {f: None for f in FIELDS} | {"war_status": "none"}

TERRITORY_VIEWS = V1_TERRITORY_VIEWS | {"v2.territory", "v2.faction_territory", "v2.ownership", "v1.racket",
                                       "v2.racket"}
WAR_VIEWS = frozenset({"v1.territorywar", "v1.faction_territorywar", "v2.war"})
WAR_LISTS = frozenset({"v1.territorywars", "v1.faction", "v2.wars"})

_OWNER = "_owner"   # key of the owner in a parsed payload, before ensure_faction


def _sector(value: Any) -> str | None:
    number = opt_int(value)
    return None if number is None else str(number)


def _coords(x: Any, y: Any) -> dict[str, Any]:
    fx, fy = as_float(x), as_float(y)
    if fx is None or fy is None:
        return {}
    return {"coordinate_x": fx, "coordinate_y": fy, "coordinates": f"{fx!r},{fy!r}"}


def _racket(name: str | None, level: Any) -> dict[str, Any]:
    return {"racket_level": opt_int(level), "racket_type": racket_type(name)}


NO_RACKET = {"racket_level": None, "racket_type": None}


def territory_values(view: str, payload: Any) -> dict[str, Any]:
    """The tracked fields a territory payload carries; the owner (if any) under _OWNER."""
    out: dict[str, Any] = {}
    if view in V1_TERRITORY_VIEWS:
        t = decode(payload, V1Territory)
        if is_set(t.faction):
            out[_OWNER] = opt_id(t.faction)
        elif t.faction_id is not None:
            out[_OWNER] = opt_id(t.faction_id)
        if t.sector is not None:
            out["sector"] = _sector(t.sector)
        out.update(_coords(t.coordinate_x, t.coordinate_y))
        out.update(_racket(t.racket.name, t.racket.level) if t.racket is not None else NO_RACKET)
    elif view == "v2.territory":
        t2 = decode(payload, V2Territory)
        if t2.sector is not None:
            out["sector"] = _sector(t2.sector)
        if t2.coordinates is not None:
            out.update(_coords(t2.coordinates.x, t2.coordinates.y))
    elif view == "v2.faction_territory":
        ft = decode(payload, V2FactionTerritory)
        out[_OWNER] = opt_id(ft.faction_id)
        if ft.sector is not None:
            out["sector"] = _sector(ft.sector)
        if ft.coordinates is not None:
            out.update(_coords(ft.coordinates.x, ft.coordinates.y))
        out.update(_racket(ft.racket.name, ft.racket.level) if ft.racket is not None else NO_RACKET)
    elif view == "v2.ownership":
        out[_OWNER] = opt_id(decode(payload, V2Ownership).owned_by)
    elif view == "v1.racket":
        r = decode(payload, V1Racket)
        out.update(_racket(r.name, r.level))
        if r.faction is not None:
            out[_OWNER] = opt_id(r.faction)
    elif view == "v2.racket":
        r2 = decode(payload, V2Racket)
        out.update(_racket(r2.name, r2.level))
    return out


# The ongoing war of a territory known at an event: each war's latest row of the territory (rows recorded and
# logged by then), the newest such row that is ongoing. The latest row is one seek on idx_war_status_war_time
# (`+territory_id` keeps the planner off the territory index there), so only one row per war reaches Python and
# is checked, instead of every row of every war of the territory (the old newest-first loop). The DISTINCT
# still reads the territory's index entries in SQL.
WAR_STATUS_SQL = """
SELECT h.status, h.attacking_score FROM (
    SELECT DISTINCT war_id FROM war_status_history
    WHERE territory_id = :code AND war_type = 'territory' AND recorded_at <= :t
      AND (event_position <= :pos OR recorded_at < :t)) w
JOIN war_status_history h ON h.id = (
    SELECT id FROM war_status_history
    WHERE war_id = w.war_id AND +territory_id = :code AND war_type = 'territory' AND recorded_at <= :t
      AND (event_position <= :pos OR recorded_at < :t)
    ORDER BY recorded_at DESC, id DESC LIMIT 1)
WHERE h.status = 'ongoing'
ORDER BY h.recorded_at DESC, h.id DESC LIMIT 1"""


# The same with the state kept at the horizon (Context.kept): each war's latest row from the horizon on, or, for
# a war with none, its row in force at the horizon (war_status_history_at_horizon); merged in Python.
WAR_ROWS_SINCE_SQL = """
SELECT h.war_id, h.recorded_at, h.id, h.status, h.attacking_score FROM (
    SELECT DISTINCT war_id FROM war_status_history
    WHERE territory_id = :code AND war_type = 'territory' AND recorded_at BETWEEN :floor AND :t
      AND (event_position <= :pos OR recorded_at < :t)) w
JOIN war_status_history h ON h.id = (
    SELECT id FROM war_status_history
    WHERE war_id = w.war_id AND +territory_id = :code AND war_type = 'territory' AND recorded_at BETWEEN :floor AND :t
      AND (event_position <= :pos OR recorded_at < :t)
    ORDER BY recorded_at DESC, id DESC LIMIT 1)"""
KEPT_WAR_ROWS_SQL = """
SELECT war_id, recorded_at, id, status, attacking_score FROM war_status_history_at_horizon
WHERE territory_id = :code AND war_type = 'territory' AND recorded_at <= :t
  AND (event_position <= :pos OR recorded_at < :t)"""


def war_status_at(conn: sqlite3.Connection, code: str, event: Event, ctx: Context | None = None) -> str:
    """'none', 'under_attack' or 'defending' from the wars rows of `code` known at this event."""
    if ctx is not None and ctx.wars is not None:
        return ctx.wars.war_status(code, event.observed_at, event.position, ctx.horizon if ctx.kept else None)
    args = {"code": code, "t": event.observed_at, "pos": event.position}
    if ctx is not None and ctx.kept:
        latest: dict[int, tuple] = {}
        for war_id, *row in conn.execute(KEPT_WAR_ROWS_SQL, args).fetchall():
            if war_id not in latest or row[:2] > latest[war_id][:2]:
                latest[war_id] = tuple(row)
        for war_id, *row in conn.execute(WAR_ROWS_SINCE_SQL, {**args, "floor": ctx.horizon}).fetchall():
            latest[war_id] = tuple(row)
        ongoing = sorted(r for r in latest.values() if r[2] == "ongoing")
        found = ongoing[-1][2:] if ongoing else None
    else:
        found = conn.execute(WAR_STATUS_SQL, args).fetchone()
    if found is None:
        return "none"
    return "defending" if found[1] == 0 else "under_attack"


def _war_territory(view: str, payload: Any) -> str | None:
    if view == "v1.territorywar":
        return decode(payload, V1TerritoryWar).territory
    if view == "v1.faction_territorywar":
        return decode(payload, V1FactionTerritoryWar).territory
    return decode(payload, V2TerritoryWar).territory


class TerritoriesHandler(Handler):
    name = "territories"
    views = TERRITORY_VIEWS | WAR_VIEWS | WAR_LISTS | {"v1.rackets"}
    history_tables = ("territory_ownership_history",)
    state_tables = ("territories",)

    def apply(self, conn: sqlite3.Connection, event: Event, ctx: Context) -> None:
        et, eid, view = event.stream
        t = event.observed_at
        if et == "territory" and view in TERRITORY_VIEWS:
            values = territory_values(view, event.payload)
            if values.get("racket_level") is not None and values["racket_level"] < 0:
                raise ProjectionError(f"territory {eid} ({view}): racket level {values['racket_level']} is negative")
            if _OWNER in values:
                values["faction_id"] = ensure_faction(conn, values.pop(_OWNER), None, t)
            values["war_status"] = war_status_at(conn, eid, event, ctx)
            self.change(conn, eid, values, event, ctx)
        elif et == "territorywar" and view in WAR_VIEWS:
            code = _war_territory(view, event.payload)
            if code:
                self.change(conn, code, {"war_status": war_status_at(conn, code, event, ctx)}, event, ctx)
        elif view in WAR_LISTS and et in ("torn", "faction"):
            if view == "v1.faction":
                ids = decode(event.payload, V1Faction).territory_war_ids
                if not is_set(ids) or ids is None:
                    return
            if ctx.wars is not None:
                at_war = ctx.wars.territories_at_war(t)
            else:
                at_war = [code for (code,) in conn.execute(
                    "SELECT territory_id FROM territories WHERE war_status != 'none' "
                    "AND last_updated BETWEEN 1 AND ? ORDER BY territory_id", (t,)).fetchall()]
            for code in at_war:
                self.change(conn, code, {"war_status": war_status_at(conn, code, event, ctx)}, event, ctx)
        elif et == "faction" and view in ("v1.territory", "v2.territory"):
            faction_id = opt_id(eid)
            listed = decode(event.payload, TerritoryIds).territory_ids
            for (code,) in conn.execute(
                    "SELECT territory_id FROM territories WHERE faction_id = ? AND last_updated BETWEEN 1 AND ? "
                    "AND territory_id NOT IN (SELECT value FROM json_each(?)) ORDER BY territory_id",
                    (faction_id, t, json_ids(listed))).fetchall():
                self.change(conn, code, {"faction_id": None}, event, ctx)
        elif et == "torn" and view == "v1.rackets":
            listed = decode(event.payload, TerritoryIds).territory_ids
            for (code,) in conn.execute(
                    "SELECT territory_id FROM territories WHERE (racket_level IS NOT NULL OR racket_type IS NOT NULL) "
                    "AND last_updated BETWEEN 1 AND ? AND territory_id NOT IN (SELECT value FROM json_each(?)) "
                    "ORDER BY territory_id", (t, json_ids(listed))).fetchall():
                self.change(conn, code, dict(NO_RACKET), event, ctx)

    def restore_from(self, conn: sqlite3.Connection, t: int, ctx: Context) -> None:
        """History rows from `t` on go (none before the horizon); a territory touched since takes the state its
        history row in force before `t` records (stamped with that row's time), or is forgotten when there is
        none."""
        conn.execute("DELETE FROM territory_ownership_history WHERE recorded_at >= ?", (max(t, ctx.horizon),))
        sets = ", ".join(f"{f} = ?" for f in FIELDS)
        for (code,) in conn.execute("SELECT territory_id FROM territories WHERE last_updated >= ? "
                                    "ORDER BY territory_id", (t,)).fetchall():
            prev = HISTORY.latest(conn, code, t - 1, ctx)
            if prev is None:
                conn.execute("DELETE FROM territories WHERE territory_id = ?", (code,))
            else:
                conn.execute(f"UPDATE territories SET {sets}, last_updated = ? WHERE territory_id = ?",
                             (*[prev.values[f] for f in FIELDS], prev.time, code))

    def change(self, conn: sqlite3.Connection, code: str, partial: dict[str, Any], event: Event,
               ctx: Context) -> None:
        """Apply what an event says about one territory to its current state and history."""
        t = event.observed_at
        row = conn.execute(f"SELECT {', '.join(FIELDS)}, last_updated FROM territories WHERE territory_id = ?",
                           (code,)).fetchone()
        last_updated = row[-1] if row is not None else 0
        if row is not None and last_updated > 0 and t < last_updated:
            HISTORY.record(conn, code, partial, event, ctx)   # late: history only
            return
        fresh = row is None or last_updated == 0
        base = dict(BLANK) if fresh else dict(zip(FIELDS, row[:-1], strict=True))
        merged = dict(base)
        merged.update({k: v for k, v in partial.items() if k in merged})
        if merged["war_status"] is None:
            merged["war_status"] = "none"
        if fresh and merged == BLANK:
            return  # nothing known about a territory we have not seen (since a replay reset)
        if row is None:
            conn.execute(f"INSERT INTO territories (territory_id, {', '.join(FIELDS)}, last_updated) "
                         f"VALUES (?, {', '.join('?' * len(FIELDS))}, ?)", (code, *merged.values(), t))
        else:
            conn.execute(f"UPDATE territories SET {', '.join(f + ' = ?' for f in FIELDS)}, last_updated = ? "
                         f"WHERE territory_id = ?", (*merged.values(), t, code))
        if ctx.wars is not None:
            ctx.wars.territory_written(code, merged["war_status"], t)
        if t < ctx.horizon or (not fresh and merged == base):
            return
        prev = HISTORY.latest(conn, code, t, ctx)
        if prev is None or prev.values != merged:
            HISTORY.write(conn, code, merged, event, prev)
