"""What the wars and territories projections used to scan for, held in memory: the state, not the scans.

The two projections stay SQL handlers (they write their rows as they go), but the questions they asked of
whole tables on every war-list or territory event are answered here, from rows read once and kept up to date
as the handlers write:

* per war, its latest war_status_history row (which territory wars are ongoing: `open_territory_wars`);
* per territory, the rows of each territory war targeting it, in time order (`war_status_at`: the row known
  at an event is the newest observed before it, or at its time by an event up to its position; the wars
  handler has folded the whole batch by then);
* the territories whose war_status is not 'none' (the rows a war list re-evaluates), with last_updated.

Rows come from the database the first time they are needed (inline projection: a batch's working set, one
statement per structure) or all at once when the working set is `complete` (replay). Every answer is the one
the SQL it replaces gives (with the state kept at the horizon too, Context.kept: a war's rows before the
horizon are then read in war_status_history_at_horizon), or None when this state cannot tell (open wars with
a row newer than the event), and the handler asks the database as before. Anything that changes the tables in a
way not reported here (a restore, a rolled-back event, synthetic war ids moving to a real id) calls
`invalidate`: the rows are read again when next needed.
"""
from __future__ import annotations

import sqlite3
from typing import NamedTuple


class WarRow(NamedTuple):
    """The columns of a war_status_history row the questions need."""
    time: int
    row_id: int
    position: int
    war_type: str
    territory_id: str | None
    status: str | None
    attacking_score: float | None
    started_at: int | None
    attacking: int | None
    defending: int | None


_COLUMNS = ("recorded_at, id, event_position, war_type, territory_id, status, attacking_score, started_at, "
            "attacking_faction_id, defending_faction_id")

# Each war's latest row: the recursive CTE walks the distinct war ids one seek at a time on
# idx_war_status_war_time, and each war's latest row is one more seek.
_LATEST_SQL = f"""
WITH RECURSIVE ids(war_id) AS (
    SELECT MIN(war_id) FROM war_status_history
    UNION ALL
    SELECT (SELECT MIN(war_id) FROM war_status_history WHERE war_id > ids.war_id) FROM ids
    WHERE ids.war_id IS NOT NULL)
SELECT h.war_id, {", ".join("h." + c for c in _COLUMNS.split(", "))}
FROM ids JOIN war_status_history h ON h.id = (
    SELECT id FROM war_status_history WHERE war_id = ids.war_id ORDER BY recorded_at DESC, id DESC LIMIT 1)"""


class WarState:
    def __init__(self, conn: sqlite3.Connection, complete: bool):
        self.conn, self.complete = conn, complete
        self._latest: dict[int, WarRow] | None = None                      # war id -> latest row
        self._targets: dict[str, dict[int, list[WarRow]]] = {}             # territory -> war id -> its rows
        self._targets_all = False
        self._at_war: dict[str, int] | None = None                         # territory -> last_updated
        # The state kept at the horizon (Context.kept): war_status_history_at_horizon, per war its rows and
        # per territory the rows of its territory wars, in time order (read once; replaced only with a new
        # snapshot, which no working set outlives).
        self._kept: dict[int, list[WarRow]] | None = None
        self._kept_targets: dict[str, dict[int, list[WarRow]]] = {}

    def invalidate(self) -> None:
        self._latest = None
        self._targets = {}
        self._targets_all = False
        self._at_war = None

    # ------------------------------------------------------------------ loads
    def _load_latest(self) -> dict[int, WarRow]:
        if self._latest is None:
            self._latest = {r[0]: WarRow(*r[1:]) for r in self.conn.execute(_LATEST_SQL)}
        return self._latest

    def _load_targets(self, code: str) -> dict[int, list[WarRow]]:
        found = self._targets.get(code)
        if found is not None:
            return found
        if self.complete and not self._targets_all:
            self._targets = {}
            for r in self.conn.execute(f"SELECT war_id, {_COLUMNS} FROM war_status_history "
                                       "WHERE war_type = 'territory' AND territory_id IS NOT NULL "
                                       "ORDER BY recorded_at, id"):
                self._add_target(r[0], WarRow(*r[1:]))
            self._targets_all = True
            return self._targets.setdefault(code, {})
        if self._targets_all:
            return self._targets.setdefault(code, {})
        wars: dict[int, list[WarRow]] = {}
        self._targets[code] = wars
        for r in self.conn.execute(f"SELECT war_id, {_COLUMNS} FROM war_status_history "
                                   "WHERE territory_id = ? AND war_type = 'territory' ORDER BY recorded_at, id",
                                   (code,)):
            self._add_target(r[0], WarRow(*r[1:]))
        return wars

    def _add_target(self, war_id: int, row: WarRow) -> None:
        assert row.territory_id is not None
        rows = self._targets.setdefault(row.territory_id, {}).setdefault(war_id, [])
        if rows and rows[-1].row_id == row.row_id:
            rows[-1] = row
        else:
            rows.append(row)

    def _load_kept(self) -> dict[int, list[WarRow]]:
        if self._kept is None:
            self._kept = {}
            for r in self.conn.execute(f"SELECT war_id, {_COLUMNS} FROM war_status_history_at_horizon "
                                       "ORDER BY recorded_at, id"):
                row = WarRow(*r[1:])
                self._kept.setdefault(r[0], []).append(row)
                if row.war_type == "territory" and row.territory_id is not None:
                    self._kept_targets.setdefault(row.territory_id, {}).setdefault(r[0], []).append(row)
        return self._kept

    def _load_at_war(self) -> dict[str, int]:
        if self._at_war is None:
            self._at_war = dict(self.conn.execute(
                "SELECT territory_id, last_updated FROM territories WHERE war_status != 'none'"))
        return self._at_war

    # ------------------------------------------------------------------ writes reported by the handlers
    def war_written(self, war_id: int, row: WarRow) -> None:
        """A war_status_history row inserted (a new id) or updated in place (same id)."""
        if self._latest is not None:
            before = self._latest.get(war_id)
            if before is None or (row.time, row.row_id) >= (before.time, before.row_id):
                self._latest[war_id] = row
            else:
                self._latest = None   # (not in time order: read again)
        if row.war_type == "territory" and row.territory_id is not None:
            code = row.territory_id
            if code in self._targets or self._targets_all:
                rows = self._targets.setdefault(code, {}).get(war_id)
                if rows and (row.time, row.row_id) < (rows[-1].time, rows[-1].row_id):
                    self._targets.pop(code, None)
                    self._targets_all = False
                    return
                self._add_target(war_id, row)

    def territory_written(self, code: str, war_status: str, last_updated: int) -> None:
        if self._at_war is None:
            return
        if war_status != "none":
            self._at_war[code] = last_updated
        else:
            self._at_war.pop(code, None)

    # ------------------------------------------------------------------ questions
    def open_territory_wars(self, t: int, floor: int | None = None) -> list[tuple] | None:
        """As wars.open_territory_wars: (war_id, territory, started_at, attacking, defending) of the territory
        wars whose latest row at `t` is ongoing, by war id; None when a war's latest row is newer than `t`.
        `floor` (the horizon, with the state kept there): a war's rows before it are read in the kept state."""
        out = []
        latest = self._load_latest()
        for war_id, row in latest.items():
            if row.time > t:
                return None
            if floor is not None and row.time < floor:
                continue   # (read in the kept state below)
            if row.war_type == "territory" and row.status == "ongoing":
                out.append((war_id, row.territory_id, row.started_at, row.attacking, row.defending))
        if floor is not None:
            for war_id, rows in self._load_kept().items():
                mine = latest.get(war_id)
                if mine is not None and mine.time >= floor:
                    continue
                kept = _known(rows, t, None)
                if kept is not None and kept.war_type == "territory" and kept.status == "ongoing":
                    out.append((war_id, kept.territory_id, kept.started_at, kept.attacking, kept.defending))
        out.sort()
        return out

    def war_status(self, code: str, t: int, position: int, floor: int | None = None) -> str:
        """As territories.war_status_at: per war of the territory its row known at the event (the newest
        observed before `t`, or at `t` by an event up to `position`; from `floor` on, else in the state kept
        at the horizon), the newest of those ongoing."""
        found: WarRow | None = None
        mine = self._load_targets(code)
        candidates = []
        for rows in mine.values():
            # (the wars handler ran over the whole batch first: rows of later events may follow)
            row = _known(rows, t, position)
            if row is not None and (floor is None or row.time >= floor):
                candidates.append(row)
        if floor is not None:
            self._load_kept()
            for war_id, rows in self._kept_targets.get(code, {}).items():
                ours = mine.get(war_id)
                if ours is not None:
                    row = _known(ours, t, position)
                    if row is not None and row.time >= floor:
                        continue
                kept = _known(rows, t, position)
                if kept is not None:
                    candidates.append(kept)
        for row in candidates:
            if row.status != "ongoing":
                continue
            if found is None or (row.time, row.row_id) > (found.time, found.row_id):
                found = row
        if found is None:
            return "none"
        return "defending" if found.attacking_score == 0 else "under_attack"

    def territories_at_war(self, t: int) -> list[str]:
        """Territories whose war_status is not 'none' and last_updated between 1 and `t`, by code."""
        return sorted(code for code, updated in self._load_at_war().items() if 1 <= updated <= t)


def _known(rows: list[WarRow], t: int, position: int | None) -> WarRow | None:
    """The newest of `rows` (in time order) observed before `t`, or at `t` by an event up to `position` (any
    event when None)."""
    i = len(rows) - 1
    while i >= 0 and (rows[i].time > t or (position is not None and rows[i].time == t
                                           and rows[i].position > position)):
        i -= 1
    return rows[i] if i >= 0 else None
