"""The store a bot embeds: the event log with the projections running inline.

    async with Store.open("torn.db") as store:       # or: store = await Store.open(...); await store.close()
        await store.ingest(url, body, observed_at)     # from the bot's own API client
        board = await store.leaderboard(9420, "xantaken", month="2026-10")

Which personal and faction stats `stat_history` tracks: every numeric one but the clock-like ones, by
default; `Store.open(path, stats={"exclude": [...], "include": [...]})` changes it for the process
(projections/handlers/stat_history.py: configure).

Query helpers (current player, history series, change feed) live in `projections.queries` and are
exposed as methods here.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tornstore.eventstore import db
from tornstore.eventstore.capture import read_capture
from tornstore.eventstore.ingest import IngestReport, ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Response
from tornstore.eventstore.store import EventLog

from . import queries
from .handlers import stat_history
from .runner import project_inline


class Store(EventLog):
    """EventLog + inline projections, and the queries a bot asks."""

    default_projector = project_inline

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, projector: Any = None,
             stats: Mapping[str, Any] | None = None) -> Any:
        """Open the database at `path` (see EventLog.open). `stats`: which stats stat_history tracks, as
        {"include": [names] (default: every numeric stat), "exclude": [names] (default: the clock-like
        ones)}; it applies to the whole process (stat_history.configure)."""
        if stats is not None:
            unknown = set(stats) - {"include", "exclude"}
            if unknown:
                raise ValueError(f"stats: unknown key(s) {', '.join(sorted(unknown))} (use include, exclude)")
            stat_history.configure(include=stats.get("include"), exclude=stats.get("exclude"))
        return super().open(path, create=create, projector=projector)

    # Queries (projections.queries): each one round trip on the read connection, one consistent snapshot.
    async def player(self, player_id: int, *, now: int | None = None) -> queries.PlayerView | None:
        """The current row of a player with faction name, newest stats and freshness (None if unknown)."""
        return await self.read(queries.player, player_id, now)

    async def faction(self, faction_id: int, *, now: int | None = None) -> queries.FactionView | None:
        """The current row of a faction with its members and territories (None if unknown)."""
        return await self.read(queries.faction, faction_id, now)

    async def war(self, war_id: int, war_type: str | None = None) -> queries.WarView | None:
        """The newest snapshot of a ranked or territory war and its snapshot count (None if unknown)."""
        return await self.read(queries.war, war_id, war_type)

    async def territory(self, code: str, *, now: int | None = None) -> queries.TerritoryView | None:
        """The current state of a territory by code, e.g. 'AAC' (None if unknown)."""
        return await self.read(queries.territory, code, now)

    async def history(self, kind: str, entity_id: int, stat: str, since: int | str | None = None,
                      until: int | str | None = None) -> queries.Series:
        """One stat over time: monthly summaries for pruned months, then history rows, never both.

        `since` / `until`: Unix seconds or a date string (see `queries.parse_when`), inclusive.
        """
        since = queries.parse_when(since) if since is not None else None
        until = queries.parse_when(until, end_of_day=True) if until is not None else None
        return await self.read(queries.history, kind, entity_id, stat, since, until)

    async def stat_series(self, kind: str, entity_id: int, stat: str, since: int | str | None = None,
                          until: int | str | None = None) -> queries.Series:
        """Any tracked stat of a player or faction over time (stat_history, and stat_summary for pruned
        months, never both for one month), e.g. `await store.stat_series("player", 2491575, "xantaken")`."""
        since = queries.parse_when(since) if since is not None else None
        until = queries.parse_when(until, end_of_day=True) if until is not None else None
        return await self.read(queries.stat_series, kind, entity_id, stat, since, until)

    async def leaderboard(self, faction_id: int, stat: str, *, month: str | None = None,
                          since: int | str | None = None, until: int | str | None = None) -> queries.Leaderboard:
        """A faction's members ranked by the change of `stat` over a UTC month ('2026-10') or since/until
        (dates or Unix seconds, inclusive), with who joined or left during it."""
        since = queries.parse_when(since) if since is not None else None
        until = queries.parse_when(until, end_of_day=True) if until is not None else None
        return await self.read(queries.leaderboard, faction_id, stat, month, since, until)

    async def stats_of(self, kind: str, entity_id: int) -> queries.EntityStats:
        """Every stat the store holds of a player or faction, with its newest value."""
        return await self.read(queries.stats_of, kind, entity_id)

    async def changes_since(self, position: int, limit: int = 100, *,
                            respect_threshold: int = queries.DEFAULT_RESPECT_JUMP,
                            scan: int = 10_000) -> queries.ChangeFeed:
        """Alert-worthy changes after an event position; ask again from `feed.next_position`."""
        return await self.read(queries.changes_since, position, limit, respect_threshold, scan)

    async def head_position(self) -> int:
        """The newest event position: a change feed started here reports only what comes next."""
        return await self.read(queries.head_position)

    async def freshness(self, entity_type: str, entity_id, *, now: int | None = None) -> queries.Freshness:
        """'Unchanged since' and 'no data between' for one entity (player, faction, territory, war)."""
        return await self.read(queries.freshness, entity_type, entity_id, now)


def _open_lines(name: str):
    if name == "-":
        return sys.stdin.buffer
    return open(name, "rb")


def ingest_files(path: str, files: Iterable[str], batch: int = 500, progress: bool = False,
                 on_commit=None, now: float | None = None) -> IngestReport:
    """Ingest capture files into the database at `path`, `batch` responses per transaction.

    `now`: the clock observed_at is checked against (default: this machine's; see ingest_batch).

    `on_commit(report_so_far)` is called after each committed batch (an acknowledgement: what it has
    seen is durable, within the limits of synchronous=NORMAL).
    """
    conn = db.connect_sync(path)
    total = IngestReport()
    try:
        migrate(conn)
        for name in files:
            handle = _open_lines(name)
            try:
                pending: list[Response] = []
                for response in read_capture(handle, name):
                    pending.append(response)
                    if len(pending) >= batch:
                        total.merge(ingest_batch(conn, pending, project_inline, now=now))
                        pending = []
                        if on_commit:
                            on_commit(total)
                        if progress:
                            print(f"\r{name}: {total.responses} responses", end="", file=sys.stderr)
                if pending:
                    total.merge(ingest_batch(conn, pending, project_inline, now=now))
                    if on_commit:
                        on_commit(total)
            finally:
                if handle is not sys.stdin.buffer:
                    handle.close()
        if progress:
            print(file=sys.stderr)
    finally:
        db.close_sync(conn)
    return total
