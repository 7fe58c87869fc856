"""Times that cannot be right are refused at the door, with the reason; stored times always format (on a SQLite
file and on a PostgreSQL database)."""
from __future__ import annotations

import time

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.ingest import MAX_AHEAD, TORN_EPOCH, ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Response
from tornstore.projections.queries import format_time
from tornstore.projections.runner import project_inline

NOW = 1764100000
URL = "https://api.torn.com/user/7?selections=basic"


def _body(level: int) -> dict:
    return {"level": level, "gender": "Male", "player_id": 7, "name": "p", "status": {"state": "Okay"}}


def test_future_and_prehistoric_times_are_quarantined_with_the_reason(db_path):
    conn = connect_sync(db_path)
    try:
        migrate(conn)
        batch = [Response(url=URL, observed_at=t, body=_body(i + 1)) for i, t in enumerate(
            [NOW, 4102444800, NOW + MAX_AHEAD + 1, TORN_EPOCH - 1, 100, NOW + MAX_AHEAD])]
        report = ingest_batch(conn, batch, project_inline, now=NOW)
        assert report.appended == 2                       # NOW, and NOW + MAX_AHEAD (clock skew allowed)
        reasons = [r.reason for r in report.rejected]
        assert len(reasons) == 4
        assert all(r.startswith(URL) for r in reasons)
        assert sum("ahead of this machine's clock" in r for r in reasons) == 2
        assert sum("before Torn existed" in r for r in reasons) == 2
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 4
        # The poll stamped 2100 did not pin the current state: the newest real poll shows.
        assert conn.execute("SELECT level FROM players WHERE player_id = 7").fetchone()[0] == 6
    finally:
        close_sync(conn)


def test_the_default_clock_is_the_machine_clock(db_path):
    conn = connect_sync(db_path)
    try:
        migrate(conn)
        now = int(time.time())
        report = ingest_batch(conn, [Response(url=URL, observed_at=now, body=_body(1)),
                                     Response(url=URL, observed_at=now + 3600, body=_body(2))])
        assert report.appended == 1 and len(report.rejected) == 1
    finally:
        close_sync(conn)


def test_any_stored_value_formats_without_a_traceback():
    assert format_time(NOW) == "2025-11-25 19:46:40Z"
    for value in (2 ** 62, -2 ** 62, 10 ** 12 * 1000):
        assert format_time(value) == f"{value} (not a valid time)"
