"""The canonical form of a payload and its hash: what change detection compares.

The canonical form is the payload with its noise fields removed and its keys sorted, encoded as compact
JSON, hashed with 128-bit BLAKE2b. Noise fields are text or counters that only restate the clock
(`last_action.relative`, countdowns, tick timers, `days_in_faction`: fact 4 of the Torn API notes); they
change on every poll without any change of state, so hashing them would store every poll.

The rule set has a tag (RULES). A stream remembers the tag its hash was made with; when the rules change,
ingest re-hashes the stream's head event under the new rules before comparing, so a rule change never
makes every stream look new.
"""
from __future__ import annotations

import hashlib
from typing import Any

import msgspec

RULES = "r1"

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
    "v1.personalstats": ("personalstats.useractivity", "personalstats.activestreak"),
    "v2.personalstats": ("other.activity",),
    "v1.faction": ("age",),
    "v2.faction": ("days_old",),
    "v1.chain": ("chain.timeout", "chain.cooldown"),
    "v2.chain": ("timeout", "cooldown"),
}
# Removed from every view: paging links restate the request, not the entity.
_ALWAYS = ("_metadata",)


def _tree(paths: tuple[str, ...]) -> dict:
    """Noise paths as a tree: {'status': {'description': None}, 'age': None}. None marks a removed leaf."""
    tree: dict = {}
    for path in paths + _ALWAYS:
        node = tree
        *parents, leaf = path.split(".")
        for key in parents:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        node[leaf] = None
    return tree


_TREES: dict[str, dict] = {}


def _without(obj: Any, tree: dict) -> Any:
    """A copy of `obj` without the tree's leaves; only the dicts on a removed path are copied."""
    if isinstance(obj, dict):
        if "*" not in tree and not any(key in obj for key in tree):
            return obj  # nothing to remove at this level or below: no copy
        out = {}
        for key, value in obj.items():
            if key in tree:
                sub = tree[key]
                if sub is None:
                    continue
                out[key] = _without(value, sub)
            elif "*" in tree:
                sub = tree["*"]
                if sub is None:
                    continue
                out[key] = _without(value, sub)
            else:
                out[key] = value
        return out
    if isinstance(obj, list) and "*" in tree and tree["*"] is not None:
        return [_without(item, tree["*"]) for item in obj]
    return obj


def canonical_bytes(view: str, payload: Any) -> bytes:
    """Sorted-key compact JSON of `payload` without the view's noise fields."""
    tree = _TREES.get(view)
    if tree is None:
        tree = _TREES[view] = _tree(NOISE.get(view, ()))
    return msgspec.json.encode(_without(payload, tree), order="sorted")


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
    data = canonical_bytes(view, payload)
    # Counting brackets is cheap; only a payload with many of them is walked for its real depth.
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and depth(payload) > MAX_DEPTH:
        raise ValueError(f"payload nests deeper than {MAX_DEPTH} levels")
    return hashlib.blake2b(data, digest_size=16).hexdigest()
