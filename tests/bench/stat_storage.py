"""stat_history storage: rows and bytes per member per month for a simulated faction's personal stats.

    python -m tests.bench.stat_storage [INTERVAL_SECONDS] [DAYS]      (default: 3600 30, about a minute)

One simulated faction (seed 5): its basic data and member list and every member's
`/v2/user/{id}/personalstats?cat=all` polled every INTERVAL for DAYS, written to a capture and ingested with
the real `tornstore ingest` into a SQLite file; sizes from SQLite's `dbstat` (the table and its two indexes).
The change rate is the simulator's (eventstore/simulator/personalstats.py). Figures are scaled to 30 days;
`first_value_rows` (each stat's first value, once per member) are counted apart from the monthly changes.
Not part of `python -m tests.bench`: it measures a size, not a speed, and its figure is in the README.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from tornstore.eventstore.simulator import World
from tornstore.eventstore.simulator.workload import PollPlan, poll_rounds

STAT_OBJECTS = ("stat_history", "idx_stat_history_entity_stat_time", "idx_stat_history_time")


def measure(interval: int, days: float) -> dict:
    world = World(seed=5, factions=1, territories=10)
    faction = sorted(world.factions)[0]
    plan = PollPlan(factions=(faction,), interval=interval, api="v2", member_profiles_every=0, wars_every=0,
                    personalstats_every=1)
    with tempfile.TemporaryDirectory(prefix="stat-storage-") as tmp:
        capture, db = Path(tmp) / "polls.ndjson", Path(tmp) / "torn.db"
        polls = 0
        with open(capture, "w") as out:
            for responses in poll_rounds(world, plan, world.now, world.now + int(days * 86400)):
                for r in responses:
                    polls += "personalstats" in r.url
                    out.write(json.dumps({"url": r.url, "observed_at": r.observed_at, "body": r.body}) + "\n")
        subprocess.run([sys.executable, "-m", "tornstore", "--db", str(db), "ingest", "--init", str(capture)],
                       check=True, capture_output=True)
        conn = sqlite3.connect(db)
        try:
            one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
            members = one("SELECT COUNT(DISTINCT entity_id) FROM stat_history WHERE entity_type = 'player'")
            rows = one("SELECT COUNT(*) FROM stat_history")
            first = one("SELECT COUNT(*) FROM (SELECT MIN(id) FROM stat_history GROUP BY entity_type, entity_id, stat)")
            stat_bytes = one(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN {STAT_OBJECTS}")
            event_bytes = one("SELECT SUM(pgsize) FROM dbstat WHERE name = 'events'")
        finally:
            conn.close()
    scale = 30 / days
    changes = rows - first
    return {
        "interval_s": interval, "days": days, "members": members, "personalstats_polls": polls,
        "rows": rows, "first_value_rows": first, "bytes_per_row": round(stat_bytes / rows, 1),
        "change_rows_per_member_month": round(changes / members * scale),
        "bytes_per_member_month": round(changes / members * scale * stat_bytes / rows),
        "event_bytes_per_member_month": round(event_bytes / members * scale),
    }


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:3]]
    print(json.dumps(measure(int(args[0]) if args else 3600, args[1] if len(args) > 1 else 30), indent=1))
