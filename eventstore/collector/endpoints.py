"""The URLs the collector builds, from the official v2 spec (OpenAPI 6.6.1, `tests/fixtures/torn-api/`).

The v2 API has three ways to ask for a user or faction selection, and not every selection has all three:

  * `/v2/user/{id}/<selection>`: someone's public data; only some selections have this path (profile,
    personalstats, basic, ...; faction: basic, members, wars, chain, rankedwars, territory, ...);
  * `/v2/user/<selection>`: the key owner's own data (bars, battlestats, attacks, money, ...; faction:
    news, attacks, balance, crimes, positions, upgrades, ... of the key owner's faction). Every selection
    has this path; for most of them it is the only one, so they can only be polled with the key of the
    player (or of a member of the faction) they are about;
  * `/v2/user?selections=a,b` (and `&id=N`): several selections in one request, counted as one against
    the 100 requests a minute. The spec defines no `/v2/user/{id}?selections=`; the id goes in `?id=`.

`USER` and `FACTION` below say, for each selection, which paths exist, the query parameters each accepts,
the key access it needs, and the members its response has (`profile` for basic and profile, ...). They
are copied from the spec, and `tests/test_collector_urls.py` derives them again from the spec file and
compares, so a new spec shows what changed.

`bundles(section, entity_id, specs)` turns one entity's fetch items into as few requests as the spec
allows. Items are combined when they take the same form (by id, own, or global), are listed in the
spec's `selections` enum and not standalone, answer in different response members (`basic` and
`profile` both answer in `profile`; two lists would both bring `_metadata`), and no item's query
parameter would reach another item that accepts it with another value (`personalstats?cat=all` and
`races?cat=official` go separately). Public selections (by id, any key) are never combined with own
ones (the entity's key): a key refused its private data must not cost the public data.

v1 (`user/123?selections=profile,bars`) merges every selection of an entity, as before; `V1_USER` and
`V1_FACTION` name the v1 selections (community docs: Torn-Playground/tornapi-documentation), which is
what a code 22 ("only in API v1") needs to know to ask v1 instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import FetchSpec


@dataclass(frozen=True)
class Selection:
    """One v2 user or faction selection, as the spec defines it."""
    name: str                                  # as in `selections=` and the config: 'revivesfull'
    segment: str = ""                          # the path segment: 'revivesFull' (default: the name)
    own: tuple[str, ...] = ()                  # query parameters of /{section}/{segment} (every selection has it)
    by_id: tuple[str, ...] | None = None       # query parameters of /{section}/{id}/{segment}; None: no such path
    access: str = "public"
    members: tuple[str, ...] = ()              # top-level members of the response (default: the name)
    required: tuple[str, ...] = ()             # query parameters the spec requires
    combinable: bool = True                    # in the `selections` enum, and not "standalone"

    def __post_init__(self) -> None:
        if not self.segment:
            object.__setattr__(self, "segment", self.name)
        if not self.members:
            object.__setattr__(self, "members", (self.name,))


def _table(*selections: Selection) -> dict[str, Selection]:
    return {s.name: s for s in selections}


_S = Selection
_SNAPSHOT = ("snapshot",)  # "members" of the CSV snapshot selections (the spec gives them none)

USER = _table(
    _S("ammo", access="minimal"),
    _S("attacks", own=("filters", "from", "limit", "sort", "to"), access="limited", members=("attacks", "_metadata")),
    _S("attacksfull", own=("filters", "from", "limit", "sort", "to"), access="limited",
       members=("attacks", "_metadata")),
    _S("bars", access="minimal"),
    _S("basic", own=("striptags",), by_id=("striptags",), members=("profile",)),
    _S("battlestats", access="limited"),
    _S("bounties", by_id=(), members=("bounties", "bounties_delay", "bounties_timestamp")),
    _S("calendar", access="minimal"),
    _S("casino", access="limited"),
    _S("competition", by_id=()),
    _S("cooldowns", access="minimal"),
    _S("discord", by_id=()),
    _S("education", access="minimal"),
    _S("enlistedcars", access="minimal"),
    _S("equipment", access="minimal", members=("clothing", "equipment")),
    _S("events", own=("from", "limit", "striptags", "to"), access="limited", members=("events", "_metadata")),
    _S("faction", by_id=()),
    _S("forumfeed", access="minimal", members=("forumFeed",)),
    _S("forumfriends", access="minimal", members=("forumFriends",)),
    _S("forumposts", own=("from", "limit", "sort", "striptags", "to"),
       by_id=("from", "limit", "sort", "striptags", "to"), members=("forumPosts", "_metadata")),
    _S("forumsubscribedthreads", access="minimal", members=("forumSubscribedThreads",)),
    _S("forumthreads", own=("from", "limit", "sort", "to"), by_id=("from", "limit", "sort", "to"),
       members=("forumThreads", "_metadata")),
    _S("hof", by_id=()),
    _S("honors", access="minimal"),
    _S("icons", by_id=()),
    _S("inventory", own=("cat", "limit", "offset"), access="limited", members=("inventory", "_metadata")),
    _S("itemmarket", own=("offset",), access="limited", members=("itemmarket", "_metadata")),
    _S("itemmods", access="minimal", combinable=False),
    _S("job", by_id=()),
    _S("jobpoints", access="minimal"),
    _S("jobranks", access="minimal"),
    _S("list", own=("cat", "limit", "offset", "sort", "striptags"), access="limited", members=("list", "_metadata"),
       required=("cat",)),
    _S("log", own=("cat", "from", "limit", "log", "target", "to"), access="full", members=("log", "_metadata"),
       combinable=False),
    _S("lookup", members=("selections",)),
    _S("medals", access="minimal"),
    _S("merits", access="minimal"),
    _S("messages", own=("from", "limit", "sort", "to"), access="limited", members=("messages", "_metadata")),
    _S("missions", access="minimal"),
    _S("money", access="limited"),
    _S("networth", access="limited"),
    _S("newevents", own=("striptags",), access="limited", members=("events",)),
    _S("newmessages", access="limited", members=("messages",)),
    _S("notifications", access="minimal"),
    _S("organizedcrime", access="minimal", members=("organizedCrime",)),
    _S("organizedcrimes", access="minimal", combinable=False),
    _S("perks", access="minimal"),
    _S("personalstats", own=("cat", "stat"), by_id=("cat", "stat")),
    _S("profile", own=("striptags",), by_id=("striptags",)),
    _S("properties", own=("filters", "limit", "offset"), by_id=("filters", "limit", "offset"),
       members=("properties", "_metadata")),
    _S("property", by_id=()),
    _S("races", own=("cat", "from", "limit", "sort", "to"), access="minimal", members=("races", "_metadata")),
    _S("racingrecords", access="minimal"),
    _S("refills", access="minimal"),
    _S("reports", own=("cat", "limit", "offset", "sort", "target"), access="limited", members=("reports", "_metadata")),
    _S("revives", own=("filters", "from", "limit", "sort", "striptags", "to"), access="limited",
       members=("revives", "_metadata")),
    _S("revivesfull", segment="revivesFull", own=("filters", "from", "limit", "sort", "striptags", "to"),
       access="limited", members=("revives", "_metadata")),
    _S("skills", access="minimal"),
    _S("snapshot", members=_SNAPSHOT, combinable=False),
    _S("stocks", access="limited"),
    _S("timestamp"),
    _S("trades", own=("cat", "from", "limit", "sort", "to"), access="limited", members=("trades", "_metadata")),
    _S("travel", access="minimal"),
    _S("virus", access="minimal", combinable=False),
    _S("weaponexp", access="minimal"),
    _S("workstats", access="minimal"),
)

FACTION = _table(
    _S("applications", access="minimal"),
    _S("attacks", own=("filters", "from", "limit", "sort", "to"), access="limited", members=("attacks", "_metadata")),
    _S("attacksfull", own=("filters", "from", "limit", "sort", "to"), access="limited",
       members=("attacks", "_metadata")),
    _S("balance", own=("cat",), access="limited"),
    _S("basic", by_id=()),
    _S("chain", by_id=()),
    _S("chainreport"),
    _S("chains", own=("from", "limit", "sort", "to"), by_id=("from", "limit", "sort", "to"),
       members=("chains", "_metadata")),
    _S("contributors", own=("cat", "stat"), access="limited", required=("stat",)),
    _S("crimes", own=("cat", "filters", "from", "limit", "offset", "sort", "to"), access="minimal",
       members=("crimes", "_metadata")),
    _S("hof", by_id=()),
    _S("lookup", members=("selections",)),
    _S("members", own=("striptags",), by_id=("striptags",)),
    _S("news", own=("cat", "from", "limit", "sort", "striptags", "to"), access="minimal", members=("news", "_metadata"),
       required=("cat",)),
    _S("positions", access="minimal"),
    _S("rackets"),
    _S("raids", own=("from", "limit", "sort", "to"), by_id=("from", "limit", "sort", "to"),
       members=("raids", "_metadata")),
    _S("rankedwars", own=("from", "limit", "offset", "sort", "to"), by_id=("limit", "offset"),
       members=("rankedwars", "_metadata")),
    _S("reports", own=("cat", "limit", "offset", "sort", "target"), access="limited", members=("reports", "_metadata")),
    _S("revives", own=("filters", "from", "limit", "sort", "striptags", "to"), access="limited",
       members=("revives", "_metadata")),
    _S("revivesfull", segment="revivesFull", own=("filters", "from", "limit", "sort", "striptags", "to"),
       access="limited", members=("revives", "_metadata")),
    _S("search", own=("filters", "limit", "name", "offset"), members=("search", "_metadata"), combinable=False),
    _S("snapshot", members=_SNAPSHOT, combinable=False),
    _S("stats", access="minimal"),
    _S("territory", by_id=()),
    _S("territoryownership", own=("limit", "offset"), members=("territoryOwnership",)),
    _S("territorywars", own=("from", "limit", "sort", "to"), by_id=("from", "limit", "sort", "to")),
    _S("timestamp"),
    _S("upgrades", access="minimal", members=("state", "upgrades")),
    _S("warfare", own=("cat", "from", "limit", "sort", "to"), members=("warfare", "_metadata"), required=("cat",)),
    _S("wars", by_id=(), members=("pacts", "wars")),
)

V2 = {"user": USER, "faction": FACTION}

# Query parameters of the combined paths /v2/user and /v2/faction (besides selections, id, legacy, and the
# timestamp, comment and key every path takes).
COMBINED_PARAMS = {
    "user": frozenset({"limit", "from", "to", "sort", "cat", "stat", "filters", "striptags", "offset"}),
    "faction": frozenset({"limit", "from", "to", "cat", "stat", "filters", "striptags", "sort", "offset"}),
}

# Id-less selections that are the same for every key, not the key owner's: any key may ask.
GLOBAL = {"user": frozenset({"lookup", "timestamp", "snapshot"}),
          "faction": frozenset({"lookup", "timestamp", "snapshot", "search", "rackets", "territoryownership",
                                "warfare"})}
# Selections the collector does not poll: they describe the API, not the game, or are CSV files.
NOT_POLLED = {"user": frozenset({"lookup", "timestamp", "snapshot"}),
              "faction": frozenset({"lookup", "timestamp", "snapshot", "search"})}
# v2 lists the collector follows page by page (whole lists, not histories); they go alone.
PAGED = {"faction": frozenset({"territoryownership", "territory"}), "user": frozenset()}
# Their page size when the config names none: the spec's maximum (fewest requests for the whole list).
PAGE_LIMIT = {"territoryownership": "500"}


@dataclass(frozen=True)
class OffsetPaging:
    """A v2 list the spec pages by `offset` and `limit` but whose response has no `_metadata` links."""
    member: str                 # the response member holding the list
    default_limit: int          # the page size when the request names no `limit`
    max_limit: int | None       # the spec's maximum `limit` (None: it gives none)


# Every such path of the spec (tests/test_collector_urls.py derives them again and compares): the collector
# asks offset by offset until a page comes back shorter than its limit. It polls only the first of them
# (`[[territories]] all = true`, or `territoryownership` in a faction's fetch): the whole map, ~4,100 rows.
OFFSET_PAGED = {
    "v2/faction/territoryownership": OffsetPaging("territoryOwnership", 20, 500),
    "v2/key/log": OffsetPaging("log", 100, 100),
    "v2/torn/honors": OffsetPaging("honors", 20, None),
}

# v1 selections (Torn-Playground/tornapi-documentation, src/api-schema/<section>/).
V1_USER = frozenset({
    "ammo", "attacks", "attacksfull", "bars", "basic", "battlestats", "bazaar", "cooldowns", "crimes",
    "criminalrecord", "discord", "display", "education", "equipment", "events", "gym", "hof", "honors", "icons",
    "inventory", "jobpoints", "log", "medals", "merits", "messages", "missions", "money", "networth", "newevents",
    "newmessages", "notifications", "perks", "personalstats", "profile", "properties", "publicstatus",
    "receivedevents", "refills", "reports", "revives", "revivesfull", "skills", "stocks", "travel", "weaponexp",
    "workstats"})
V1_FACTION = frozenset({
    "applications", "armor", "armorynews", "attacknews", "attacks", "attacksfull", "basic", "boosters", "caches",
    "cesium", "chain", "chainreport", "chains", "contributors", "crimeexp", "crimenews", "crimes", "currency",
    "donations", "drugs", "fundsnews", "mainnews", "medical", "membershipnews", "positions", "rankedwars", "reports",
    "revives", "revivesfull", "stats", "temporary", "territory", "territorynews", "upgrades", "utilities", "weapons"})
V1 = {"user": V1_USER, "faction": V1_FACTION}
# The spec's enums list these as "not available in API v2" (FactionSelectionName, TornSelectionName).
ONLY_V1 = {"faction": frozenset({"armorynews", "attacknews", "crimenews", "currency", "donations", "fundsnews",
                                 "mainnews", "membershipnews", "territorynews"}),
           "torn": frozenset({"dirtybombs", "raidreport", "raids", "chainreport", "rackets", "rankedwarreport",
                              "rankedwars", "territorynames", "territorywarreport", "territorywars"})}

# The daily cloud read limit (code 14) counts rows per category: faction news, events, the activity log
# and personal stats. A 14 blocks the categories a request touches.
CLOUD = {"news": "news", "mainnews": "news", "attacknews": "news", "armorynews": "news", "crimenews": "news",
         "fundsnews": "news", "membershipnews": "news", "territorynews": "news", "events": "events",
         "newevents": "events", "receivedevents": "events", "log": "log", "personalstats": "personalstats"}

FORMS = ("id", "own", "global")


def form_of(section: str, spec: FetchSpec) -> str:
    """How a v2 item is asked: 'id' (/v2/user/{id}/x, any key), 'own' (/v2/user/x, the entity's own key)
    or 'global' (/v2/faction/rackets: no id, any key, the same for everyone)."""
    if spec.shared:
        return "global"
    if spec.own:
        return "own"
    return "id"


def cloud_categories(selections: Iterable[str]) -> set[str]:
    return {CLOUD[s] for s in selections if s in CLOUD}


@dataclass(frozen=True)
class Bundle:
    """One request's worth of fetch items of one entity: what `scheduler` turns into an ApiRequest."""
    section: str
    entity_id: str          # '' for global items
    form: str               # 'id', 'own', 'global' (v2); 'v1'
    specs: tuple[FetchSpec, ...]

    @property
    def version(self) -> str:
        return "v1" if self.form == "v1" else "v2"

    @property
    def selections(self) -> list[str]:
        return list(dict.fromkeys(s.selection for s in self.specs))

    def path_and_params(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The request's path (relative to the API base) and query, as the spec defines them."""
        if self.form == "v1":
            path = f"{self.section}/{self.entity_id}" if self.entity_id else f"{self.section}/"
            return path, (("selections", ",".join(self.selections)),)
        table = V2[self.section]
        params: dict[str, str] = {}
        for spec in self.specs:
            for name, value in spec.params:
                params.setdefault(name, value)
        extra = tuple(params.items())
        if len(self.specs) == 1:
            sel = table[self.specs[0].selection]
            if self.form == "id":
                return f"v2/{self.section}/{self.entity_id}/{sel.segment}", extra
            return f"v2/{self.section}/{sel.segment}", extra
        head: tuple[tuple[str, str], ...] = (("selections", ",".join(self.selections)),)
        if self.form == "id":
            head += (("id", self.entity_id),)
        return f"v2/{self.section}", head + extra


def _accepts(section: str, spec: FetchSpec, form: str) -> tuple[str, ...]:
    sel = V2[section][spec.selection]
    return (sel.by_id or ()) if form == "id" else sel.own


def _fits(section: str, form: str, group: list[FetchSpec], item: FetchSpec) -> bool:
    """May `item` go in one combined request with `group`?"""
    table = V2[section]
    sel = table[item.selection]
    if not sel.combinable or item.selection in PAGED[section]:
        return False
    if any(name not in COMBINED_PARAMS[section] for name, _ in item.params):
        return False
    members = set(sel.members)
    mine = dict(item.params)
    for other in group:
        if other.selection == item.selection or members & set(table[other.selection].members):
            return False
        theirs = dict(other.params)
        for name, value in mine.items():
            if name in _accepts(section, other, form) and theirs.get(name) != value:
                return False
        for name, value in theirs.items():
            if name in _accepts(section, item, form) and mine.get(name) != value:
                return False
    return True


def bundles(section: str, entity_id: str, specs: Sequence[FetchSpec], merge: bool = True) -> list[Bundle]:
    """One entity's fetch items as few requests as the spec allows (see the module docstring).

    v1 items of the entity become one request; v2 items are grouped by form, then packed first-fit.
    With `merge=False` every v2 item is a request of its own."""
    out: list[Bundle] = []
    v1 = [s for s in specs if s.version == "v1"]
    if v1:
        out.append(Bundle(section, entity_id, "v1", tuple(dict.fromkeys(v1))))
    for form in FORMS:
        groups: list[list[FetchSpec]] = []
        alone: list[list[FetchSpec]] = []        # items that go in no combined request
        for spec in dict.fromkeys(s for s in specs if s.version == "v2"):
            if form_of(section, spec) != form:
                continue
            sel = V2[section][spec.selection]
            if not merge or not sel.combinable or spec.selection in PAGED[section]:
                alone.append([spec])
                groups.append(alone[-1])
                continue
            target = next((g for g in groups if not any(g is a for a in alone) and _fits(section, form, g, spec)),
                          None)
            if target is None:
                groups.append([spec])
            else:
                target.append(spec)
        out += [Bundle(section, "" if form == "global" else entity_id, form, tuple(g)) for g in groups]
    return out


def alternative(bundle: Bundle, code: int) -> list[Bundle] | None:
    """The same data through the other API version, after code 22 (only in v1) or 23 (only in v2).

    None when some selection has no form in the other version the collector can build."""
    if code == 22 and bundle.version == "v2":
        names = V1.get(bundle.section, frozenset())
        if bundle.form == "global" or not all(s.selection in names for s in bundle.specs):
            return None
        from .config import FetchSpec  # (config imports this module)
        own = bundle.form == "own"
        specs = tuple(FetchSpec("v1", s.selection, (), own, s.access) for s in bundle.specs)
        return [Bundle(bundle.section, bundle.entity_id, "v1", specs)]
    if code == 23 and bundle.version == "v1":
        table = V2.get(bundle.section)
        if table is None or not all(s.selection in table for s in bundle.specs):
            return None
        from .config import FetchSpec
        wanted: list[FetchSpec] = []
        for s in bundle.specs:
            sel = table[s.selection]
            own = s.own or sel.by_id is None or not bundle.entity_id
            shared = s.selection in GLOBAL[bundle.section]
            if sel.required:
                return None  # a required parameter v1 never had (news?cat=): nothing to fill it with
            params = (("cat", "all"),) if s.selection == "personalstats" else ()
            wanted.append(FetchSpec("v2", s.selection, params, own and not shared, sel.access, shared=shared))
        return bundles(bundle.section, bundle.entity_id, wanted)
    return None
