"""Every URL the collector can build, checked against the official v2 spec (OpenAPI 6.6.1).

The spec is the oracle, not the simulator: each v2 URL must match one of the spec's paths (templates such
as `/user/{id}/profile` included), use only the query parameters that path declares, and give values its
schemas allow (the `selections` enum, `cat` enums, `limit` bounds). The collector's own table of
selections (`endpoints.USER`, `endpoints.FACTION`) is derived again from the spec file here and compared.
"""
from __future__ import annotations

import itertools
import json
import re
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from tornstore.eventstore.collector import ApiRequest, ConfigError, TornClient, build_jobs, endpoints, parse_config
from tornstore.eventstore.collector.run import KEY_JOB, Collector

SPEC_FILE = Path(__file__).resolve().parent / "fixtures" / "torn-api" / "openapi-v2-6.6.1.json"
BASE = "https://api.torn.com"
KEYS = {"TK_OWN": "AAAAAAAAAAAAAAA1", "TK_OTHER": "BBBBBBBBBBBBBBB2"}
PLAYER, FACTION = 2491575, 9420
LEVELS = ["public", "minimal", "limited", "full"]
# Parameters every path takes that say nothing about the data (the collector sends none of them).
_EVERYWHERE = {"timestamp", "comment", "key"}


@cache
def spec() -> dict:
    return json.loads(SPEC_FILE.read_text())


def _resolve(obj: dict) -> dict:
    while "$ref" in obj:
        kind, name = obj["$ref"].split("/")[-2:]
        obj = spec()["components"][kind][name]
    return obj


def _parameters(op: dict) -> dict[str, dict]:
    return {p["name"]: p for p in (_resolve(p) for p in op.get("parameters", []))}


def _props(schema: dict) -> set[str]:
    schema = _resolve(schema)
    out = set(schema.get("properties", {}))
    for sub in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
        out |= _props(sub)
    return out


@cache
def _templates() -> list[tuple[re.Pattern, str]]:
    out = []
    for path in spec()["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
        out.append((re.compile(pattern), path))
    return out


def _enum_values(schema: dict) -> set[str] | None:
    """The values a schema lists (enums, oneOf of enums, arrays of them); None when it lists none."""
    schema = _resolve(schema)
    if "enum" in schema:
        return {str(v) for v in schema["enum"]}
    if schema.get("type") == "array":
        return _enum_values(schema["items"])
    values: set[str] = set()
    for sub in schema.get("oneOf", []):
        got = _enum_values(sub)
        if got is not None:
            values |= got
    return values or None


def _check_value(path: str, name: str, param: dict, value: str) -> None:
    schema = _resolve(param.get("schema", {}))
    if name == "selections":
        # The enum is the first alternative; the second ("any string") is the API's escape hatch, not a list.
        allowed = set(_resolve(schema["items"])["oneOf"][0]["enum"])
        for sel in value.split(","):
            assert sel in allowed, f"{path}: selection {sel!r} is not in the spec's enum"
        return
    if name in ("cat", "stat"):
        allowed = _enum_values(schema)
        if allowed is not None:
            for item in value.split(","):
                assert item in allowed, f"{path}: {name}={item!r} is not one the spec allows"
    if schema.get("type") == "integer":
        assert value.isdigit(), f"{path}: {name}={value!r} is not an integer"
        assert schema.get("minimum", 0) <= int(value) <= schema.get("maximum", 1 << 31), \
            f"{path}: {name}={value} is out of the spec's range"


def check_url(url: str) -> str:
    """Assert that a v2 URL is one the spec defines; returns the spec path it matched."""
    parts = urlsplit(url)
    assert parts.path.startswith("/v2/"), url
    path = parts.path[len("/v2"):]
    matches = [template for pattern, template in _templates() if pattern.match(path)]
    # A literal path wins over a template (/user/bars over /user/{crimeId}/crimes-like patterns).
    literal = [m for m in matches if "{" not in m]
    assert matches, f"{url}: no such path in the spec"
    template = literal[0] if literal else matches[0]
    if not literal:
        for seg, tpl in zip(path.split("/"), template.split("/"), strict=True):
            if tpl == "{id}":
                assert seg.isdigit() and int(seg) > 0, f"{url}: {{id}} is {seg!r}"
    op = spec()["paths"][template]["get"]
    params = _parameters(op)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [n for n, _ in query]
    assert len(names) == len(set(names)), f"{url}: a parameter given twice"
    for name, value in query:
        assert name not in _EVERYWHERE, f"{url}: the collector sends no {name}"
        assert name in params, f"{url}: {template} takes no parameter {name!r}"
        assert params[name].get("in") == "query"
        _check_value(url, name, params[name], value)
    for name, param in params.items():
        if param.get("required") and param.get("in") == "query":
            assert name in names, f"{url}: {template} requires {name!r}"
    return template


# ------------------------------------------------------------------------------------------ the table
def derived_table(section: str) -> dict[str, dict]:
    """endpoints.USER / FACTION as the spec says them."""
    enum_name = {"user": "UserSelectionName", "faction": "FactionSelectionName"}[section]
    enum = set(spec()["components"]["schemas"][enum_name]["oneOf"][0]["enum"])
    out: dict[str, dict] = {}
    for path, item in spec()["paths"].items():
        segs = path.strip("/").split("/")
        if segs[0] != section or not (len(segs) == 2 or (len(segs) == 3 and segs[1] == "{id}")):
            continue
        op = item["get"]
        params = _parameters(op)
        names = tuple(sorted(n for n, p in params.items() if p.get("in") == "query" and n not in _EVERYWHERE))
        key_param = next(p["$ref"].split("/")[-1] for p in op["parameters"] if "ApiKey" in p.get("$ref", ""))
        levels = {key_param[len("ApiKey"):].lower()}
        said = re.search(r"Requires (public|minimal|limited|full)", op.get("description", ""), re.IGNORECASE)
        if said:
            levels.add(said.group(1).lower())
        entry = out.setdefault(segs[-1].lower(), {"access": "public"})
        entry["access"] = max([entry["access"], *levels], key=LEVELS.index)
        if len(segs) == 3:
            entry["by_id"] = names
            continue
        c = op["responses"]["200"]["content"]
        props = _props(next(iter(c.values()))["schema"])
        entry.update(segment=segs[1], own=names, members=props,
                     required=tuple(sorted(n for n, p in params.items() if p.get("required") and p["in"] == "query")),
                     combinable=segs[1].lower() in enum and "standalone" not in op.get("description", ""))
    return out


@pytest.mark.parametrize("section", ["user", "faction"])
def test_the_selection_table_is_the_specs(section):
    table = endpoints.V2[section]
    derived = derived_table(section)
    assert set(table) == set(derived)
    for name, want in derived.items():
        got = table[name]
        assert got.segment == want["segment"], name
        assert tuple(sorted(got.own)) == want["own"], name
        assert (tuple(sorted(got.by_id)) if got.by_id is not None else None) == want.get("by_id"), name
        assert got.access == want["access"], name
        assert set(got.members) == (want["members"] or {"snapshot"}), name
        assert got.required == want["required"], name
        assert got.combinable == want["combinable"], name
    # The combined path takes every parameter the table says it may carry.
    combined = _parameters(spec()["paths"][f"/{section}"]["get"])
    assert endpoints.COMBINED_PARAMS[section] <= set(combined)
    assert {"selections", "id"} <= set(combined)


def test_selections_the_spec_calls_v1_only_are_named():
    enum = spec()["components"]["schemas"]["FactionSelectionName"]["oneOf"][0]["description"]
    listed = set(re.findall(r"'(\w+)'", enum.split("not available in API v2:")[1]))
    assert listed == endpoints.ONLY_V1["faction"]
    torn = spec()["components"]["schemas"]["TornSelectionName"]["oneOf"][0]["description"]
    assert set(re.findall(r"'(\w+)'", torn.split("not available in API v2:")[1])) == endpoints.ONLY_V1["torn"]


# ------------------------------------------------------------------------------------------ every URL
def _item(section: str, name: str) -> str:
    """A config fetch item for a selection, with a value for each parameter the spec requires."""
    sel = endpoints.V2[section][name]
    if not sel.required:
        return name
    path = f"/{section}/{sel.segment}"
    params = _parameters(spec()["paths"][path]["get"])
    values = []
    for required in sel.required:
        allowed = sorted(_enum_values(params[required]["schema"]) or ["1"])
        values.append(f"{required}={allowed[0]}")
    return f"{name}:{'&'.join(values)}"


def _config(section: str, items: list[str], **extra) -> dict:
    keys = [{"key": "env:TK_OWN", "owner": str(PLAYER), "faction": FACTION, "access": "full"},
            {"key": "env:TK_OTHER", "owner": "1", "access": "full"}]
    table = "players" if section == "user" else "factions"
    target = {"id": PLAYER if section == "user" else FACTION, "fetch": items, **extra}
    return {"keys": keys, table: [target]}


def _jobs(section: str, items: list[str], **extra):
    return build_jobs(parse_config(_config(section, items, **extra), env=KEYS))


def polled(section: str) -> list[str]:
    return sorted(set(endpoints.V2[section]) - endpoints.NOT_POLLED[section])


def forms(section: str) -> list[tuple[str, str]]:
    """(selection, item) for every selection the config accepts, by id where the spec allows and own."""
    out = []
    for name in polled(section):
        item = _item(section, name)
        out.append((name, item))
        sel = endpoints.V2[section][name]
        if sel.by_id is not None:
            out.append((name, item + "(own)"))
    return out


@pytest.mark.parametrize("section", ["user", "faction"])
def test_every_single_selection_builds_a_spec_url(section):
    seen = set()
    for name, item in forms(section):
        jobs = _jobs(section, [item])
        assert len(jobs) == 1, item
        req = jobs[0].request
        template = check_url(req.url(BASE))
        seen.add(template)
        sel = endpoints.V2[section][name]
        if name in endpoints.GLOBAL[section]:
            assert template == f"/{section}/{sel.segment}" and req.own_id is req.own_faction is None
        elif item.endswith("(own)") or sel.by_id is None:
            # No id in the URL: the entity's own key must ask.
            assert template == f"/{section}/{sel.segment}", item
            assert (req.own_id, req.own_faction) == ((str(PLAYER), None) if section == "user" else (None, str(FACTION)))
        else:
            assert template == f"/{section}/{{id}}/{sel.segment}", item
            assert req.own_id is None and req.own_faction is None
        assert req.access == LEVELS.index(sel.access), item
    # Every path of the section that takes no other kind of id is reachable.
    reachable = {p for p in spec()["paths"] if p.startswith(f"/{section}/")
                 and p.split("/")[-1].lower() in polled(section) and ("{" not in p or "{id}" in p)}
    assert seen == reachable


@pytest.mark.parametrize("section", ["user", "faction"])
def test_every_pair_of_selections_builds_spec_urls(section):
    """Two items of one entity: one combined request where the spec allows it, else one each; never two
    selections answering in the same member, never a parameter that reaches the other selection."""
    combined = 0
    table = endpoints.V2[section]
    for (a, item_a), (b, item_b) in itertools.combinations(forms(section), 2):
        if a == b:
            continue
        jobs = _jobs(section, [item_a, item_b])
        asked = []
        for job in jobs:
            url = job.request.url(BASE)
            template = check_url(url)
            query = dict(parse_qsl(urlsplit(url).query))
            if template == f"/{section}":
                combined += 1
                names = query["selections"].split(",")
                assert len(names) == 2 and all(table[n].combinable for n in names)
                assert not set(table[names[0]].members) & set(table[names[1]].members), url
                form = job.bundle.form
                assert ("id" in query) == (form == "id"), url
                assert (job.request.own_id or job.request.own_faction) == (str(PLAYER if section == "user" else FACTION)
                                                                           if form == "own" else None), url
                asked += names
            else:
                asked.append(template.split("/")[-1].lower())
        assert sorted(asked) == sorted([a, b])
    assert combined > 100


def test_one_entitys_items_take_few_requests():
    jobs = _jobs("user", ["profile", "personalstats:networth", "battlestats", "bars", "cooldowns", "faction",
                          "v1:profile", "v1:bars"])
    urls = sorted(j.request.url(BASE) for j in jobs)
    assert urls == [
        f"{BASE}/user/{PLAYER}?selections=profile,bars",
        f"{BASE}/v2/user?selections=battlestats,bars,cooldowns",
        f"{BASE}/v2/user?selections=profile,personalstats,faction&id={PLAYER}&cat=networth",
    ]
    # A public item never waits on an own key; and an item whose parameter another would take goes apart.
    jobs = _jobs("user", ["profile", "personalstats:networth(own)", "races:cat=official", "bars"])
    assert sorted(j.request.url(BASE) for j in jobs) == [
        f"{BASE}/v2/user/{PLAYER}/profile",
        f"{BASE}/v2/user/races?cat=official",
        f"{BASE}/v2/user?selections=personalstats,bars&cat=networth",
    ]
    for job in jobs:
        check_url(job.request.url(BASE))


def test_the_other_urls_the_collector_builds():
    cfg = parse_config({
        "keys": [{"key": "env:TK_OWN", "owner": str(PLAYER), "access": "limited"}],
        "territories": [{"all": True, "api": "v2"}, {"ids": ["AAC", "CAA"], "api": "v2"}],
        "factions": [{"id": FACTION, "fetch": ["basic", "territoryownership", "rackets", "territory"],
                      "members": True}],
        "learn_owners": True,
    }, env=KEYS)
    urls = [j.request.url(BASE) for j in build_jobs(cfg)]
    collector = Collector(cfg, sink=None)  # type: ignore[arg-type]  (never run: only its jobs are read)
    urls += [j.request.url(BASE) for j in collector.scheduler.jobs.values() if j.origin == KEY_JOB]
    templates = sorted(check_url(u) for u in urls if "/v2/" in u)
    assert "/key/info" in templates and "/torn/territory" in templates
    # The ownership list is asked once although [[territories]] all and the faction both want it.
    assert sum(u.startswith(f"{BASE}/v2/faction/territoryownership") for u in urls) == 1
    assert f"{BASE}/v2/faction/rackets" in urls


def derived_offset_paging() -> dict[str, endpoints.OffsetPaging]:
    """The spec's paths that take `offset` and `limit` but whose response has no `_metadata` (no links).
    (Combined `?selections=` paths aside: the collector asks such lists alone, by their own path.)"""
    out = {}
    for path, item in spec()["paths"].items():
        op = item.get("get", {})
        params = _parameters(op)
        if "offset" not in params or "limit" not in params or "selections" in params or "{" in path:
            continue
        schema = next(iter(op["responses"]["200"]["content"].values()))["schema"]
        if "_metadata" in _props(schema):
            continue
        members = [m for m, s in _resolve(schema)["properties"].items() if _resolve(s).get("type") == "array"]
        assert len(members) == 1, path
        limit = _resolve(params["limit"])["schema"]
        out["v2" + path] = endpoints.OffsetPaging(members[0], limit.get("default", 20), limit.get("maximum"))
    return out


def test_the_lists_paged_by_offset_without_links_are_the_specs():
    assert endpoints.OFFSET_PAGED == derived_offset_paging()
    # The one the collector polls, at the spec's largest page.
    assert endpoints.PAGE_LIMIT["territoryownership"] == str(endpoints.OFFSET_PAGED[
        "v2/faction/territoryownership"].max_limit)


@pytest.mark.parametrize("path", sorted(endpoints.OFFSET_PAGED))
def test_the_next_offset_is_a_spec_url_and_a_short_page_ends_the_list(path):
    paging = endpoints.OFFSET_PAGED[path]
    client = TornClient(BASE)
    limit = min(paging.max_limit or 100, 100)
    first = ApiRequest(path, (("limit", str(limit)),))
    full, short = {paging.member: [{}] * limit}, {paging.member: [{}] * (limit - 1)}
    second = client.next_page(first, full)
    assert second is not None
    assert second.url(BASE) == f"{BASE}/{path}?limit={limit}&offset={limit}"
    third = client.next_page(second, full)
    assert third is not None and third.url(BASE) == f"{BASE}/{path}?limit={limit}&offset={2 * limit}"
    for url in (first.url(BASE), second.url(BASE), third.url(BASE)):
        check_url(url)
    assert client.next_page(third, short) is None                   # shorter than the limit: the last page
    assert client.next_page(third, {paging.member: []}) is None
    # Without a limit the spec's default page size counts; links, when an answer has them, win.
    bare = ApiRequest(path)
    assert client.next_page(bare, {paging.member: [{}] * (paging.default_limit - 1)}) is None
    nxt = client.next_page(bare, {paging.member: [{}] * paging.default_limit})
    assert nxt is not None and nxt.params == (("offset", str(paging.default_limit)),)
    assert client.next_page(first, {**full, "_metadata": {"links": {"next": None, "prev": None}}}) is None


@pytest.mark.parametrize("items, message", [
    (["gym"], "v1:gym"),                                 # in the enum only as a v1 fallback: no v2 path
    (["mainnews"], "not available in API v2"),           # the spec says so
    (["profile:cat=all"], "takes no parameter 'cat'"),
    (["lookup"], "not a v2"),
])
def test_items_the_spec_does_not_define_are_refused(items, message):
    section = "faction" if items == ["mainnews"] else "user"
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(section, items), env=KEYS)


def test_required_parameters_are_asked_for():
    with pytest.raises(ConfigError, match="requires cat"):
        parse_config(_config("faction", ["news"]), env=KEYS)
    assert _jobs("faction", ["news:main"])[0].request.url(BASE) == f"{BASE}/v2/faction/news?cat=main"


def test_own_data_without_the_owners_key_is_refused_by_name():
    data = _config("user", ["profile", "battlestats"])
    data["keys"] = data["keys"][1:]          # only the other player's key
    with pytest.raises(ConfigError, match=rf"battlestats can only be read with player {PLAYER}'s own key.*"
                                          rf"owner = \"{PLAYER}\""):
        parse_config(data, env=KEYS)
    data = _config("faction", ["basic", "news:main"])
    data["keys"][0].pop("faction")
    with pytest.raises(ConfigError, match=f"news can only be read with the key of a member of faction {FACTION}.*"
                                          f"faction = {FACTION}"):
        parse_config(data, env=KEYS)
    data = _config("user", ["money"])
    data["keys"][0]["access"] = "minimal"
    with pytest.raises(ConfigError, match="money needs a limited key"):
        parse_config(data, env=KEYS)


@pytest.mark.parametrize("section", ["user", "faction"])
def test_the_v2_urls_a_code_23_switches_to_are_the_specs(section):
    """After 23 ("only in API v2") a v1 item is asked through v2: those URLs are spec URLs too."""
    from tornstore.eventstore.collector.scheduler import request_for

    switched = 0
    for name in sorted(endpoints.V1[section]):
        for item in (f"v1:{name}", f"v1:{name}(own)"):
            try:
                jobs = _jobs(section, [item])
            except ConfigError:
                continue                                   # e.g. own data of a player without a key
            for job in jobs:
                alternative = endpoints.alternative(job.bundle, 23)
                if name not in endpoints.V2[section] or endpoints.V2[section][name].required:
                    assert alternative is None, item       # nothing to switch to: a gap says so
                    continue
                for bundle in alternative:
                    check_url(request_for(bundle, job.target).url(BASE))
                    switched += 1
    assert switched > 10
