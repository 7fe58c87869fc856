"""Ingest: route responses into streams, compare canonical hashes, append what changed. One transaction.

`ingest_batch(conn, responses, projector)` runs synchronously inside one transaction (call it through
`db.run_in_connection` from async code: one aiosqlite round trip per batch). For each response:

  * a Torn error body becomes a TornError and a row in `gaps`, never an event;
  * a body that cannot be routed is quarantined with the reason (the rest of the batch still lands);
  * each routed part is hashed in canonical form; equal to the stream's head hash -> heartbeat only
    (`last_checked` moves), different -> a new event with the next version.

The projector (supplied by `projections`, which this package does not import) is called with the new
events and heartbeats before COMMIT, so a reader never sees an event without its projection. A projector
with a `live_views` attribute (a set of view names) gets heartbeats only for those views' unchanged parts;
without one, for every unchanged part.

Most parts of most polls are unchanged, so that path is kept short: the hash memo (canonical.HashMemo)
compares bytes before it hashes, a big response whose body repeats the last one byte for byte (a
territory map) is not routed again unless a part of it is wanted whole (_ResponseMemo), stream states are
cached per connection, and an unchanged stream costs one id in a per-batch UPDATE of last_checked.

Late data: a response observed before its stream's head is compared with the state in force at its own
time (the latest event observed at or before it), so re-reading an old capture appends nothing. When it
differs it is appended (nothing is lost; the compactor re-folds its month), but it does not move the
head, so the next poll is still compared with the newest state.
"""
from __future__ import annotations

import hashlib
import reprlib
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable

import msgspec

from . import db
from .canonical import RULES, HashMemo, canonical_hash
from .gctuning import collections_paused
from .owners import KeyOwners, key_fingerprint, keys_waiting, waiting_for_owner as _waiting_for
from .records import Event, Heartbeat, Owner, Rejected, Response, StreamKey, TornError
from .routing import OwnerNeeded, Part, RoutingError, named_part, owner_taught, route
from .secrets import has_key_material, scrub, strip_key

Projector = Callable[[sqlite3.Connection, list[Event], list[Heartbeat]], None]

_encode = msgspec.json.Encoder().encode
_pack = msgspec.msgpack.Encoder().encode
_decode = msgspec.json.Decoder().decode
_INT64 = 2 ** 63  # SQLite integers are signed 64-bit
TORN_EPOCH = 1072915200  # 2004-01-01T00:00:00Z: no Torn response is older
MAX_AHEAD = 300  # seconds an observed_at may run ahead of the ingesting machine's clock (clock skew)
_tuple_new = tuple.__new__  # a NamedTuple made without its Python-level __new__ (one per unchanged part)
_MEMO = HashMemo()  # a cache of a pure function: shared by every connection of the process


def _live_views(projector: Projector | None) -> frozenset[str] | None:
    """The views whose unchanged polls the projector wants as heartbeats (None: every view). A projector
    says so with a `live_views` attribute; without a projector nobody reads heartbeats."""
    if projector is None:
        return frozenset()
    views = getattr(projector, "live_views", None)
    return None if views is None else frozenset(views)


def _packed(body: Any) -> bytes | None:
    """The body as msgpack (what the response memo compares), or None when it has no such form."""
    try:
        return _pack(body)
    except (TypeError, ValueError, OverflowError, RecursionError, UnicodeError):
        return None


class _ResponseMemo:
    """The routed streams and hashes of the last big response per URL, by the bytes of its body.

    A territory map is 4,100 parts, each routed, encoded and compared on every poll though nearly every
    poll repeats the last byte for byte. Routing and hashing are functions of (url, owner, body): when
    the body's msgpack bytes equal the last ones, so are its parts' streams and hashes (msgpack, not JSON:
    JSON writes NaN as null, which routing tells apart), and the parts need not be made at all. Each part
    is still compared with its stream's state (another writer may have moved it); a part that differs is
    routed then, for its payload. Only responses of MIN_PARTS parts or more are kept, and only when none
    of their views needs heartbeats (those need every payload anyway): for the rest just their views are
    kept, so that the body is not even encoded. Bodies are JSON values: one built in Python with a tuple
    where JSON has a list counts as that list. A cache of a pure function, bounded in entries and bytes;
    past either it starts over."""
    MIN_PARTS = 16
    LIMIT = 512
    MAX_BYTES = 64 << 20

    def __init__(self) -> None:
        self._last: dict[tuple, tuple[frozenset[str], bytes | None, list[tuple[tuple, str]] | None]] = {}
        self._bytes = 0

    def lookup(self, url: str, owner: Owner | None, body: Any, live: frozenset[str] | None
               ) -> tuple[list[tuple[tuple, str]] | None, bytes | None]:
        """(the parts' (stream, hash) list if the body repeats the last one, the body's bytes if encoded)."""
        entry = self._last.get((url, owner))
        if entry is None or entry[1] is None or live is None or not entry[0].isdisjoint(live):
            return None, None
        packed = _packed(body)
        return (entry[2] if packed == entry[1] else None), packed

    def remember(self, url: str, owner: Owner | None, body: Any, items: list[tuple[tuple, str]],
                 live: frozenset[str] | None, packed: bytes | None) -> None:
        """Keep what a body that was routed and hashed in full made (`packed`: its bytes, if at hand)."""
        if len(items) < self.MIN_PARTS or live is None:  # (without live_views, every part needs its payload)
            return
        old = self._last.get((url, owner))
        if old is not None and old[1] is None and not old[0].isdisjoint(live):
            return  # still a response whose views need heartbeats (a member list): nothing to keep
        views = frozenset(key[2] for key, _ in items)
        if not views.isdisjoint(live):
            packed, kept = None, None
        else:
            packed = packed if packed is not None else _packed(body)
            kept = items if packed is not None else None
        if len(self._last) >= self.LIMIT or self._bytes > self.MAX_BYTES:
            self._last.clear()
            self._bytes = 0
        old = self._last.get((url, owner))
        if old is not None and old[1] is not None:
            self._bytes -= len(old[1])
        self._last[(url, owner)] = (views, packed, kept)
        self._bytes += len(packed) if packed is not None else 0


_RESPONSES = _ResponseMemo()
_PLAIN_URLS: set[str] = set()  # URLs seen to hold no key material and nothing to escape (never one with a key)


def _route_again(url: str, body: Any, owner: Owner | None, items: list[tuple[tuple, str]]) -> list[Part]:
    """The parts of a response the memo recognised, routed after all: one of them is wanted whole."""
    parts = route(url, body, owner)
    if [p[:3] for p in parts] != [key for key, _ in items]:
        raise RuntimeError(f"{url}: routing gave other streams for the same body bytes")  # never: routing is pure
    return parts


@dataclass
class IngestReport:
    """What one ingest call did. Every response is counted in exactly one of: ok (events and/or unchanged
    streams), errors (Torn error bodies), rejected (quarantined). A response of which a part waits in
    quarantine for its key's owner counts as rejected, though its parts that need no owner are stored."""
    responses: int = 0
    appended: int = 0
    unchanged: int = 0
    errors: list[TornError] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    first_position: int | None = None
    last_position: int | None = None
    retried: int = 0   # quarantined bodies routed at last, their key's owner now known

    def merge(self, other: IngestReport) -> None:
        self.responses += other.responses
        self.appended += other.appended
        self.unchanged += other.unchanged
        self.retried += other.retried
        self.errors += other.errors
        self.rejected += other.rejected
        if other.first_position is not None and self.first_position is None:
            self.first_position = other.first_position
        if other.last_position is not None:
            self.last_position = other.last_position

    def as_dict(self) -> dict:
        return {
            "responses": self.responses,
            "appended": self.appended,
            "unchanged": self.unchanged,
            "errors": len(self.errors),
            "rejected": len(self.rejected),
        }


class _StreamState:
    __slots__ = ("key", "stream_id", "version", "hash", "rules", "head_observed_at", "last_checked", "dirty", "new")
    key: StreamKey            # made once per stream: every event and heartbeat of it shares it
    stream_id: int            # 0 until a new stream's row is inserted (`new` says which)
    version: int
    hash: str | None
    rules: str | None
    head_observed_at: int | None
    last_checked: int | None

    def __init__(self, key: StreamKey, row: tuple | None):
        self.key = key
        if row is None:
            self.stream_id = 0
            self.version = 0
            self.hash = self.rules = None
            self.head_observed_at = None
            self.last_checked = None
            self.new = True
        else:
            self.stream_id, self.version, self.hash, self.rules, self.head_observed_at, self.last_checked = row
            self.new = False
        self.dirty = False  # its whole row is written at commit (an event, a new stream, a rule change)


def torn_error(body: Any) -> tuple[int, str] | None:
    """(code, text) if the body is a Torn error envelope."""
    if isinstance(body, dict) and "error" in body and isinstance(body["error"], dict):
        err = body["error"]
        code = err.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code, str(err.get("error", ""))
    return None


NOTIFY_CHANNEL = "tornstore_events"   # PostgreSQL: what a commit that appended events notifies


class _StreamCache:
    """Stream states this connection has read or written, valid while no other connection commits.

    `PRAGMA data_version` changes when another connection commits and stays put for our own commits, so
    a second writer process (or a tool editing the file) empties the cache, and one process polling alone
    skips reading its streams back for every batch."""
    LIMIT = 250_000

    def __init__(self, data_version: int):
        self.data_version = data_version
        self.states: dict[StreamKey, _StreamState] = {}


def _cached_states(conn: sqlite3.Connection, keys: Iterable[tuple]) -> dict[tuple, _StreamState]:
    """Stream states by key, `keys` among them: the connection's cache where it is still valid, topped
    up with what it misses (call inside BEGIN). A key may be a StreamKey or a plain (type, id, view)
    tuple: they hash and compare alike. Without a cache (a plain sqlite3 connection), just those read."""
    if not hasattr(conn, "stream_cache"):  # a plain sqlite3 connection: no place to keep a cache
        return _load_states(conn, keys)
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    cache = conn.stream_cache
    if cache is None or cache.data_version != version or len(cache.states) > _StreamCache.LIMIT:
        cache = conn.stream_cache = _StreamCache(version)
    states = cache.states
    missing = [key for key in keys if key not in states]
    if missing:
        states.update(_load_states(conn, missing))
    return states


def forget_stream_cache(conn: sqlite3.Connection) -> None:
    """Drop cached stream states (after a rollback, or when this connection changed `streams` itself)."""
    if hasattr(conn, "stream_cache"):
        conn.stream_cache = None


def _load_states(conn: sqlite3.Connection, keys: Iterable[tuple]) -> dict[tuple, _StreamState]:
    """Current state of the given streams, read inside the write transaction (so two writers agree)."""
    wanted = list(dict.fromkeys(keys))
    states: dict[tuple, _StreamState] = {}
    chunk = 500  # well under SQLite's variable limit
    # Grouped by (entity_type, view) so each query is `entity_id IN (...)` on the unique index; a
    # row-value IN (VALUES ...) list scans the whole table instead.
    groups: dict[tuple[str, str], list[str]] = {}
    for entity_type, entity_id, view in wanted:
        groups.setdefault((entity_type, view), []).append(entity_id)
    for (entity_type, view), ids in groups.items():
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            sql = ("SELECT entity_id, stream_id, version, hash, rules, head_observed_at, last_checked FROM streams "
                   f"WHERE entity_type = ? AND view = ? AND entity_id IN ({','.join('?' * len(part))})")
            for row in conn.execute(sql, (entity_type, view, *part)):
                key = StreamKey(entity_type, row[0], view)
                states[key] = _StreamState(key, row[1:])
    for entity_type, entity_id, view in wanted:
        key = StreamKey(entity_type, entity_id, view)
        if key not in states:
            states[key] = _StreamState(key, None)
    return states


class _Inserts:
    """A batch's new streams and events, inserted with one executemany each when flushed (before anything
    reads them back, and at the end). Their ids are given as SQLite would give them, so that an event
    made now knows its position: a stream gets max(stream_id) + 1 (a plain INTEGER PRIMARY KEY), an event
    1 + the larger of the highest position and the highest ever used (AUTOINCREMENT's sqlite_sequence).
    Valid inside the batch's write transaction, where no other writer can take one."""
    __slots__ = ("conn", "streams", "events", "next_stream", "next_position")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.streams: list[tuple] = []
        self.events: list[tuple] = []
        self.next_stream = self.next_position = 0   # 0: not read yet

    def stream(self, key: tuple, observed_at: int) -> int:
        if not self.next_stream:
            self.next_stream = self.conn.execute("SELECT COALESCE(MAX(stream_id), 0) + 1 FROM streams").fetchone()[0]
        stream_id = self.next_stream
        self.next_stream += 1
        self.streams.append((stream_id, *key, observed_at, observed_at, observed_at))
        return stream_id

    def event(self, row: tuple) -> int:
        """Queue (stream_id, version, observed_at, hash, rules, source_url, payload); its position."""
        if not self.next_position:
            used = db.sequence_value(self.conn, "events")
            top = self.conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
            self.next_position = max(used, top) + 1
        position = self.next_position
        self.next_position += 1
        self.events.append((position, *row))
        return position

    def flush(self) -> None:
        if self.streams:
            self.conn.executemany(
                "INSERT INTO streams (stream_id, entity_type, entity_id, view, version, first_seen, last_changed, "
                "last_checked) VALUES (?, ?, ?, ?, 0, ?, ?, ?)", self.streams)
            db.ids_written(self.conn, "streams", self.streams[-1][0])
            self.streams = []
        if self.events:
            self.conn.executemany(
                "INSERT INTO events (position, stream_id, version, observed_at, hash, rules, source_url, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self.events)
            db.ids_written(self.conn, "events", self.events[-1][0])
            self.events = []


def _write_last_checked(conn: sqlite3.Connection, checked: dict[int, list[int]]) -> None:
    """Write last_checked = value for the stream ids listed under each value (unchanged polls).

    One statement per value (a batch is mostly one round, so one value): runs of consecutive stream ids
    (a territory map's streams were made together) as BETWEEN ranges, the rest as a json_each list. Values
    go in ascending order: a stream listed under two values ends with the later. `last_changed` gets what
    the whole-row UPDATE would give it. Streams whose whole row is written are written after this."""
    sql = ("UPDATE streams SET last_checked = ?, last_changed = COALESCE(head_observed_at, last_changed) "
           "WHERE stream_id ")
    for value in sorted(checked):
        ids = checked[value]
        if not ids:
            continue
        ids.sort()
        ranges: list[tuple[int, int, int]] = []
        single: list[int] = []
        start = 0
        for end in range(1, len(ids) + 1):
            if end == len(ids) or ids[end] != ids[end - 1] + 1:
                if end - start >= _RUN:
                    ranges.append((value, ids[start], ids[end - 1]))
                else:
                    single += ids[start:end]
                start = end
        if ranges:
            conn.executemany(sql + "BETWEEN ? AND ?", ranges)
        if single:
            conn.execute(sql + "IN (SELECT value FROM json_each(?))", (value, _encode(single).decode()))


_RUN = 16  # consecutive stream ids written as one BETWEEN range


def _head_hash_under_current_rules(conn: sqlite3.Connection, key: StreamKey, state: _StreamState) -> str:
    """Re-hash a stream's head event with today's rules (the rule set changed since it was stored)."""
    row = conn.execute(
        "SELECT payload FROM events WHERE stream_id = ? ORDER BY observed_at DESC, version DESC LIMIT 1",
        (state.stream_id,),
    ).fetchone()
    return canonical_hash(key.view, msgspec.json.decode(row[0])) if row else ""


def _hash_in_force(conn: sqlite3.Connection, key: StreamKey, stream_id: int, observed_at: int) -> str | None:
    """Canonical hash (today's rules) of the stream's state at `observed_at`, for a late response."""
    row = conn.execute(
        "SELECT hash, rules, payload FROM events WHERE stream_id = ? AND observed_at <= ? "
        "ORDER BY observed_at DESC, version DESC LIMIT 1", (stream_id, observed_at)).fetchone()
    if row is None:
        return None
    digest, rules, payload = row
    return digest if rules == RULES else canonical_hash(key.view, msgspec.json.decode(payload))


def _decode_raw(raw: msgspec.Raw) -> Any:
    """The decoded body, or its text when it is not JSON (then quarantined like any text body)."""
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return bytes(raw).decode("utf-8", errors="replace")


def ingest_batch(conn: sqlite3.Connection, responses: list[Response],
                 projector: Projector | None = None, *, now: float | None = None,
                 retry_keys: Iterable[str] = ()) -> IngestReport:
    """Ingest a batch in one transaction. See the module docstring.

    `now`: the ingesting machine's clock (Unix seconds; default: the wall clock), only to refuse an
    `observed_at` from the future. It never reaches an event or a projection.
    `retry_keys`: key fingerprints whose quarantined bodies, waiting for their owner, are routed again
    with this batch (those of keys whose owner the batch teaches always are).

    No garbage collection runs during the batch (gctuning.collections_paused): what it allocates dies with
    it, and collecting on the way only walks the caller's heap.
    """
    with collections_paused():
        return _ingest_batch(conn, responses, projector, now, retry_keys)


def check_response(response: Response, url: str, latest_allowed: float
                   ) -> tuple[Any, tuple[int | None, str, str] | None, tuple[int, str] | None]:
    """What ingest makes of one response before routing it (a pure function, shared with the PostgreSQL log):
    (body, refused, torn error). `body` is the decoded body; `refused` is (observed_at to store, reason, body
    text) when the response is quarantined as it stands; `torn error` is (code, text, key-free) for a Torn
    error body, which becomes a gap. Neither: route the body. `url` is the URL as stored (key stripped)."""
    observed_at = response.observed_at
    body = response.body
    if isinstance(body, msgspec.Raw):  # undecoded JSON, as a collector with raw_bodies hands it on
        body = _decode_raw(body)
    if response.fault:
        return body, (None, response.fault, _as_text(body)), None
    if not isinstance(observed_at, int) or isinstance(observed_at, bool) or not 0 <= observed_at < _INT64:
        return body, (None, f"{url}: observed_at {observed_at!r} is not Unix seconds", _as_text(body)), None
    if not TORN_EPOCH <= observed_at <= latest_allowed:
        # A poll stamped in 2100 would pin every current state; one stamped 1970 is a bug upstream.
        when = "before Torn existed (2004)" if observed_at < TORN_EPOCH else \
            f"more than {MAX_AHEAD} s ahead of this machine's clock"
        return body, (None, f"{url}: observed_at {observed_at} is {when}", _as_text(body)), None
    if isinstance(body, str):
        return body, (observed_at, f"{url}: body is not valid JSON", _storable(body)), None
    err = torn_error(body)
    if err is not None and not -_INT64 <= err[0] < _INT64:
        return body, (observed_at, f"{url}: Torn error code {err[0]} is out of range", _as_text(body)), None
    if err is not None:
        return body, None, (err[0], scrub(_storable(err[1])))
    return body, None, None


def _ingest_batch(conn: sqlite3.Connection, responses: list[Response], projector: Projector | None,
                  now: float | None, retry_keys: Iterable[str]) -> IngestReport:
    latest_allowed = (time.time() if now is None else now) + MAX_AHEAD
    report = IngestReport(responses=len(responses))
    # (response, url, [(stream key, canonical hash)], its parts or None until needed, body, owner)
    routed: list[tuple[Response, str, list[tuple[tuple, str]], list[Part] | None, Any, Owner | None]] = []
    gap_rows: list[tuple] = []
    valid: list[tuple[Response, str, Any, str | None]] = []   # (response, url, body, key fingerprint)

    rejected: list[tuple[int, Rejected, tuple]] = []   # (input index, ...): reported in input order

    def reject(index: int, url: str, observed_at: int | None, reason: str, body_text: str,
               key_fp: str | None = None, needs_owner: bool = False) -> None:
        # Whatever a rejected response holds is kept for a person to read: never a key with it.
        url, reason, body_text = scrub(url), scrub(reason), scrub(body_text)
        rejected.append((index, Rejected(url, observed_at, reason),
                         (observed_at, url, reason, body_text, key_fp, int(needs_owner))))

    # 1. Check, route and classify outside the write lock's critical part (pure CPU).
    plain_urls = _PLAIN_URLS
    for index, response in enumerate(responses):
        url = response.url
        if url not in plain_urls:
            url = _storable(strip_key(url))
            if has_key_material(url):
                url = scrub(url)
            elif url is response.url:  # nothing to strip, scrub or escape: remember it as such
                if len(plain_urls) >= 4096:
                    plain_urls.clear()
                plain_urls.add(url)
        body, refused, err = check_response(response, url, latest_allowed)
        if refused is not None:
            reject(index, url, *refused)
            continue
        if err is not None:
            observed_at = response.observed_at
            code, text = err
            report.errors.append(TornError(url, observed_at, code, text))
            gap_rows.append((observed_at, url, None, code, f"Torn API error {code}: {text}"))
            continue
        valid.append((response, url, body, key_fingerprint(response.key)))

    # Own-key URLs name their entity through the key's owner: learn owners from this batch first, so a
    # key/info anywhere in it resolves the rest, and bring back what waited in quarantine for them.
    owners = KeyOwners.load(conn, {fp for _, _, _, fp in valid if fp} | set(retry_keys))
    for response, url, body, fp in valid:
        if fp:
            owners.learn(fp, response.observed_at, url, owner_taught(url, body))
    waiting = _waiting_for(conn, set(owners.taught) | set(retry_keys))   # [(quarantine id, response)]
    quarantine_of = {id(r): qid for qid, r in waiting}     # a retried response has no new quarantine row
    valid += [(r, r.url, r.body, r.key) for _, r in waiting]
    resolved: list[int] = []                               # quarantine rows now routed: deleted below

    input_index = {id(r): i for i, r in enumerate(responses)}
    live = _live_views(projector)
    memo = _MEMO
    for response, url, body, fp in valid:
        observed_at = response.observed_at
        index = input_index.get(id(response), len(responses))
        retry_of = quarantine_of.get(id(response))
        memoizable = retry_of is None and not response.stream
        packed = None
        try:
            owner = None
            if response.stream:
                parts = [named_part(response.stream, body)]
            else:
                owner = response.owner or owners.get(fp)
                seen, packed = _RESPONSES.lookup(url, owner, body, live) if memoizable else (None, None)
                if seen is not None:
                    routed.append((response, url, seen, None, body, owner))  # routed when a payload is needed
                    continue
                try:
                    parts = route(url, body, owner)
                    if retry_of is not None:
                        resolved.append(retry_of)
                except OwnerNeeded as exc:
                    # Keep what needs no owner now; the whole body waits in quarantine for the owner.
                    parts = exc.parts
                    memoizable = False
                    if retry_of is None:
                        reason = str(exc) + (f" (key {fp})" if fp else " (no key fingerprint was given)")
                        reject(index, url, observed_at, reason, _as_text(body), fp, needs_owner=True)
            items = memo.keyed(parts)
        except (RoutingError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            if retry_of is None:
                reason = str(exc) if str(exc).startswith(url) else f"{url}: {exc}"
                reject(index, url, observed_at, reason, _as_text(body))
            continue
        if memoizable:
            _RESPONSES.remember(url, owner, body, items, live, packed)
        routed.append((response, url, items, parts, body, owner))

    rejected.sort(key=lambda item: item[0])
    report.rejected = [r for _, r, _ in rejected]
    quarantine_rows = [row for _, _, row in rejected]

    # 2. Compare and append inside one IMMEDIATE transaction.
    conn.execute("BEGIN IMMEDIATE")
    try:
        states = _cached_states(conn, [key for _, _, items, _, _, _ in routed for key, _ in items])
        events: list[Event] = []
        heartbeats: list[Heartbeat] = []
        dirty: list[_StreamState] = []     # whole rows to write
        # Unchanged polls move last_checked only: stream ids by the value they move to. A stream moves
        # only forward, so it is listed at most once per value.
        checked_at: dict[int, list[int]] = {}
        unchanged = 0

        writes = _Inserts(conn)

        def append(state: _StreamState, observed_at: int, digest: str, url: str, stored: bytes) -> None:
            state.version += 1
            position = writes.event((state.stream_id, state.version, observed_at, digest, RULES, url, stored.decode()))
            # Projections get the payload as stored (NaN became null, ...), exactly what replay reads.
            events.append(Event(position, state.key, state.version, observed_at, _decode(stored), url))
            if state.head_observed_at is None or observed_at >= state.head_observed_at:
                state.hash, state.rules, state.head_observed_at = digest, RULES, observed_at
            state.last_checked = max(state.last_checked or observed_at, observed_at)
            if not state.dirty:
                state.dirty = True
                dirty.append(state)

        for response, url, items, parts_of, body, owner in routed:
            observed_at = response.observed_at
            moved: list[int] | None = None
            for i, (key, digest) in enumerate(items):
                state = states[key]
                head = state.head_observed_at
                if digest == state.hash and state.rules == RULES and (head is None or observed_at >= head):
                    same = True  # the common case, first: the stream's head repeats
                else:
                    if state.new:
                        state.stream_id = writes.stream(key, observed_at)
                        state.new = False
                        state.last_checked = observed_at
                    elif state.rules != RULES and state.hash is not None:
                        writes.flush()  # (what it reads must include this batch's rows)
                        state.hash = _head_hash_under_current_rules(conn, state.key, state)
                        state.rules = RULES
                        if not state.dirty:
                            state.dirty = True
                            dirty.append(state)
                    late = head is not None and observed_at < head
                    if late:
                        writes.flush()
                    same = (digest == _hash_in_force(conn, state.key, state.stream_id, observed_at) if late
                            else digest == state.hash)
                if same:
                    unchanged += 1
                    checked = state.last_checked
                    if checked is None or observed_at > checked:
                        state.last_checked = observed_at
                        if moved is None:
                            moved = checked_at.setdefault(observed_at, [])
                        moved.append(state.stream_id)
                    if live is None or key[2] in live:
                        if parts_of is None:
                            parts_of = _route_again(url, body, owner, items)
                        heartbeats.append(_tuple_new(Heartbeat, (state.key, observed_at, parts_of[i][3])))
                    continue
                if parts_of is None:
                    parts_of = _route_again(url, body, owner, items)
                # A change observed before a later poll that confirmed the head (another writer, an old
                # capture): the head is appended again at the time it was last confirmed, so the log and
                # current state still end on what was seen last.
                reconfirm, head_hash = None, state.hash
                if not late and head is not None and observed_at < (state.last_checked or 0):
                    writes.flush()
                    reconfirm = conn.execute(
                        "SELECT source_url, payload FROM events WHERE stream_id = ? "
                        "ORDER BY observed_at DESC, version DESC LIMIT 1", (state.stream_id,)).fetchone()
                append(state, observed_at, digest, url, _without_keys(_encode(parts_of[i].payload)))
                if reconfirm is not None and state.last_checked is not None and head_hash is not None:
                    append(state, state.last_checked, head_hash, reconfirm[0], reconfirm[1].encode())
        writes.flush()
        report.unchanged += unchanged
        _write_last_checked(conn, checked_at)
        conn.executemany(
            "UPDATE streams SET version = ?, hash = ?, rules = ?, head_observed_at = ?, last_checked = ?, "
            "last_changed = COALESCE(?, last_changed) WHERE stream_id = ?",
            [(s.version, s.hash, s.rules, s.head_observed_at, s.last_checked, s.head_observed_at, s.stream_id)
             for s in dirty],
        )
        for state in dirty:
            state.dirty = False
        if quarantine_rows:
            conn.executemany(
                "INSERT INTO quarantine (observed_at, source_url, reason, body, key_fp, needs_owner, "
                "body_hash) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(*row, hashlib.blake2b(row[3].encode(errors="replace"), digest_size=16).hexdigest())
                 for row in quarantine_rows])
        if resolved:
            conn.executemany("DELETE FROM quarantine WHERE id = ?", [(qid,) for qid in resolved])
            report.retried = len(resolved)
        owners.save(conn)
        if gap_rows:
            conn.executemany(
                "INSERT INTO gaps (observed_at, source_url, target, error_code, reason) VALUES (?, ?, ?, ?, ?)",
                gap_rows)
        if projector is not None and (events or heartbeats):
            projector(conn, events, heartbeats)
        if events and db.is_postgres(conn):
            # Wakes followers on other hosts (`tornstore follow`, Store.follow) when this commits; the log
            # stays the truth, the notification only says where it ends now.
            conn.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, str(events[-1].position)))
        conn.execute("COMMIT")
    except BaseException:
        forget_stream_cache(conn)  # the cached states may hold what was just rolled back
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    report.appended = len(events)
    if events:
        report.first_position = events[0].position
        report.last_position = events[-1].position
    return report


def retry_waiting(conn: sqlite3.Connection, projector: Projector | None = None) -> IngestReport:
    """Route again every quarantined body whose key's owner is now known (`tornstore quarantine retry`)."""
    return ingest_batch(conn, [], projector, retry_keys=keys_waiting(conn))


def _without_keys(stored: bytes) -> bytes:
    """The payload as stored, with any key material a body carried (a paging link's `&key=`) redacted."""
    if not has_key_material(stored):
        return stored
    return scrub(stored.decode("utf-8", "surrogatepass")).encode("utf-8", "surrogatepass")


def _as_text(body: Any) -> str:
    if isinstance(body, str):
        return _storable(body)
    try:
        return _encode(body).decode()
    except RecursionError:
        return "nested too deep to store; it began: " + reprlib.repr(body)
    except (TypeError, ValueError, OverflowError):
        try:
            return repr(body)
        except RecursionError:
            return "nested too deep to store; it began: " + reprlib.repr(body)


def _storable(text: str) -> str:
    """Text SQLite can store: lone surrogates (json.loads lets them through) become backslash escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
