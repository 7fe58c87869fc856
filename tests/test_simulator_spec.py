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

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tornstore.eventstore.simulator import World

from .conftest import OPENAPI_SPEC

REPO = Path(__file__).resolve().parent.parent
SIMULATOR_DIR = REPO / "eventstore" / "simulator"
SPEC: dict = json.loads(OPENAPI_SPEC.read_text())
SCHEMAS: dict = SPEC["components"]["schemas"]
REF = "#/components/schemas/"
SPEC_NAME = f"tests/fixtures/torn-api/{OPENAPI_SPEC.name}"


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
            + f"\nTERRITORY_CODES = (\n{_wrap(codes)}\n)\n")


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
        text += f"\n# {comment}\n{name} = (\n{_wrap(items)}\n)\n"
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
