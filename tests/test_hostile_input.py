"""Hostile input: bodies that fit no endpoint, values no JSON should hold, SQL and HTML in strings, ids that
are not numbers, nesting 10,000 levels deep, and CLI arguments that carry SQL.

For every response: nothing escapes `ingest_batch`; it ends as events (or an unchanged stream), a Torn
error, or a quarantined body with its reason (report.responses == ok + errors + rejected); and it changes
no projected row of an entity it does not name. The projections must also stay replayable: what was
projected inline is what `replay` rebuilds from the stored payloads.

On a SQLite file and on a PostgreSQL database: the baseline is built once per backend (`backend`, a module
fixture, as a module fixture cannot take conftest's `db_path`), and each example starts from a copy of it (an
in-memory SQLite copy, or a database made with CREATE DATABASE ... TEMPLATE and dropped after it).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from tornstore.eventstore.capture import read_capture
from tornstore.eventstore.db import close_sync, connect_sync, is_url, table_names
from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Response
from tornstore.eventstore.secrets import strip_key
from tornstore.eventstore.simulator import World
from tornstore.eventstore.simulator.workload import PollPlan, answer, poll_rounds
from tornstore.projections import health
from tornstore.projections.runner import handlers, project_inline

from .conftest import FIXTURE_URLS, PG_BASE, fixture_body, pg_admin
from .crashkit import cli

BASE = "https://api.torn.com"
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# On PostgreSQL each example costs a database copied from the baseline (0.25 to 0.5 s: the copy writes the 7.5 MB
# of an empty database too): the same derandomized examples, fewer of them, and the explicit @examples.
PG_SETTINGS = settings(SETTINGS, max_examples=15)
NUL = "\x00nul\x00"   # SQLite text holds NUL; PostgreSQL text cannot

# ------------------------------------------------------------------------------------------ the world
# A small world: the hostile responses are about faction F0 (its members, territories, wars) or the
# whole map; F1 and F2 and their members are bystanders whose rows must not move unless a body names them.
WORLD = World(seed=9, factions=3, members_per_faction=(3, 5), territories=40)
F0, F1, F2 = sorted(WORLD.factions)
P0 = WORLD.factions[F0].members[0]
HOSTILE_AT = WORLD.now + 7 * 86400   # after everything in the baseline

URLS = [
    f"{BASE}/user/{P0}?selections=profile",
    f"{BASE}/user/{P0}?selections=basic",
    f"{BASE}/user/{P0}?selections=personalstats",
    f"{BASE}/user/{P0}?selections=battlestats",
    f"{BASE}/user/{P0}?selections=bars,cooldowns",
    f"{BASE}/user/{P0}?selections=profile,personalstats",
    f"{BASE}/faction/{F0}?selections=basic",
    f"{BASE}/faction/{F0}?selections=territory",
    f"{BASE}/faction/{F0}?selections=chain",
    f"{BASE}/torn/?selections=territory",
    f"{BASE}/torn/?selections=rackets",
    f"{BASE}/torn/?selections=rankedwars,territorywars",
    f"{BASE}/v2/user/{P0}/profile",
    f"{BASE}/v2/user/{P0}/basic",
    f"{BASE}/v2/user/battlestats",          # own-key forms: the spec has no {id} path for these
    f"{BASE}/v2/user/bars",
    f"{BASE}/v2/faction/{F0}/basic",
    f"{BASE}/v2/faction/{F0}/members",
    f"{BASE}/v2/faction/{F0}/wars",
    f"{BASE}/v2/faction/{F0}/rankedwars",
    f"{BASE}/v2/faction/{F0}/territory",
    f"{BASE}/v2/faction/{F0}/chain",
    f"{BASE}/v2/faction/territoryownership",
    f"{BASE}/v2/torn/territory",
]


def _endpoints() -> list[tuple[str, Any]]:
    """(url, a real body for it): the simulator's answers, then the captured API fixtures (both versions)."""
    out = []
    for url in URLS:
        body = answer(WORLD, url, owner=P0)
        assert "error" not in body, (url, body)
        out.append((url, body))
    for name, url in sorted(FIXTURE_URLS.items()):
        out.append((url, fixture_body(name)))
    return out


ENDPOINTS = _endpoints()

# ------------------------------------------------------------------------------------------ strategies
NASTY_TEXT = [
    "'; DROP TABLE players; --", "1 OR 1=1", "x'); DELETE FROM events; --", "\" OR \"\"=\"", "1; ATTACH '/tmp/x' AS y",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "&lt;b&gt;&#039;&amp;&quot;", "Rick&#039;s Den",
    "\u202eevil\u202c", "名前テスト", "💥🔥" * 8, "\x00nul\x00", "A" * 5000, "", " ", "null", "None", "NaN",
    "Infinity", "-1", "0", "1e309", "0x10", "٣", "²", "１２", "9" * 30, "-9223372036854775809", "AAC", "aac",
    "A,B", "key=SECRETSECRETSECR", "\\u0000", "lone \ud800 surrogate", "\udfff",
]
BAD_IDS = ["abc", "-5", "0", "00", "1 OR 1=1", "1;DROP TABLE players", "99999999999999999999999", "٣", "²", "１２",
           "%27%20OR%201%3D1", "", "AAC'--", "1.5", "1e3", "null",
           "\ud800"]
HUGE_INTS = [2 ** 63 - 1, 2 ** 63, -(2 ** 63) - 1, 2 ** 64, -(2 ** 64), 10 ** 30, -(10 ** 30), 2 ** 200, -1, 0, 1]

scalars = st.one_of(
    st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.text(max_size=40),
    st.sampled_from(NASTY_TEXT),
    st.none(),
    st.booleans(),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(
    ["id", "name", "level", "faction_id", "faction", "members", "status", "life", "rank", "respect", "territory",
     "war", "wars", "ranked", "factions", "score", "error", "code", "player_id", "ID", "_id", "_faction_id",
     "territory_war_id", "war_id", "start", "end", "winner", "owned_by", "racket", "sector", "coordinates"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)),
                      max_leaves=12)


def _paths(obj: Any, limit: int = 400) -> list[tuple]:
    out: list[tuple] = []
    stack = [((), obj)]
    while stack and len(out) < limit:
        path, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            out.append(path + (key,))
            stack.append((path + (key,), child))
    return out


def _get(body: Any, path: tuple) -> Any:
    node = body
    for key in path:
        node = node[key]
    return node


def _parent(body: Any, path: tuple) -> Any:
    return _get(body, path[:-1])


@st.composite
def hostile_responses(draw) -> tuple[str, Any]:
    url, base = draw(st.sampled_from(ENDPOINTS))
    body = copy.deepcopy(base)
    if draw(st.integers(0, 9)) == 0:   # now and then an id in the URL that is not an id
        bad = draw(st.sampled_from(BAD_IDS))
        url = re.sub(r"(/(?:user|faction)/)\d+", lambda m: m.group(1) + bad, url, count=1)
    for _ in range(draw(st.integers(1, 5))):
        paths = _paths(body)
        op = draw(st.sampled_from(["set", "set", "set", "delete", "add", "replace_body"]))
        if op == "replace_body" or not paths:
            if draw(st.integers(0, 3)) == 0:
                body = draw(values)
                continue
            op = "add"
        if op == "add":
            containers = [p for p in [()] + paths if isinstance(_get(body, p), (dict, list))]
            target = _get(body, draw(st.sampled_from(containers))) if containers else body
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            elif isinstance(target, list):
                target.append(draw(values))
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(body, path)
        if op == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    return url, body


# ------------------------------------------------------------------------------------------ the baseline
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


class _Databases:
    """New PostgreSQL databases of conftest's server (empty, or copies of a template), each dropped when given
    back. (Dropping them in a thread of its own was slower: each CREATE DATABASE then waited for a DROP.)"""

    def __init__(self):
        self.admin = pg_admin()

    def new(self, template: str | None = None) -> str:
        name = f"tornstore_test_{os.getpid()}_{secrets.token_hex(4)}"
        self.admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{_name(template)}"' if template else ""))
        return urlunsplit(urlsplit(PG_BASE)._replace(path=f"/{name}"))

    def give_back(self, url: str) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{_name(url)}" WITH (FORCE)')

    def close(self) -> None:
        self.admin.close()


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.fixture(scope="module")
def databases(backend) -> Iterator[_Databases | None]:
    """The module's PostgreSQL databases (None on SQLite)."""
    if backend == "sqlite":
        yield None
        return
    made = _Databases()
    yield made
    made.close()


class Baseline:
    """A store holding a day of polls of WORLD plus the API fixtures, on one backend; `fresh()` is a copy
    each example starts from."""

    def __init__(self, target: Path | str, databases: _Databases | None):
        self.target, self.databases = target, databases
        self.settings = SETTINGS if databases is None else PG_SETTINGS
        conn = connect_sync(target)
        try:
            migrate(conn)
            world = World(seed=9, factions=3, members_per_faction=(3, 5), territories=40)
            plan = PollPlan(factions=(F0, F1, F2), member_profiles_every=5, territory_map_every=10, wars_every=1)
            for responses in poll_rounds(world, plan, world.now, world.now + 86400):
                ingest_batch(conn, responses, project_inline)
            fixtures = [Response(url=url, observed_at=world.now, body=fixture_body(name))
                        for name, url in sorted(FIXTURE_URLS.items())]
            ingest_batch(conn, fixtures, project_inline)
            assert conn.execute("SELECT COUNT(*) FROM players").fetchone()[0] > 10
        finally:
            close_sync(conn)
        # On SQLite the baseline stays open for copies; a PostgreSQL template must have no connection.
        self.conn = connect_sync(target) if databases is None else None

    def copy(self, path: Path) -> Path | str:
        """A lasting copy: a file at `path`, or a new database (given back by `release`)."""
        if self.databases is None:
            target = sqlite3.connect(path)
            self.conn.backup(target)
            target.close()
            return path
        return self.databases.new(template=str(self.target))

    def release(self, target: Path | str) -> None:
        if self.databases is not None and is_url(target):
            self.databases.give_back(str(target))

    @contextlib.contextmanager
    def fresh(self) -> Iterator[sqlite3.Connection]:
        """A connection to a new copy of the baseline, dropped after the block."""
        if self.databases is None:
            conn = connect_sync(":memory:")
            self.conn.backup(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            try:
                yield conn
            finally:
                conn.close()
            return
        url = self.databases.new(template=str(self.target))
        conn = connect_sync(url)
        try:
            yield conn
        finally:
            close_sync(conn)
            self.databases.give_back(url)

    def close(self) -> None:
        if self.conn is not None:
            close_sync(self.conn)


@pytest.fixture(scope="module")
def baseline(backend, databases, tmp_path_factory):
    target = (tmp_path_factory.mktemp("hostile") / "baseline.db") if databases is None else databases.new()
    made = Baseline(target, databases)
    yield made
    made.close()
    made.release(target)


# ------------------------------------------------------------------------------------------ the checks
ROW_KEYS = {   # table -> (columns naming the row's own entity, columns naming related entities)
    "players": (("player_id",), ("faction_id",)),
    "factions": (("faction_id",), ()),
    "territories": (("territory_id",), ("faction_id",)),
    "player_stats_history": (("player_id",), ()),
    "faction_history": (("faction_id",), ()),
    "war_status_history": (("war_id", "territory_id"),
                           ("attacking_faction_id", "defending_faction_id", "winner_faction_id")),
    "territory_ownership_history": (("territory_id",), ("faction_id",)),
}
# A torn/ list (the whole map, every racket, every territory war) may rightly change any territory or war.
GLOBAL_TABLES = {"territories", "territory_ownership_history", "war_status_history"}


def _rows(conn: sqlite3.Connection) -> dict[str, tuple[list[str], set[tuple]]]:
    out = {}
    for table in ROW_KEYS:
        cur = conn.execute(f"SELECT * FROM {table}")
        out[table] = ([d[0] for d in cur.description], set(cur.fetchall()))
    return out


def _tokens(url: str, body: Any) -> set[str]:
    """Everything a response names: URL path parts and query values, and every key and value of the body,
    as text (numbers also in their integer form), so any id it could project under is in the set."""
    found: set[str] = set()

    def add_text(text: str) -> None:
        found.update({text, text.strip(), text.strip().upper()})
        for digits in re.findall(r"\d+", text):
            found.add(str(int(digits)))
        try:
            number = float(text.strip().replace(",", ""))
            if math.isfinite(number):
                found.add(str(int(round(number))))
        except (ValueError, OverflowError):
            pass

    parts = re.split(r"[/?&=,]", strip_key(url))
    for part in parts:
        add_text(part)
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                add_text(str(key))
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            found.add(str(node))
        elif isinstance(node, float):
            if math.isfinite(node):
                found.add(str(int(round(node))))
        else:
            add_text(str(node))
    return found


def _section(url: str) -> str:
    path = [s for s in strip_key(url).split("?")[0].split("/") if s][2:]
    if path and path[0] == "v2":
        path = path[1:]
    return path[0] if path else ""


def _check_isolation(url: str, named: set[str], before: dict, after: dict) -> None:
    section = _section(url)
    war_rows = before["war_status_history"][1] | after["war_status_history"][1]
    cols = before["war_status_history"][0]
    # Territories at war with a named faction: their war status follows that faction's war list.
    at_war = {str(dict(zip(cols, r, strict=True))["territory_id"]) for r in war_rows
              if {str(dict(zip(cols, r, strict=True))[c]) for c in ROW_KEYS["war_status_history"][1]} & named}
    for table, (own, related) in ROW_KEYS.items():
        names, old = before[table]
        _, new = after[table]

        def allowed(values: dict, named: set[str], own=own, related=related, table=table) -> bool:
            if {str(values[c]) for c in own if values[c] is not None} & named:
                return True
            if section in ("faction", "torn") and {str(values[c]) for c in related if values[c] is not None} & named:
                return True
            return table in GLOBAL_TABLES and (section == "torn" or values.get("territory_id") in at_war)

        # A row's versions before and after go together: a member dropped from a named faction's list
        # loses that faction (its old row names the faction, its new one does not).
        versions: dict = {}
        for row in old ^ new:
            values = dict(zip(names, row, strict=True))
            versions.setdefault(values.get("id", values[own[0]]), []).append((row in new, values))
        for group in versions.values():
            if any(allowed(values, named) for _, values in group):
                # The entity's state moved with the response's leave: its history row may follow it.
                named = named | {str(values[own[0]]) for _, values in group}
            else:
                is_new, values = group[0]
                state = "new or changed" if is_new else "removed or changed"
                raise AssertionError(f"{url}: a row of an entity the response does not name was {state}: "
                                     f"{table} {values}")


def _check_invariants(conn: sqlite3.Connection) -> None:
    top = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    checkpoints = dict(conn.execute("SELECT projection, position FROM projection_checkpoints"))
    assert {checkpoints.get(h.name) for h in handlers()} == {top}
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def _note(text: str) -> None:
    """A statistic for --hypothesis-show-statistics (a no-op outside a hypothesis test)."""
    with contextlib.suppress(InvalidArgument):
        event(text)


def _reject_constants(text: str):
    raise ValueError(f"{text} is not JSON")


def _ingest_and_check(conn: sqlite3.Connection, responses: list[Response], named: set[str], url: str):
    before = _rows(conn)
    top = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    report = ingest_batch(conn, responses, project_inline)       # nothing may escape
    _note(f"rejected {len(report.rejected)}, errors {len(report.errors)}, appended {min(report.appended, 3)}+")
    # Every response is accounted for exactly once.
    assert report.responses == len(responses)
    ok = report.responses - len(report.errors) - len(report.rejected)
    assert ok >= 0
    if len(responses) == 1:
        # A response whose owner-scoped part waits for its owner is rejected (quarantined whole) while the
        # parts that need no owner (a ranked war naming its factions) are stored.
        partial = len(report.rejected) == 1 and "no owner is known" in report.rejected[0].reason
        assert (report.appended + report.unchanged > 0) == (ok == 1) or partial, report
    for rejected in report.rejected:
        assert rejected.reason, "quarantined without a reason"
        row = conn.execute("SELECT reason FROM quarantine WHERE source_url = ? AND observed_at IS ? AND reason = ?",
                           (rejected.url, rejected.observed_at, rejected.reason)).fetchone()
        assert row is not None, f"rejected but not in the quarantine table: {rejected}"
    for error in report.errors:
        assert conn.execute("SELECT 1 FROM gaps WHERE source_url = ? AND observed_at = ? AND error_code = ?",
                            (error.url, error.observed_at, error.code)).fetchone(), error
    # What was stored is JSON (no NaN or Infinity tokens), and projections are at the end of the log.
    for (payload,) in conn.execute("SELECT payload FROM events WHERE position > ?", (top,)):
        json.loads(payload, parse_constant=_reject_constants)
    _check_invariants(conn)
    _check_isolation(url, named, before, _rows(conn))
    return report


def test_the_isolation_check_notices_a_bystander_row_changing(baseline):
    """The check is not vacuous: a change to a faction the response does not name is reported."""
    with baseline.fresh() as conn:
        before = _rows(conn)
        conn.execute("UPDATE factions SET respect = respect + 1 WHERE faction_id = ?", (F2,))
        url = f"{BASE}/v2/user/{P0}/profile"
        with pytest.raises(AssertionError, match="does not name"):
            _check_isolation(url, _tokens(url, {"profile": {"id": P0}}), before, _rows(conn))


# ------------------------------------------------------------------------------------------ bodies
# The property tests run their examples in an inner @given, whose settings depend on the backend.
def test_hostile_decoded_bodies_are_stored_quarantined_or_refused(baseline):
    """As a bot's own API client hands them to `store.ingest`: decoded Python values, NaN and huge ints
    included."""
    @baseline.settings
    @given(case=hostile_responses())
    @example(case=(f"{BASE}/v2/user/{P0}/profile", {"profile": {"id": P0, "name": NUL, "level": 3}}))
    @example(case=(f"{BASE}/v2/faction/{F0}/basic", {"basic": {"id": F0, "name": NUL, "tag": NUL}}))
    def examples(case):
        url, body = case
        with baseline.fresh() as conn:
            _ingest_and_check(conn, [Response(url=url, observed_at=HOSTILE_AT, body=body)], _tokens(url, body),
                              url)
    examples()


def _non_finite(body: Any) -> bool:
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _capture_line(url: str, body: Any, observed_at: Any = HOSTILE_AT) -> str:
    return json.dumps({"url": url, "observed_at": observed_at, "body": body}, allow_nan=True)


def test_hostile_capture_lines_are_stored_quarantined_or_refused(baseline):
    """The same bodies as capture text (Python writes NaN and Infinity as bare tokens, which JSON forbids),
    sometimes cut short."""
    @baseline.settings
    @given(case=hostile_responses(), cut=st.one_of(st.none(), st.integers(min_value=1, max_value=400)))
    def examples(case, cut):
        url, body = case
        line = _capture_line(url, body)
        if cut is not None:
            line = line[:cut]
        responses = list(read_capture([line.encode()], "hostile.ndjson"))
        assert len(responses) == 1
        with baseline.fresh() as conn:
            report = _ingest_and_check(conn, responses, _tokens(url, body) | _tokens(line, None), url)
            if cut is None and _non_finite(body):
                assert len(report.rejected) == 1, "a line with NaN/Infinity is not JSON: it must be quarantined"
    examples()


def test_random_json_values_and_times_for_every_endpoint(baseline):
    @baseline.settings
    @given(url=st.sampled_from([u for u, _ in ENDPOINTS]), body=values,
           observed_at=st.one_of(st.just(HOSTILE_AT), st.sampled_from(HUGE_INTS), st.floats(),
                                 st.text(max_size=5)))
    def examples(url, body, observed_at):
        with baseline.fresh() as conn:
            _ingest_and_check(conn, [Response(url=url, observed_at=observed_at, body=body)], _tokens(url, body),
                              url)
    examples()


def test_torn_error_envelopes_with_hostile_codes_are_refused(baseline):

    @baseline.settings
    @given(code=st.one_of(st.sampled_from(HUGE_INTS), st.integers()),
           text=st.one_of(st.sampled_from(NASTY_TEXT), values), url=st.sampled_from(URLS))
    @example(code=2, text=NUL, url=f"{BASE}/user/{P0}?selections=profile")
    def examples(code, text, url):
        body = {"error": {"code": code, "error": text}}
        with baseline.fresh() as conn:
            report = _ingest_and_check(conn, [Response(url=url, observed_at=HOSTILE_AT, body=body)],
                                       _tokens(url, body), url)
            assert report.appended == 0, "an error envelope was stored as data"
    examples()


@pytest.mark.parametrize("url, body", [
    (f"{BASE}/v2/user/\ud800/profile", {"profile": {"id": 555002, "name": "x"}}),
    (f"{BASE}/v2/user/555002/profile\udfff", {"profile": {"id": 555002, "name": "x"}}),
    (f"{BASE}/v2/user/555002/profile", {"profile": {"id": 555002, "name": "lone \ud800"}}),
    (f"{BASE}/v2/user/555002/profile", {"profile": {"id": 555002, "\udfff": 1}}),
    (f"{BASE}/v2/user/555002/profile", {"error": {"code": 5, "error": "too many \ud800"}}),
    (f"{BASE}/v2/user/555002/profile", "<html>\ud800</html>"),
], ids=["url-id", "url-tail", "name", "key", "error-text", "raw-text"])
def test_lone_surrogates_from_json_loads_are_stored_or_quarantined(baseline, url, body):
    """Python's json.loads accepts "\\ud800" and hands back a str SQLite cannot encode."""
    with baseline.fresh() as conn:
        _ingest_and_check(conn, [Response(url=url, observed_at=HOSTILE_AT, body=body)], _tokens(url, body), url)


def test_one_hostile_response_does_not_sink_the_rest_of_its_batch(baseline):
    good_url, good_body = ENDPOINTS[URLS.index(f"{BASE}/v2/faction/{F0}/basic")]
    batch = [Response(url=good_url, observed_at=HOSTILE_AT, body=dict(good_body, basic=dict(good_body["basic"],
                                                                                           name="Renamed")))]
    hostile = [
        {"error": {"code": 2 ** 70, "error": "x"}},
        {"profile": {"id": P0, "name": "x", "level": math.nan}},
        {"profile": {"id": P0, "level": 2 ** 70}},
        "<html>maintenance</html>",
        [1, 2, 3],
    ]
    batch += [Response(url=f"{BASE}/v2/user/{P0}/profile", observed_at=HOSTILE_AT + i, body=b)
              for i, b in enumerate(hostile)]
    batch.append(Response(url=f"{BASE}/v2/user/{P0}/profile", observed_at=2 ** 70, body={"profile": {"id": P0}}))
    with baseline.fresh() as conn:
        report = ingest_batch(conn, batch, project_inline)
        assert report.responses == len(batch)
        assert conn.execute("SELECT name FROM factions WHERE faction_id = ?", (F0,)).fetchone() == ("Renamed",)


# ------------------------------------------------------------------------------------------ deep nesting
def _deep(levels: int, leaf: Any = 1) -> Any:
    node = leaf
    for i in range(levels):
        node = {"a": node} if i % 2 else [node]
    return node


def _deep_text(levels: int) -> str:
    return '{"a":[' * (levels // 2) + "1" + "]}" * (levels // 2)


DEEP_CASES = {
    "whole body": lambda d: {"profile": d},
    "profile field": lambda d: {"profile": {"id": P0, "name": "Deep", "level": 5, "status": d}},
    "member item": lambda d: {"members": [{"id": P0, "name": "Deep", "level": 5, "status": d}]},
}


@pytest.mark.parametrize("levels", [1_000, 10_000])
@pytest.mark.parametrize("where", sorted(DEEP_CASES))
def test_deep_nesting_as_a_decoded_body(baseline, where, levels):
    url = f"{BASE}/v2/faction/{F0}/members" if where == "member item" else f"{BASE}/v2/user/{P0}/profile"
    body = DEEP_CASES[where](_deep(levels))
    with baseline.fresh() as conn:
        report = ingest_batch(conn, [Response(url=url, observed_at=HOSTILE_AT, body=body)], project_inline)
        assert report.responses == 1
        assert len(report.rejected) + report.appended + report.unchanged >= 1
        if report.rejected:
            assert conn.execute("SELECT COUNT(*) FROM quarantine WHERE reason = ?",
                                (report.rejected[0].reason,)).fetchone()[0] == 1
        _check_invariants(conn)


@pytest.mark.parametrize("levels", [1_000, 10_000])
def test_deep_nesting_as_a_capture_line(baseline, tmp_path, levels):
    line = (f'{{"url": "{BASE}/v2/user/{P0}/profile", "observed_at": {HOSTILE_AT}, '
            f'"body": {{"profile": {_deep_text(levels)}}}}}')
    responses = list(read_capture([line.encode()], "deep.ndjson"))    # must not raise
    with baseline.fresh() as conn:
        report = ingest_batch(conn, responses, project_inline)
        assert report.responses == 1 and len(report.rejected) + report.appended + report.unchanged >= 1
        _check_invariants(conn)
    # And through the CLI: one clear report, no traceback.
    capture = tmp_path / "deep.ndjson"
    capture.write_text(line + "\n" + _capture_line(f"{BASE}/v2/user/{P0}/basic", {"basic": {"id": P0, "name": "ok"}})
                       + "\n")
    target = tmp_path / "deep.db" if baseline.databases is None else baseline.databases.new()
    try:
        done = cli(target, "ingest", "--init", str(capture), "--json")
    finally:
        baseline.release(target)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["responses"] == 2


async def test_the_deepest_body_ingest_accepts_stays_readable(db_path, tmp_path, request):
    """A bot's `store.ingest` runs in aiosqlite's worker thread (on PostgreSQL, PgWorker's), whose stack is
    shallow: the deepest body it accepts must still be readable by verify, replay and export + ingest (into
    a second store of the same backend), which decode it deeper down."""
    from tornstore.projections.store import Store

    db = db_path
    store = await Store.open(db, create=True)
    accepted = None
    try:
        for levels in range(1000, 880, -1):
            body = {"profile": {"id": 555003, "name": "Deep", "level": 3, "status": _deep(levels)}}
            report = await store.ingest(f"{BASE}/v2/user/555003/profile", body, HOSTILE_AT)
            if report.appended:
                accepted = levels
                break
    finally:
        await store.close()
    if accepted is None:
        return   # every such body was quarantined: nothing unreadable was stored
    export = tmp_path / "deep.ndjson"
    for args in (("verify",), ("replay",), ("export-events", "-o", str(export)), ("player", "555003")):
        done = cli(db, *args)
        assert "Traceback" not in done.stderr, f"{args}: body nested {accepted} levels: {done.stderr[-800:]}"
        assert done.returncode == 0, (args, done.stderr[-800:])
    again_db = request.getfixturevalue("postgres_url") if is_url(db) else tmp_path / "again.db"
    again = cli(again_db, "ingest", "--init", str(export))
    assert "Traceback" not in again.stderr and again.returncode == 0, again.stderr[-800:]


# ------------------------------------------------------------------------------------------ replayable
@pytest.mark.parametrize("body", [
    {"profile": {"id": 555001, "name": "Nan", "level": math.nan, "life": {"current": math.inf, "maximum": 100}}},
    {"profile": {"id": 555001, "name": "Inf", "level": 3, "faction_id": -math.inf}},
    {"profile": {"id": 555001, "name": "Ints", "level": 3, "life": {"current": 1, "maximum": 2 ** 64}}},
], ids=["nan-level", "inf-faction", "int-beyond-int64"])
def test_what_was_projected_inline_is_what_replay_rebuilds(db_path, body):
    """Invariant 2: projecting inline and replaying the stored log give the same tables, even when the
    body held values JSON cannot carry (stored as null) or SQLite cannot (refused per event)."""
    conn = connect_sync(db_path)
    try:
        migrate(conn)
        ingest_batch(conn, [Response(url=f"{BASE}/v2/user/555001/profile", observed_at=HOSTILE_AT, body=body)],
                     project_inline)
        result = health.compare_with_replay(conn)
        assert result["differences"] == {}, result
    finally:
        close_sync(conn)


# ------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def cli_source(tmp_path_factory, baseline):
    """The baseline as a file (copied for each command) on SQLite; on PostgreSQL the baseline database is
    the template each command's copy is made from."""
    if baseline.databases is not None:
        return None
    return baseline.copy(tmp_path_factory.mktemp("cli") / "cli.db")


@pytest.fixture
def cli_db(tmp_path, cli_source, baseline):
    """Each command gets its own copy: one that damages the store must not hide behind another."""
    if cli_source is None:
        url = baseline.copy(tmp_path / "cli.db")
        yield url
        baseline.release(url)
        return
    path = tmp_path / "cli.db"
    shutil.copy(cli_source, path)
    yield path


def _table_counts(db: Path | str) -> dict[str, int]:
    conn = connect_sync(db)
    try:
        tables = sorted(t for t in table_names(conn) if not t.startswith("sqlite_"))
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        close_sync(conn)


BIG = "99999999999999999999999"
HOSTILE_ARGS = [
    ("player", "1; DROP TABLE players"),
    ("player", "1 OR 1=1"),
    ("player", BIG),
    ("faction", "1; DELETE FROM factions"),
    ("faction", BIG),
    ("war", BIG),
    ("territory", "AAC'; DROP TABLE territories; --"),
    ("territory", "' OR '1'='1"),
    ("history", "player", "1 OR 1=1", "--stat", "level; DELETE FROM events"),
    ("history", "player", str(P0), "--stat", "level; DELETE FROM events"),
    ("history", "faction", str(F0), "--stat", "respect", "--since", "2025-01-01'; DROP TABLE events; --"),
    ("history", "player", str(P0), "--stat", "level", "--since", BIG),
    ("history", "player", BIG, "--stat", "level"),
    ("replay", "--projection", "x'; DROP TABLE events; --"),
    ("changes", "--after", "1; DROP TABLE events"),
    ("export-events", "--after", BIG, "-o", "-"),
    ("war", "1", "--type", "ranked'; DROP TABLE war_status_history; --"),
    ("compact", "--now", BIG, "--dry-run"),
    ("replay", "--batch", "0"),          # would clear the history tables and replay nothing
]



@pytest.mark.parametrize("args", HOSTILE_ARGS, ids=[" ".join(a)[:60] for a in HOSTILE_ARGS])
def test_cli_arguments_carrying_sql_or_huge_numbers_are_inert(cli_db, args):
    before = _table_counts(cli_db)
    done = cli(cli_db, *args)
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.returncode != 0, (done.stdout[-500:], done.stderr[-500:])
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert _table_counts(cli_db) == before
    conn = connect_sync(cli_db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        close_sync(conn)
