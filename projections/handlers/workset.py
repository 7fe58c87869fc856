"""The working set of the fold projections: the rows they read and write, held in memory.

The entity projections (factions, players, player_stats, faction_history) are folds: a function of the
rows in force and one event, giving the new rows, with no SQL inside. They read and write a `WorkSet`;
the SQL stays here, at the edges:

* `load`: a row is read from the database the first time it is asked for (one statement for many keys when
  the runner knows them up front: `prefetch`), then served from memory. A key looked up and not found is
  remembered as absent.
* `flush`: the rows that changed are written back, one executemany per table and column set.

Inline projection makes a WorkSet per ingest batch (its rows are the batch's entities); replay keeps one
for the whole run, `complete` (every row is in memory: a miss means "no such row", no query), so an event
costs no SQL at all unless it writes a history row, or needs what only the log knows (a seed, or the row in
force before the newest one, for a late event).

History tables keep, per entity, the newest row (`Latest`); new rows get their ids here (the table's
AUTOINCREMENT sequence, as SQLite would give them) so a row folded into by a later event of the same
observation is updated in memory before it is ever written.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from tornstore.eventstore.db import ids_written, sequence_value

from .warstate import WarState

_ids_json = msgspec.json.Encoder().encode


class Rows:
    """The in-memory rows of one current-state table, keyed by its integer primary key.

    `rows[key]` is a dict of every column (a missing key: not loaded, or `None` when loaded and absent).
    Writers call `put`, which marks the row dirty; `flush` writes the dirty rows back."""

    def __init__(self, conn: sqlite3.Connection, table: str, key: str, columns: tuple[str, ...],
                 complete: bool = False):
        self.conn, self.table, self.key, self.columns = conn, table, key, columns
        self.complete = complete
        self.rows: dict[int, dict[str, Any] | None] = {}
        self.dirty: set[int] = set()
        self._select = (f"SELECT {key}, {', '.join(columns)} FROM {table} "
                        f"WHERE {key} IN (SELECT value FROM json_each(?))")
        cols = (key, *columns)
        self._upsert = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                        f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns))

    def _store(self, rows: Iterable[tuple]) -> None:
        for row in rows:
            self.rows[row[0]] = dict(zip(self.columns, row[1:], strict=True))

    def prefetch(self, keys: Iterable[int]) -> None:
        """Read the rows of `keys` not in memory yet, in one statement."""
        if self.complete:
            return
        wanted = [k for k in set(keys) if k not in self.rows]
        if not wanted:
            return
        self._store(self.conn.execute(self._select, (_ids_json(wanted).decode(),)))
        for k in wanted:
            self.rows.setdefault(k, None)

    def load_all(self, where: str = "", args: tuple = ()) -> None:
        """Read every row (matching `where`) not in memory yet: rows in memory are newer than the table's."""
        sql = f"SELECT {self.key}, {', '.join(self.columns)} FROM {self.table} {where}"
        self._store(r for r in self.conn.execute(sql, args) if r[0] not in self.rows)

    def get(self, key: int) -> dict[str, Any] | None:
        try:
            return self.rows[key]
        except KeyError:
            if self.complete:
                return None
            self.prefetch((key,))
            return self.rows[key]

    def put(self, key: int, row: dict[str, Any]) -> None:
        self.rows[key] = row
        self.dirty.add(key)

    def flush(self) -> None:
        if not self.dirty:
            return
        cols = self.columns
        out = []
        for key in sorted(self.dirty):
            row = self.rows[key]
            assert row is not None
            out.append((key, *[row[c] for c in cols]))
        self.conn.executemany(self._upsert, out)
        self.dirty.clear()

    def forget(self) -> None:
        """Drop what is in memory (after another writer, an SQL handler, may have changed the table)."""
        self.flush()
        self.rows.clear()
        self.complete = False


class PlayerRows(Rows):
    """`players`, with the players of each faction at hand (a member list names who is still in it)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.by_faction: dict[int, set[int]] = {}
        self._factions_loaded: set[int] = set()

    def _store(self, rows: Iterable[tuple]) -> None:
        for row in rows:
            values = dict(zip(self.columns, row[1:], strict=True))
            self.rows[row[0]] = values
            self._index(row[0], None, values["faction_id"])

    def _index(self, key: int, old: int | None, new: int | None) -> None:
        if old == new:
            return
        if old is not None:
            self.by_faction.get(old, set()).discard(key)
        if new is not None:
            self.by_faction.setdefault(new, set()).add(key)

    def put(self, key: int, row: dict[str, Any]) -> None:
        before = self.rows.get(key)
        self._index(key, before["faction_id"] if before else None, row["faction_id"])
        super().put(key, row)

    def newest_by_view(self, player_id: int, before_position: int) -> dict[str, int]:
        """Per view of the player's streams: the time of its newest event before `before_position` (a late
        event asks which columns newer observations may have set)."""
        return {view: t for view, t in self.conn.execute(
            "SELECT s.view, (SELECT e.observed_at FROM events e WHERE e.stream_id = s.stream_id AND e.position < ? "
            "ORDER BY e.observed_at DESC LIMIT 1) FROM streams s WHERE s.entity_type = 'user' AND s.entity_id = ?",
            (before_position, str(player_id))) if t is not None}

    def of_faction(self, faction_id: int) -> list[int]:
        """The players whose faction is `faction_id`, as far as the rows in force say."""
        if not self.complete and faction_id not in self._factions_loaded:
            self.load_all("WHERE faction_id = ?", (faction_id,))
            self._factions_loaded.add(faction_id)
        return sorted(self.by_faction.get(faction_id, ()))

    def forget(self) -> None:
        super().forget()
        self.by_faction.clear()
        self._factions_loaded.clear()


class PastRow(msgspec.Struct):
    """A history row: its id, its time, and its tracked values (in the table's field order)."""
    row_id: int
    time: int
    values: dict[str, Any]


class HistorySQL:
    """The statements of one history table that look up the row in force at a time: the newest row with
    time <= t; with the state kept at the horizon (`kept`), from the horizon on in the table and before it
    in `<table>_at_horizon`. Shared by the working set (Latest) and the SQL handlers (common.History)."""

    def __init__(self, table: str, key: str, time: str, fields: Iterable[str]):
        self.table, self.key, self.time, self.fields = table, key, time, tuple(fields)
        cols = ", ".join(self.fields)
        self._latest_sql = (f"SELECT id, {time}, {cols} FROM {table} WHERE {key} = ? AND {time} <= ? "
                            f"ORDER BY {time} DESC, id DESC LIMIT 1")
        self._latest_since_sql = (f"SELECT id, {time}, {cols} FROM {table} WHERE {key} = ? AND {time} <= ? "
                                  f"AND {time} >= ? ORDER BY {time} DESC, id DESC LIMIT 1")
        self._kept_sql = (f"SELECT id, {time}, {cols} FROM {table}_at_horizon WHERE {key} = ? AND {time} <= ? "
                          f"ORDER BY {time} DESC, id DESC LIMIT 1")

    def row_at(self, conn: sqlite3.Connection, key: Any, at: int, horizon: int = 0,
               kept: bool = False) -> PastRow | None:
        if kept:
            row = conn.execute(self._latest_since_sql, (key, at, horizon)).fetchone()
            if row is None:
                row = conn.execute(self._kept_sql, (key, at)).fetchone()
        else:
            row = conn.execute(self._latest_sql, (key, at)).fetchone()
        if row is None:
            return None
        return PastRow(row[0], row[1], dict(zip(self.fields, row[2:], strict=True)))


class Latest:
    """For one history table: each entity's newest row, new rows waiting to be written, and the id sequence.

    `at(key, t)` is the row in force at time t (the newest with time <= t); with the state kept at the
    horizon (`kept`) a row before the horizon is read in `<table>_at_horizon`, as common.History does."""

    def __init__(self, conn: sqlite3.Connection, table: str, key: str, time: str, fields: tuple[str, ...],
                 horizon: int, kept: bool, entity_type: str, views: frozenset[str], complete: bool = False):
        self.conn, self.table, self.key, self.time, self.fields = conn, table, key, time, fields
        self.horizon, self.kept, self.complete = horizon, kept, complete
        self.newest: dict[Any, PastRow | None] = {}
        # Per entity, the time of the newest event of its streams (`views`) folded so far: an event older
        # than that arrived late (history_fold.py).
        self.marks: dict[Any, int | None] = {}
        self._mark_args = (entity_type, sorted(views))
        self.pending: dict[int, tuple[Any, PastRow, int]] = {}   # id -> (key, row, event position), not written
        self.updated: dict[int, tuple[PastRow, int]] = {}         # written rows changed since
        self.before_query: Callable[[], None] = self.flush       # the WorkSet writes its other tables first
        self._next_id: int | None = None
        cols = ", ".join(fields)
        self.sql = HistorySQL(table, key, time, fields)
        self._insert = (f"INSERT INTO {table} (id, {key}, {time}, {cols}, event_position) "
                        f"VALUES (?, ?, ?, {', '.join('?' * len(fields))}, ?)")
        self._update = f"UPDATE {table} SET {', '.join(f + ' = ?' for f in fields)}, event_position = ? WHERE id = ?"

    def _query(self, key: Any, at: int) -> PastRow | None:
        return self.sql.row_at(self.conn, key, at, self.horizon, self.kept)

    def at(self, key: Any, t: int) -> PastRow | None:
        try:
            newest = self.newest[key]
        except KeyError:
            if self.complete:
                newest = None
            else:
                newest = self._query(key, 1 << 62)
                self.newest[key] = newest
        if newest is None or newest.time <= t:
            return newest
        self.before_query()   # a late event: the row in force is an older one, only the table knows it
        return self._query(key, t)

    def prefetch_marks(self, keys: Iterable[Any], before_position: int) -> None:
        """Read the marks of `keys` from the log (their events before `before_position`), in one statement."""
        if self.complete:
            return
        wanted = [k for k in set(keys) if k not in self.marks]
        if not wanted:
            return
        found = newest_observed(self.conn, *self._mark_args, wanted, before_position)
        for k in wanted:
            self.marks[k] = found.get(str(k))

    def prefetch_newest(self, keys: Iterable[Any]) -> None:
        """Read the newest rows of `keys` not in memory yet, in one statement (inline: a batch's entities)."""
        if self.complete:
            return
        wanted = [k for k in set(keys) if k not in self.newest]
        if not wanted:
            return
        cols = ", ".join(self.fields)
        since = f"AND {self.time} >= ? " if self.kept else ""
        found: dict[Any, PastRow] = {}
        for row in self.conn.execute(
                f"SELECT {self.key}, id, {self.time}, {cols} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "
                f"{self.key} ORDER BY {self.time} DESC, id DESC) AS rn FROM {self.table} "
                f"WHERE {self.key} IN (SELECT value FROM json_each(?)) {since}) WHERE rn = 1",
                (_ids_json(wanted).decode(), *((self.horizon,) if self.kept else ()))):
            found[row[0]] = PastRow(row[1], row[2], dict(zip(self.fields, row[3:], strict=True)))
        for k in wanted:
            # (with the state kept at the horizon, an entity with no row since is looked up there, one by one)
            if k in found or not self.kept:
                self.newest[k] = found.get(k)

    def mark(self, key: Any, position: int) -> int | None:
        """The time of the entity's newest event folded before the event at `position` (None: none)."""
        if key not in self.marks:
            if self.complete:
                return None
            self.prefetch_marks((key,), position)
        return self.marks[key]

    def drop_from(self, key: Any, start: int) -> None:
        """Delete the entity's rows from `start` on (to fold its events from there again)."""
        self.before_query()
        self.conn.execute(f"DELETE FROM {self.table} WHERE {self.key} = ? AND {self.time} >= ?", (key, start))
        self.newest[key] = self._query(key, start - 1)

    def next_id(self) -> int:
        if self._next_id is None:
            self._next_id = last_row_id(self.conn, self.table)
        self._next_id += 1
        return self._next_id

    def write(self, key: Any, values: dict[str, Any], t: int, position: int, prev: PastRow | None) -> None:
        """Record `values` at time t: into `prev` when it has the same time, else as a new row."""
        if prev is not None and prev.time == t:
            row = PastRow(prev.row_id, t, values)
            if prev.row_id in self.pending:
                self.pending[prev.row_id] = (key, row, position)
            else:
                self.updated[prev.row_id] = (row, position)
        else:
            row = PastRow(self.next_id(), t, values)
            self.pending[row.row_id] = (key, row, position)
        newest = self.newest.get(key)
        if newest is None or (t, row.row_id) >= (newest.time, newest.row_id):
            self.newest[key] = row

    def flush(self) -> None:
        fields = self.fields
        if self.pending:
            self.conn.executemany(self._insert, [
                (row_id, key, row.time, *[row.values[f] for f in fields], position)
                for row_id, (key, row, position) in sorted(self.pending.items())])
            ids_written(self.conn, self.table, max(self.pending))
            self.pending.clear()
        if self.updated:
            self.conn.executemany(self._update, [
                (*[row.values[f] for f in fields], position, row_id)
                for row_id, (row, position) in sorted(self.updated.items())])
            self.updated.clear()


def last_row_id(conn: sqlite3.Connection, table: str) -> int:
    """The highest id a history table has used (its AUTOINCREMENT sequence, or a higher id written by hand):
    a fold numbers the rows it writes from there, as SQLite would."""
    top = conn.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]
    return max(sequence_value(conn, table), top or 0)


def newest_observed(conn: sqlite3.Connection, entity_type: str, views: list[str], ids: Iterable[Any],
                    before_position: int) -> dict[str, int | None]:
    """Per entity id (as text), the time of its newest event in `views` before `before_position`: one
    statement for all of `ids` (a fold's marks, history_fold.py)."""
    return dict(conn.execute(
        "SELECT s.entity_id, MAX((SELECT e.observed_at FROM events e WHERE e.stream_id = s.stream_id "
        "AND e.position < ? ORDER BY e.observed_at DESC LIMIT 1)) FROM streams s "
        "WHERE s.entity_type = ? AND s.entity_id IN (SELECT value FROM json_each(?)) "
        f"AND s.view IN ({', '.join('?' * len(views))}) GROUP BY s.entity_id",
        (before_position, entity_type, _ids_json([str(i) for i in ids]).decode(), *views)))


class Part(Protocol):
    """A fold's own state kept in the working set (WorkSet.part)."""

    def flush(self) -> None: ...


class WorkSet:
    """The rows the fold projections work on, for one inline batch or one whole replay."""

    def __init__(self, conn: sqlite3.Connection, horizon: int, kept: bool, complete: bool = False):
        from .faction_history import FIELDS as FACTION_FIELDS, VIEWS as FACTION_VIEWS
        from .player_stats import FIELDS as PLAYER_FIELDS, VIEWS as PLAYER_VIEWS
        self.conn, self.horizon, self.kept = conn, horizon, kept
        self.factions = Rows(conn, "factions", "faction_id", FACTION_COLUMNS, complete)
        self.players = PlayerRows(conn, "players", "player_id", PLAYER_COLUMNS, complete)
        self.history = {
            "player_stats_history": Latest(conn, "player_stats_history", "player_id", "timestamp", PLAYER_FIELDS,
                                           horizon, kept, "user", PLAYER_VIEWS),
            "faction_history": Latest(conn, "faction_history", "faction_id", "timestamp", FACTION_FIELDS,
                                      horizon, kept, "faction", FACTION_VIEWS),
        }
        for latest in self.history.values():
            latest.before_query = self.flush
        # The SQL projections' (wars, territories) newest observation folded, by name (runner._late_from).
        self.sql_marks: dict[str, int | None] = {}
        self.wars = WarState(conn, complete)   # what wars and territories used to scan for (warstate.py)
        self.memo: dict[str, Any] = {}   # what the event being folded decodes, shared by the folds it goes through
        # A fold's own state, for a table of its own (stat_history): made on first use, flushed with the rest.
        self.parts: dict[str, Part] = {}
        self.batch: tuple[list[Any], int] | None = None   # the inline batch `prefetch` was given
        if complete:
            self.factions.load_all()
            self.players.load_all()
            for latest in self.history.values():
                latest.complete = True
                latest.newest.update(_newest_rows(conn, latest))

    def set_horizon(self, horizon: int) -> None:
        """Events appended under another horizon (replay crosses the horizon moves): a row before it is read
        in the state kept at the horizon, not among the rows this run wrote."""
        self.horizon = horizon
        for latest in self.history.values():
            if latest.horizon == horizon:
                continue
            self.flush()
            latest.horizon = horizon
            if self.kept and latest.complete:
                kept = _kept_rows(self.conn, latest)
                for key, row in list(latest.newest.items()):
                    if row is not None and row.time < horizon:
                        latest.newest[key] = kept.get(key)
            elif not latest.complete:
                latest.newest.clear()

    def refresh_factions(self) -> None:
        """After an SQL handler wrote `factions` (stubs for the factions wars and territories name)."""
        complete = self.factions.complete
        self.factions.forget()
        if complete:
            self.factions.load_all()
            self.factions.complete = True

    def part(self, name: str, make: Callable[[WorkSet], Part]) -> Part:
        """The state a fold keeps of its own table, made by `make(self)` on first use (it may read
        `self.batch` to prefetch what the batch's entities need); flushed with the working set."""
        state = self.parts.get(name)
        if state is None:
            state = self.parts[name] = make(self)
        return state

    def prefetch(self, events: Iterable[Any], first_position: int) -> None:
        """Read what the folds will ask about the entities of an inline batch, one statement per table."""
        events = list(events)
        self.batch = (events, first_position)
        users, factions = _entity_ids(events)
        self.players.prefetch(users)
        self.factions.prefetch(factions)
        for latest, keys in ((self.history["player_stats_history"], users),
                             (self.history["faction_history"], factions)):
            latest.prefetch_newest(keys)
            latest.prefetch_marks(keys, first_position)

    def flush(self) -> None:
        """Write back everything that changed (factions first: players refer to them)."""
        self.factions.flush()
        self.players.flush()
        for latest in self.history.values():
            latest.flush()
        for part in self.parts.values():
            part.flush()


def _entity_ids(events: Iterable[Any]) -> tuple[list[int], list[int]]:
    """The player and faction ids a batch of events names (streams whose id is a number)."""
    users: list[int] = []
    factions: list[int] = []
    for event in events:
        entity_type, entity_id, _ = event.stream
        if entity_type in ("user", "faction") and entity_id.isascii() and entity_id.isdigit():
            (users if entity_type == "user" else factions).append(int(entity_id))
    return users, factions


def _newest_rows(conn: sqlite3.Connection, latest: Latest) -> dict[Any, PastRow]:
    """Each entity's row in force now: its newest in the table (from the horizon on, when the state at the
    horizon is kept), else its row kept at the horizon."""
    cols = ", ".join(latest.fields)
    since = f"WHERE {latest.time} >= ?" if latest.kept else ""
    out = _kept_rows(conn, latest) if latest.kept else {}
    for row in conn.execute(
            f"SELECT {latest.key}, id, {latest.time}, {cols} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "
            f"{latest.key} ORDER BY {latest.time} DESC, id DESC) AS rn FROM {latest.table} {since}) WHERE rn = 1",
            (latest.horizon,) if latest.kept else ()):
        out[row[0]] = PastRow(row[1], row[2], dict(zip(latest.fields, row[3:], strict=True)))
    return out


def _kept_rows(conn: sqlite3.Connection, latest: Latest) -> dict[Any, PastRow]:
    cols = ", ".join(latest.fields)
    out: dict[Any, PastRow] = {}
    for row in conn.execute(f"SELECT {latest.key}, id, {latest.time}, {cols} FROM {latest.table}_at_horizon "
                            f"ORDER BY {latest.key}, {latest.time}, id"):
        out[row[0]] = PastRow(row[1], row[2], dict(zip(latest.fields, row[3:], strict=True)))
    return out


FACTION_COLUMNS = ("name", "tag", "leader_id", "co_leader_id", "respect", "age", "best_chain", "member_count",
                   "is_stub", "created_at", "last_updated")
PLAYER_COLUMNS = ("name", "level", "rank", "faction_id", "status_state", "status_description", "life_current",
                  "life_maximum", "last_action_status", "last_action_at", "created_at", "last_updated")
