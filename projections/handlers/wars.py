"""war_status_history: snapshots of ranked and territory wars, a row when anything tracked changes.

Tracked: attacking/defending faction, their scores, required score, status, start, end, winner (and the
war's type and territory). Events of one observation fold into one row; no row before Context.horizon.

Ranked wars (rankedwar:<id>: v1.rankedwar {factions: {fid: {name, score, chain}}, war: {start, end, target,
winner}}, v2.war and v2.rankedwar {start, end, target, winner, factions: [{id, name, score, chain}]}, and the
final reports v1.rankedwarreport (torn/<war id>?selections=rankedwarreport: the v1.rankedwar shape without
target, plus attacks and members) and v2.rankedwarreport (/v2/faction/<war id>/rankedwarreport: the
v2.rankedwar shape without target)):
  * attacking/defending: ranked wars are symmetric (matchmaking pairs two factions), so the faction with
    the LOWER faction id is stored as attacking and the HIGHER as defending. The rule is stable across API
    versions and polls, so a war keeps its two columns for life.
  * required_score = target; end 0 / null and winner 0 / null mean "not yet" (v2 rankedwars says end 0).

Territory wars (territorywar:<id>: v1.territorywar from torn territorywars, v1.faction_territorywar from a
faction's territory_wars, v2.war from /v2/faction/<id>/wars, and the `war` inside a v1 torn territory):
  * attacking = assaulting faction (v2: the participant with is_aggressor), defending = defending faction;
  * attacking_score = v1 `score` (the assaulters' wall score) or the v2 aggressor's score; defending_score
    only from v2; required_score = v1 required_score / v2 target; ends_at = the scheduled end;
  * war id: territory_war_id / war_id when the API gives one. Old v1 entries have none; they are named
    by territory and start, and get a synthetic NEGATIVE id -(start * 1000000 + code number) (code read
    in base 27, A=1). When the real id of a war (same territory and start) is seen later, its rows move to
    the real id; an entry without id reuses the real id already known for that territory and start.

Status, computed at the event's observed_at:
  * 'completed' when a winner is known, or the end time is set and <= observed_at;
  * 'cancelled' for a ranked war whose end has passed with no winner and both scores 0, and for a territory
    war that vanished from the lists before its scheduled end with an assaulting score of 0 (no wall was
    ever taken, so it was called off rather than won);
  * 'ongoing' otherwise: end 0/null or in the future (a war announced but not started yet is 'ongoing'
    too; started_at tells).
  A territory war that vanishes from a full list it was in has ended: torn:territorywars:v1.territorywars
  lists every active territory war, and a faction's v1.faction `territory_war_ids` / v2.wars
  `territory_war_ids` list all of that faction's. An ongoing war missing from such a list gets a row at
  that observation: 'completed' (winner unknown, NULL), or 'cancelled' as above. An ended war never turns
  back to 'ongoing' (a stale cached list cannot revive it); its other fields still update.

Factions named by wars (participants, winner) get stub rows in `factions` with the name the war gives.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from tornstore.eventstore.records import Event

from ..models import (UNSET, V1_TERRITORY_VIEWS, TerritoryWarIds, V1Faction, V1FactionTerritoryWar, V1RankedWar,
                      V1Territory, V1TerritoryWar, V2FactionWars, V2RankedWar, V2TerritoryWar, decode, is_set,
                      opt_id, opt_int, opt_score, opt_text)
from .base import Context, Handler, ProjectionError
from .common import History, ensure_faction
from .warstate import WarRow

FIELDS = ("war_type", "territory_id", "attacking_faction_id", "defending_faction_id", "attacking_score",
          "defending_score", "required_score", "status", "started_at", "ends_at", "winner_faction_id")
HISTORY = History("war_status_history", "war_id", "recorded_at", FIELDS)
ENDED = ("completed", "cancelled")

# The territory wars whose latest row at :t is ongoing. Shaped for idx_war_status_war_time(war_id, recorded_at):
# the recursive CTE walks the distinct war ids one index seek at a time and each war's latest row is one more
# seek, so a list event costs a seek per war, not a sort of every history row (the cost grew with history).
# A war id's latest row of any type is its state (HISTORY is keyed by war_id alone), hence war_type outside.
OPEN_TERRITORY_WARS_SQL = """
WITH RECURSIVE ids(war_id) AS (
    SELECT MIN(war_id) FROM war_status_history
    UNION ALL
    SELECT (SELECT MIN(war_id) FROM war_status_history WHERE war_id > ids.war_id) FROM ids
    WHERE ids.war_id IS NOT NULL)
SELECT h.war_id, h.territory_id, h.started_at, h.attacking_faction_id, h.defending_faction_id
FROM ids JOIN war_status_history h ON h.id = (
    SELECT id FROM war_status_history WHERE war_id = ids.war_id AND recorded_at <= :t
    ORDER BY recorded_at DESC, id DESC LIMIT 1)
WHERE h.war_type = 'territory' AND h.status = 'ongoing'
ORDER BY h.war_id"""
# With the state kept at the horizon (Context.kept): each war's latest row from the horizon on, else its row in
# force at the horizon (war_status_history_at_horizon).
OPEN_TERRITORY_WARS_SINCE_SQL = OPEN_TERRITORY_WARS_SQL.replace(
    "war_id = ids.war_id AND recorded_at <= :t", "war_id = ids.war_id AND recorded_at BETWEEN :floor AND :t")
assert OPEN_TERRITORY_WARS_SINCE_SQL != OPEN_TERRITORY_WARS_SQL
KEPT_OPEN_TERRITORY_WARS_SQL = """
SELECT s.war_id, s.territory_id, s.started_at, s.attacking_faction_id, s.defending_faction_id
FROM war_status_history_at_horizon AS s
WHERE s.war_type = 'territory' AND s.status = 'ongoing' AND s.recorded_at <= :t
  AND s.id = (SELECT id FROM war_status_history_at_horizon WHERE war_id = s.war_id AND recorded_at <= :t
              ORDER BY recorded_at DESC, id DESC LIMIT 1)
  AND NOT EXISTS (SELECT 1 FROM war_status_history AS h WHERE h.war_id = s.war_id
                  AND h.recorded_at BETWEEN :floor AND :t)"""


def open_territory_wars(conn: sqlite3.Connection, t: int, ctx: Context) -> list[tuple]:
    """(war_id, territory, started_at, attacking, defending) of the territory wars ongoing at `t`, by war id."""
    if ctx.wars is not None:
        found = ctx.wars.open_territory_wars(t, ctx.horizon if ctx.kept else None)
        if found is not None:
            return found
    if not ctx.kept:
        return conn.execute(OPEN_TERRITORY_WARS_SQL, {"t": t}).fetchall()
    args = {"t": t, "floor": ctx.horizon}
    return sorted(conn.execute(OPEN_TERRITORY_WARS_SINCE_SQL, args).fetchall()
                  + conn.execute(KEPT_OPEN_TERRITORY_WARS_SQL, args).fetchall())


# ------------------------------------------------------------------------------------------ ids
def code_number(code: str) -> int:
    number = 0
    for ch in code:
        number = number * 27 + (ord(ch) - 64)
    return number


def synthetic_war_id(code: str, start: int) -> int:
    """The id of a territory war the API names only by territory and start (always negative)."""
    return -(start * 1_000_000 + code_number(code))


def parse_war_key(entity_id: str) -> tuple[int | None, str | None, int | None]:
    """Routing's name of a territory war: "40113" -> (40113, None, None); "EAD@1628841674" -> (None, "EAD",
    1628841674)."""
    if "@" in entity_id:
        code, _, start = entity_id.partition("@")
        return None, code, opt_int(start)
    return opt_id(entity_id), None, None


def resolve_territory_war_id(conn: sqlite3.Connection, real_id: int | None, code: str | None,
                             start: int | None, ctx: Context | None = None) -> int:
    if code and start is not None:
        synthetic = synthetic_war_id(code, start)
        if real_id is not None:
            moved = conn.execute("UPDATE war_status_history SET war_id = ? WHERE war_id = ?", (real_id, synthetic))
            if moved.rowcount and ctx is not None and ctx.wars is not None:
                ctx.wars.invalidate()
            return real_id
        known = ("SELECT war_id FROM {} WHERE territory_id = ? AND started_at = ? AND war_type = 'territory' "
                 "AND war_id > 0{} ORDER BY id DESC LIMIT 1")
        if ctx is not None and ctx.kept:   # rows before the horizon are read in the state kept there
            row = conn.execute(known.format("war_status_history", " AND recorded_at >= ?"),
                               (code, start, ctx.horizon)).fetchone()
            if row is None:
                row = conn.execute(known.format("war_status_history_at_horizon", ""), (code, start)).fetchone()
        else:
            row = conn.execute(known.format("war_status_history", ""), (code, start)).fetchone()
        return row[0] if row else synthetic
    if real_id is not None:
        return real_id
    raise ProjectionError("territory war has neither an id nor a territory and start time")


# ------------------------------------------------------------------------------------------ status
def ranked_status(m: dict[str, Any], observed_at: int) -> str:
    if m.get("winner_faction_id") is not None:
        return "completed"
    end = m.get("ends_at")
    if end is not None and end <= observed_at:
        if m.get("attacking_score") == 0 and m.get("defending_score") == 0:
            return "cancelled"
        return "completed"
    return "ongoing"


def territory_status(m: dict[str, Any], observed_at: int, listed: bool) -> str:
    if m.get("winner_faction_id") is not None:
        return "completed"
    end = m.get("ends_at")
    if end is not None and end <= observed_at:
        return "completed"
    if listed:
        return "ongoing"
    return "cancelled" if m.get("attacking_score") == 0 else "completed"


def _finish(kind: str, observed_at: int, listed: bool = True):
    def finish(m: dict[str, Any]) -> None:
        before = m.get("status")
        now = ranked_status(m, observed_at) if kind == "ranked" else territory_status(m, observed_at, listed)
        m["status"] = before if before in ENDED and now == "ongoing" else now
    return finish


def _check_scores(war: str, values: dict[str, Any]) -> None:
    for col in ("attacking_score", "defending_score", "required_score"):
        if values.get(col) is not None and values[col] < 0:
            raise ProjectionError(f"{war}: {col} {values[col]} is negative")


def _record(conn: sqlite3.Connection, war_id: int, partial: dict[str, Any], event: Event, ctx: Context,
            finish) -> None:
    """HISTORY.record, telling the wars state (Context.wars) of the row written."""
    t = event.observed_at
    if t < ctx.horizon:
        return
    prev = HISTORY.latest(conn, war_id, t, ctx)
    merged = dict.fromkeys(FIELDS)
    if prev is not None:
        merged.update(prev.values)
    merged.update({k: v for k, v in partial.items() if k in merged})
    finish(merged)
    if prev is not None and merged == prev.values:
        return
    ordered = [merged[f] for f in FIELDS]
    if prev is not None and prev.time == t:
        conn.execute(HISTORY._update_sql, (*ordered, event.position, prev.row_id))
        row_id = prev.row_id
    else:
        inserted = conn.execute(HISTORY._insert_sql, (war_id, t, *ordered, event.position)).lastrowid
        assert inserted is not None
        row_id = inserted
    if ctx.wars is not None:
        ctx.wars.war_written(war_id, WarRow(
            t, row_id, event.position, str(merged["war_type"]), merged["territory_id"], merged["status"],
            merged["attacking_score"], merged["started_at"], merged["attacking_faction_id"],
            merged["defending_faction_id"]))


# ------------------------------------------------------------------------------------------ handler
class WarsHandler(Handler):
    name = "wars"
    views = frozenset({"v1.rankedwar", "v2.war", "v2.rankedwar", "v1.rankedwarreport", "v2.rankedwarreport",
                       "v1.territorywar", "v1.faction_territorywar",
                       "v1.territorywars", "v1.faction", "v2.wars"}) | V1_TERRITORY_VIEWS
    history_tables = ("war_status_history",)
    state_tables = ()

    def restore_from(self, conn: sqlite3.Connection, t: int, ctx: Context) -> None:
        """A war's state is its rows: those observed from `t` on go (the events are applied again); none
        before the horizon (the detail of months the compactor is pruning)."""
        conn.execute("DELETE FROM war_status_history WHERE recorded_at >= ?", (max(t, ctx.horizon),))

    def apply(self, conn: sqlite3.Connection, event: Event, ctx: Context) -> None:
        et, eid, view = event.stream
        if et == "rankedwar":
            war_id = opt_id(eid)
            if war_id is None:
                raise ProjectionError(f"rankedwar {eid!r}: not a war id")
            if view in ("v1.rankedwar", "v1.rankedwarreport"):
                self._v1_ranked(conn, event, ctx, war_id)
            elif view in ("v2.war", "v2.rankedwar", "v2.rankedwarreport"):
                self._v2_ranked(conn, event, ctx, war_id)
        elif et == "territorywar":
            real_id, code, start = parse_war_key(eid)
            if view == "v1.territorywar":
                w = decode(event.payload, V1TerritoryWar)
                self._v1_territory(conn, event, ctx, w, real_id or opt_id(w.territory_war_id), w.territory or code)
            elif view == "v1.faction_territorywar":
                f = decode(event.payload, V1FactionTerritoryWar)
                self._territory(conn, event, ctx, real_id or opt_id(f.territory_war_id), f.territory or code,
                                opt_int(f.start_time), opt_int(f.end_time), opt_id(f.assaulting_faction),
                                opt_id(f.defending_faction), f.score, UNSET, f.required_score, UNSET, {})
            elif view == "v2.war":
                self._v2_territory(conn, event, ctx, real_id)
        elif et == "territory" and view in V1_TERRITORY_VIEWS:
            t = decode(event.payload, V1Territory)
            if t.war is not None:
                self._v1_territory(conn, event, ctx, t.war, opt_id(t.war.territory_war_id), eid)
        elif et == "torn" and view == "v1.territorywars":
            self._end_unlisted(conn, event, ctx, decode(event.payload, TerritoryWarIds).war_ids, None)
        elif et == "faction" and view == "v1.faction":
            ids = decode(event.payload, V1Faction).territory_war_ids
            if is_set(ids) and ids is not None:
                self._end_unlisted(conn, event, ctx, ids, opt_id(eid))
        elif et == "faction" and view == "v2.wars":
            ids2 = decode(event.payload, V2FactionWars).territory_war_ids
            self._end_unlisted(conn, event, ctx, [str(i) for i in ids2], opt_id(eid))

    # ---------------------------------------------------------------- ranked
    def _v1_ranked(self, conn, event: Event, ctx: Context, war_id: int) -> None:
        w = decode(event.payload, V1RankedWar)
        sides = []
        for fid, side in w.factions.items():
            sides.append((opt_id(fid), opt_text(side.name), opt_score(side.score)))
        info = w.war
        # A report (final scores and winner) says nothing of the target: the row in force keeps it.
        target = UNSET if event.stream.view == "v1.rankedwarreport" else opt_int(info.target) if info else None
        self._ranked(conn, event, ctx, war_id, sides,
                     opt_int(info.start) if info else None, opt_int(info.end) if info else None,
                     target, opt_id(info.winner) if info else None)

    def _v2_ranked(self, conn, event: Event, ctx: Context, war_id: int) -> None:
        w = decode(event.payload, V2RankedWar)
        sides = [(opt_id(f.id), opt_text(f.name), opt_score(f.score)) for f in w.factions]
        target = UNSET if event.stream.view == "v2.rankedwarreport" else opt_int(w.target)
        self._ranked(conn, event, ctx, war_id, sides, opt_int(w.start), opt_int(w.end), target, opt_id(w.winner))

    def _ranked(self, conn, event: Event, ctx: Context, war_id: int, sides, start, end, target, winner) -> None:
        t = event.observed_at
        known = sorted((s for s in sides if s[0] is not None), key=lambda s: s[0])
        names = {fid: name for fid, name, _ in known}
        for fid, name, _ in known:
            ensure_faction(conn, fid, name, t)
        attacking = known[0] if known else (None, None, None)
        defending = known[1] if len(known) > 1 else (None, None, None)
        values = {
            "war_type": "ranked", "territory_id": None,
            "attacking_faction_id": attacking[0], "defending_faction_id": defending[0],
            "attacking_score": attacking[2], "defending_score": defending[2],
            "required_score": target, "started_at": start or None, "ends_at": end or None,
            "winner_faction_id": ensure_faction(conn, winner, names.get(winner), t),
        }
        if not is_set(target):
            del values["required_score"]
        _check_scores(f"rankedwar {war_id}", values)
        _record(conn, war_id, values, event, ctx, finish=_finish("ranked", t))

    # ---------------------------------------------------------------- territory
    def _v1_territory(self, conn, event: Event, ctx: Context, w: V1TerritoryWar, real_id, code) -> None:
        self._territory(conn, event, ctx, real_id, code, opt_int(w.started), opt_int(w.ends),
                        opt_id(w.assaulting_faction), opt_id(w.defending_faction), w.score, UNSET,
                        w.required_score, UNSET, {})

    def _v2_territory(self, conn, event: Event, ctx: Context, real_id) -> None:
        w = decode(event.payload, V2TerritoryWar)
        real_id = real_id or opt_id(w.war_id)
        aggressors = [f for f in w.factions if f.is_aggressor]
        others = [f for f in w.factions if f.is_aggressor is False]
        if len(w.factions) and (len(aggressors) != 1 or len(others) != 1):
            raise ProjectionError(f"territorywar {real_id}: factions[].is_aggressor does not name one assaulting "
                                  "and one defending faction")
        att = aggressors[0] if aggressors else None
        dfn = others[0] if others else None
        names = {opt_id(f.id): opt_text(f.name) for f in w.factions}
        self._territory(conn, event, ctx, real_id, w.territory, opt_int(w.start), opt_int(w.end),
                        opt_id(att.id) if att else None, opt_id(dfn.id) if dfn else None,
                        att.score if att else UNSET, dfn.score if dfn else UNSET, w.target, w.winner, names)

    def _territory(self, conn, event: Event, ctx: Context, real_id, code, start, end, attacking, defending,
                   att_score, def_score, required, winner, names: dict) -> None:
        t = event.observed_at
        code = str(code) if code else None
        war_id = resolve_territory_war_id(conn, real_id, code, start, ctx)
        values: dict[str, Any] = {
            "war_type": "territory", "territory_id": code,
            "attacking_faction_id": ensure_faction(conn, attacking, names.get(attacking), t),
            "defending_faction_id": ensure_faction(conn, defending, names.get(defending), t),
            "started_at": start or None, "ends_at": end or None,
        }
        if is_set(att_score):
            values["attacking_score"] = opt_score(att_score)
        if is_set(def_score):
            values["defending_score"] = opt_score(def_score)
        if is_set(required):
            values["required_score"] = opt_int(required)
        if is_set(winner):
            winner_id = opt_id(winner)
            values["winner_faction_id"] = ensure_faction(conn, winner_id, names.get(winner_id), t)
        _check_scores(f"territorywar {war_id} ({code})", values)
        _record(conn, war_id, values, event, ctx, finish=_finish("territory", t))

    def _end_unlisted(self, conn, event: Event, ctx: Context, listed: list[str], faction_id: int | None) -> None:
        """Ongoing territory wars (of `faction_id`, or all) missing from a full list have ended."""
        t = event.observed_at
        if t < ctx.horizon:
            return   # (no row is written before the horizon)
        ids, keys = set(), set()
        for name in listed:
            real_id, code, start = parse_war_key(str(name))
            if real_id is not None:
                ids.add(real_id)
            elif code and start is not None:
                keys.add((code, start))
        for war_id, territory, started, attacking, defending in open_territory_wars(conn, t, ctx):
            if faction_id is not None and faction_id not in (attacking, defending):
                continue
            if war_id in ids or (territory, started) in keys:
                continue
            _record(conn, war_id, {}, event, ctx, finish=_finish("territory", t, listed=False))
