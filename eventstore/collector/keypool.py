"""The key pool: which API key serves the next request, and what every Torn error code does to the keys.

Limits kept (all on a rolling 60 s window, counted from the moment a request is sent for 61 s: Torn counts
it when it arrives, so at the edge of the window a request the pool thinks gone may still count there):
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

Two injectable clocks. The rolling windows and every pause (paused_until, recheck_at, a category's block,
`free_at`, an `acquire` deadline) run on `monotonic`, which never steps: a wall clock set back an hour
does not hold the keys for 59 minutes. `clock` (Unix seconds) only stamps (last_used_at, last_error_at)
and converts what is saved and loaded. By default `monotonic` is `time.monotonic` when `clock` is
`time.time`, else `clock` itself: a simulated clock, as the demo and tests inject, is monotonic and drives
the windows too. Every wait goes through `sleep`, so tests and the demo drive time instead of waiting.

Saved and loaded (the `api_keys` and `owner_requests` tables, through `gaps`): the key states, with their
pauses as Unix times, and the times of the requests each owner sent in the last minute (`owner_rows`,
`load_requests`), so two runs back to back stay within the owner's 100 a minute. At load a saved time is
read against the wall clock: a request time ahead of it (the clock was set back) counts as just now, one
older than 60 s is dropped; a pause is cut to the longest its policy sets from now (a paused key's
`recheck`; any other pause the longest of `rate_limit_pause`, `KEY_COOLDOWN`, `ip_block_pause` and
`api_down_pause`), so a pause saved before a step back does not trap a key.

The key itself is only handed to the HTTP client: every log line, state row and message names a key by
its fingerprint.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple

from ..secrets import fingerprint
from .endpoints import cloud_categories

log = logging.getLogger("tornstore.collector")

ACCESS_LEVELS = {"public": 0, "minimal": 1, "limited": 2, "full": 3}
ACCESS_NAMES = {v: k for k, v in ACCESS_LEVELS.items()}

WINDOW = 60.0                   # Torn's rolling minute
SEND_MARGIN = 1.0               # Torn counts a request when it arrives, the pool when it is sent: at the edge
COUNTED = WINDOW + SEND_MARGIN  # of the window a request it thinks gone may still count there
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


class OwnerRequests(NamedTuple):
    """Requests an owner's keys sent that are not saved yet (`KeyPool.owner_rows`, `gaps.persist`)."""
    owner: str
    sent: dict[str, list[float]]   # key fingerprint -> Unix times
    saved_at: float                # the saving clock (Unix): times older than COUNTED before it are dropped


class NoUsableKey(Exception):
    """No key in the pool can ever serve this request (the message says why; it names no key)."""


class KeysBusy(Exception):
    """No suitable key is free before the caller's deadline; `free_at` says when one will be (on the
    pool's monotonic clock) and `wait` in how many seconds."""

    def __init__(self, free_at: float, reason: str, wait: float = 0.0):
        super().__init__(reason)
        self.free_at = free_at
        self.wait = wait


@dataclass
class ApiKey:
    """One key and its state. `secret` is only ever given to the HTTP client."""
    secret: str = field(repr=False)
    owner: str
    access: int = 0
    budget: int = 60
    fp: str = ""
    state: str = "active"              # active | paused | disabled
    paused_until: float = 0.0          # no request before this time (any state; the pool's monotonic clock)
    recheck_at: float | None = None    # paused keys: when the trial request may go (monotonic)
    last_error_code: int | None = None
    last_error_at: float | None = None  # Unix time
    last_used_at: float = 0.0          # Unix time
    requests: int = 0                  # as loaded, plus this pool's own since
    unsaved: int = 0                   # this pool's requests not yet added to the saved count
    reason: str | None = None
    uses: deque = field(default_factory=deque, repr=False)    # times of its requests in the window (monotonic)
    blocked: dict = field(default_factory=dict, repr=False)   # category -> until (error 14; monotonic)
    trial_inflight: bool = False
    faction: str | None = None         # the owner's faction, when known (config or /v2/key/info)
    dirty: bool = True                 # state changed: saved at the next flush
    used: bool = False                 # only last_used_at/requests changed: saved now and then
    use_seq: int = 0                   # order of last use (ties in last_used_at under a stopped clock)

    def __post_init__(self) -> None:
        if not self.fp:
            self.fp = fingerprint(self.secret)

    def row(self, offset: float = 0.0) -> tuple:
        """The api_keys row (no secret). Its request count is the increment since the last save: saving
        adds it, so collectors sharing a key (two processes, a bot and a collector) count together.
        `offset` turns the pool's monotonic times into Unix times (wall clock minus monotonic clock)."""
        return (self.fp, self.owner, self.state, _int(self.paused_until + offset if self.paused_until else None),
                _int(None if self.recheck_at is None else self.recheck_at + offset), self.last_error_code,
                _int(self.last_error_at), _int(self.last_used_at or None), self.unsaved, self.reason)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def window_clock(clock: Callable[[], float], monotonic: Callable[[], float] | None = None) -> Callable[[], float]:
    """The clock of the rate windows and pauses: `monotonic` if given; `time.monotonic` when `clock` is the
    wall clock (`time.time`); else `clock` itself (an injected, simulated clock is monotonic)."""
    if monotonic is not None:
        return monotonic
    return time.monotonic if clock is time.time else clock


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
                 recheck: float = DAY, rng: random.Random | None = None,
                 monotonic: Callable[[], float] | None = None):
        self.keys: list[ApiKey] = []
        seen: set[str] = set()
        for key in keys:
            if key.fp in seen:
                continue  # the same key listed twice counts once
            seen.add(key.fp)
            self.keys.append(key)
        self.clock = clock              # Unix seconds: stamps, and what is saved and loaded
        self.monotonic = window_clock(clock, monotonic)   # the windows and pauses
        self.sleep = sleep
        self.owner_limit = owner_limit
        self.rate_limit_pause = rate_limit_pause
        self.ip_block_pause = ip_block_pause
        self.api_down_pause = api_down_pause
        self.recheck = recheck
        self.rng = rng or random.Random()
        self.owner_uses: dict[str, deque] = {}      # owner -> times of its requests in the window (monotonic)
        self._unsaved: dict[str, deque[tuple[str, float]]] = {}   # owner -> (fingerprint, time) not saved yet
        self._handed_out: list[OwnerRequests] = []                # the last owner_rows, until saved or not
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

    def offset(self) -> float:
        """Wall clock minus monotonic clock now: add it to a monotonic time to get a Unix time."""
        return self.clock() - self.monotonic()

    def longest_pause(self, state: str) -> float:
        """The longest pause a policy sets for a key in this state (what a loaded pause is cut to)."""
        if state == "paused":
            return float(self.recheck)
        return max(self.rate_limit_pause, KEY_COOLDOWN, self.ip_block_pause, self.api_down_pause)

    def _loaded_deadline(self, key: ApiKey, what: str, unix: float | None, wall: float, mono: float) -> float | None:
        """A saved Unix deadline on the monotonic clock: at most its policy's longest pause from now."""
        if unix is None:
            return None
        left = float(unix) - wall
        cap = self.longest_pause(key.state)
        if left > cap:
            log.warning("key %s: its saved %s is %.0f s away, longer than any such pause (%.0f s): the clock "
                        "was set back; it waits %.0f s", key.fp, what, left, cap, cap)
            left = cap
        return mono + max(0.0, left)

    def load_rows(self, rows: Iterable[tuple]) -> None:
        """Apply saved state: rows of (fingerprint, state, paused_until, recheck_at, last_error_code,
        last_error_at, last_used_at, requests, reason). The owner, access and budget come from the config.
        The saved Unix times become monotonic ones, cut to the policy's longest pause (module docstring)."""
        wall, mono = self.clock(), self.monotonic()
        for fp, state, paused_until, recheck_at, code, code_at, used_at, requests, reason in rows:
            key = self.by_fp(fp)
            if key is None:
                continue
            key.state = state if state in ("active", "paused", "disabled") else "active"
            key.paused_until = 0.0
            if paused_until and float(paused_until) > wall:
                key.paused_until = self._loaded_deadline(key, "pause", paused_until, wall, mono) or 0.0
            key.recheck_at = self._loaded_deadline(key, "recheck time", recheck_at, wall, mono)
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
        offset = self.offset()
        rows = [k.row(offset) for k in self.keys if k.dirty or (usage and k.used)]
        for k in self.keys:
            if k.dirty or usage:
                k.dirty = k.used = False
                k.unsaved = 0
        return rows

    def owner_rows(self) -> list[OwnerRequests]:
        """The owners' requests sent since the last call (those still in the window), as Unix times by key
        fingerprint: for `gaps.persist`, which adds them to the saved ones."""
        mono = self.monotonic()
        offset = self.clock() - mono
        rows = []
        for owner, unsaved in self._unsaved.items():
            sent: dict[str, list[float]] = {}
            for fp, t in unsaved:
                if t > mono - COUNTED:
                    sent.setdefault(fp, []).append(t + offset)
            if sent:
                rows.append(OwnerRequests(owner, sent, mono + offset))
        self._unsaved = {}
        self._handed_out = rows
        return rows

    def load_requests(self, rows: Iterable[tuple[str, dict[str, list[float]]]]) -> None:
        """Take the saved request times of owners (gaps.load_owner_requests) into the windows: of the
        owner, and of each key by fingerprint. A time ahead of the wall clock counts as now (the clock was
        set back); one older than the window is dropped."""
        wall, mono = self.clock(), self.monotonic()
        by_fp = {k.fp: k for k in self.keys}
        for owner, sent in rows:
            times: list[float] = []
            ahead = 0
            for fp, unix_times in sent.items():
                mine = []
                for unix in unix_times:
                    age = wall - unix
                    if age >= COUNTED:
                        continue
                    if age < 0:
                        ahead += 1
                        age = 0.0
                    mine.append(mono - age)
                key = by_fp.get(fp)
                if key is not None and mine:
                    key.uses = deque(sorted([*key.uses, *mine]))
                times += mine
            if times:
                self.owner_uses[owner] = deque(sorted([*self.owner_uses.get(owner, ()), *times]))
                log.info("owner %s: %d request(s) in the last minute before this start count against its limit",
                         owner, len(times))
            if ahead:
                log.warning("owner %s: %d saved request time(s) are ahead of the clock (it was set back): "
                            "counted as just now", owner, ahead)

    def set_owner(self, key: ApiKey, owner: str) -> None:
        """The key belongs to another owner (the API said so): its requests in the window count for that
        owner from now on, the ones already sent included."""
        if owner == key.owner:
            return
        old, key.owner = key.owner, owner
        window = self.owner_uses.setdefault(owner, deque())
        have = Counter(window)
        moved = []
        for t in key.uses:
            if have[t]:
                have[t] -= 1     # already counted there (loaded from that owner's saved times)
            else:
                moved.append(t)
        if moved:
            self.owner_uses[owner] = deque(sorted([*window, *moved]))
        unsaved = self._unsaved.get(old)
        if unsaved:
            mine = [u for u in unsaved if u[0] == key.fp]
            self._unsaved[old] = deque(u for u in unsaved if u[0] != key.fp)
            self._unsaved[owner] = deque(sorted([*self._unsaved.get(owner, ()), *mine], key=lambda u: u[1]))
        key.dirty = True

    def save_failed(self, rows: list[tuple], owner_rows: Iterable[OwnerRequests] | None = None) -> None:
        """The rows from dirty_rows were not saved, nor `owner_rows` (by default: those the last call of
        owner_rows handed out): keep their increments and save them next time."""
        by_fp = {k.fp: k for k in self.keys}
        for row in rows:
            key = by_fp.get(row[0])
            if key is not None:
                key.unsaved += row[8]
                key.dirty = True
        if owner_rows is None:
            owner_rows = self._handed_out
        self._handed_out = []
        offset = self.offset()
        for owner, sent, _saved_at in owner_rows:
            again = [(fp, t - offset) for fp, times in sent.items() for t in times]
            self._unsaved[owner] = deque(sorted([*again, *self._unsaved.get(owner, ())], key=lambda u: u[1]))

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
        while uses and uses[0] <= now - COUNTED:
            uses.popleft()
        return uses

    def free_at(self, key: ApiKey, category: str | None = None, now: float | None = None) -> float:
        """The earliest time (monotonic) this key may send a request (now or later)."""
        now = self.monotonic() if now is None else now
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
            t = max(t, uses[len(uses) - key.budget] + COUNTED)
        owner = self._window(self.owner_uses.setdefault(key.owner, deque()), now)
        if len(owner) >= self.owner_limit:
            t = max(t, owner[len(owner) - self.owner_limit] + COUNTED)
        return t

    def candidates(self, access: int = 0, own_id: str | None = None,
                   exclude: AbstractSet[str] = frozenset(), own_faction: str | None = None,
                   key_fp: str | None = None) -> list[ApiKey]:
        return [k for k in self.keys if self._serves(k, access, own_id, own_faction, key_fp) and k.fp not in exclude]

    def choose(self, access: int = 0, own_id: str | None = None, category: str | None = None,
               exclude: AbstractSet[str] = frozenset(), own_faction: str | None = None,
               key_fp: str | None = None) -> ApiKey | None:
        """The least recently used key free now, or None. Does not record a use."""
        now = self.monotonic()
        free = [k for k in self.candidates(access, own_id, exclude, own_faction, key_fp)
                if self.free_at(k, category, now) <= now]
        if not free:
            return None
        # Paused keys due for their trial go first, so a recovered key is noticed soon. The order of use
        # in this pool comes first (keys not used yet by it have 0), then the saved last use: a wall clock
        # set back does not make the keys used since look least recently used.
        return min(free, key=lambda k: (k.state != "paused", k.use_seq, k.last_used_at))

    def next_free(self, access: int = 0, own_id: str | None = None, category: str | None = None,
                  exclude: AbstractSet[str] = frozenset(), own_faction: str | None = None,
                  key_fp: str | None = None) -> float | None:
        """When (monotonic) a suitable key will next be free; None if no key can ever serve the request."""
        now = self.monotonic()
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
        now = self.monotonic()
        reasons = {k.reason for k in self.candidates(access, own_id, exclude, own_faction, key_fp)
                   if k.reason and (k.paused_until > now or k.blocked) and k.reason != self.pause_reason}
        if self.pause_until > now and self.pause_reason:
            reasons.add(self.pause_reason)
        text = f"no key free until {int(when + self.clock() - now)}"   # (as a Unix time)
        return text + (f" ({'; '.join(sorted(reasons))})" if reasons else " (rate limits)")

    def use(self, key: ApiKey) -> None:
        """Record that a request is being sent with this key now."""
        now = self.monotonic()
        key.uses.append(now)
        self.owner_uses.setdefault(key.owner, deque()).append(now)
        unsaved = self._unsaved.setdefault(key.owner, deque())
        while unsaved and unsaved[0][1] <= now - COUNTED:
            unsaved.popleft()             # (without a database nothing takes them: keep only the window)
        unsaved.append((key.fp, now))
        key.last_used_at = self.clock()
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

        Raises NoUsableKey when none can ever serve, or KeysBusy when none is free before `deadline` (a
        time on the pool's monotonic clock: `pool.monotonic() + seconds`)."""
        while True:
            key = self.choose(access, own_id, category, exclude, own_faction, key_fp)
            if key is not None:
                self.use(key)
                return key
            when = self.next_free(access, own_id, category, exclude, own_faction, key_fp)
            if when is None:
                raise NoUsableKey(self.why_none(access, own_id, exclude, own_faction, key_fp))
            if deadline is not None and when > deadline:
                raise KeysBusy(when, self.why_busy(access, own_id, category, exclude, when, own_faction, key_fp),
                               wait=max(0.0, when - self.monotonic()))
            await self.sleep(max(0.0, when - self.monotonic()) + self.rng.uniform(0.0, 0.05))

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
        now = self.monotonic()
        key.trial_inflight = False
        key.last_error_code = code
        key.last_error_at = self.clock()
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
            log.warning("key %s paused for %.0f h: %s", key.fp, self.recheck / HOUR, key.reason)
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
        """Every key waits until `until` (monotonic)."""
        log.warning("every key waits %.0f s: %s", until - self.monotonic(), reason)
        if until > self.pause_until:
            self.pause_until, self.pause_reason = until, reason
        for key in self.keys:
            if key.paused_until < until:
                key.paused_until = until
                key.dirty = True

    def summary(self) -> list[dict]:
        now = self.monotonic()
        return [{"key": k.fp, "owner": k.owner, "faction": k.faction, "access": ACCESS_NAMES.get(k.access, k.access),
                 "state": k.state, "waits": max(0, int(k.paused_until - now)) if k.paused_until > now else 0,
                 "requests": k.requests, "last_error_code": k.last_error_code, "reason": k.reason}
                for k in self.keys]

