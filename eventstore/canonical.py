"""The canonical form of a payload and its hash: what change detection compares.

The canonical form is the payload with its noise fields removed and its keys sorted, encoded as compact
JSON, hashed with 128-bit BLAKE2b. Noise fields are text or counters that only restate the clock
(`last_action.relative`, countdowns, tick timers, `days_in_faction`: fact 4 of the Torn API notes); they
change on every poll without any change of state, so hashing them would store every poll. A context
field that says where a part came from rather than what it is counts as noise too.

The rule set has a tag (RULES). A stream remembers the tag its hash was made with; when the rules change,
ingest re-hashes the stream's head event under the new rules before comparing, so a rule change never
makes every stream look new.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

RULES = "r3"
# r1 -> r2: `_faction_id` left the canonical form of v1.faction_territorywar. It names the faction whose
# response carried the war, not the war's state: two factions at war with each other, both polled, made
# the war's stream flip between two "states" and store an event per poll. (With r2, routing also files a
# v1 faction's territory selection under v1.faction_territory, not torn territory's v1.territory.)
# r2 -> r3: v2 personalstats noise under its `personalstats.` wrapper (`other.activity` never matched, so
# every poll of an active player stored an event); donator days in both versions; v1 user views other
# than profile/basic (icons, travel, events: `v1.other` and selection-named views) get the clock rules
# of _V1_USER_OTHER; `server_time` is noise in every view; a user's v2 faction selection drops its
# `days_in_faction`.

# Per view (see routing.py): dotted paths removed before hashing. '*' matches any key or list item.
_PLAYER = (
    "last_action",                      # relative text, timestamp and Online/Idle flip with activity
    "status.description",               # "In hospital for 3 mins": a countdown (state is kept)
    "status.details",
    "status.until",
    "life.current", "life.ticktime", "life.fulltime", "life.tick_time", "life.full_time",
    "age",                              # account age in days
    "days_in_faction", "faction.days_in_faction",
    "basicicons",                       # icon texts carry countdowns
    "states",                           # hospital/jail release timestamps
    "revivable", "is_revivable", "is_on_wall", "is_in_oc", "has_early_discharge",
    "married.duration", "spouse.days_married",
    "competition",                      # event-only, sub-fields vary by event
    "server_time",
)
_BAR = ("current", "ticktime", "fulltime", "tick_time", "full_time")
NOISE: dict[str, tuple[str, ...]] = {
    "v1.profile": _PLAYER,
    "v1.basic": _PLAYER,
    "v1.member": _PLAYER,
    "v2.profile": _PLAYER,
    "v2.basic": _PLAYER,
    "v2.member": _PLAYER,
    "v1.bars": tuple(f"{bar}.{f}" for bar in ("life", "energy", "nerve", "happy") for f in _BAR)
    + ("chain.current", "chain.timeout", "chain.cooldown", "server_time"),
    "v2.bars": tuple(f"bars.{bar}.{f}" for bar in ("life", "energy", "nerve", "happy") for f in _BAR)
    + ("bars.chain.current", "bars.chain.timeout", "bars.chain.cooldown"),
    "v1.cooldowns": ("cooldowns",),
    "v2.cooldowns": ("cooldowns",),
    "v1.personalstats": ("personalstats.useractivity", "personalstats.activestreak",
                         "personalstats.daysbeendonator"),
    "v2.personalstats": ("personalstats.other.activity", "personalstats.other.donator_days"),
    "v2.travel": ("travel.time_left",),
    "v1.faction": ("age",),
    "v1.faction_territorywar": ("_faction_id",),   # stored by r1 routing; now the source URL says it
    "v2.faction": ("days_old",                    # a faction's basic data
                   "faction.days_in_faction"),     # a user's faction selection (user:<id>:v2.faction)
    "v1.chain": ("chain.timeout", "chain.cooldown"),
    "v2.chain": ("timeout", "cooldown"),
}
# v1 user selections other than profile and basic land in `v1.other` (basic asked with more) or a view
# named after the selections (`v1.icons`, `v1.travel+events`): their clock-only fields.
_V1_USER_OTHER = (
    "icons", "basicicons",              # icon texts carry countdowns ("Hospital - 3 mins left")
    "travel.time_left",
    "cooldowns",                        # seconds left on each cooldown
    "states", "last_action", "status.description", "status.details", "status.until",
    "life.current", "life.ticktime", "life.fulltime",
)
NOISE["v1.other"] = _V1_USER_OTHER
# Removed from every view: paging links restate the request, and the server's clock, not the entity.
_ALWAYS = ("_metadata", "server_time")


class _Node:
    """One level of a view's noise paths: the keys dropped here, the keys to descend into, and what '*'
    (any other key or list item) means. Built once per view; `_without` runs for every part of every poll."""
    __slots__ = ("names", "drop", "sub", "star", "star_drops")

    def __init__(self) -> None:
        self.names: frozenset = frozenset()   # every key named at this level ('*' excluded)
        self.drop: frozenset = frozenset()    # keys removed here
        self.sub: dict[str, _Node] = {}       # keys whose value has removals below
        self.star: _Node | None = None        # '*.x': descend into every other key / list item
        self.star_drops = False               # a '*' leaf: every other key is removed


def _tree(paths: tuple[str, ...]) -> _Node:
    """Noise paths ('status.description', 'age', '*.timer') as a tree of _Node."""
    nested: dict = {}
    for path in paths + _ALWAYS:
        node = nested
        *parents, leaf = path.split(".")
        for key in parents:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        node[leaf] = None

    def build(level: dict) -> _Node:
        node = _Node()
        node.names = frozenset(k for k in level if k != "*")
        node.drop = frozenset(k for k, v in level.items() if v is None and k != "*")
        node.sub = {k: build(v) for k, v in level.items() if v is not None and k != "*"}
        if "*" in level:
            node.star_drops = level["*"] is None
            node.star = None if node.star_drops else build(level["*"])
        return node

    return build(nested)


_TREES: dict[str, _Node] = {}
_encode = msgspec.json.Encoder().encode


def _without(obj: Any, node: _Node) -> Any:
    """A copy of `obj` without the tree's leaves; only the dicts on a removed path are copied."""
    if isinstance(obj, dict):
        if node.star is None and not node.star_drops:
            if obj.keys().isdisjoint(node.names):
                return obj  # nothing to remove at this level or below: no copy
            out = {k: v for k, v in obj.items() if k not in node.drop}
            for key, sub in node.sub.items():
                if key in out:
                    out[key] = _without(out[key], sub)
            return out
        out = {}
        for key, value in obj.items():
            if key in node.drop:
                continue
            if key in node.sub:
                out[key] = _without(value, node.sub[key])
            elif node.star_drops or node.star is None:  # (here star is None exactly when star_drops)
                continue
            else:
                out[key] = _without(value, node.star)
        return out
    if isinstance(obj, list) and node.star is not None:
        return [_without(item, node.star) for item in obj]
    return obj


def _compile(node: _Node) -> Callable[[Any], Any]:
    """`_without(obj, node)` as a function of obj, specialised to the node: one call per noisy level, no
    attribute reads (every part of every poll goes through it). Levels with '*' keep the general walk."""
    if node.star is not None or node.star_drops:
        return lambda obj: _without(obj, node)
    drop, names = node.drop, node.names
    subs = tuple((key, _compile(sub)) for key, sub in node.sub.items())

    def leaf(obj: Any) -> Any:
        if type(obj) is not dict:
            return _without(obj, node)
        if obj.keys().isdisjoint(drop):
            return obj
        return {k: v for k, v in obj.items() if k not in drop}

    def branch(obj: Any) -> Any:
        if type(obj) is not dict:
            return _without(obj, node)
        if obj.keys().isdisjoint(names):
            return obj
        out = {k: v for k, v in obj.items() if k not in drop}
        for key, strip in subs:
            if key in out:
                out[key] = strip(out[key])
        return out

    return branch if subs else leaf


_STRIPPERS: dict[str, Callable[[Any], Any]] = {}


def stripper(view: str) -> Callable[[Any], Any]:
    """The function that removes the view's noise from a payload (a copy of what it changes)."""
    strip = _STRIPPERS.get(view)
    if strip is None:
        strip = _STRIPPERS[view] = _compile(_tree_of(view))
    return strip


def noise_paths(view: str) -> tuple[str, ...]:
    """The view's noise paths: its own rules; a v1 user view named after its selections gets the rules
    of the other user selections (plus profile's, where profile is among them)."""
    if view in NOISE:
        return NOISE[view]
    name = view[3:]
    if view.startswith("v1.") and name.replace("+", "").isalpha() and not name.startswith(_V1_NOT_USER):
        return _V1_USER_OTHER + (_PLAYER if "profile" in name.split("+") else ())
    return ()


# v1 views of factions, wars and territories (routing.py): never a user's selections.
_V1_NOT_USER = ("faction", "rankedwar", "territor", "racket", "chain")


def _tree_of(view: str) -> _Node:
    tree = _TREES.get(view)
    if tree is None:
        tree = _TREES[view] = _tree(noise_paths(view))
    return tree


def canonical_bytes(view: str, payload: Any) -> bytes:
    """Sorted-key compact JSON of `payload` without the view's noise fields."""
    return msgspec.json.encode(stripper(view)(payload), order="sorted")


MAX_DEPTH = 64  # Torn payloads nest a handful of levels; deeper is hostile, and unreadable by replay later


def depth(obj: Any) -> int:
    """How many containers deep `obj` nests (iterative, so a hostile body cannot exhaust the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def canonical_hash(view: str, payload: Any) -> str:
    """Hex of the 128-bit BLAKE2b of the canonical form. Refuses payloads nested deeper than MAX_DEPTH."""
    return _digest(canonical_bytes(view, payload), payload)


def _digest(data: bytes, payload: Any) -> str:
    """The hash of canonical bytes `data` made from `payload` (its depth checked first)."""
    # Counting brackets is cheap; only a payload with many of them is walked for its real depth.
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and depth(payload) > MAX_DEPTH:
        raise ValueError(f"payload nests deeper than {MAX_DEPTH} levels")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class HashMemo:
    """Each stream's last payload, as JSON bytes as sent and without its noise, with its canonical hash.

    Most polls of an entity repeat the last one: byte for byte (half of a faction's members, nearly all
    of a territory map: one encode and one compare), or once the view's noise is left out (a member's
    `last_action` and `status.until` move at every poll). The noise is then stripped once (`stripper`:
    the canonical form's own rules, nested paths included) and the result encoded without sorting.
    Equal bytes mean the same keys in the same order with the same values: the same sorted encoding,
    the same canonical form, the same hash. Only a difference (a value, a key order, 1 against 1.0) takes
    the rest of the path: sorting, the depth check and BLAKE2b. The memo is a cache of a pure function;
    at most LIMIT streams are remembered (a few hundred bytes each); past that it starts over."""
    LIMIT = 100_000

    def __init__(self) -> None:
        self._last: dict[Any, tuple[bytes, bytes, str]] = {}

    def keyed(self, parts: Iterable[tuple]) -> list[tuple[tuple, str]]:
        """[((entity_type, entity_id, view), hash)] of routed parts ((entity_type, entity_id, view, payload))."""
        hash_ = self.hash
        out = []
        for part in parts:
            key = part[:3]
            out.append((key, hash_(key, key[2], part[3])))
        return out

    def hash(self, stream: Any, view: str, payload: Any) -> str:
        raw = _encode(payload)
        seen = self._last.get(stream)
        if seen is not None and seen[0] == raw:
            return seen[2]
        stripped = (_STRIPPERS.get(view) or stripper(view))(payload)
        plain = raw if stripped is payload else _encode(stripped)
        if seen is not None and seen[1] == plain:
            digest = seen[2]
        else:
            digest = _digest(msgspec.json.encode(stripped, order="sorted"), payload)
            if len(self._last) >= self.LIMIT:
                self._last.clear()
        self._last[stream] = (raw, plain, digest)
        return digest
