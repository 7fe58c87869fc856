"""The event log: routing of every fixture, change detection, idempotence, round trip, bad input."""
from __future__ import annotations

import pytest

import copy
import io
import json

import msgspec
from hypothesis import given, settings, strategies as st

from tornstore.eventstore.canonical import RULES, HashMemo, canonical_hash
from tornstore.eventstore.capture import export_events, read_capture
from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Response

from .conftest import FIXTURE_URLS, OBSERVED_AT, fixture_body, fixture_capture_lines

T0 = 1764000000  # 2025-11-24: ingest refuses times before 2004 and times ahead of the clock


def fixture_responses(observed_at=OBSERVED_AT):
    return list(read_capture(fixture_capture_lines(observed_at)))


def stream_rows(conn):
    return conn.execute(
        "SELECT entity_type, entity_id, view, version FROM streams ORDER BY entity_type, view, entity_id"
    ).fetchall()


def test_fixtures_route_into_the_expected_streams(conn, snapshot):
    report = ingest_batch(conn, fixture_responses())
    assert report.responses == len(FIXTURE_URLS)
    assert len(report.errors) == 3 and {e.code for e in report.errors} == {2, 5}
    assert report.rejected == []
    streams = stream_rows(conn)
    # a few facts a person would check by eye
    assert ("user", "1879891", "v1.profile", 1) in streams
    assert ("user", "65658", "v1.member", 1) in streams          # faction members feed player streams
    assert ("territory", "AAC", "v1.territory", 1) in streams    # multi-id call filed per territory
    assert ("rankedwar", "44751", "v2.rankedwar", 1) in streams
    assert ("territorywar", "40113", "v1.territorywar", 1) in streams
    assert [f"{t}:{i}:{v}@{n}" for t, i, v, n in streams] == snapshot


def test_error_bodies_become_gaps_not_events(conn):
    report = ingest_batch(conn, fixture_responses())
    gaps = conn.execute("SELECT source_url, error_code FROM gaps ORDER BY id").fetchall()
    assert sorted(code for _, code in gaps) == [2, 2, 5]
    assert all("key=" not in url for url, _ in gaps)
    payloads = [row[0] for row in conn.execute("SELECT payload FROM events")]
    assert not any('"error"' in p and '"code"' in p for p in payloads)
    assert report.appended == conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def test_same_capture_twice_appends_nothing(conn):
    first = ingest_batch(conn, fixture_responses())
    second = ingest_batch(conn, fixture_responses(OBSERVED_AT + 240))
    assert first.appended > 0
    assert second.appended == 0
    assert second.unchanged == first.appended
    checked = {row[0] for row in conn.execute("SELECT last_checked FROM streams")}
    assert checked == {OBSERVED_AT + 240}


def test_noise_fields_change_nothing_tracked_fields_do(conn):
    body = fixture_body("v1/user_profile.json")
    url = "https://api.torn.com/user/1879891?selections=profile"
    ingest_batch(conn, [Response(url=url, observed_at=T0 + 100, body=body)])
    noisy = copy.deepcopy(body)
    noisy["last_action"] = {"status": "Idle", "timestamp": 1663190000, "relative": "5 minutes ago"}
    noisy["status"]["description"] = "In hospital for 3 mins"
    noisy["life"]["current"] = 10
    noisy["life"]["ticktime"] = 12
    noisy["age"] += 1
    noisy["basicicons"]["icon15"] = "Hospital - 00:03:00"
    assert ingest_batch(conn, [Response(url=url, observed_at=T0 + 340, body=noisy)]).appended == 0
    levelled = copy.deepcopy(noisy)
    levelled["level"] = 101
    assert ingest_batch(conn, [Response(url=url, observed_at=T0 + 580, body=levelled)]).appended == 1
    assert stream_rows(conn) == [("user", "1879891", "v1.profile", 2)]


_TRACKED_V2_MEMBER = ["name", "level", "position"]


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(_TRACKED_V2_MEMBER + ["status.state", "faction"]),
       value=st.one_of(st.integers(min_value=-2**63, max_value=2**63 - 1), st.text(max_size=20)))
def test_any_tracked_change_appends(tmp_path_factory, field, value):
    conn = connect_sync(tmp_path_factory.mktemp("h") / "h.db")
    migrate(conn)
    body = fixture_body("v2/faction_members.json")
    url = "https://api.torn.com/v2/faction/123456/members"
    ingest_batch(conn, [Response(url=url, observed_at=T0 + 100, body=body)])
    changed = copy.deepcopy(body)
    member = changed["members"][0]
    if field == "faction":  # moved to another faction's list: the member stream carries the new faction
        url2 = "https://api.torn.com/v2/faction/654321/members"
        report = ingest_batch(conn, [Response(url=url2, observed_at=T0 + 200, body=changed)])
    else:
        target, key = (member["status"], "state") if field == "status.state" else (member, field)
        if target[key] == value:
            close_sync(conn)
            return
        target[key] = value
        report = ingest_batch(conn, [Response(url=url, observed_at=T0 + 200, body=changed)])
    assert report.appended >= 1
    close_sync(conn)


def test_rule_change_does_not_make_streams_look_new(conn, db_path):
    ingest_batch(conn, fixture_responses())
    count = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    older = connect_sync(db_path)  # as if an older tornstore had written these hashes
    older.execute("UPDATE streams SET rules = 'r0', hash = 'stale-hash-from-old-rules'")
    close_sync(older)
    report = ingest_batch(conn, fixture_responses(OBSERVED_AT + 60))
    assert report.appended == 0
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == count
    assert {r[0] for r in conn.execute("SELECT rules FROM streams")} == {RULES}


def test_export_then_import_reproduces_the_log(conn, tmp_path):
    ingest_batch(conn, fixture_responses())
    body = fixture_body("v2/faction_members.json")
    body["members"][0]["level"] = 88
    ingest_batch(conn, [Response(url="https://api.torn.com/v2/faction/123456/members", observed_at=OBSERVED_AT + 240,
                                 body=body)])
    out = io.BytesIO()
    exported = export_events(conn, out)
    copy_conn = connect_sync(tmp_path / "copy.db")
    migrate(copy_conn)
    ingest_batch(copy_conn, list(read_capture(out.getvalue().splitlines())))
    query = ("SELECT s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.hash, e.source_url, e.payload "
             "FROM events e JOIN streams s USING (stream_id) ORDER BY e.position")
    assert exported == len(conn.execute(query).fetchall())
    assert copy_conn.execute(query).fetchall() == conn.execute(query).fetchall()
    stream_query = "SELECT entity_type, entity_id, view, version, hash FROM streams ORDER BY 1, 2, 3"
    assert copy_conn.execute(stream_query).fetchall() == conn.execute(stream_query).fetchall()
    close_sync(copy_conn)


def test_bad_input_is_quarantined_and_the_rest_lands(conn):
    good = next(line for line in fixture_capture_lines() if "user/1879891" in line)
    lines = [
        "this is not json",
        json.dumps({"url": "https://api.torn.com/user/5?selections=profile", "observed_at": T0, "body": [1, 2]}),
        json.dumps({"url": "https://api.torn.com/v2/faction/members", "observed_at": T0,
                    "body": {"members": [{"id": 1, "name": "x"}]}}),
        json.dumps({"url": "https://api.torn.com/torn/?selections=territory", "observed_at": T0,
                    "body": {"territory": {"not a code": {}}}}),
        json.dumps({"url": "https://api.torn.com/user/5?selections=profile&key=SECRETSECRET1234", "observed_at": "soon",
                    "body": {}}),
        good,
    ]
    report = ingest_batch(conn, list(read_capture(lines, "bad.ndjson")))
    assert len(report.rejected) == 5
    reasons = [r.reason for r in report.rejected]
    assert "bad.ndjson:1" in reasons[0]
    assert "not a JSON object" in reasons[1]
    assert "names no faction" in reasons[2]
    assert "not a territory code" in reasons[3]
    assert "observed_at" in reasons[4]
    quarantined = conn.execute("SELECT reason, body, source_url FROM quarantine ORDER BY id").fetchall()
    assert len(quarantined) == 5
    assert quarantined[0][1] == "this is not json"
    assert not any("SECRETSECRET1234" in (row[2] or "") + row[0] for row in quarantined)
    assert report.appended > 0  # the good line still landed


def test_unknown_endpoint_is_kept_whole(conn):
    market = {"itemmarket": {"item": {"id": 206}, "listings": [{"price": 1, "amount": 2}]}}
    hof = {"hof": {"rank": 5}}
    report = ingest_batch(conn, [
        Response(url="https://api.torn.com/v2/market/206/itemmarket", observed_at=T0 + 1, body=market),
        Response(url="https://api.torn.com/v2/user/5/hof", observed_at=T0 + 1, body=hof),
    ])
    assert report.appended == 2
    rows = conn.execute("SELECT s.entity_type, s.entity_id, s.view, e.payload FROM events e "
                        "JOIN streams s USING (stream_id) ORDER BY e.position").fetchall()
    assert rows[0][:3] == ("raw", "v2/market/206/itemmarket", "v2.itemmarket")
    assert msgspec.json.decode(rows[0][3]) == market
    assert rows[1][:3] == ("user", "5", "v2.hof")  # a known entity's unknown view: its own stream
    assert msgspec.json.decode(rows[1][3]) == hof


def test_canonical_hash_ignores_key_order():
    a = {"b": 1, "a": {"y": 2, "x": 1}}
    b = {"a": {"x": 1, "y": 2}, "b": 1}
    assert canonical_hash("v1.profile", a) == canonical_hash("v1.profile", b)
    assert len(canonical_hash("v1.profile", a)) == 32  # 128 bits


def test_late_event_is_kept_but_does_not_move_the_head(conn):
    url = "https://api.torn.com/user/7?selections=basic"
    def body(level):
        return {"level": level, "gender": "Male", "player_id": 7, "name": "p", "status": {"state": "Okay"}}
    ingest_batch(conn, [Response(url=url, observed_at=T0 + 1000, body=body(5))])
    ingest_batch(conn, [Response(url=url, observed_at=T0 + 2000, body=body(6))])
    late = ingest_batch(conn, [Response(url=url, observed_at=T0 + 1500, body=body(4))])
    assert late.appended == 1
    # the same old observations read again (a capture re-ingested) append nothing
    again = ingest_batch(conn, [Response(url=url, observed_at=T0 + t, body=body(lv))
                                for t, lv in ((1000, 5), (1500, 4), (2000, 6))])
    assert again.appended == 0
    # the next poll equals the newest state: nothing appended
    assert ingest_batch(conn, [Response(url=url, observed_at=T0 + 2240, body=body(6))]).appended == 0
    assert conn.execute("SELECT head_observed_at, version FROM streams").fetchone() == (T0 + 2000, 3)


def test_bars_alone_is_one_stream_part(conn):
    body = fixture_body("v1/user_bars_cooldowns_sanitized_capture.json")
    del body["cooldowns"]
    url = "https://api.torn.com/user/100?selections=bars"
    first = ingest_batch(conn, [Response(url=url, observed_at=T0 + 100, body=body)])
    again = ingest_batch(conn, [Response(url=url, observed_at=T0 + 340, body=body)])
    assert (first.appended, again.appended) == (1, 0)


@pytest.mark.sqlite_only("reads payloads with SQLite's json_extract")
def test_a_change_seen_before_a_later_confirmation_does_not_become_current(conn):
    """Alpha at t0, Alpha again at t2 (unchanged), then Beta observed at t1 arrives (a second writer):
    Beta is kept at t1, and Alpha is appended again at t2, so the log still ends on what was seen last."""
    url = "https://api.torn.com/user/8?selections=basic"
    def body(name):
        return {"level": 3, "gender": "Male", "player_id": 8, "name": name, "status": {"state": "Okay"}}
    ingest_batch(conn, [Response(url=url, observed_at=T0 + 1000, body=body("Alpha"))])
    ingest_batch(conn, [Response(url=url, observed_at=T0 + 3000, body=body("Alpha"))])
    late = ingest_batch(conn, [Response(url=url, observed_at=T0 + 2000, body=body("Beta"))])
    assert late.appended == 2
    rows = conn.execute("SELECT version, observed_at, json_extract(payload, '$.name') FROM events "
                        "ORDER BY version").fetchall()
    assert rows == [(1, T0 + 1000, "Alpha"), (2, T0 + 2000, "Beta"), (3, T0 + 3000, "Alpha")]
    assert conn.execute("SELECT head_observed_at, last_checked FROM streams").fetchone() == (T0 + 3000, T0 + 3000)
    # the next poll of Alpha is unchanged
    assert ingest_batch(conn, [Response(url=url, observed_at=T0 + 3240, body=body("Alpha"))]).appended == 0


def test_the_hash_memo_gives_the_canonical_hash_and_never_hides_a_change():
    """The memo skips hashing when a stream's payload repeats byte for byte; anything else, even a value
    Python calls equal (1, 1.0, True), takes the full path."""
    memo, view, stream = HashMemo(), "v1.profile", ("user", "1", "v1.profile")
    first = {"level": 1, "name": "a", "last_action": {"relative": "1 minute ago"}}
    variants = [first, msgspec.json.decode(msgspec.json.encode(first)), {**first, "level": True},
                {**first, "level": 1.0}, {**first, "level": 2}, first,
                {**first, "last_action": {"relative": "2 minutes ago"}}, {"name": "a", "level": 1,
                                                                           "last_action": {"relative": "x"}}]
    got = [memo.hash(stream, view, payload) for payload in variants]
    assert got == [canonical_hash(view, payload) for payload in variants]
    assert len({got[0], got[2], got[3], got[4]}) == 4          # 1, true, 1.0 and 2 are four states
    assert got[0] == got[1] == got[5] == got[6] == got[7]      # noise and key order are not changes


def test_the_hash_memo_leaves_out_top_level_noise_and_still_sees_nested_changes():
    """The memo compares a payload without the view's top-level noise keys; a nested noise field is
    still told apart from a nested state change."""
    memo, view, stream = HashMemo(), "v1.member", ("user", "7", "v1.member")
    base = {"name": "a", "level": 3, "days_in_faction": 10, "last_action": {"timestamp": 1},
            "status": {"state": "Okay", "description": "Okay", "until": 0}}
    variants = [base,
                {**base, "days_in_faction": 11, "last_action": {"timestamp": 2}},            # top-level noise
                {**base, "status": {**base["status"], "description": "In hospital for 3 mins"}},  # nested noise
                {**base, "status": {**base["status"], "state": "Hospital"}},                 # nested change
                {**base, "level": 4, "last_action": {"timestamp": 3}},                       # change + noise
                {**base, "level": 4}]
    got = [memo.hash(stream, view, payload) for payload in variants]
    assert got == [canonical_hash(view, payload) for payload in variants]
    assert got[0] == got[1] == got[2] and len({got[0], got[3], got[4]}) == 3 and got[4] == got[5]


def _faction_at_war(fid: int, score: int) -> dict:
    war = {"territory": "CDA", "assaulting_faction": 11, "defending_faction": 22, "score": score,
           "required_score": 600000, "start_time": 1_772_657_214, "end_time": 1_772_916_414}
    return {"ID": fid, "name": f"F{fid}", "respect": 1000, "territory_wars": [war]}


def test_both_sides_of_a_territory_war_polled_store_one_event_per_change(conn):
    """Faction 11 assaults faction 22; both are polled each round and both responses carry the war. The
    war's stream changes when the score does, not every time the other side's response arrives."""
    for i, score in enumerate([0, 0, 0, 150, 150, 150]):
        ingest_batch(conn, [Response(url=f"https://api.torn.com/faction/{fid}?selections=basic",
                                     observed_at=OBSERVED_AT + 240 * i, body=_faction_at_war(fid, score))
                            for fid in (11, 22)])
    scores = [json.loads(p)["score"] for (p,) in conn.execute(
        "SELECT payload FROM events JOIN streams USING (stream_id) WHERE view = 'v1.faction_territorywar' "
        "ORDER BY position")]
    assert scores == [0, 150]


def test_war_heads_stored_with_a_faction_id_under_rules_r1_are_not_new_under_r2(conn):
    ingest_batch(conn, [Response(url=f"https://api.torn.com/faction/{fid}?selections=basic", observed_at=OBSERVED_AT,
                                 body=_faction_at_war(fid, 0)) for fid in (11, 22)])
    # As tornstore stored it before r2: the war's payload carried the faction it came from.
    row = conn.execute("SELECT stream_id, payload FROM events JOIN streams USING (stream_id) "
                       "WHERE view = 'v1.faction_territorywar'").fetchone()
    old = {**json.loads(row[1]), "_faction_id": 11}
    conn.execute("UPDATE events SET payload = ?, rules = 'r1', hash = 'r1-hash' WHERE stream_id = ?",
                 (json.dumps(old), row[0]))
    conn.execute("UPDATE streams SET rules = 'r1', hash = 'r1-hash' WHERE stream_id = ?", (row[0],))
    conn.stream_cache = None
    report = ingest_batch(conn, [Response(url=f"https://api.torn.com/faction/{fid}?selections=basic",
                                          observed_at=OBSERVED_AT + 240, body=_faction_at_war(fid, 0))
                                 for fid in (11, 22)])
    assert report.appended == 0
    assert conn.execute("SELECT rules FROM streams WHERE stream_id = ?", (row[0],)).fetchone() == (RULES,)


def test_torn_territory_and_a_factions_territory_polled_alike_do_not_flip_a_stream(conn):
    """The two v1 listings of a territory differ in shape (the faction's has no neighbors and names the
    listing faction); each has a stream of its own, so polling both stores nothing new."""
    torn = {"territory": {"CDA": {"sector": 3, "size": 10, "density": 2, "slots": 1, "daily_respect": 50,
                                  "faction": 11, "coordinate_x": "1.5", "coordinate_y": 2.5, "neighbors": ["CDB"]}}}
    mine = {"territory": {"CDA": {k: v for k, v in torn["territory"]["CDA"].items() if k != "neighbors"}}}
    for i in range(4):
        report = ingest_batch(conn, [
            Response(url="https://api.torn.com/torn/CDA?selections=territory", observed_at=OBSERVED_AT + 240 * i,
                     body=torn),
            Response(url="https://api.torn.com/faction/11?selections=territory", observed_at=OBSERVED_AT + 240 * i,
                     body=mine)])
        assert report.appended == (3 if i == 0 else 0)   # two territory views and the faction's list
    views = [v for (v,) in conn.execute("SELECT view FROM streams WHERE entity_id = 'CDA' ORDER BY view")]
    assert views == ["v1.faction_territory", "v1.territory"]
