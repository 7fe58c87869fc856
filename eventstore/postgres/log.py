"""The event log on PostgreSQL: `PgEventLog`, for several writer processes and hosts on one database.

Part of issue 18 (PostgreSQL), in progress: a library module, not wired into the CLI or `Store` yet; the
backend seam, projections and partitions come in later sessions. The change feed is here: `follow` (3).

`append(responses)` gives the outcomes `eventstore.ingest.ingest_batch` gives on SQLite, through the same
pure functions (routing.route, the canonical hash, secrets.strip_key/scrub, ingest's checks and text
helpers): a Torn error body becomes a row in `gaps`; a body that cannot be routed is quarantined with its
reason; each routed part is hashed in canonical form and compared with the state of its stream in force at
the response's own time: equal -> heartbeat (`last_checked` moves), different -> an event with the next
version. Late data is compared with the latest event observed at or before it and does not move the head;
a change observed before a later confirmation of the head re-appends the head at the time it was last
confirmed. Keys never reach the database: URLs are stripped and scrubbed, payloads and reasons scrubbed.
Key owners as on SQLite: an own-key URL is routed with `Response.owner`, else the owner learned for its key
(`key_owners`, taught by `/v2/key/info` or an own profile made with the key); without one, the parts that
need no owner are stored and the body waits in quarantine with the key's fingerprint until one is known.
Not here yet: the projector call in the same transaction (`append_in` lets a caller add its rows).

Concurrency, the heart of it. Writers are several processes (hosts) on one database:

1. One stream, one writer at a time: a batch locks the rows of the streams it touches (`SELECT ... FOR
   UPDATE`, in one statement, in key order) and only then compares and appends; READ COMMITTED hands it the
   row as the previous holder committed it. Compare-and-append under the row lock is what makes (a) versions
   gapless and unique and (b) a change two writers polled stored once: the second writer waits, then finds
   the first one's hash at the head (or in force at its time) and only heartbeats. A stream that does not
   exist yet has no row to lock, so the batch first inserts its missing streams, in key order, with
   `INSERT ... ON CONFLICT DO NOTHING`: a unique-index insert waits for a concurrent uncommitted insert of
   the same key, so two writers meeting a new faction queue on it like on a lock, and the loser finds the
   winner's row. Why not advisory locks (`pg_advisory_xact_lock(hash(stream))`), which name a stream
   whether or not its row exists: every advisory lock takes a slot in PostgreSQL's shared lock table
   (max_locks_per_transaction x max_connections, 6,400 by default), and a territory map is 4,100 streams
   in one batch; row locks live in the rows and cost no slot. Why not ON CONFLICT alone: it settles the
   row, not the compare that must follow it. UNIQUE (stream_id, version) stays as the backstop. New
   streams get their ids in key order (SQLite: in the order the batch names them); nothing reads meaning
   into a stream id.

2. Positions committed in order, so a reader never skips (c). A `bigserial` position is taken when a row is
   inserted, not when it commits: transaction A takes 7, B takes 8 and commits, a reader reads 8 and moves
   its mark past 7, then A commits 7 and nobody reads it. eventsourcing's PostgreSQL recorder serialises
   inserting transactions with `LOCK TABLE ... IN EXCLUSIVE MODE`; Marten lets them race and has readers stop
   at a high-water mark below any position still in flight, found by watching for gaps in the sequence
   and, when a gap stays open longer than a timeout, deciding the transaction rolled back and skipping it.
   We take eventsourcing's side, with a row instead of a table: the last position lives in `log_position`,
   a one-row table, and a writer takes its block with `UPDATE log_position SET last_position =
   last_position + n RETURNING last_position`. The row stays locked until the writer commits, and
   PostgreSQL makes a transaction visible before it releases its locks, so the next writer's positions are
   always committed after ours: the committed positions are a prefix at every instant, and
   `read_after(p)` (`WHERE position > p`) is exact with no waiting or guessing. A slow commit makes others
   wait; Marten's timeout would instead skip it, the very loss we must rule out. Positions are also
   gapless (a rollback gives its block back), like SQLite's. The cost is that appends serialise, but only
   for the end of a batch: the counter is the last lock taken, after every compare and only when the batch
   has events, so heartbeat-only batches (most polls) never take it, and the insert (COPY) and COMMIT are
   all that run under it. Collectors are held to 100 requests a minute per key by Torn, not by this lock.

3. The change feed across hosts (`follow`). A transaction that appends also runs `pg_notify('tornstore_events',
   <its last position>)`. PostgreSQL delivers a notification only when its transaction commits (a rollback
   drops it), to every session LISTENing on that channel in the same database, on any host, and in commit
   order; with (2) the payloads therefore only grow. A follower keeps one dedicated autocommit connection
   (never a pooled one: it sits in LISTEN) and loops: read everything after its mark with the same query as
   `read_after`, then wait for a notification, and read again. The notification is only a wake-up, the log
   is the truth: the follower reads `WHERE position > mark`, so a notification lost or merged (a connection
   that broke and came back, several commits folded into one wake-up) costs nothing but latency, and the
   wait also ends every `poll_interval` seconds (5 by default) to read anyway. A broken connection is opened
   again (LISTEN first, then the read, so nothing committed in between is missed). A payload at or below
   the mark (a commit already read) wakes nobody. NOTIFY takes a database-wide lock at COMMIT that
   serialises committing transactions that notified; ours already commit one at a time under the position
   row, and heartbeat-only batches do not notify.

Lock order, so writers never deadlock: new stream rows inserted in key order, then stream rows locked in key
order (a writer only locks rows it inserted or saw committed), then the position row, then quarantine rows
(inserted in sorted order with ON CONFLICT DO NOTHING, which waits for a concurrent insert of the same bad
body; then those routed at last deleted, locked in id order), then key_owners rows (upserted in fingerprint
order). Two writers that route the same waiting body both append it under the stream locks, so it is
stored once, and both delete its row. Stream keys are ordered by code point (COLLATE "C"), the same in
every session and in Python. Every transaction that appends must be READ COMMITTED (checked): under
REPEATABLE READ the stream rows would be read from a snapshot taken before their locks were granted.

PostgreSQL text cannot hold a NUL character; SQLite can. The few texts that may carry one (a URL, a reason,
a quarantined body that is not JSON) store it as the escape `\\u0000`. Payloads are JSON text, which
already writes it as an escape.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from ..canonical import RULES, HashMemo, canonical_hash
from ..ingest import MAX_AHEAD, IngestReport, _as_text, _storable, _without_keys, check_response
from ..owners import KeyOwners, key_fingerprint
from ..records import Event, Owner, Rejected, Response, StreamKey, TornError
from ..routing import OwnerNeeded, Part, RoutingError, named_part, owner_taught, route
from ..secrets import has_key_material, scrub, strip_key
from .migrate import migrate

__all__ = ["CHANNEL", "PgEventLog"]

CHANNEL = "tornstore_events"   # NOTIFY channel; payload: the last position of the committed append

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _text(value: str) -> str:
    """Text PostgreSQL can store: a NUL character becomes the escape \\u0000."""
    return value.replace("\x00", "\\u0000") if "\x00" in value else value


@dataclass
class _Routed:
    response: Response
    url: str
    items: list[tuple[tuple, str]]   # ((entity_type, entity_id, view), canonical hash) per part
    parts: list[Part]


@dataclass
class _Prepared:
    """A batch after the pure work: checked, routed and hashed; nothing read or written yet."""
    report: IngestReport
    routed: list[_Routed]
    gap_rows: list[tuple]
    quarantine_rows: list[tuple]
    resolved: list[int]              # quarantine rows routed at last (their key's owner now known): deleted
    owners: KeyOwners                # with what the batch taught, saved with it


class _State:
    """A stream's row as read under its lock, and what this batch did to it."""
    __slots__ = ("key", "stream_id", "version", "hash", "rules", "head_observed_at", "last_checked",
                 "pending", "touched")

    def __init__(self, key: StreamKey, row: tuple):
        self.key = key
        self.stream_id, self.version, self.hash, self.rules, self.head_observed_at, self.last_checked = row
        # this batch's events: (observed_at, version, hash, rules, url, payload)
        self.pending: list[tuple[int, int, str, str, str, str]] = []
        self.touched = False


class PgEventLog:
    """The event log in a PostgreSQL database. See the module docstring.

    Give it an `AsyncConnectionPool` of autocommit connections (or one autocommit `AsyncConnection`, used by
    one call at a time) whose database has been migrated; `await PgEventLog.open(conninfo)` makes such a
    pool and migrates. Autocommit, so that each call is its own transaction and a follower never sits idle
    in one. `conninfo`: where `follow` opens its own connection (default: that of `open`, else the
    parameters of a connection of `source`)."""

    def __init__(self, source: AsyncConnectionPool | AsyncConnection, *, conninfo: str | None = None):
        if isinstance(source, AsyncConnection) and not source.autocommit:
            raise ValueError("PgEventLog needs an autocommit connection (psycopg.AsyncConnection.connect("
                             "..., autocommit=True)); append_in takes part in a transaction the caller opens")
        self._source = source
        self._conninfo = conninfo
        self._memo = HashMemo()   # a cache of a pure function, per log

    @classmethod
    async def open(cls, conninfo: str, *, min_size: int = 1, max_size: int = 4) -> PgEventLog:
        """A log over a new pool on `conninfo`, its migrations applied."""
        pool = AsyncConnectionPool(conninfo, min_size=min_size, max_size=max_size, open=False,
                                   kwargs={"autocommit": True})
        await pool.open()
        try:
            async with pool.connection() as conn:
                await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, conninfo=conninfo)

    async def close(self) -> None:
        if isinstance(self._source, AsyncConnectionPool):
            await self._source.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        if isinstance(self._source, AsyncConnectionPool):
            async with self._source.connection() as conn:
                yield conn
        else:
            yield self._source

    # ------------------------------------------------------------------ writing

    async def append(self, responses: list[Response], *, now: float | None = None,
                     retry_keys: Iterable[str] = ()) -> IngestReport:
        """Store a batch in one transaction; what happened to each response. See the module docstring.

        `now`: this machine's clock (default: the wall clock), only to refuse an `observed_at` from the future.
        `retry_keys`: key fingerprints whose quarantined bodies, waiting for their owner, are routed again
        with this batch (those of keys whose owner the batch teaches always are), as ingest_batch does."""
        async with self._connection() as conn, conn.transaction():
            prepared = await self._prepare(conn, responses, now, retry_keys)  # takes no lock
            await self._write(conn, prepared)
        return prepared.report

    async def append_in(self, conn: AsyncConnection, responses: list[Response], *, now: float | None = None,
                        retry_keys: Iterable[str] = ()) -> IngestReport:
        """Store a batch inside the caller's open (READ COMMITTED) transaction on `conn`, so the caller can
        write its own rows in the same commit. The locks taken are held until that transaction ends."""
        prepared = await self._prepare(conn, responses, now, retry_keys)
        await self._write(conn, prepared)
        return prepared.report

    async def retry_waiting(self) -> IngestReport:
        """Route again every quarantined body whose key's owner is now known (ingest.retry_waiting)."""
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT q.key_fp FROM quarantine q JOIN key_owners k ON k.key_fp = q.key_fp "
                "WHERE q.needs_owner = 1 ORDER BY q.key_fp")
            keys = [fp for (fp,) in await cur.fetchall()]
        return await self.append([], retry_keys=keys)

    async def _prepare(self, conn: AsyncConnection, responses: list[Response], now: float | None,
                       retry_keys: Iterable[str]) -> _Prepared:
        """Check, learn key owners, route and hash, as ingest_batch does before its transaction. Reads
        key_owners and the quarantined bodies waiting for an owner; writes nothing."""
        latest_allowed = (time.time() if now is None else now) + MAX_AHEAD
        report = IngestReport(responses=len(responses))
        gap_rows: list[tuple] = []
        rejected: list[tuple[int, Rejected, tuple]] = []
        valid: list[tuple[Response, str, Any, str | None]] = []   # (response, url, body, key fingerprint)
        routed: list[_Routed] = []

        def reject(index: int, url: str, observed_at: int | None, reason: str, body_text: str,
                   key_fp: str | None = None, needs_owner: bool = False) -> None:
            url, reason, body_text = scrub(url), scrub(reason), scrub(body_text)
            rejected.append((index, Rejected(url, observed_at, reason),
                             (observed_at, url, reason, body_text, key_fp, int(needs_owner))))

        for index, response in enumerate(responses):
            url = _storable(strip_key(response.url))
            if has_key_material(url):
                url = scrub(url)
            body, refused, err = check_response(response, url, latest_allowed)
            if refused is not None:
                reject(index, url, *refused)
                continue
            if err is not None:
                code, text = err
                report.errors.append(TornError(url, response.observed_at, code, text))
                gap_rows.append((response.observed_at, url, None, code, f"Torn API error {code}: {text}"))
                continue
            valid.append((response, url, body, key_fingerprint(response.key)))

        # Owners first, from the database and from this batch, and the bodies that waited for them.
        owners = await _load_owners(conn, {fp for _, _, _, fp in valid if fp} | set(retry_keys))
        for response, url, body, fp in valid:
            if fp:
                owners.learn(fp, response.observed_at, url, owner_taught(url, body))
        waiting = await _waiting_for(conn, set(owners.taught) | set(retry_keys))
        quarantine_of = {id(r): qid for qid, r in waiting}
        valid += [(r, r.url, r.body, r.key) for _, r in waiting]
        resolved: list[int] = []

        input_index = {id(r): i for i, r in enumerate(responses)}
        for response, url, body, fp in valid:
            observed_at = response.observed_at
            index = input_index.get(id(response), len(responses))
            retry_of = quarantine_of.get(id(response))
            try:
                if response.stream:
                    parts = [named_part(response.stream, body)]
                else:
                    try:
                        parts = route(url, body, response.owner or owners.get(fp))
                        if retry_of is not None:
                            resolved.append(retry_of)
                    except OwnerNeeded as exc:
                        # Keep what needs no owner now; the whole body waits in quarantine for the owner.
                        parts = exc.parts
                        if retry_of is None:
                            reason = str(exc) + (f" (key {fp})" if fp else " (no key fingerprint was given)")
                            reject(index, url, observed_at, reason, _as_text(body), fp, needs_owner=True)
                items = self._memo.keyed(parts)
            except (RoutingError, TypeError, ValueError, OverflowError, RecursionError) as exc:
                if retry_of is None:
                    reason = str(exc) if str(exc).startswith(url) else f"{url}: {exc}"
                    reject(index, url, observed_at, reason, _as_text(body))
                continue
            routed.append(_Routed(response, url, items, parts))

        rejected.sort(key=lambda item: item[0])
        report.rejected = [r for _, r, _ in rejected]
        quarantine_rows = [
            (*row, hashlib.blake2b(row[3].encode(errors="replace"), digest_size=16).hexdigest())
            for _, _, row in rejected]
        return _Prepared(report, routed, gap_rows, quarantine_rows, resolved, owners)

    async def _write(self, conn: AsyncConnection, batch: _Prepared) -> None:
        """Compare and append inside the open transaction, taking the locks in the order the docstring gives."""
        first_seen: dict[tuple, int] = {}
        for item in batch.routed:
            for key, _ in item.items:
                first_seen.setdefault(key, item.response.observed_at)
        cur = conn.cursor()
        await cur.execute("SELECT current_setting('transaction_isolation')")
        row = await cur.fetchone()
        if row is None or row[0] != "read committed":
            raise RuntimeError(f"PgEventLog appends in READ COMMITTED transactions, not {row[0] if row else '?'}")
        states = await self._load_states(conn, first_seen)

        report = batch.report
        events: list[tuple[_State, int, int, str, str, str]] = []  # (state, version, observed_at, hash, url, payload)
        unchanged = 0

        def append(state: _State, observed_at: int, digest: str, url: str, payload: str) -> None:
            state.version += 1
            state.pending.append((observed_at, state.version, digest, RULES, url, payload))
            events.append((state, state.version, observed_at, digest, url, payload))
            if state.head_observed_at is None or observed_at >= state.head_observed_at:
                state.hash, state.rules, state.head_observed_at = digest, RULES, observed_at
            state.last_checked = max(state.last_checked or observed_at, observed_at)
            state.touched = True

        for item in batch.routed:
            observed_at = item.response.observed_at
            for i, (key, digest) in enumerate(item.items):
                state = states[key]
                head = state.head_observed_at
                late = False
                if digest == state.hash and state.rules == RULES and (head is None or observed_at >= head):
                    same = True
                else:
                    if state.rules != RULES and state.hash is not None:
                        latest = await self._latest(conn, state, None)
                        state.hash = canonical_hash(key[2], _decode(latest[5])) if latest else ""
                        state.rules = RULES
                        state.touched = True
                    late = head is not None and observed_at < head
                    if late:
                        same = digest == await self._hash_in_force(conn, state, observed_at)
                    else:
                        same = digest == state.hash
                if same:
                    unchanged += 1
                    if state.last_checked is None or observed_at > state.last_checked:
                        state.last_checked = observed_at
                        state.touched = True
                    continue
                # A change observed before a later poll that confirmed the head: the head is appended again
                # at the time it was last confirmed, so the log still ends on what was seen last (as ingest).
                reconfirm, head_hash = None, state.hash
                if not late and head is not None and observed_at < (state.last_checked or 0):
                    reconfirm = await self._latest(conn, state, None)
                payload = _without_keys(_encode(item.parts[i].payload)).decode()
                append(state, observed_at, digest, _text(item.url), payload)
                if reconfirm is not None and state.last_checked is not None and head_hash is not None:
                    append(state, state.last_checked, head_hash, reconfirm[4], reconfirm[5])

        if events:
            # Last lock: the position row, held to COMMIT (module docstring, 2).
            await cur.execute("UPDATE log_position SET last_position = last_position + %s RETURNING last_position",
                              (len(events),))
            row = await cur.fetchone()
            assert row is not None, "log_position has its one row from migration 0001"
            first = row[0] - len(events) + 1
            async with cur.copy("COPY events (position, stream_id, version, observed_at, hash, rules, source_url, "
                                "payload) FROM STDIN") as copy:
                for offset, (state, version, at, digest, url, payload) in enumerate(events):
                    await copy.write_row((first + offset, state.stream_id, version, at, digest, RULES, url, payload))
            report.appended = len(events)
            report.first_position, report.last_position = first, first + len(events) - 1
            # Wakes the followers at COMMIT, in commit order; dropped with a rollback (module docstring, 3).
            await cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(report.last_position)))
        report.unchanged += unchanged

        touched = [s for s in states.values() if s.touched]
        if touched:
            await cur.execute(
                "UPDATE streams AS s SET version = u.version, hash = u.hash, rules = u.rules, "
                "head_observed_at = u.head, last_checked = u.checked, last_changed = COALESCE(u.head, s.last_changed) "
                "FROM unnest(%s::int8[], %s::int8[], %s::text[], %s::text[], %s::int8[], %s::int8[]) "
                "AS u(id, version, hash, rules, head, checked) WHERE s.stream_id = u.id",
                ([s.stream_id for s in touched], [s.version for s in touched], [s.hash for s in touched],
                 [s.rules for s in touched], [s.head_observed_at for s in touched],
                 [s.last_checked for s in touched]))
        if batch.quarantine_rows:
            rows = sorted(((at, _text(url), _text(reason), _text(body), fp, needs, body_hash)
                           for at, url, reason, body, fp, needs, body_hash in batch.quarantine_rows),
                          key=lambda r: (r[0] if r[0] is not None else -1, r[1], r[6]))
            await cur.executemany(
                "INSERT INTO quarantine (observed_at, source_url, reason, body, key_fp, needs_owner, body_hash) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
        if batch.resolved:
            await cur.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE id = ANY(%s) ORDER BY id "
                "FOR UPDATE)", (sorted(batch.resolved),))
            report.retried = len(batch.resolved)
        if batch.gap_rows:
            await cur.executemany(
                "INSERT INTO gaps (observed_at, source_url, target, error_code, reason) VALUES (%s, %s, %s, %s, %s)",
                [(at, _text(url), target, code, _text(reason)) for at, url, target, code, reason in batch.gap_rows])
        if batch.owners.taught:  # last lock: key_owners rows, in fingerprint order
            await cur.executemany(
                "INSERT INTO key_owners (key_fp, player_id, faction_id, learned_at, source_url) "
                "VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (key_fp) DO UPDATE SET player_id = excluded.player_id, "
                "faction_id = COALESCE(excluded.faction_id, key_owners.faction_id), "
                "learned_at = excluded.learned_at, source_url = excluded.source_url "
                "WHERE excluded.learned_at >= key_owners.learned_at",
                [(fp, o.player_id, o.faction_id, at, _text(url))
                 for fp, (o, at, url) in sorted(batch.owners.taught.items())])

    async def _load_states(self, conn: AsyncConnection, first_seen: dict[tuple, int]) -> dict[tuple, _State]:
        """The rows of the batch's streams, locked (FOR UPDATE) in key order; the missing ones inserted first,
        in key order, with first_seen = last_changed = last_checked = the time of the response that first
        names them in the batch (module docstring, 1)."""
        if not first_seen:
            return {}
        keys = sorted(first_seen)   # code point order = COLLATE "C"
        columns = ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
        cur = await conn.execute(
            "SELECT s.entity_type, s.entity_id, s.view FROM streams AS s "
            "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS u(t, i, v) "
            "ON s.entity_type = u.t AND s.entity_id = u.i AND s.view = u.v", columns)
        existing = {tuple(row) for row in await cur.fetchall()}
        missing = [k for k in keys if k not in existing]
        if missing:
            await conn.execute(
                "INSERT INTO streams (entity_type, entity_id, view, version, first_seen, last_changed, last_checked) "
                "SELECT t, i, v, 0, at, at, at FROM unnest(%s::text[], %s::text[], %s::text[], %s::int8[]) "
                "WITH ORDINALITY AS u(t, i, v, at, n) ORDER BY n ON CONFLICT DO NOTHING",
                ([k[0] for k in missing], [k[1] for k in missing], [k[2] for k in missing],
                 [first_seen[k] for k in missing]))
        cur = await conn.execute(
            "SELECT s.entity_type, s.entity_id, s.view, s.stream_id, s.version, s.hash, s.rules, "
            "s.head_observed_at, s.last_checked FROM streams AS s "
            "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS u(t, i, v) "
            "ON s.entity_type = u.t AND s.entity_id = u.i AND s.view = u.v "
            'ORDER BY s.entity_type COLLATE "C", s.entity_id COLLATE "C", s.view COLLATE "C" FOR UPDATE OF s',
            columns)
        states: dict[tuple, _State] = {}
        for row in await cur.fetchall():
            key = StreamKey(*row[:3])
            states[key] = _State(key, row[3:])
        if len(states) != len(keys):
            raise RuntimeError(f"{len(keys) - len(states)} of the batch's streams could not be read back")
        return states

    async def _latest(self, conn: AsyncConnection, state: _State, at: int | None
                      ) -> tuple[int, int, str, str, str, str] | None:
        """The stream's latest event observed at or before `at` (None: at all), this batch's own included:
        (observed_at, version, hash, rules, source_url, payload)."""
        sql = ("SELECT observed_at, version, hash, rules, source_url, payload FROM events WHERE stream_id = %s"
               + ("" if at is None else " AND observed_at <= %s") + " ORDER BY observed_at DESC, version DESC LIMIT 1")
        cur = await conn.execute(sql, (state.stream_id,) if at is None else (state.stream_id, at))
        row = await cur.fetchone()
        best = tuple(row) if row is not None else None
        for pending in state.pending:
            if (at is None or pending[0] <= at) and (best is None or pending[:2] > best[:2]):
                best = pending
        return best

    async def _hash_in_force(self, conn: AsyncConnection, state: _State, observed_at: int) -> str | None:
        """Canonical hash (today's rules) of the stream's state at `observed_at`, for a late response."""
        latest = await self._latest(conn, state, observed_at)
        if latest is None:
            return None
        _, _, digest, rules, _, payload = latest
        return digest if rules == RULES else canonical_hash(state.key.view, _decode(payload))

    # ------------------------------------------------------------------ reading

    async def read_after(self, position: int, limit: int = 1000) -> list[Event]:
        """Up to `limit` events after `position`, in position order. A follower that passes the last position
        it read never skips an event, however late one commits (module docstring, 2)."""
        async with self._connection() as conn:
            return await _read_after(conn, position, limit)

    async def follow(self, after: int, *, batch: int = 500, idle_timeout: float | None = None,
                     poll_interval: float = 5.0) -> AsyncGenerator[Event, None]:
        """Every event after position `after`, in position order, as `read_after` gives them: first the
        backlog, then each new one moments after its commit, forever (module docstring, 3).

        Uses a connection of its own (LISTEN), opened at the first step and closed with the iterator: use
        `async with contextlib.aclosing(log.follow(p)) as events:` or call `aclose()`. `batch`: events read
        per query. `idle_timeout`: end the iteration once no event has come for that many seconds (None:
        never). `poll_interval`: read the log at least this often, notification or not."""
        if batch < 1 or poll_interval <= 0:
            raise ValueError("follow needs batch >= 1 and poll_interval > 0")
        conninfo = await self._follow_conninfo()
        mark = after
        conn: AsyncConnection | None = None
        connected = False               # a first connection that fails (a wrong conninfo) raises
        idle_since = time.monotonic()
        retry = 0.1
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await AsyncConnection.connect(conninfo, autocommit=True)
                        await conn.execute(f"LISTEN {CHANNEL}")   # before the read: no commit falls between
                        connected, retry = True, 0.1
                    events = await _read_after(conn, mark, batch)
                    if events:
                        for event in events:
                            mark = event.position
                            yield event
                        idle_since = time.monotonic()
                        if len(events) == batch:
                            continue            # more may be there: read on before waiting
                    await self._wait(conn, mark, idle_since, idle_timeout, poll_interval)
                except psycopg.OperationalError:
                    # The connection broke (server restart, network): open it again and read from the mark.
                    if not connected:
                        raise
                    if conn is not None:
                        await conn.close()
                    conn = None
                    if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                        return
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, poll_interval)
        except _Idle:
            return
        finally:
            if conn is not None:
                await conn.close()

    async def _wait(self, conn: AsyncConnection, mark: int, idle_since: float, idle_timeout: float | None,
                    poll_interval: float) -> None:
        """Return when a notification names a position after `mark`, or after `poll_interval` seconds;
        raise _Idle once `idle_timeout` seconds have passed since `idle_since` with no event."""
        deadline = time.monotonic() + poll_interval
        while True:
            now = time.monotonic()
            wait = deadline - now
            if idle_timeout is not None:
                left = idle_since + idle_timeout - now
                if left <= 0:
                    raise _Idle
                wait = min(wait, left)
            if wait <= 0:
                return                      # the periodic read
            # aclosing: leaving notifies() early must give the connection's lock back at once.
            async with aclosing(conn.notifies(timeout=wait)) as notifies:
                async for notify in notifies:
                    try:
                        newer = int(notify.payload) > mark
                    except ValueError:
                        newer = True        # not ours to judge: read
                    if newer:
                        return
            # timed out, or only stale notifications: loop to check the deadlines

    async def _follow_conninfo(self) -> str:
        if self._conninfo is not None:
            return self._conninfo
        async with self._connection() as conn:
            info = conn.info
            return make_conninfo(info.dsn, password=info.password) if info.password else info.dsn

    async def head_position(self) -> int:
        """The last position committed (0 for an empty log)."""
        async with self._connection() as conn:
            cur = await conn.execute("SELECT last_position FROM log_position")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def stream_versions(self, keys: Iterable[tuple[str, str, str]] | None = None
                              ) -> dict[StreamKey, list[tuple[int, str]]]:
        """(version, hash) of every event per stream, in version order (all streams, or those given)."""
        wanted = None if keys is None else {tuple(k) for k in keys}
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT s.entity_type, s.entity_id, s.view, e.version, e.hash FROM events AS e "
                "JOIN streams AS s ON s.stream_id = e.stream_id ORDER BY s.stream_id, e.version")
            rows = await cur.fetchall()
        out: dict[StreamKey, list[tuple[int, str]]] = {}
        for t, i, v, version, digest in rows:
            if wanted is None or (t, i, v) in wanted:
                out.setdefault(StreamKey(t, i, v), []).append((version, digest))
        return out


class _Idle(Exception):
    """`follow`'s idle_timeout has passed."""


async def _read_after(conn: AsyncConnection, position: int, limit: int) -> list[Event]:
    cur = await conn.execute(
        "SELECT e.position, s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.payload, "
        "e.source_url FROM events AS e JOIN streams AS s ON s.stream_id = e.stream_id "
        "WHERE e.position > %s ORDER BY e.position LIMIT %s", (position, limit))
    rows = await cur.fetchall()
    return [Event(pos, StreamKey(t, i, v), version, at, _decode(payload), url)
            for pos, t, i, v, version, at, payload, url in rows]


async def _load_owners(conn: AsyncConnection, fingerprints: Iterable[str]) -> KeyOwners:
    """The owners on record of these keys (owners.KeyOwners.load, on PostgreSQL)."""
    wanted = sorted(set(fingerprints))
    if not wanted:
        return KeyOwners({})
    cur = await conn.execute(
        "SELECT key_fp, player_id, faction_id, learned_at FROM key_owners WHERE key_fp = ANY(%s)", (wanted,))
    return KeyOwners({fp: (Owner(player_id=player, faction_id=faction), at)
                      for fp, player, faction, at in await cur.fetchall()})


async def _waiting_for(conn: AsyncConnection, fingerprints: Iterable[str]) -> list[tuple[int, Response]]:
    """Quarantined bodies that only lacked the owner of one of these keys (owners.waiting_for_owner)."""
    wanted = sorted(set(fingerprints))
    if not wanted:
        return []
    cur = await conn.execute(
        "SELECT id, source_url, observed_at, body, key_fp FROM quarantine WHERE needs_owner = 1 "
        "AND key_fp = ANY(%s) ORDER BY id", (wanted,))
    out: list[tuple[int, Response]] = []
    for qid, url, observed_at, body, fp in await cur.fetchall():
        try:
            decoded = _decode(body)
        except msgspec.DecodeError:
            continue
        out.append((qid, Response(url=url, observed_at=observed_at, body=decoded, key=fp)))
    return out
