"""Unchanged polls append nothing, for every view: only the clock moved between two polls.

Each fixture body (real responses, tests/fixtures/torn-api), each own-key form and each v2 form the
simulator serves (spec-valid bodies) is polled twice; the second copy has every clock-only field moved
(timestamps of activity, countdowns, `relative` texts, tick timers, days counters). The second poll must
append no event. On a SQLite file and on a PostgreSQL database.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest

from tornstore.eventstore.canonical import noise_paths
from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Owner, Response
from tornstore.eventstore.routing import route

from .conftest import FIXTURE_URLS, OBSERVED_AT, fixture_body

# Fields that only restate the clock, wherever they appear (fact 4 of the Torn API notes).
CLOCK_FIELDS = {"relative", "until", "time_left", "ticktime", "tick_time", "fulltime", "full_time", "server_time",
                "days_in_faction", "age", "days_old", "timeout", "cooldown", "useractivity", "activestreak",
                "daysbeendonator", "donator_days", "duration", "days_married"}
# Fields that are clock-only inside these parents.
CLOCK_CHILDREN = {"last_action": {"timestamp", "status"}, "status": {"description", "details"},
                  "activity": {"time", "streak"}, "life": {"current"}, "energy": {"current"}, "nerve": {"current"},
                  "happy": {"current"}, "cooldowns": {"drug", "medical", "booster"}}
OWNER = Owner(player_id=100, faction_id=39894)


def moved(obj: Any, parent: str = "") -> Any:
    """A copy of `obj` with every clock-only field moved on."""
    if isinstance(obj, list):
        return [moved(item, parent) for item in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if key in CLOCK_FIELDS or key in CLOCK_CHILDREN.get(parent, ()):
            out[key] = _later(value)
        else:
            out[key] = moved(value, key)
    return out


def _later(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + 61
    if isinstance(value, str):
        return value + " (a minute later)"
    if isinstance(value, dict):
        return {k: _later(v) for k, v in value.items()}
    return value


OWN_KEY_FORMS = {
    "https://api.torn.com/v2/user/bars": {"bars": {
        "energy": {"current": 100, "maximum": 150, "increment": 5, "interval": 600, "tick_time": 60, "full_time": 600},
        "life": {"current": 500, "maximum": 700, "increment": 10, "interval": 300, "tick_time": 30, "full_time": 600}}},
    "https://api.torn.com/v2/user/travel": {"travel": {"destination": "Japan", "method": "Airstrip",
                                                       "departed_at": 1764000000, "arrival_at": 1764003000,
                                                       "time_left": 1200}},
    "https://api.torn.com/v2/user/personalstats?cat=popular": {"personalstats": {
        "other": {"activity": {"time": 86400, "streak": {"best": 40, "current": 3}}, "awards": 12,
                  "merits_bought": 3, "refills": {"energy": 10, "nerve": 2}, "donator_days": 300,
                  "ranked_war_wins": 4},
        "networth": {"total": 1000000}}},
    "https://api.torn.com/user/?selections=icons": {"icons": {"icon6": "Male", "icon15": "Hospital - 3 mins left"},
                                                     "server_time": 1764100000},
    "https://api.torn.com/user/?selections=basic,icons,travel": {
        "level": 5, "gender": "Male", "player_id": 100, "name": "p", "status": {"state": "Okay", "description": "Okay"},
        "icons": {"icon15": "Hospital - 3 mins left"}, "server_time": 1764100000,
        "travel": {"destination": "Torn", "method": "Standard", "timestamp": 1764000000, "departed": 1763990000,
                   "time_left": 0}},
    "https://api.torn.com/faction/39894?selections=rankedwars": {"rankedwars": {}},
}


def _cases() -> list[tuple[str, Any]]:
    cases = [(url, fixture_body(name)) for name, url in FIXTURE_URLS.items() if "error" not in name]
    return cases + list(OWN_KEY_FORMS.items())


@pytest.mark.parametrize(("url", "body"), _cases(), ids=[u.split("api.torn.com/")[1] for u, _ in _cases()])
def test_a_poll_where_only_the_clock_moved_appends_nothing(db_path, url, body):
    later = moved(copy.deepcopy(body))
    conn = connect_sync(db_path)
    try:
        migrate(conn)
        first = ingest_batch(conn, [Response(url=url, observed_at=OBSERVED_AT, body=body, owner=OWNER)])
        assert first.rejected == [] and first.appended > 0
        second = ingest_batch(conn, [Response(url=url, observed_at=OBSERVED_AT + 240, body=later, owner=OWNER)])
        assert second.rejected == []
        changed = [str(p.entity_type) + ":" + p.view for p in route(url, later, OWNER)]
        assert second.appended == 0, f"stored noise in {changed}"
    finally:
        close_sync(conn)


def test_the_clock_mover_moves_every_body_that_holds_a_clock_field():
    # Guard against a mover that moves nothing (then the test above could not fail): only wars,
    # territories and rackets, which hold no clock-only field, come out unmoved.
    unmoved = sorted(url.split("api.torn.com/")[1] for url, body in _cases() if moved(copy.deepcopy(body)) == body)
    assert unmoved == sorted(["torn/?selections=rackets", "torn/?selections=rankedwars",
                              "torn/AAC,CAA?selections=territory", "torn/?selections=territorywars",
                              "v2/faction/1/wars", "v2/faction/2/wars", "v2/faction/11559/rankedwars",
                              "faction/39894?selections=rankedwars"])


def test_every_view_the_fixtures_route_to_has_its_rules_considered():
    """Views whose payloads hold a clock field must have noise rules; the list says which hold none."""
    views = {p.view for url, body in _cases() for p in route(url, body, OWNER)}
    without_rules = sorted(v for v in views if not noise_paths(v))
    assert without_rules == sorted([
        "v1.faction_rankedwars", "v1.racket", "v1.rackets", "v1.rankedwar", "v1.territory", "v1.territorywar",
        "v1.territorywars", "v2.members", "v2.rankedwar", "v2.war", "v2.wars",
    ]), without_rules


def _simulator_cases() -> list[tuple[str, Any, Owner]]:
    """Every v2 form the simulator serves (the spec test's list), as (url, body, owner of the key)."""
    from urllib.parse import urlencode

    from tornstore.eventstore.simulator.workload import answer

    from .test_simulator_spec import _requests, busy_world

    world = busy_world()
    cases = []
    for _spec_path, path, query, key in _requests(world):
        pid = world.owners[key]
        url = f"https://api.torn.com/v2{path}" + (f"?{urlencode(query)}" if query else "")
        body = answer(world, url, owner=pid)
        if "error" not in body:
            cases.append((url, body, Owner(player_id=pid, faction_id=world.players[pid].faction_id)))
    return cases


def test_simulator_bodies_polled_twice_with_only_the_clock_moved_append_nothing(db_path):
    cases = _simulator_cases()
    assert len(cases) > 100
    noisy = []
    conn = connect_sync(db_path)
    try:
        migrate(conn)
        for i, (url, body, owner) in enumerate(cases):
            at = OBSERVED_AT + 1000 * i
            ingest_batch(conn, [Response(url=url, observed_at=at, body=body, owner=owner)])
            later = moved(copy.deepcopy(body))
            report = ingest_batch(conn, [Response(url=url, observed_at=at + 240, body=later, owner=owner)])
            if report.appended:
                noisy.append(url)
    finally:
        close_sync(conn)
    assert noisy == []
