"""The simulator against the official v2 spec: every v2 path it serves, validated with the spec's own schemas.

The simulator is not the oracle. Its routing table (bodies.V2_ROUTES) is walked here, each path form is asked
over HTTP with ids where the spec has `{id}` and without where it has the id-less form, and each body is
checked against the spec's 200 response schema for that path with jsonschema (Draft 2020-12). The check is
strict: objects are closed (a field the spec does not declare fails), integers keep to their int32/int64
formats; the one relaxation is reading `oneOf` as `anyOf`, since the spec writes open enums that way.

The modules the simulator generates from the spec (territory codes, personal stats shapes) are checked
here too. When the spec changes, rewrite them with `python -m tests.test_simulator_spec --write`.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tornstore.eventstore.simulator import World, start_simulator
from tornstore.eventstore.simulator.bodies import V2_ROUTES

from .conftest import OPENAPI_SPEC

REPO = Path(__file__).resolve().parent.parent
SIMULATOR_DIR = REPO / "eventstore" / "simulator"
SPEC: dict = json.loads(OPENAPI_SPEC.read_text())
SCHEMAS: dict = SPEC["components"]["schemas"]
REF = "#/components/schemas/"
SPEC_NAME = f"tests/fixtures/torn-api/{OPENAPI_SPEC.name}"
KEYS = {"owner": "AbCdEfGh12345678", "traveler": "TrAvElEr12345678", "abroad": "AbRoAd1234567890",
        "loner": "LoNeR12345678901"}  # each key's owner is set in the world fixture


# ---- the spec's schemas, made strict ---------------------------------------------------------------

def _merge_all_of(node: dict, parts: list[dict]) -> dict:
    """allOf of object schemas as one object schema, so that it can be closed as a whole."""
    props, required = dict(node.get("properties", {})), list(node.get("required", []))
    for part in parts:
        assert "properties" in part, f"allOf of a non-object: {part}"
        for name, schema in part["properties"].items():
            if props.get(name, {}) == {}:  # {}: a required name the spec did not declare (see _strict)
                props[name] = schema
            elif schema != {} and props[name] != schema:
                props[name] = {"allOf": [props[name], schema]}
        required += [name for name in part.get("required", []) if name not in required]
    node.update(type="object", properties=props, required=required)
    return node


@cache
def strict_component(name: str) -> dict:
    return _strict(SCHEMAS[name])


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = strict_component(node["$ref"].removeprefix(REF))
    return node


def _strict(node: Any) -> Any:
    """oneOf read as anyOf, allOf merged, every object closed (its required names count as declared)."""
    if isinstance(node, list):
        return [_strict(x) for x in node]
    if not isinstance(node, dict) or "$ref" in node:
        return node
    out = {("anyOf" if k == "oneOf" else k): _strict(v) for k, v in node.items()
           if k not in ("description", "example", "examples")}
    if "allOf" in out:
        out = _merge_all_of(out, [_resolve(part) for part in out.pop("allOf")])
    if "properties" in out:
        undeclared = [name for name in out.get("required", []) if name not in out["properties"]]
        out["properties"] = {**out["properties"], **{name: {} for name in undeclared}}
        out["additionalProperties"] = False
    return out


def response_schema(path: str) -> dict:
    """The strict schema of a path's 200 answer. A generic path (/user, /faction: `anyOf` of one schema per
    selection) takes several selections at once, so its alternatives are opened at the top and the body's
    top-level names must each be declared by an alternative that validates."""
    schema = SPEC["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if not alternatives:
        return _strict(schema)

    def opened(node: dict) -> dict:
        node = _resolve(node)
        if "anyOf" in node:
            return {"anyOf": [opened(x) for x in node["anyOf"]]}
        return {k: v for k, v in node.items() if k != "additionalProperties"}

    return {"anyOf": [opened(x) for x in alternatives], "unevaluatedProperties": False}


FORMATS = FormatChecker()


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -2**31 <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -2**63 <= value < 2**63


@cache
def validator(path: str) -> Draft202012Validator:
    for name in SCHEMAS:
        strict_component(name)
    document = {"components": {"schemas": {name: strict_component(name) for name in SCHEMAS}},
                "answer": response_schema(path)}
    registry = Registry().with_resource("urn:torn-v2", DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": "urn:torn-v2#/answer"}, registry=registry, format_checker=FORMATS)


def problems(path: str, body: Any) -> list[str]:
    errors = sorted(validator(path).iter_errors(body), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in errors[:5]]


def test_the_strict_reading_rejects_what_the_spec_does_not_say():
    """The checker itself: it must fail on an undeclared field, a missing field, a wrong type, a code outside
    FactionTerritoryEnum and an int32 overflow, and accept an open enum's unknown value."""
    status = {"description": "Okay", "details": None, "state": "Okay", "color": "green", "until": None}
    good = {"profile": {"id": 1, "name": "x", "level": 1, "gender": "Male", "status": status}}
    assert problems("/user/basic", good) == []
    assert problems("/user/basic", {"profile": {**good["profile"], "invented": 1}})
    assert problems("/user/basic", {"profile": {k: v for k, v in good["profile"].items() if k != "level"}})
    assert problems("/user/basic", {"profile": {**good["profile"], "level": "1"}})
    assert problems("/user/basic", {"profile": {**good["profile"], "id": 2**31}})
    open_state = {**status, "state": "SomethingNew"}  # UserStatus.state is an open enum (oneOf enum|string)
    assert problems("/user/basic", {"profile": {**good["profile"], "status": open_state}}) == []
    row = {"id": "AAC", "sector": 1, "size": 1, "density": 1, "slots": 1, "respect": 1,
           "coordinates": {"x": 1.0, "y": 1.0}, "neighbors": ["CAA"]}
    links = {"links": {"next": None, "prev": None}}
    assert problems("/torn/territory", {"territory": [row], "_metadata": links}) == []
    assert problems("/torn/territory", {"territory": [{**row, "id": "AEG"}], "_metadata": links})
    # a generic path takes several selections, each checked, and nothing undeclared beside them
    bars = {"energy": 1}
    assert problems("/user", {**good, "cooldowns": {"drug": 0, "medical": 0, "booster": 0}}) == []
    assert problems("/user", {**good, "cooldowns": {"drug": 0}})
    assert problems("/user", {**good, "invented": bars})


# ---- every path the simulator serves -----------------------------------------------------------------

def _selection(path: str) -> str | None:
    """The selection a path names: /user/{id}/basic -> basic; the combined /user -> None."""
    parts = path.strip("/").split("/")
    return parts[-1] if len(parts) > 1 else None


def test_the_simulator_serves_only_spec_paths_and_every_form_of_them():
    """Every routing-table path is a GET path of the spec; a selection served in one form is served in every
    form the spec has (/user/basic and /user/{id}/basic)."""
    for path in V2_ROUTES:
        assert "get" in SPEC["paths"].get(path, {}), f"the simulator serves {path}, which the spec does not define"
    for path in V2_ROUTES:
        section, selection = path.strip("/").split("/")[0], _selection(path)
        if selection is None:
            continue
        for form in (f"/{section}/{selection}", f"/{section}/{{id}}/{selection}"):
            if form in SPEC["paths"]:
                assert form in V2_ROUTES, f"{path} is served but not its other form {form}"


@pytest.fixture
def world() -> World:
    return busy_world()


def busy_world() -> World:
    """A world with something in every corner the schemas describe: wars of both kinds under way, members
    in hospital, abroad and in the air, a faction without a co-leader, players without a faction."""
    world = World(seed=12, factions=3, members_per_faction=(6, 9), territories=500)
    mine, theirs, third = sorted(world.factions)
    for war in list(world.ranked_wars.values()):
        if war.end == 0:
            world.end_ranked_war(war.id)
    world.start_ranked_war(mine, theirs, target=10**6)
    code = next(c for c, t in world.territories.items() if t.owner not in (None, mine) and t.war_id is None)
    world.start_territory_war(code, mine)
    co_leader = world.factions[third].co_leader
    if co_leader is not None:
        world.leave_faction(co_leader)
    world.advance(3 * 3600)
    members = world.factions[mine].members
    world.set_status(members[1], "Hospital", 3600, details="Mugged by someone")
    world.set_status(members[2], "Traveling", 3600)
    world.set_status(members[3], "Abroad", 7200, place="Japan")
    loner = next(pid for pid, p in world.players.items() if p.faction_id is None)
    world.owners = {KEYS["owner"]: members[0], KEYS["traveler"]: members[2], KEYS["abroad"]: members[3],
                    KEYS["loner"]: loner}
    return world


def _requests(world: World) -> list[tuple[str, str, dict[str, str], str]]:
    """(spec path, request path, query, key) for every form the routing table serves: ids where the spec
    has {id} (the key owner's, someone else's, a factionless player's), and the id-less forms asked with
    several keys; the combined /user, /faction, ... with every selection at once, with and without ?id=."""
    mine, theirs, third = sorted(world.factions)
    owner, loner = world.owners[KEYS["owner"]], world.owners[KEYS["loner"]]
    ids = {"user": [owner, world.factions[theirs].members[0], loner], "faction": [mine, theirs, third],
           "rankedWarId": [max(w.id for w in world.ranked_wars.values() if w.end)]}
    own_keys = {"user": list(KEYS.values()), "key": list(KEYS.values()), "faction": [KEYS["owner"]]}
    out = []
    for path, route in V2_ROUTES.items():
        section, selection = path.strip("/").split("/")[0], _selection(path)
        if selection is None:
            continue
        placeholder = next((p.strip("{}") for p in path.split("/") if p.startswith("{")), None)
        for query in route.queries:
            if placeholder is None:
                for key in own_keys.get(section, [KEYS["owner"]]):
                    out.append((path, path, dict(query), key))
            else:
                for ident in ids["user" if placeholder == "id" and section == "user" else
                                 "faction" if placeholder == "id" else placeholder]:
                    out.append((path, path.replace(f"{{{placeholder}}}", str(ident)), dict(query), KEYS["owner"]))
    for section in ("user", "faction", "torn", "key"):
        path = f"/{section}"
        idless = [_selection(p) for p in V2_ROUTES if p.startswith(f"/{section}/") and p.count("/") == 2]
        with_id = [_selection(p) for p in V2_ROUTES if p.startswith(f"/{section}/{{id}}/")]
        query: dict[str, str] = {}
        for sel in idless:
            query.update(V2_ROUTES[f"/{section}/{sel}"].queries[0])
        keys = own_keys.get(section, [KEYS["owner"]])
        out += [(path, path, {"selections": ",".join(idless), **query}, key) for key in keys]
        out += [(path, path, {"selections": sel, **V2_ROUTES[f"/{section}/{sel}"].queries[0]}, KEYS["owner"])
                for sel in idless]
        if with_id:
            for ident in ids[section]:
                out.append((path, path, {"selections": ",".join(with_id), "id": str(ident), **query}, KEYS["owner"]))
    return out


async def test_every_served_path_answers_as_the_spec_says(world):
    requests = _requests(world)
    failures = []
    async with await start_simulator(world, rate_limit=None, own_ids=world.owners) as sim, \
            aiohttp.ClientSession() as session:
        for spec_path, path, query, key in requests:
            async with session.get(f"{sim.url}/v2{path}", params={**query, "key": key}) as resp:
                body = await resp.json()
            shown = f"/v2{path}?{'&'.join(f'{k}={v}' for k, v in query.items())}"
            if not isinstance(body, dict) or "error" in body:
                failures.append(f"{shown}: {body}")
            else:
                failures += [f"{shown} ({spec_path}): {p}" for p in problems(spec_path, body)]
    assert not failures, f"{len(failures)} answers disagree with the spec:\n" + "\n".join(failures[:40])
    served = {spec_path for spec_path, *_ in requests}
    assert served == set(V2_ROUTES), set(V2_ROUTES) - served  # every path of the table was asked
    assert len(requests) > 100


async def test_forms_the_spec_does_not_have_are_refused(world):
    """Error 4 for a path the spec lacks (an {id} form of an own-only selection, an id in the path where the
    spec puts it in ?id=, an id on a global selection) and for one the simulator does not serve (ammo)."""
    mine = sorted(world.factions)[0]
    someone = world.factions[mine].members[4]
    async with await start_simulator(world, rate_limit=None, own_ids=world.owners) as sim, \
            aiohttp.ClientSession() as session:
        for path in (f"/v2/user/{someone}/bars", f"/v2/user/{someone}/battlestats", f"/v2/user/{someone}",
                     f"/v2/faction/{mine}/territoryownership", f"/v2/faction/{mine}/rackets", "/v2/key/1/info",
                     "/v2/user/ammo", f"/v2/faction/{mine}"):
            async with session.get(f"{sim.url}{path}", params={"key": KEYS["owner"], "selections": "basic"}) as r:
                body = await r.json()
            assert body.get("error", {}).get("code") == 4, (path, body)


# ---- modules generated from the spec ---------------------------------------------------------------

def _wrap(items: list[str], indent: str = "    ", width: int = 116) -> str:
    lines, line = [], indent
    for item in items:
        piece = f'"{item}", '
        if len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line.rstrip())
    return "\n".join(lines)


def _header(what: str) -> str:
    return (f'"""{what}\n\nGenerated from the official v2 spec ({SPEC_NAME}, info.version '
            f'{SPEC["info"]["version"]})\nby `python -m tests.test_simulator_spec --write`; '
            'tests/test_simulator_spec.py fails when it no longer\nmatches the spec. Do not edit by hand.\n"""\n')


def territory_codes_module() -> str:
    codes = SCHEMAS["FactionTerritoryEnum"]["enum"]
    return (_header("The territory codes of the real map: the spec's FactionTerritoryEnum, in its order.")
            + f"\nTERRITORY_CODES: tuple[str, ...] = (\n{_wrap(codes)}\n)\n")


def _leaves(node: dict, prefix: str = "") -> Iterator[str]:
    """The dotted paths of a personal stats schema's leaves. Where the spec offers alternatives (crimes v1
    or v2), the v2 one is taken: the crimes system every player has now."""
    while "$ref" in node:
        node = SCHEMAS[node["$ref"].removeprefix(REF)]
    if "allOf" in node:
        for part in node["allOf"]:
            yield from _leaves(part, prefix)
    elif "oneOf" in node:
        chosen = [x for x in node["oneOf"] if x.get("$ref", "").endswith("V2")]
        assert len(chosen) == 1, f"{prefix}: which alternative?"
        yield from _leaves(chosen[0], prefix)
    elif "properties" in node:
        for name, child in node["properties"].items():
            yield from _leaves(child, f"{prefix}.{name}" if prefix else name)
    else:
        assert node.get("type") == "integer" or (node.get("type") == "string" and prefix.endswith(".version")), \
            f"{prefix}: a leaf the simulator cannot fill ({node})"
        yield prefix


def personalstats_module() -> str:
    def shape(name: str) -> list[str]:
        return list(_leaves(SCHEMAS[name]["properties"]["personalstats"]))

    public = shape("UserPersonalStatsFullPublic")
    categories = []
    for alternative in SCHEMAS["UserPersonalStatsCategory"]["properties"]["personalstats"]["oneOf"]:
        paths = list(_leaves(alternative))
        top = paths[0].split(".")[0]
        # a category's answer is the FullPublic subtree of that name (the simulator relies on it)
        assert paths == [p for p in public if p.split(".")[0] == top], top
        categories.append(top)
    parts = [
        ("FULL", "UserPersonalStatsFull: cat=all for the key's owner", shape("UserPersonalStatsFull")),
        ("PUBLIC", "UserPersonalStatsFullPublic: cat=all for anyone else", public),
        ("POPULAR", "UserPersonalStatsPopular: cat=popular", shape("UserPersonalStatsPopular")),
        ("CATEGORIES", "UserPersonalStatsCategory: the cat= values that answer a PUBLIC subtree", categories),
        ("STAT_NAMES", "PersonalStatsStatName: the stat= names", SCHEMAS["PersonalStatsStatName"]["enum"]),
    ]
    text = _header("Personal stats shapes of the spec, as the dotted paths of their leaves (all integers but "
                   "crimes.version).")
    for name, comment, items in parts:
        text += f"\n# {comment}\n{name}: tuple[str, ...] = (\n{_wrap(items)}\n)\n"
    return text


GENERATED = {"territory_codes.py": territory_codes_module, "personalstats_shapes.py": personalstats_module}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_modules_match_the_spec(name):
    assert (SIMULATOR_DIR / name).read_text() == GENERATED[name](), \
        f"eventstore/simulator/{name} is stale: run python -m tests.test_simulator_spec --write"


def test_the_world_uses_only_real_territory_codes():
    from tornstore.eventstore.simulator.territory_codes import TERRITORY_CODES

    assert tuple(SCHEMAS["FactionTerritoryEnum"]["enum"]) == TERRITORY_CODES
    world = World(seed=3, factions=2, members_per_faction=(3, 4))  # the full-size map
    assert len(world.territories) == 4100 and set(world.territories) <= set(TERRITORY_CODES)
    assert all(set(t.neighbors) <= set(TERRITORY_CODES) for t in world.territories.values())


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_simulator_spec --write   (rewrites the generated simulator modules)")
    for file_name, make in GENERATED.items():
        (SIMULATOR_DIR / file_name).write_text(make())
        print(f"wrote eventstore/simulator/{file_name}")
