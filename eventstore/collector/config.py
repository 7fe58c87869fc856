'''The collector's configuration: a TOML file naming the keys and what to poll.

Example (also in `examples/collect.toml`):

    api_base = "https://api.torn.com"   # optional; `tornstore collect --api-base URL` overrides it
    interval = "4m"                     # default poll interval of every target; never below 30s
    jitter = 0.1                        # spread each poll by up to ±10% of its interval (optional)
    timeout = "15s"                     # per HTTP request (optional)
    # Optional tuning: batch = 50 (responses per transaction), flush_every = "5s", concurrency = 4,
    # owner_limit = 100 (requests per rolling minute per key owner), max_tries = 4, max_body = "8MB",
    # max_wait = "90s" (how long a poll waits for a free key before it is deferred, as a gap).

    # learn_owners = true   # ask /v2/key/info with each key at start and hourly (see "Owners" below)

    [[keys]]
    key = "env:TORN_KEY_1"   # read from the environment variable TORN_KEY_1 (recommended)
    owner = "1234"           # the Torn user id of the key's owner: the 100/minute limit is per owner
    faction = 9420           # the owner's faction (optional): lets this key poll the faction's own data
    access = "limited"       # public | minimal | limited | full
    budget = 60              # this key's own limit, requests per rolling minute (default 60)

    [[keys]]
    key = "env:TORN_KEY_2"
    owner = "2491575"        # a member's own key: lets the collector read that player's battle stats
    access = "limited"

    [[factions]]
    id = 9420
    fetch = ["basic", "members", "wars", "news:main"]  # one request: /v2/faction?selections=basic,members,wars&id=9420
    members = true           # also poll each member (ids learned from the members list)
    member_fetch = ["profile"]            # what to poll per member (default: profile)
    member_interval = "10m"  # default: the faction's interval

    [[players]]
    id = 2491575
    fetch = ["profile", "personalstats:networth", "battlestats"]
    interval = "10m"

    [[territories]]
    ids = ["AAC", "CAA"]     # or: all = true (the whole map, about 4,100 territories)
    api = "v1"               # v1 (default): torn/AAC,CAA?selections=territory, owner included;
                             # v2: /v2/torn/territory (paged), plus /v2/faction/territoryownership with all

    [wars]
    ranked = true            # v1 torn/?selections=rankedwars
    territory = true         # v1 torn/?selections=territorywars
    rackets = false          # v1 torn/?selections=rackets
    interval = "2m"

    [stats]                  # optional: which personal/faction stats stat_history keeps (every stat over time)
    exclude = ["useractivity", "activestreak"]   # default: the clock-like ones (activity time, streaks, ...)
    # include = ["xantaken", "refills", "attackswon"]   # default: every numeric stat

Keys: `key = "env:NAME"` reads the environment; a literal 16-character key also works but then the
secret sits in the file: prefer env. The key itself never reaches the database, a log line or a message;
it is named by its fingerprint (`k:` + 8 hex digits).

Fetch items: `[v1:|v2:]selection[:argument][(own)]`.
  * v2 (the default) builds URLs exactly as the official spec defines them (`endpoints.py`). A selection
    with an `{id}` path goes out by id with any key (`/v2/faction/9420/basic`); several of them are one
    request (`/v2/faction?selections=basic,members&id=9420`). A selection the spec has only without an id
    (user: bars, battlestats, attacks, money, ...; faction: news, attacks, balance, crimes, positions, ...)
    is the key owner's own data: it goes out without an id, with the key of that player (a key whose
    `owner` is the player) or of a member of that faction (a key whose `faction` is the faction), and
    such items are combined too (`/v2/user?selections=bars,battlestats`). `(own)` asks a selection that
    has an `{id}` path that way too. `rackets`, `territoryownership` and `warfare` are the same for
    every key: they go out without an id, with any key. v2 items never name a selection the spec lacks.
  * v1 items of one entity are merged into one request (`user/<id>?selections=profile,personalstats`).
  * An argument is a query parameter `name=value` the spec allows for that selection; a bare argument is
    its `cat` (`personalstats:networth` -> `?cat=networth`, `news:main` -> `?cat=main`,
    `personalstats:stat=networth,xantaken` -> `?stat=...`); v2 `personalstats` alone means `?cat=all`.
  * v1 own-only selections (battlestats, bars, cooldowns, networth, money, ...) go out with the key of
    the player being asked (`user/<id>?selections=bars`).
  * A player polled for own data needs a key with that `owner`, a faction polled for its own data a key
    with that `faction`: the config is refused otherwise, saying which.

Owners: every response the collector stores says whose key made it (`Response.owner`, the key's owner
and faction, and `Response.key`, its fingerprint), so ingest files own-key URLs (`/v2/user/bars`) under
the right player. The owner is the key's `owner` (when it is a player id) and `faction`. With
`learn_owners = true` the collector also asks `/v2/key/info` with each key when it starts and every hour
after (one request per key): the API's answer wins over the config (a mismatch is logged), so a typo in
`owner` cannot file data under the wrong player and a member who changed faction is followed within the
hour. Left out, this happens when some [[factions]] item is a faction's own data (it is filed under the
faction of the key that asked, which changes when a member moves); `false` turns it off. The answers
are not stored.

Durations: a number of seconds, or a string such as "45s", "4m", "1h30m", "1d".
'''
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..secrets import fingerprint
from . import endpoints
from .keypool import ACCESS_LEVELS

DEFAULT_API_BASE = "https://api.torn.com"
MIN_INTERVAL = 30.0           # the API caches a response for about 29 s: polling faster learns nothing
DEFAULT_INTERVAL = 240.0

# v1 selections only answered for the key's own player, with the access they need.
OWN_ONLY = {
    "battlestats": "limited", "bars": "minimal", "cooldowns": "minimal", "networth": "limited",
    "money": "limited", "refills": "minimal", "notifications": "minimal", "education": "minimal",
    "workstats": "limited", "perks": "minimal", "merits": "minimal", "skills": "minimal",
    "travel": "minimal", "ammo": "limited", "inventory": "limited", "log": "full", "events": "limited",
    "messages": "limited", "newevents": "limited", "newmessages": "limited",
}
# v1 selections with their own access need (not own-only).
ACCESS_NEEDED = {"attacks": "limited", "attacksfull": "limited", "revives": "limited",
                 "revivesfull": "limited", "news": "limited", "stats": "limited", "applications": "limited",
                 "balance": "limited", "crimes": "limited", "positions": "limited", "upgrades": "limited",
                 "contributors": "limited", "armorynews": "limited", "attacknews": "limited",
                 "crimenews": "limited", "donations": "limited"}

_KEY_RE = re.compile(r"^[A-Za-z0-9]{16}$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|ms|m|s)", re.IGNORECASE)
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_FETCH_RE = re.compile(r"^(?:(v1|v2):)?([a-z][a-z0-9_]*)(?::([^()]+))?(\(own\))?$", re.IGNORECASE)
_TERRITORY_RE = re.compile(r"^[A-Z]{1,4}$")


class ConfigError(ValueError):
    """The config file is wrong; the message says where (and never contains a key)."""


@dataclass(frozen=True)
class FetchSpec:
    version: str                      # 'v1' or 'v2'
    selection: str
    params: tuple[tuple[str, str], ...] = ()
    own: bool = False                 # asked without an id, with the entity's own key
    access: str = "public"
    shared: bool = False              # v2, no id, any key, the same for everyone (rackets, ...)

    def __str__(self) -> str:
        arg = ":" + "&".join(f"{k}={v}" for k, v in self.params) if self.params else ""
        return f"{self.version}:{self.selection}{arg}{'(own)' if self.own else ''}"


@dataclass
class KeyConfig:
    secret: str = field(repr=False)
    owner: str
    access: str = "public"
    budget: int = 60
    source: str = ""                  # where it came from, e.g. "env TORN_KEY_1" (for messages)
    faction: int | None = None        # the owner's faction, when the config says it

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret)


@dataclass
class FactionConfig:
    id: int
    fetch: list[FetchSpec]
    interval: float
    members: bool = False
    member_fetch: list[FetchSpec] = field(default_factory=list)
    member_interval: float | None = None


@dataclass
class PlayerConfig:
    id: int
    fetch: list[FetchSpec]
    interval: float


@dataclass
class TerritoryConfig:
    ids: list[str] | None             # None: the whole map
    api: str = "v1"
    interval: float = DEFAULT_INTERVAL


@dataclass
class WarsConfig:
    ranked: bool = False
    territory: bool = False
    rackets: bool = False
    interval: float = DEFAULT_INTERVAL


@dataclass
class StatsConfig:
    """Which stats the stat_history projection keeps (`[stats]`): names as projections/handlers/stat_history.py
    gives them. None: its default (include: every numeric stat; exclude: the clock-like ones)."""
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None


@dataclass
class CollectConfig:
    api_base: str = DEFAULT_API_BASE
    interval: float = DEFAULT_INTERVAL
    jitter: float = 0.1
    timeout: float = 15.0
    batch: int = 50
    flush_every: float = 5.0
    concurrency: int = 4
    owner_limit: int = 100
    max_tries: int = 4
    max_body: int = 8 * 1024 * 1024
    max_wait: float = 90.0            # a poll no key can serve sooner is deferred (a gap says until when)
    learn_owners: bool | None = None  # None: when some faction item is the faction's own data
    keys: list[KeyConfig] = field(default_factory=list)
    factions: list[FactionConfig] = field(default_factory=list)
    players: list[PlayerConfig] = field(default_factory=list)
    territories: list[TerritoryConfig] = field(default_factory=list)
    wars: WarsConfig | None = None
    stats: StatsConfig | None = None   # None: the projection's defaults

    def secrets(self) -> list[str]:
        return [k.secret for k in self.keys]

    @property
    def learns_owners(self) -> bool:
        """Whether the collector asks /v2/key/info (learn_owners, or by default: faction own-data items)."""
        if self.learn_owners is not None:
            return self.learn_owners
        return any(s.own for f in self.factions for s in f.fetch)


# ------------------------------------------------------------------------------------------ parsing
def parse_duration(value: Any, where: str) -> float:
    """Seconds from a number or a string such as '30s', '4m', '1h30m', '1d'."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{where}: a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        pos, total = 0, 0.0
        for match in _DURATION_RE.finditer(text):
            if match.start() != pos:
                break
            number, unit = float(match.group(1)), match.group(2)
            total += number * {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
            pos = match.end()
        if pos == len(text) and text:
            return total
    raise ConfigError(f"{where}: {value!r} is not a duration (use seconds or e.g. '30s', '4m', '1h')")


def parse_size(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = (match.group(2) or "b").lower()
            return int(float(match.group(1)) * {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3}[unit])
    raise ConfigError(f"{where}: {value!r} is not a size (use bytes or e.g. '8MB')")


def _interval(value: Any, where: str) -> float:
    seconds = parse_duration(value, where)
    if seconds < MIN_INTERVAL:
        raise ConfigError(f"{where}: {value!r} is below the 30 s minimum (the API caches responses ~29 s)")
    return seconds


def parse_fetch(item: Any, where: str, section: str) -> FetchSpec:
    """One fetch item, e.g. 'profile', 'v1:basic', 'personalstats:networth', 'battlestats(own)'."""
    if not isinstance(item, str):
        raise ConfigError(f"{where}: fetch items are strings, got {item!r}")
    match = _FETCH_RE.match(item.strip())
    if not match:
        raise ConfigError(f"{where}: {item!r} is not [v1:|v2:]selection[:argument][(own)]")
    version = (match.group(1) or "v2").lower()
    selection = match.group(2).lower()
    arg = match.group(3)
    marked_own = bool(match.group(4))
    params: list[tuple[str, str]] = []
    if arg:
        if version == "v1":
            raise ConfigError(f"{where}: {item!r}: v1 items take no argument (they are merged into one request)")
        for piece in arg.split("&"):
            if "=" in piece:
                name, _, val = piece.partition("=")
                if name.strip().lower() == "key":
                    raise ConfigError(f"{where}: keys go in [[keys]], never in a fetch item")
                params.append((name.strip(), val.strip()))
            else:
                params.append(("cat", piece.strip()))
    if version == "v1":
        own = marked_own or (section == "user" and selection in OWN_ONLY)
        access = OWN_ONLY.get(selection, "minimal") if own else ACCESS_NEEDED.get(selection, "public")
        return FetchSpec(version, selection, tuple(params), own, access)
    return _v2_fetch(item, where, section, selection, params, marked_own)


def _v2_fetch(item: str, where: str, section: str, selection: str, params: list[tuple[str, str]],
              marked_own: bool) -> FetchSpec:
    """A v2 item, checked against the spec (endpoints.USER / FACTION)."""
    table = endpoints.V2[section]
    noun = "player" if section == "user" else section
    if selection in endpoints.ONLY_V1.get(section, ()):
        raise ConfigError(f"{where}: {item!r}: the spec says {section} selection '{selection}' is not available "
                          f"in API v2; write v1:{selection}")
    sel = table.get(selection)
    if sel is None or selection in endpoints.NOT_POLLED[section]:
        hint = f"; for API v1 write v1:{selection}" if selection in endpoints.V1.get(section, ()) else ""
        raise ConfigError(f"{where}: {item!r}: '{selection}' is not a v2 {noun} selection the collector polls "
                          f"(the official spec's paths){hint}")
    shared = selection in endpoints.GLOBAL[section]
    if marked_own and shared:
        raise ConfigError(f"{where}: {item!r}: '{selection}' is the same for every key; it cannot be (own)")
    own = not shared and (marked_own or sel.by_id is None)
    if selection == "personalstats" and not any(k in ("cat", "stat") for k, _ in params):
        params.append(("cat", "all"))  # v2 answers personalstats only for a category or named stats
    if selection in endpoints.PAGE_LIMIT and not any(k == "limit" for k, _ in params):
        params.append(("limit", endpoints.PAGE_LIMIT[selection]))
    allowed = sel.by_id if not (own or shared) and sel.by_id is not None else sel.own
    for name, _ in params:
        if name not in allowed:
            form = f"/v2/{section}/{{id}}/{sel.segment}" if not (own or shared) else f"/v2/{section}/{sel.segment}"
            raise ConfigError(f"{where}: {item!r}: the spec's {form} takes no parameter {name!r} "
                              f"(it takes: {', '.join(allowed) or 'none'})")
    missing = [name for name in sel.required if name not in dict(params)]
    if missing:
        raise ConfigError(f"{where}: {item!r}: the spec requires {' and '.join(missing)} for '{selection}' "
                          f"(e.g. {selection}:{missing[0]}=...)")
    return FetchSpec("v2", selection, tuple(params), own, sel.access, shared)


def _fetch_list(value: Any, where: str, section: str, default: list[str]) -> list[FetchSpec]:
    if value is None:
        value = default
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: fetch must be a non-empty list of selections")
    specs = [parse_fetch(item, f"{where}[{i}]", section) for i, item in enumerate(value)]
    return list(dict.fromkeys(specs))


def _positive_id(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}: {value!r} is not a positive id")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not true or false")
    return value


def _table_list(data: Mapping, name: str) -> list[Mapping]:
    value = data.get(name, [])
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{name}: expected [[{name}]] tables")
    return value


def _check_keys(table: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")


def _parse_key(table: Mapping, where: str, env: Mapping[str, str]) -> KeyConfig:
    _check_keys(table, {"key", "owner", "faction", "access", "budget"}, where)
    raw = table.get("key")
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{where}: key is required (\"env:NAME\" or the 16-character key)")
    if raw.startswith("env:"):
        name = raw[4:]
        secret = env.get(name)
        source = f"env {name}"
        if not secret:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        secret = secret.strip()
    else:
        secret, source = raw.strip(), where
    if not _KEY_RE.match(secret):
        # Never echo the value: it may be a real key with a typo.
        raise ConfigError(f"{where}: the key from {source} is not 16 letters and digits")
    owner = table.get("owner")
    if isinstance(owner, int) and not isinstance(owner, bool):
        owner = str(owner)
    if not isinstance(owner, str) or not owner.strip():
        raise ConfigError(f"{where}: owner is required (the Torn user id of the key's owner)")
    access = table.get("access", "public")
    if access not in ACCESS_LEVELS:
        raise ConfigError(f"{where}: access {access!r} is not one of {', '.join(ACCESS_LEVELS)}")
    budget = table.get("budget", 60)
    if not isinstance(budget, int) or isinstance(budget, bool) or not 1 <= budget <= 100:
        raise ConfigError(f"{where}: budget must be a whole number of requests per minute, 1 to 100")
    faction = _positive_id(table["faction"], f"{where}.faction") if "faction" in table else None
    return KeyConfig(secret=secret, owner=owner.strip(), access=access, budget=budget, source=source,
                     faction=faction)


_TOP = {"api_base", "interval", "jitter", "timeout", "batch", "flush_every", "concurrency", "owner_limit",
        "max_tries", "max_body", "max_wait", "learn_owners", "keys", "factions", "players", "territories", "wars",
        "stats"}


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None,
                 api_base: str | None = None) -> CollectConfig:
    """A CollectConfig from the decoded TOML (see the module docstring for the format)."""
    env = os.environ if env is None else env
    _check_keys(data, _TOP, "config")
    cfg = CollectConfig()
    base = api_base or data.get("api_base", DEFAULT_API_BASE)
    if not isinstance(base, str) or not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(f"api_base: {base!r} is not an http(s) URL")
    if "key=" in base.lower():
        raise ConfigError("api_base: keys go in [[keys]], never in the URL")
    cfg.api_base = base.rstrip("/")
    if "interval" in data:
        cfg.interval = _interval(data["interval"], "interval")
    if "jitter" in data:
        jitter = data["jitter"]
        if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter <= 0.5:
            raise ConfigError("jitter: a fraction of the interval between 0 and 0.5")
        cfg.jitter = float(jitter)
    if "timeout" in data:
        cfg.timeout = parse_duration(data["timeout"], "timeout")
        if not 1 <= cfg.timeout <= 300:
            raise ConfigError("timeout: between 1 s and 5 min")
    if "flush_every" in data:
        cfg.flush_every = parse_duration(data["flush_every"], "flush_every")
    if "max_wait" in data:
        cfg.max_wait = parse_duration(data["max_wait"], "max_wait")
        if cfg.max_wait > 3600:
            raise ConfigError("max_wait: at most 1 h")
    for name, low, high in (("batch", 1, 10000), ("concurrency", 1, 64), ("owner_limit", 1, 100),
                            ("max_tries", 1, 10)):
        if name in data:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name}: a whole number from {low} to {high}")
            setattr(cfg, name, value)
    if "max_body" in data:
        cfg.max_body = parse_size(data["max_body"], "max_body")
    if "learn_owners" in data:
        cfg.learn_owners = _bool(data["learn_owners"], "learn_owners")

    for i, table in enumerate(_table_list(data, "keys")):
        cfg.keys.append(_parse_key(table, f"keys[{i}]", env))
    seen: dict[str, int] = {}
    for i, key in enumerate(cfg.keys):
        if key.fingerprint in seen:
            raise ConfigError(f"keys[{i}]: the same key as keys[{seen[key.fingerprint]}] ({key.fingerprint})")
        seen[key.fingerprint] = i

    for i, table in enumerate(_table_list(data, "factions")):
        where = f"factions[{i}]"
        _check_keys(table, {"id", "fetch", "interval", "members", "member_fetch", "member_interval"}, where)
        interval = _interval(table["interval"], f"{where}.interval") if "interval" in table else cfg.interval
        cfg.factions.append(FactionConfig(
            id=_positive_id(table.get("id"), f"{where}.id"),
            fetch=_fetch_list(table.get("fetch"), f"{where}.fetch", "faction", ["basic", "members"]),
            interval=interval,
            members=_bool(table.get("members", False), f"{where}.members"),
            member_fetch=_fetch_list(table.get("member_fetch"), f"{where}.member_fetch", "user", ["profile"]),
            member_interval=(_interval(table["member_interval"], f"{where}.member_interval")
                             if "member_interval" in table else None),
        ))

    for i, table in enumerate(_table_list(data, "players")):
        where = f"players[{i}]"
        _check_keys(table, {"id", "fetch", "interval"}, where)
        cfg.players.append(PlayerConfig(
            id=_positive_id(table.get("id"), f"{where}.id"),
            fetch=_fetch_list(table.get("fetch"), f"{where}.fetch", "user", ["profile"]),
            interval=_interval(table["interval"], f"{where}.interval") if "interval" in table else cfg.interval,
        ))

    for i, table in enumerate(_table_list(data, "territories")):
        where = f"territories[{i}]"
        _check_keys(table, {"ids", "all", "api", "interval"}, where)
        everything = _bool(table.get("all", False), f"{where}.all")
        ids = table.get("ids")
        if everything == (ids is not None):
            raise ConfigError(f"{where}: give either ids = [\"AAC\", ...] or all = true")
        if ids is not None:
            if not isinstance(ids, list) or not ids or not all(isinstance(t, str) and _TERRITORY_RE.match(t)
                                                              for t in ids):
                raise ConfigError(f"{where}.ids: a list of territory codes such as \"AAC\"")
            ids = sorted(dict.fromkeys(ids))
        api = table.get("api", "v1")
        if api not in ("v1", "v2"):
            raise ConfigError(f"{where}.api: \"v1\" or \"v2\"")
        cfg.territories.append(TerritoryConfig(
            ids=ids, api=api,
            interval=_interval(table["interval"], f"{where}.interval") if "interval" in table else cfg.interval))

    if "wars" in data:
        table = data["wars"]
        if not isinstance(table, Mapping):
            raise ConfigError("wars: expected a [wars] table")
        _check_keys(table, {"ranked", "territory", "rackets", "interval"}, "wars")
        cfg.wars = WarsConfig(
            ranked=_bool(table.get("ranked", False), "wars.ranked"),
            territory=_bool(table.get("territory", False), "wars.territory"),
            rackets=_bool(table.get("rackets", False), "wars.rackets"),
            interval=_interval(table["interval"], "wars.interval") if "interval" in table else cfg.interval,
        )

    if "stats" in data:
        table = data["stats"]
        if not isinstance(table, Mapping):
            raise ConfigError("stats: expected a [stats] table")
        _check_keys(table, {"include", "exclude"}, "stats")
        cfg.stats = StatsConfig(include=_names(table.get("include"), "stats.include"),
                                exclude=_names(table.get("exclude"), "stats.exclude"))

    if not (cfg.factions or cfg.players or cfg.territories or (cfg.wars and (
            cfg.wars.ranked or cfg.wars.territory or cfg.wars.rackets))):
        raise ConfigError("config: nothing to poll (add [[factions]], [[players]], [[territories]] or [wars])")
    if not cfg.keys:
        raise ConfigError("config: no [[keys]] given")
    _check_own_keys(cfg)
    return cfg


def _names(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: expected a list of stat names, e.g. [\"xantaken\", \"refills\"]")
    return tuple(v.strip() for v in value)


def _check_own_keys(cfg: CollectConfig) -> None:
    """Own-key items need a key of that player (or of a member of that faction) with the access they need."""
    level = ACCESS_LEVELS
    for i, player in enumerate(cfg.players):
        own = [s for s in player.fetch if s.own]
        if not own:
            continue
        need = max(own, key=lambda s: level[s.access])
        keys = [k for k in cfg.keys if k.owner == str(player.id)]
        if not keys:
            raise ConfigError(
                f"players[{i}]: {', '.join(s.selection for s in own)} can only be read with player {player.id}'s "
                f"own key (the spec has them only without an id: /v2/user/{own[0].selection}), and no [[keys]] "
                f"entry has owner = \"{player.id}\"; add that player's key or drop them")
        if not any(level[k.access] >= level[need.access] for k in keys):
            raise ConfigError(f"players[{i}]: {need.selection} needs a {need.access} key; player {player.id}'s "
                              f"key(s) are {', '.join(sorted({k.access for k in keys}))}")
    for i, faction in enumerate(cfg.factions):
        own = [s for s in faction.fetch if s.own]
        if not own:
            continue
        need = max(own, key=lambda s: level[s.access])
        keys = [k for k in cfg.keys if k.faction == faction.id]
        if not keys:
            raise ConfigError(
                f"factions[{i}]: {', '.join(s.selection for s in own)} can only be read with the key of a member "
                f"of faction {faction.id} (the spec has them only without an id: /v2/faction/{own[0].selection}), "
                f"and no [[keys]] entry has faction = {faction.id}; add faction = {faction.id} to a member's key "
                f"or drop them")
        if not any(level[k.access] >= level[need.access] for k in keys):
            raise ConfigError(f"factions[{i}]: {need.selection} needs a {need.access} key; the key(s) of faction "
                              f"{faction.id}'s members are {', '.join(sorted({k.access for k in keys}))}")


def load_config(path: str | Path, env: Mapping[str, str] | None = None,
                api_base: str | None = None) -> CollectConfig:
    """Read and check a TOML config file (ConfigError with the place of the mistake)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, env, api_base)
