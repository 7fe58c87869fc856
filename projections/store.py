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
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from tornstore.eventstore import db
from tornstore.eventstore.capture import read_capture
from tornstore.eventstore.ingest import IngestReport, ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Event, Response
from tornstore.eventstore.store import EventLog

from . import queries
from .handlers import stat_history
from .runner import project_inline


class Store(EventLog):
    """EventLog + inline projections, and the queries a bot asks."""

    default_projector = project_inline

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, projector: Any = None,
             stats: Mapping[str, Any] | None = None, readers: int | None = None) -> Any:
        """Open the database at `path` (see EventLog.open; `readers`: queries at once, default 4 on
        PostgreSQL, 1 on SQLite). `stats`: which stats stat_history tracks, as
        {"include": [names] (default: every numeric stat), "exclude": [names] (default: the clock-like
        ones)}; it applies to the whole process (stat_history.configure)."""
        if stats is not None:
            unknown = set(stats) - {"include", "exclude"}
            if unknown:
                raise ValueError(f"stats: unknown key(s) {', '.join(sorted(unknown))} (use include, exclude)")
            stat_history.configure(include=stats.get("include"), exclude=stats.get("exclude"))
        return super().open(path, create=create, projector=projector, readers=readers)

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

    async def watch_changes(self, position: int | None = None, *, limit: int = 100,
                            respect_threshold: int = queries.DEFAULT_RESPECT_JUMP, scan: int = 10_000,
                            poll_interval: float | None = None, idle_timeout: float | None = None,
                            ) -> AsyncGenerator[queries.ChangeFeed, None]:
        """`changes_since` woken by new events instead of asked on a timer: each page of changes (a ChangeFeed
        with at least one change) as soon as the events behind it are committed, forever. A bot posts an
        alert seconds after a collector stored it, on any host, instead of asking every minute for nothing.

            async with contextlib.aclosing(store.watch_changes()) as feeds:
                async for feed in feeds:
                    for change in feed.changes:
                        await channel.send(change.text)
                    saved = feed.next_position      # watch_changes(saved) resumes: nothing missed or repeated

        `position`: report changes after it (None: from now on). Each change comes once, in position order:
        pages are read on from `next_position`, at once while `more` says another is waiting. It waits on
        `follow`: on PostgreSQL a commit on any host wakes it through LISTEN/NOTIFY (and it reads every
        `poll_interval` seconds anyway, default 5); on SQLite it polls the file every `poll_interval` seconds
        (default 1). `idle_timeout`: end once no event has come for that many seconds (None: never).
        `limit`, `respect_threshold`, `scan`: as for changes_since.
        """
        if poll_interval is None:
            poll_interval = 5.0 if db.is_url(self.path) else 1.0
        mark = await self.head_position() if position is None else position
        events: AsyncGenerator[Event, None] | None = None
        seen = mark                     # the newest position `events` has given
        try:
            while True:
                feed = await self.changes_since(mark, limit, respect_threshold=respect_threshold, scan=scan)
                mark = max(mark, feed.next_position)
                if feed.changes:
                    yield feed
                if feed.more:
                    continue            # the next page is already there
                # Wait for an event after `mark`. `follow` runs on, so nothing committed meanwhile is missed;
                # it is opened again at `mark` rather than made to read through a long stretch already reported.
                if events is None or mark - seen > _FOLLOW_BATCH:
                    if events is not None:
                        await events.aclose()
                    events, seen = self.follow(mark, batch=_FOLLOW_BATCH, idle_timeout=idle_timeout,
                                               poll_interval=poll_interval), mark
                woken = await _next_after(events, mark)
                if woken is None:
                    return              # idle_timeout
                seen = woken
        finally:
            if events is not None:
                await events.aclose()

    async def head_position(self) -> int:
        """The newest event position: a change feed started here reports only what comes next."""
        return await self.read(queries.head_position)

    async def freshness(self, entity_type: str, entity_id, *, now: int | None = None) -> queries.Freshness:
        """'Unchanged since' and 'no data between' for one entity (player, faction, territory, war)."""
        return await self.read(queries.freshness, entity_type, entity_id, now)


_FOLLOW_BATCH = 100    # events watch_changes' follower reads at a time; only their positions count


async def _next_after(events: AsyncIterator[Event], mark: int) -> int | None:
    """The position of the first event from `events` after `mark` (None when `events` ends)."""
    async for event in events:
        if event.position > mark:
            return event.position
    return None


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
