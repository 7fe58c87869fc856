"""The key pool: which API key serves the next request, and what every Torn error code does to the keys.

Limits kept (all on a rolling 60 s window, counted at the moment a request is sent):
  * per key owner (a Torn user): `owner_limit` requests (100 by default, as the API allows) across all of
    that owner's keys;
  * per key: its own `budget` (60 by default).

Choosing a key: among the keys that are usable now, have at least the access the request needs, and (for
own-key selections such as battlestats or bars) belong to the player being asked (`own_id`), or to a
member of the faction being asked (`own_faction`: the key's `faction`, from the config or learned from
`/v2/key/info`), or are the one key a request names (`key_fp`), the least recently used one wins.
`acquire` waits (through the injectable `sleep`) until one is free; `NoUsableKey` is raised when no key
could ever serve the request (all disabled, none with the access, no key of that player or faction).

Key states (the `api_keys` table, by fingerprint; they survive a restart):

    active ──2, 10──────────────────────────────> disabled   (never used again, even after a restart)
    active ──13, 18──> paused (paused_until = recheck_at = now + recheck, a day by default)
    paused ──recheck_at passed──> one trial request ──works (or any answer not 13/18)──> active
                                                   ──13, 18──> paused for another period
                                                   ──no answer (HTTP error, timeout)──> trial again later
    active ──5──> active; every key of that owner waits `rate_limit_pause` (60 s, paused_until), then a
                  single probe request goes first; the owner's other requests wait for its answer
    active ──14──> active; every key of that owner stops asking that cloud category (personal stats,
                   faction news, events, log) for an hour: the 50,000 rows are counted over a rolling
                   24 h, so the limit frees up gradually, not at midnight. Each further 14 doubles the
                   wait (2 h, 4 h, ... at most 24 h, by which time every counted row has aged out); an
                   answer in that category resets it
    active ──11──> active; that key waits 60 s (a key may change once per 60 s), and the request is
                   tried again no sooner than 60 s later
    any    ──8──> every key waits `ip_block_pause` (5 min); 9, 24 ──> every key waits `api_down_pause`
                  (60 s); then a single probe request goes first, as after 5

The other codes do not touch keys: 0, 12, 15, 17 (and HTTP 5xx, timeouts) are retried by the caller
with bounded exponential backoff; 6, 7, 16 are problems of the target; 22 and 23 (selection only in API
v1 / v2) send the caller to the other API version; 1, 3, 4, 19-21, 25-30 are bugs or unsupported
selections (recorded, not retried). `policy(code)` gives the caller's side of each code.

Every time goes through the injectable `clock` (Unix seconds) and every wait through `sleep`, so tests and
the demo drive time instead of waiting for it. The key itself is only handed to the HTTP client: every
log line, state row and message names a key by its fingerprint.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from ..secrets import fingerprint
from .endpoints import cloud_categories

log = logging.getLogger("tornstore.collector")

ACCESS_LEVELS = {"public": 0, "minimal": 1, "limited": 2, "full": 3}
ACCESS_NAMES = {v: k for k, v in ACCESS_LEVELS.items()}

WINDOW = 60.0
DAY = 86400
HOUR = 3600
KEY_COOLDOWN = 60.0             # code 11: a key can change only once every 60 s

# ------------------------------------------------------------------------------------------ error policy
RETRY = "retry"                 # transient: the same request again after backoff
RETRY_OTHER_KEY = "other_key"   # the key is the problem: retry at once with another key
PAUSE_ALL = "pause_all"         # everything waits; this poll becomes a gap
TARGET = "target"               # the target does not exist or is not visible: target_problems, poll rarely
BUG = "bug"                     # our request is wrong or unsupported: a gap, no retry, poll rarely
UNKNOWN = "unknown"             # a code we do not know: a gap, and the poll backs off
OTHER_VERSION = "other_version"  # 22, 23: ask the same data through the other API version, else a gap

_POLICY = {
    0: RETRY, 11: RETRY, 12: RETRY, 15: RETRY, 17: RETRY,
    5: RETRY_OTHER_KEY, 2: RETRY_OTHER_KEY, 10: RETRY_OTHER_KEY, 13: RETRY_OTHER_KEY,
    18: RETRY_OTHER_KEY, 14: RETRY_OTHER_KEY,
    8: PAUSE_ALL, 9: PAUSE_ALL, 24: PAUSE_ALL,
    6: TARGET, 7: TARGET, 16: TARGET,
    22: OTHER_VERSION, 23: OTHER_VERSION,
    1: BUG, 3: BUG, 4: BUG, 19: BUG, 20: BUG, 21: BUG, 25: BUG, 26: BUG, 27: BUG,
    28: BUG, 29: BUG, 30: BUG,
}


def policy(code: int) -> str:
    """What the caller does about a Torn error code (see the module docstring)."""
    return _POLICY.get(code, UNKNOWN)


class NoUsableKey(Exception):
    """No key in the pool can ever serve this request (the message says why; it names no key)."""


class KeysBusy(Exception):
    """No suitable key is free before the caller's deadline; `free_at` says when one will be."""

    def __init__(self, free_at: float, reason: str):
        super().__init__(reason)
        self.free_at = free_at


@dataclass
class ApiKey:
    """One key and its state. `secret` is only ever given to the HTTP client."""
    secret: str = field(repr=False)
    owner: str
    access: int = 0
    budget: int = 60
    fp: str = ""
    state: str = "active"              # active | paused | disabled
    paused_until: float = 0.0          # no request before this time (any state)
    recheck_at: float | None = None    # paused keys: when the trial request may go
    last_error_code: int | None = None
    last_error_at: float | None = None
    last_used_at: float = 0.0
    requests: int = 0                  # as loaded, plus this pool's own since
    unsaved: int = 0                   # this pool's requests not yet added to the saved count
    reason: str | None = None
    uses: deque = field(default_factory=deque, repr=False)
    blocked: dict = field(default_factory=dict, repr=False)   # category -> until (error 14)
    trial_inflight: bool = False
    faction: str | None = None         # the owner's faction, when known (config or /v2/key/info)
    dirty: bool = True                 # state changed: saved at the next flush
    used: bool = False                 # only last_used_at/requests changed: saved now and then
    use_seq: int = 0                   # order of last use (ties in last_used_at under a stopped clock)

    def __post_init__(self) -> None:
        if not self.fp:
            self.fp = fingerprint(self.secret)

    def row(self) -> tuple:
        """The api_keys row (no secret). Its request count is the increment since the last save: saving
        adds it, so collectors sharing a key (two processes, a bot and a collector) count together."""
        return (self.fp, self.owner, self.state, _int(self.paused_until or None), _int(self.recheck_at),
                self.last_error_code, _int(self.last_error_at), _int(self.last_used_at or None),
                self.unsaved, self.reason)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def categories(category: str | None) -> set[str]:
    """What a daily read limit (14) blocks for a request's selections: the cloud categories they touch
    (personalstats, news, events, log), else the selections themselves; '*' when none are named."""
    if not category:
        return {"*"}
    names = [c for c in category.split(",") if c]
    return cloud_categories(names) or set(names)


class KeyPool:
    """Keys, their limits and their states. All methods are synchronous except `acquire`."""

    def __init__(self, keys: Iterable[ApiKey], *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, owner_limit: int = 100,
                 rate_limit_pause: float = 60.0, ip_block_pause: float = 300.0, api_down_pause: float = 60.0,
                 recheck: float = DAY, rng: random.Random | None = None):
        self.keys: list[ApiKey] = []
        seen: set[str] = set()
        for key in keys:
            if key.fp in seen:
                continue  # the same key listed twice counts once
            seen.add(key.fp)
            self.keys.append(key)
        self.clock = clock
        self.sleep = sleep
        self.owner_limit = owner_limit
        self.rate_limit_pause = rate_limit_pause
        self.ip_block_pause = ip_block_pause
        self.api_down_pause = api_down_pause
        self.recheck = recheck
        self.rng = rng or random.Random()
        self.owner_uses: dict[str, deque] = {}
        self._seq = 0
        # After a pause (code 5 for an owner; 8, 9, 24 for everyone) a single probe request goes first:
        # "needed" until it is sent, "inflight" until its answer; the others wait for it.
        self.owner_probe: dict[str, str] = {}
        self.global_probe: str | None = None
        self.pause_until = 0.0          # every key waits (codes 8, 9, 24)
        self.pause_reason: str | None = None
        self.read_limit_wait: dict[tuple[str, str], float] = {}   # (owner, category) -> last wait after a 14

    # ------------------------------------------------------------------ persistence
    def secrets(self) -> list[str]:
        return [k.secret for k in self.keys]

    def by_fp(self, fp: str) -> ApiKey | None:
        return next((k for k in self.keys if k.fp == fp), None)

    def load_rows(self, rows: Iterable[tuple]) -> None:
        """Apply saved state: rows of (fingerprint, state, paused_until, recheck_at, last_error_code,
        last_error_at, last_used_at, requests, reason). The owner, access and budget come from the config."""
        for fp, state, paused_until, recheck_at, code, code_at, used_at, requests, reason in rows:
            key = self.by_fp(fp)
            if key is None:
                continue
            key.state = state if state in ("active", "paused", "disabled") else "active"
            key.paused_until = float(paused_until or 0)
            key.recheck_at = float(recheck_at) if recheck_at is not None else None
            if key.state == "paused" and key.recheck_at is None:
                key.recheck_at = key.paused_until
            key.last_error_code = code
            key.last_error_at = code_at
            key.last_used_at = float(used_at or 0)
            key.requests = int(requests or 0)
            key.unsaved = 0
            key.reason = reason
            key.dirty = key.used = False

    def dirty_rows(self, usage: bool = True) -> list[tuple]:
        """Rows of keys whose state changed; with `usage`, also of keys that were only used (their
        last_used_at and request count), which the collector saves on a slower cadence."""
        rows = [k.row() for k in self.keys if k.dirty or (usage and k.used)]
        for k in self.keys:
            if k.dirty or usage:
                k.dirty = k.used = False
                k.unsaved = 0
        return rows

    def save_failed(self, rows: list[tuple]) -> None:
        """The rows from dirty_rows were not saved: keep their increments and save them next time."""
        by_fp = {k.fp: k for k in self.keys}
        for row in rows:
            key = by_fp.get(row[0])
            if key is not None:
                key.unsaved += row[8]
                key.dirty = True

    # ------------------------------------------------------------------ choosing
    def _serves(self, key: ApiKey, access: int, own_id: str | None, own_faction: str | None = None,
                key_fp: str | None = None) -> bool:
        if key.state == "disabled" or key.access < access:
            return False
        if key_fp is not None and key.fp != key_fp:
            return False
        if own_faction is not None and key.faction != str(own_faction):
            return False
        return own_id is None or key.owner == str(own_id)

    def _window(self, uses: deque, now: float) -> deque:
        while uses and uses[0] <= now - WINDOW:
            uses.popleft()
        return uses

    def free_at(self, key: ApiKey, category: str | None = None, now: float | None = None) -> float:
        """The earliest time this key may send a request (now or later)."""
        now = self.clock() if now is None else now
        if self.global_probe == "inflight" or self.owner_probe.get(key.owner) == "inflight":
            return float("inf")
        t = max(now, key.paused_until)
        if key.state == "paused":
            if key.trial_inflight:
                return float("inf")
            t = max(t, key.recheck_at or 0)
        if key.blocked:
            for name in categories(category) | {"*"}:
                if name in key.blocked:
                    if key.blocked[name] <= now:
                        del key.blocked[name]
                    else:
                        t = max(t, key.blocked[name])
        uses = self._window(key.uses, now)
        if len(uses) >= key.budget:
            t = max(t, uses[len(uses) - key.budget] + WINDOW)
        owner = self._window(self.owner_uses.setdefault(key.owner, deque()), now)
        if len(owner) >= self.owner_limit:
            t = max(t, owner[len(owner) - self.owner_limit] + WINDOW)
        return t

    def candidates(self, access: int = 0, own_id: str | None = None,
                   exclude: AbstractSet[str] = frozenset(), own_faction: str | None = None,
                   key_fp: str | None = None) -> list[ApiKey]:
        return [k for k in self.keys if self._serves(k, access, own_id, own_faction, key_fp) and k.fp not in exclude]

    def choose(self, access: int = 0, own_id: str | None = None, category: str | None = None,
               exclude: AbstractSet[str] = frozenset(), own_faction: str | None = None,
               key_fp: str | None = None) -> ApiKey | None:
        """The least recently used key free now, or None. Does not record a use."""
        now = self.clock()
        free = [k for k in self.candidates(access, own_id, exclude, own_faction, key_fp)
                if self.free_at(k, category, now) <= now]
        if not free:
            return None
        # Paused keys due for their trial go first, so a recovered key is noticed soon.
        return min(free, key=lambda k: (k.state != "paused", k.last_used_at, k.use_seq))

    def next_free(self, access: int = 0, own_id: str | None = None, category: str | None = None,
                  exclude: AbstractSet[str] = frozenset(), own_faction: str | None = None,
                  key_fp: str | None = None) -> float | None:
        """When a suitable key will next be free; None if no key can ever serve the request."""
        now = self.clock()
        keys = self.candidates(access, own_id, exclude, own_faction, key_fp)
        times = [t for t in (self.free_at(k, category, now) for k in keys) if t != float("inf")]
        if not times:
            return None if not keys else now + 1.0
        return min(times)

    def why_none(self, access: int, own_id: str | None, exclude: AbstractSet[str] = frozenset(),
                 own_faction: str | None = None, key_fp: str | None = None) -> str:
        level = ACCESS_NAMES.get(access, access)
        if exclude and not self.candidates(access, own_id, exclude, own_faction, key_fp) and \
                self.candidates(access, own_id, frozenset(), own_faction, key_fp):
            return "every usable key was refused access to this target"
        if key_fp is not None:
            return f"key {key_fp} is not usable"
        if own_id is not None:
            return f"no usable key of player {own_id} with {level} access"
        if own_faction is not None:
            return f"no usable key of a member of faction {own_faction} with {level} access"
        return f"no usable key with {level} access"

    def why_busy(self, access: int, own_id: str | None, category: str | None, exclude: AbstractSet[str],
                 when: float, own_faction: str | None = None, key_fp: str | None = None) -> str:
        now = self.clock()
        reasons = {k.reason for k in self.candidates(access, own_id, exclude, own_faction, key_fp)
                   if k.reason and (k.paused_until > now or k.blocked) and k.reason != self.pause_reason}
        if self.pause_until > now and self.pause_reason:
            reasons.add(self.pause_reason)
        text = f"no key free until {int(when)}"
        return text + (f" ({'; '.join(sorted(reasons))})" if reasons else " (rate limits)")

    def use(self, key: ApiKey) -> None:
        """Record that a request is being sent with this key now."""
        now = self.clock()
        key.uses.append(now)
        self.owner_uses.setdefault(key.owner, deque()).append(now)
        key.last_used_at = now
        self._seq += 1
        key.use_seq = self._seq
        key.requests += 1
        key.unsaved += 1
        if key.state == "paused":
            key.trial_inflight = True
            log.info("key %s: trial request after pause (%s)", key.fp, key.reason)
        if self.owner_probe.get(key.owner) == "needed":
            self.owner_probe[key.owner] = "inflight"
        if self.global_probe == "needed":
            self.global_probe = "inflight"
        key.used = True

    def _answered(self, key: ApiKey, rate_limited: bool = False, paused_all: bool = False) -> None:
        """A request with this key got an answer: a probe in flight is over (or needed again)."""
        if self.owner_probe.get(key.owner) == "inflight" or rate_limited:
            if rate_limited:
                self.owner_probe[key.owner] = "needed"
            else:
                del self.owner_probe[key.owner]
        if self.global_probe == "inflight" or paused_all:
            self.global_probe = "needed" if paused_all else None

    async def acquire(self, access: int = 0, own_id: str | None = None, category: str | None = None,
                      exclude: AbstractSet[str] = frozenset(), deadline: float | None = None,
                      own_faction: str | None = None, key_fp: str | None = None) -> ApiKey:
        """Wait until a suitable key is free, record its use and return it.

        Raises NoUsableKey when none can ever serve, or KeysBusy when none is free before `deadline`."""
        while True:
            key = self.choose(access, own_id, category, exclude, own_faction, key_fp)
            if key is not None:
                self.use(key)
                return key
            when = self.next_free(access, own_id, category, exclude, own_faction, key_fp)
            if when is None:
                raise NoUsableKey(self.why_none(access, own_id, exclude, own_faction, key_fp))
            if deadline is not None and when > deadline:
                raise KeysBusy(when, self.why_busy(access, own_id, category, exclude, when, own_faction, key_fp))
            await self.sleep(max(0.0, when - self.clock()) + self.rng.uniform(0.0, 0.05))

    # ------------------------------------------------------------------ outcomes
    def succeeded(self, key: ApiKey, category: str | None = None) -> None:
        """A request with this key was answered; `category` (its selections) ends a read-limit backoff."""
        if category and self.read_limit_wait:
            for name in categories(category):
                self.read_limit_wait.pop((key.owner, name), None)
        if key.state == "paused":
            log.info("key %s: trial request worked, active again", key.fp)
            key.state = "active"
            key.recheck_at = None
            key.paused_until = 0.0
            key.reason = None
            key.dirty = True
        key.trial_inflight = False
        self._answered(key)

    def released(self, key: ApiKey) -> None:
        """The request ended without an answer about the key (HTTP error, timeout): a trial or probe
        may go again (still one at a time)."""
        key.trial_inflight = False
        if self.owner_probe.get(key.owner) == "inflight":
            self.owner_probe[key.owner] = "needed"
        if self.global_probe == "inflight":
            self.global_probe = "needed"

    def failed(self, key: ApiKey, code: int, category: str | None = None) -> None:
        """Apply a Torn error code's effect on the keys (see the module docstring)."""
        now = self.clock()
        key.trial_inflight = False
        key.last_error_code = code
        key.last_error_at = now
        key.dirty = True
        self._answered(key, rate_limited=code == 5, paused_all=code in (8, 9, 24))
        if code in (2, 10):
            key.state = "disabled"
            key.recheck_at = None
            key.reason = "incorrect key (2)" if code == 2 else "owner in federal jail (10)"
            log.warning("key %s disabled: %s", key.fp, key.reason)
        elif code in (13, 18):
            key.state = "paused"
            key.paused_until = key.recheck_at = now + self.recheck
            key.reason = ("owner inactive for more than 7 days (13)" if code == 13
                          else "paused by its owner (18)")
            log.warning("key %s paused until %d: %s", key.fp, int(key.paused_until), key.reason)
        elif code == 5:
            until = now + self.rate_limit_pause
            for other in self.keys:
                if other.owner == key.owner and other.paused_until < until:
                    other.paused_until = until
                    other.dirty = True
            key.reason = "rate limited (5)"
            log.warning("owner of key %s rate limited: its keys wait %.0f s", key.fp, self.rate_limit_pause)
        elif code == 14:
            names = categories(category)
            for name in sorted(names):
                wait = min(float(DAY), 2 * self.read_limit_wait.get((key.owner, name), HOUR / 2))
                self.read_limit_wait[(key.owner, name)] = wait
                for other in self.keys:
                    if other.owner == key.owner:
                        other.blocked[name] = max(other.blocked.get(name, 0.0), now + wait)
                        other.dirty = True
                log.warning("owner of key %s: daily read limit (14) for %s; its keys wait %.0f h (rolling 24 h)",
                            key.fp, "every category" if name == "*" else name, wait / HOUR)
            what = "every category" if names == {"*"} else ", ".join(sorted(names))
            key.reason = f"daily read limit (14) for {what}"
        elif code == 11:
            key.paused_until = max(key.paused_until, now + KEY_COOLDOWN)
            key.reason = "key change cooldown (11)"
            log.warning("key %s: key change cooldown (11); waits %.0f s", key.fp, KEY_COOLDOWN)
        elif code == 8:
            self.pause_all(now + self.ip_block_pause, "IP blocked (8)")
        elif code in (9, 24):
            self.pause_all(now + self.api_down_pause,
                           "API disabled (9)" if code == 9 else "API closed temporarily (24)")
        elif key.state == "paused":
            # The trial got an answer that says nothing about the key (e.g. 6): count it as alive.
            self.succeeded(key)

    def pause_all(self, until: float, reason: str) -> None:
        log.warning("every key waits until %d: %s", int(until), reason)
        if until > self.pause_until:
            self.pause_until, self.pause_reason = until, reason
        for key in self.keys:
            if key.paused_until < until:
                key.paused_until = until
                key.dirty = True

    def summary(self) -> list[dict]:
        now = self.clock()
        return [{"key": k.fp, "owner": k.owner, "faction": k.faction, "access": ACCESS_NAMES.get(k.access, k.access),
                 "state": k.state, "waits": max(0, int(k.paused_until - now)) if k.paused_until > now else 0,
                 "requests": k.requests, "last_error_code": k.last_error_code, "reason": k.reason}
                for k in self.keys]

