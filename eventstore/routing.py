"""Which streams a Torn API response belongs to.

`route(url, body)` splits one response (v1 or v2) into parts, each (entity_type, entity_id, view, payload).
A stream is one entity's view from one kind of endpoint: ('user', '123', 'v2.profile'),
('faction', '9420', 'v1.faction'), ('territory', 'AAC', 'v1.territory'), ('rankedwar', '23451', 'v2.war').

Conventions for parts split out of a collection (a faction's member list, the territory map):
  * the payload is the item as the API sent it, plus context keys that start with '_':
    `_id` (the key the item was filed under in a v1 dict), `_faction_id` (the faction whose list it came from);
  * the collection itself becomes a small stream of its own holding the ids it listed (`member_ids`,
    `territory_ids`, ...), so "member left" or "war ended" is a change of that stream.

A response from an endpoint we do not know is kept whole in a 'raw' stream named after its path and
selections: nothing is dropped, it is just not projected. A body that does not fit its endpoint raises
RoutingError with the reason; ingest then quarantines it.

Own-key URLs (`/v2/user/bars`, `/v2/faction/members`, v1 `user/?selections=personalstats`) name no
entity: the key's owner is the entity. The entity comes from the URL, else from the body where it names
itself (a profile, a faction's basic data), else from the `owner` given with the response. Parts that
need no owner (a ranked war names both its factions) are routed anyway; when some part needs an owner
nobody gave, OwnerNeeded carries the parts that could be routed and the reason for the rest.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from .records import Owner
from .secrets import strip_key


class RoutingError(ValueError):
    """The body does not fit its URL (the message says which field), or the URL names no entity."""


class OwnerNeeded(RoutingError):
    """Some of the body belongs to the key's owner, and no owner is known. `parts` could be routed."""

    def __init__(self, reason: str, parts: list[Part]):
        super().__init__(reason)
        self.parts = parts


class Part(NamedTuple):
    entity_type: str
    entity_id: str
    view: str
    payload: Any


_part = tuple.__new__  # Part(...) without the Python-level __new__: parts are made for every item of every poll
_MAX_ID = 10 ** 18     # ids have at most 18 digits (_numeric_id)


class Endpoint(NamedTuple):
    version: str            # 'v1' or 'v2'
    section: str            # user, faction, torn, ...
    entity_id: str | None   # from the path or ?id=
    selections: tuple[str, ...]
    path: str               # normalised path, for raw streams


# Query parameters that do not change what entity or view a response is about.
_VOLATILE_PARAMS = {"key", "timestamp", "comment", "offset", "limit", "from", "to", "sort", "striptags"}

# v1 user: top-level keys owned by selections other than profile/basic.
_V1_BATTLESTATS = {
    "strength", "speed", "dexterity", "defense", "total",
    "strength_modifier", "defense_modifier", "speed_modifier", "dexterity_modifier",
    "strength_info", "defense_info", "speed_info", "dexterity_info",
}
_V1_BARS = {"happy", "life", "energy", "nerve", "chain", "server_time"}
_V1_BASIC = {"level", "gender", "player_id", "name", "status"}
_V1_FACTION_BASIC = {"ID", "name", "tag", "respect", "leader", "age", "best_chain", "member_ids"}


def parse_url(url: str) -> Endpoint:
    """Section, entity id and selections of a Torn API URL (key stripped first)."""
    return _parse_url(strip_key(url))


@functools.lru_cache(maxsize=4096)  # a poller asks the same few hundred URLs again and again
def _parse_url(url: str) -> Endpoint:
    """parse_url without the key; the Endpoint (a tuple of strings) is shared by every caller."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    version = "v1"
    if segments and segments[0] == "v2":
        version = "v2"
        segments = segments[1:]
    if not segments:
        raise RoutingError(f"URL names no API section: {url}")
    section = segments[0].lower()
    rest = segments[1:]
    entity_id: str | None = None
    selections: list[str] = []
    if version == "v1":
        if rest:
            entity_id = rest[0]
        selections = [s for s in query.get("selections", "").lower().split(",") if s]
        if not selections:
            selections = ["basic"] if section in ("user", "faction") else []
    else:
        for seg in rest:
            if _looks_like_id(seg) and entity_id is None and not selections:
                entity_id = seg
            else:
                selections.append(seg.lower())
        selections += [s for s in query.get("selections", "").lower().split(",") if s]
    if entity_id is None and query.get("id"):
        entity_id = query["id"]
    if entity_id is not None and "," in entity_id:
        entity_id = None  # multi-id calls (torn/AAC,CAA) file each entity by its own key
    keep = sorted((k, v) for k, v in query.items() if k.lower() not in _VOLATILE_PARAMS)
    path = "/".join([version, section] + rest) + ("?" + "&".join(f"{k}={v}" for k, v in keep) if keep else "")
    return Endpoint(version, section, entity_id, tuple(selections), path)


def _looks_like_id(segment: str) -> bool:
    return segment.isdigit() or (segment.isupper() and segment.isalpha() and len(segment) <= 4) or "," in segment


_NO_OWNER = Owner()


def route(url: str, body: Any, owner: Owner | None = None) -> list[Part]:
    """Split a success body into stream parts. Error bodies must be handled before this.

    `owner`: the key's owner, for URLs that name no entity (see the module docstring).
    """
    if not isinstance(body, dict):
        raise RoutingError(f"body is {type(body).__name__}, not a JSON object")
    ep = parse_url(url)
    router = _ROUTERS.get((ep.version, ep.section))
    parts = router(ep, body, owner or _NO_OWNER) if router else None
    if not parts:
        parts = [_raw(ep, body)]
    return parts


def owner_taught(url: str, body: Any) -> Owner | None:
    """The owner of the key a response was made with, when the response says it: `/v2/key/info`, or an
    own profile or basic (v1 `user/?selections=...`, `/v2/user/profile`) that names no other player."""
    if not isinstance(body, dict):
        return None
    try:
        ep = parse_url(url)
    except RoutingError:
        return None
    if ep.entity_id is not None:
        return None  # someone's profile, not necessarily the key owner's
    player = faction = None
    if ep.version == "v2" and ep.section == "key" and isinstance(body.get("info"), dict):
        user = body["info"].get("user")
        if isinstance(user, dict):
            player, faction = user.get("id"), user.get("faction_id") or 0
    elif ep.version == "v2" and ep.section == "user" and isinstance(body.get("profile"), dict):
        profile = body["profile"]
        player = profile.get("id")
        faction = (profile.get("faction_id") or 0) if "faction_id" in profile else None
    elif ep.version == "v1" and ep.section == "user" and "player_id" in body:
        player = body.get("player_id")
        if isinstance(body.get("faction"), dict):
            faction = body["faction"].get("faction_id") or 0
    if player is None or not _is_id(player):
        return None
    # 0 says "in no faction" (known); None says the response did not tell.
    known_faction = faction is not None and (_is_id(faction) or faction == 0)
    return Owner(player_id=int(player), faction_id=int(faction) if faction is not None and known_faction else None)


def _is_id(value: Any) -> bool:
    return type(value) is int and value > 0 or type(value) is str and value.isdigit() and int(value) > 0


def _owner_reason(where: str, what: str) -> str:
    return (f"{where}: URL names no {what} and no owner is known for the key it was made with (give the "
            f"owner with the response, or ingest /v2/key/info made with that key; `tornstore quarantine "
            f"retry` routes it then)")


def _raw(ep: Endpoint, body: dict) -> Part:
    view = f"{ep.version}.{'+'.join(ep.selections) or 'default'}"
    return Part("raw", ep.path, view, body)


# ------------------------------------------------------------------------------------------------ helpers
def _dict_field(body: dict, key: str, where: str) -> dict:
    value = body[key]
    if value is None or value == []:
        return {}  # v1 says "none" with null or an empty list
    if not isinstance(value, dict):
        raise RoutingError(f"{where}: field '{key}' is {type(value).__name__}, expected an object")
    return value


def _list_field(body: dict, key: str, where: str) -> list:
    value = body[key]
    if value is None:
        return []
    if not isinstance(value, list):
        raise RoutingError(f"{where}: field '{key}' is {type(value).__name__}, expected a list")
    return value


def _item_id(item: Any, field: str, where: str) -> str:
    if not isinstance(item, dict):
        raise RoutingError(f"{where}: list item is {type(item).__name__}, expected an object")
    value = item.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
        raise RoutingError(f"{where}: item has no usable '{field}' (got {value!r})")
    return str(value)


def _numeric_id(value: Any, what: str, where: str) -> str:
    if type(value) is str and value.isascii() and value.isdigit() and value[0] != "0" and len(value) <= 18:
        return value  # already canonical: the common case, a v1 dict key
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or int(text) <= 0 or len(text) > 18:
        raise RoutingError(f"{where}: {what} {value!r} is not a positive numeric id")
    return str(int(text))


def _code(value: Any, where: str) -> str:
    text = str(value)
    if not (text.isalpha() and text.isupper() and 1 <= len(text) <= 4):
        raise RoutingError(f"{where}: territory id {value!r} is not a territory code such as 'AAC'")
    return text


def _with_context(item: dict, **context: Any) -> dict:
    out = dict(item)
    for key, value in context.items():
        out["_" + key] = value
    return out


def _v1_keyed(body: dict, key: str, where: str, id_kind: str, entity_type: str, view: str,
              **context: Any) -> tuple[list[Part], list[str]]:
    """Split a v1 dict keyed by id into one part per entry."""
    parts, ids = [], []
    extra = {"_" + name: value for name, value in context.items()}  # the same for every entry
    code = id_kind == "code"
    for raw_id, item in _dict_field(body, key, where).items():
        # The common keys ('AAC', '2900013') pass the checks of _code / _numeric_id as they are.
        if type(raw_id) is str and (raw_id.isalpha() and raw_id.isupper() and len(raw_id) <= 4 if code else
                                    raw_id.isascii() and raw_id.isdigit() and raw_id[0] != "0" and len(raw_id) <= 18):
            entity_id = raw_id
        else:
            entity_id = _code(raw_id, where) if code else _numeric_id(raw_id, "id", where)
        if not isinstance(item, dict):
            raise RoutingError(f"{where}: entry {raw_id!r} of '{key}' is {type(item).__name__}, expected an object")
        parts.append(_part(Part, (entity_type, entity_id, view, {**item, "_id": entity_id, **extra})))
        ids.append(entity_id)
    # All numeric ids or all territory codes: the plain orders _sort_key would give.
    return parts, sorted(ids, key=int) if id_kind == "num" else sorted(ids)


def _sort_key(entity_id: str) -> tuple:
    return (0, int(entity_id), "") if entity_id.isdigit() else (1, 0, entity_id)


# ------------------------------------------------------------------------------------------------ v1
def _v1_user(ep: Endpoint, body: dict, owner: Owner) -> list[Part]:
    where = f"v1 user/{ep.entity_id or ''}?selections={','.join(ep.selections)}"
    player_id = ep.entity_id or body.get("player_id") or owner.player_id
    if player_id is None:
        raise OwnerNeeded(_owner_reason(where, "player"), [])
    player_id = _numeric_id(player_id, "player id", where)
    parts: list[Part] = []
    claimed: set[str] = set()
    sel = set(ep.selections)
    if "personalstats" in body:
        parts.append(Part("user", player_id, "v1.personalstats", {"personalstats": body["personalstats"]}))
        claimed.add("personalstats")
    if "battlestats" in sel or any(k in body for k in ("strength_modifier", "dexterity_info")):
        stats = {k: body[k] for k in _V1_BATTLESTATS if k in body}
        if stats:
            parts.append(Part("user", player_id, "v1.battlestats", stats))
            claimed |= stats.keys()
    if "bars" in sel:
        bars = {k: body[k] for k in _V1_BARS if k in body}
        if bars:
            parts.append(Part("user", player_id, "v1.bars", bars))
            # profile carries life too: leave it for the profile part when both were asked for
            claimed |= bars.keys() - {"life"} if "profile" in sel else bars.keys()
    if "cooldowns" in body:
        parts.append(Part("user", player_id, "v1.cooldowns", {"cooldowns": body["cooldowns"]}))
        claimed.add("cooldowns")
    rest = {k: v for k, v in body.items() if k not in claimed}
    if "profile" in sel and rest:
        parts.append(Part("user", player_id, "v1.profile", rest))
    elif "basic" in sel and rest:
        basic = {k: v for k, v in rest.items() if k in _V1_BASIC}
        parts.append(Part("user", player_id, "v1.basic", basic))
        other = {k: v for k, v in rest.items() if k not in _V1_BASIC}
        if other:
            parts.append(Part("user", player_id, "v1.other", other))
    elif rest:
        parts.append(Part("user", player_id, f"v1.{'+'.join(sorted(sel)) or 'other'}", rest))
    return parts


def _v1_faction(ep: Endpoint, body: dict, owner: Owner) -> list[Part]:
    where = f"v1 faction/{ep.entity_id or ''}?selections={','.join(ep.selections)}"
    faction_id = ep.entity_id or body.get("ID") or owner.faction_id
    if faction_id is None:
        # Ranked and territory wars name their factions: they need no owner.
        wars = [p for key in ("ranked_wars", "rankedwars") if key in body
                for p in _v1_keyed(body, key, where, "num", "rankedwar", "v1.rankedwar")[0]]
        if set(body) - {"ranked_wars", "rankedwars"}:
            raise OwnerNeeded(_owner_reason(where, "faction"), wars)
        return wars
    faction_id = _numeric_id(faction_id, "faction id", where)
    fid = int(faction_id)
    parts: list[Part] = []
    rest = dict(body)
    if "members" in body:
        members, ids = _v1_keyed(body, "members", where, "num", "user", "v1.member", faction_id=fid)
        parts += members
        rest.pop("members")
        rest["member_ids"] = [int(i) for i in ids]
    for key in ("ranked_wars", "rankedwars"):
        if key in body:
            wars, ids = _v1_keyed(body, key, where, "num", "rankedwar", "v1.rankedwar")
            parts += wars
            rest.pop(key)
            rest["ranked_war_ids"] = [int(i) for i in ids]
    if "territory_wars" in body:
        # A dict keyed by war id in some captures, a list of objects in others.
        raw = body["territory_wars"]
        items = list(raw.values()) if isinstance(raw, dict) else (raw or [])
        if not isinstance(items, list):
            raise RoutingError(f"{where}: field 'territory_wars' is {type(raw).__name__}, expected a list")
        wars = []
        for item in items:
            if not isinstance(item, dict):
                raise RoutingError(f"{where}: territory_wars entry is {type(item).__name__}, not an object")
            code = _code(item.get("territory"), where)
            war_id = item.get("territory_war_id")
            # Without a war id, the territory code and the start time name the war (as in torn/territorywars).
            entity_id = (_numeric_id(war_id, "territory_war_id", where) if war_id is not None
                         else f"{code}@{_numeric_id(item.get('start_time'), 'start_time', where)}")
            # No `_faction_id`: the war reads the same in both sides' responses (the source URL says whose).
            wars.append(Part("territorywar", entity_id, "v1.faction_territorywar", item))
        parts += wars
        rest.pop("territory_wars")
        rest["territory_war_ids"] = sorted((p.entity_id for p in wars), key=_sort_key)
    if "territory" in body:
        # A view of its own (as in v2): the faction's listing and torn territory differ in shape, and one
        # stream fed both would flip between them at every poll of each.
        terr, ids = _v1_keyed(body, "territory", where, "code", "territory", "v1.faction_territory", faction_id=fid)
        parts += terr
        rest.pop("territory")
        parts.append(Part("faction", faction_id, "v1.territory", {"territory_ids": ids}))
    if "chain" in body:
        parts.append(Part("faction", faction_id, "v1.chain", {"chain": body["chain"]}))
        rest.pop("chain")
    if rest and set(rest) - {"territory_ids"}:
        # The faction's own data (basic) is v1.faction; a call without it (?selections=rankedwars) is a
        # view of its own, or it would flip one stream between two shapes at every poll of each.
        own = "basic" in ep.selections or bool(set(rest) & _V1_FACTION_BASIC)
        view = "v1.faction" if own else "v1.faction_" + "+".join(sorted(ep.selections))
        parts.append(Part("faction", faction_id, view, rest))
    return parts


def _v1_torn(ep: Endpoint, body: dict, owner: Owner) -> list[Part]:
    where = f"v1 torn/{ep.entity_id or ''}?selections={','.join(ep.selections)}"
    parts: list[Part] = []
    rest = dict(body)
    if "territory" in body:
        terr, _ = _v1_keyed(body, "territory", where, "code", "territory", "v1.territory")
        parts += terr
        rest.pop("territory")
    if "rackets" in body:
        rackets, ids = _v1_keyed(body, "rackets", where, "code", "territory", "v1.racket")
        parts += rackets
        parts.append(Part("torn", "rackets", "v1.rackets", {"territory_ids": ids}))
        rest.pop("rackets")
    if "rankedwars" in body:
        wars, ids = _v1_keyed(body, "rankedwars", where, "num", "rankedwar", "v1.rankedwar")
        parts += wars
        rest.pop("rankedwars")
    if "rankedwarreport" in body:
        # torn/<war id>?selections=rankedwarreport: the final scores and winner of one ranked war.
        if ep.entity_id is None:
            raise RoutingError(f"{where}: a rankedwarreport URL names its war (torn/<war id>?selections=...)")
        report = _dict_field(body, "rankedwarreport", where)
        parts.append(Part("rankedwar", _numeric_id(ep.entity_id, "ranked war id", where), "v1.rankedwarreport",
                          report))
        rest.pop("rankedwarreport")
    if "territorywars" in body:
        wars = []
        for code, item in _dict_field(body, "territorywars", where).items():
            code = _code(code, where)
            if not isinstance(item, dict):
                raise RoutingError(f"{where}: territorywars entry {code!r} is not an object")
            # Old entries carry no territory_war_id; the territory code and start time name the war then.
            war_id = item.get("territory_war_id")
            entity_id = (_numeric_id(war_id, "territory_war_id", where) if war_id is not None
                         else f"{code}@{_numeric_id(item.get('started'), 'started', where)}")
            wars.append(Part("territorywar", entity_id, "v1.territorywar", _with_context(item, territory=code)))
        parts += wars
        parts.append(Part("torn", "territorywars", "v1.territorywars",
                          {"war_ids": sorted((p.entity_id for p in wars), key=_sort_key)}))
        rest.pop("territorywars")
    if rest:
        parts.append(_raw(ep, rest))
    return parts


# ------------------------------------------------------------------------------------------------ v2
def _v2_user(ep: Endpoint, body: dict, owner: Owner) -> list[Part]:
    where = f"v2 user/{ep.entity_id or ''}{'/' + ','.join(ep.selections) if ep.selections else ''}"
    player_id: str | int | None = ep.entity_id
    if player_id is None and isinstance(body.get("profile"), dict):
        player_id = body["profile"].get("id")
    if player_id is None:
        player_id = owner.player_id
    if player_id is None:
        raise OwnerNeeded(_owner_reason(where, "player"), [])
    player_id = _numeric_id(player_id, "player id", where)
    parts = []
    selections = ep.selections or ("profile",)
    for selection in selections:
        key = "profile" if selection == "basic" else selection
        if key not in body:
            continue
        value = body[key]
        if selection in ("profile", "basic") and not isinstance(value, dict):
            raise RoutingError(f"{where}: field '{key}' is {type(value).__name__}, expected an object")
        parts.append(Part("user", player_id, f"v2.{selection}", value if selection in ("profile", "basic")
                          else {key: value}))
    return parts


def _v2_faction(ep: Endpoint, body: dict, owner: Owner) -> list[Part]:
    where = f"v2 faction/{ep.entity_id or ''}{'/' + ','.join(ep.selections) if ep.selections else ''}"
    if ep.selections == ("rankedwarreport",) and "rankedwarreport" in body:
        # /v2/faction/{rankedWarId}/rankedwarreport: the id in the path is the war's, not a faction's.
        report = _dict_field(body, "rankedwarreport", where)
        war_id = ep.entity_id or report.get("id")
        if war_id is None:
            raise RoutingError(f"{where}: names no ranked war (/v2/faction/<war id>/rankedwarreport)")
        return [Part("rankedwar", _numeric_id(war_id, "ranked war id", where), "v2.rankedwarreport", report)]
    faction_id: str | int | None = ep.entity_id
    if faction_id is None and isinstance(body.get("basic"), dict):
        faction_id = body["basic"].get("id")
    if faction_id is None:
        faction_id = owner.faction_id
    parts: list[Part] = []
    unresolved: list[str] = []

    def need_faction() -> int:
        if faction_id is None:
            raise _FactionUnknown
        return int(_numeric_id(faction_id, "faction id", where))

    selections = ep.selections or ("basic",)
    for selection in selections:
        try:
            _v2_faction_selection(selection, body, where, need_faction, parts)
        except _FactionUnknown:
            unresolved.append(selection)
    if unresolved:
        raise OwnerNeeded(_owner_reason(f"{where} ({','.join(unresolved)})", "faction"), parts)
    return parts


class _FactionUnknown(Exception):
    """A selection belongs to the key owner's faction, which nobody named."""


def _v2_faction_selection(selection: str, body: dict, where: str, need_faction: Any, parts: list[Part]) -> None:
    """Route one selection of a v2 faction body into `parts`; `need_faction()` gives the faction id."""
    if selection == "basic" and "basic" in body:
        if not isinstance(body["basic"], dict):
            raise RoutingError(f"{where}: field 'basic' is not an object")
        parts.append(Part("faction", str(need_faction()), "v2.faction", body["basic"]))
    elif selection == "members" and "members" in body:
        fid = need_faction()
        ids = []
        for item in _list_field(body, "members", where):
            value = item.get("id") if type(item) is dict else None
            if type(value) is int and 0 < value < _MAX_ID:  # what _numeric_id(_item_id(...)) keeps as it is
                uid = str(value)
                payload = {**item, "_faction_id": fid}
            else:
                uid = _numeric_id(_item_id(item, "id", where), "member id", where)
                payload = _with_context(item, faction_id=fid)
            parts.append(_part(Part, ("user", uid, "v2.member", payload)))
            ids.append(int(uid))
        parts.append(Part("faction", str(fid), "v2.members", {"member_ids": sorted(ids)}))
    elif selection == "wars" and "wars" in body:
        wars = body["wars"]
        if not isinstance(wars, dict):
            raise RoutingError(f"{where}: field 'wars' is not an object")
        ranked = wars.get("ranked")
        ranked_id = None
        if ranked is not None:
            ranked_id = _numeric_id(_item_id(ranked, "war_id", where), "war_id", where)
            parts.append(Part("rankedwar", ranked_id, "v2.war", ranked))
        territory_ids = []
        for item in wars.get("territory") or []:
            war_id = _numeric_id(_item_id(item, "war_id", where), "war_id", where)
            parts.append(Part("territorywar", war_id, "v2.war", item))
            territory_ids.append(int(war_id))
        fid = need_faction()  # the wars above name their factions; the faction's list of them needs it
        summary = {"ranked_war_id": int(ranked_id) if ranked_id else None,
                   "territory_war_ids": sorted(territory_ids),
                   "raids": wars.get("raids"), "pacts": body.get("pacts")}
        parts.append(Part("faction", str(fid), "v2.wars", summary))
    elif selection == "rankedwars" and "rankedwars" in body:
        for item in _list_field(body, "rankedwars", where):
            war_id = _numeric_id(_item_id(item, "id", where), "ranked war id", where)
            parts.append(Part("rankedwar", war_id, "v2.rankedwar", item))
    elif selection == "territory" and "territory" in body:
        fid = need_faction()
        codes: list[str] = []
        for item in _list_field(body, "territory", where):
            code = _code(_item_id(item, "id", where), where)
            parts.append(Part("territory", code, "v2.faction_territory", _with_context(item, faction_id=fid)))
            codes.append(code)
        parts.append(Part("faction", str(fid), "v2.territory", {"territory_ids": sorted(codes)}))
    elif selection == "territoryownership" and "territoryOwnership" in body:
        for item in _list_field(body, "territoryOwnership", where):
            code = _code(_item_id(item, "id", where), where)
            parts.append(Part("territory", code, "v2.ownership", item))
    elif selection == "rackets" and "rackets" in body:
        items = _list_field(body, "rackets", where)
        # Spec 6.6.1's TornRacket has no territory id; file per territory when the API sends one.
        if items and all(isinstance(i, dict) and ("territory" in i or "id" in i) for i in items):
            for item in items:
                code = _code(item.get("territory", item.get("id")), where)
                parts.append(Part("territory", code, "v2.racket", item))
        else:
            parts.append(Part("torn", "rackets", "v2.rackets", {"rackets": items}))
    elif selection == "chain" and "chain" in body:
        parts.append(Part("faction", str(need_faction()), "v2.chain", body["chain"]))
    elif selection == "stats" and "stats" in body:   # the spec's /faction/stats: [{name, value}]
        _list_field(body, "stats", where)
        parts.append(Part("faction", str(need_faction()), "v2.faction_stats", {"stats": body["stats"]}))


def _v2_torn(ep: Endpoint, body: dict, owner: Owner) -> list[Part]:
    where = f"v2 torn/{','.join(ep.selections)}"
    parts: list[Part] = []
    if "territory" in ep.selections and "territory" in body:
        for item in _list_field(body, "territory", where):
            code = _code(_item_id(item, "id", where), where)
            parts.append(Part("territory", code, "v2.territory", item))
    return parts


_ROUTERS = {
    ("v1", "user"): _v1_user,
    ("v1", "faction"): _v1_faction,
    ("v1", "torn"): _v1_torn,
    ("v2", "user"): _v2_user,
    ("v2", "faction"): _v2_faction,
    ("v2", "torn"): _v2_torn,
}


def stream_name(entity_type: str, entity_id: str, view: str) -> str:
    """The printable name of a stream: entity_type:entity_id:view."""
    return f"{entity_type}:{entity_id}:{view}"


def named_part(stream: str, body: Any) -> Part:
    """The part a response filed under a named stream (an export-events line) is: its whole body."""
    try:
        entity_type, entity_id, view = parse_stream_name(stream)
    except ValueError:
        raise RoutingError(f"stream name {stream!r} is not type:id:view") from None
    return Part(entity_type, entity_id, view, body)


def parse_stream_name(name: str) -> tuple[str, str, str]:
    entity_type, rest = name.split(":", 1)
    entity_id, view = rest.rsplit(":", 1)
    return entity_type, entity_id, view
